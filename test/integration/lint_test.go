package integration

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestLintCLI runs `cloudless lint` as a user would: exit codes per
// severity and --fail-on, a broken document named by file and line while
// the rest is checked, SARIF, and stdin.
func TestLintCLI(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	corpus := "../../internal/lint/testdata"
	clean := filepath.Join(corpus, "clean")
	warnOnly := filepath.Join(corpus, "checks", "CL-RES-001.bad.yaml")
	withError := filepath.Join(corpus, "checks", "CL-SEC-003.bad.yaml")
	broken := write("broken.yaml", "apiVersion: v1\nkind: Service\nmetadata:\n  name: [oops\n---\n"+mustRead(t, withError))
	code := func(err error) int {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	}
	tests := []struct {
		name string
		args []string
		want int
		out  string
	}{
		{"clean", []string{"lint", clean}, 0, "0 findings"},
		{"warnings only", []string{"lint", warnOnly}, 0, "CL-RES-001"},
		{"warnings with --fail-on warning", []string{"lint", "--fail-on", "warning", warnOnly}, 1, "CL-RES-001"},
		{"an error", []string{"lint", withError}, 2, "CL-SEC-003"},
		{"broken document named, the rest checked", []string{"lint", broken}, 2, "note: " + broken + ":4: not parsed"},
		{"bad --fail-on", []string{"lint", "--fail-on", "fatal", clean}, 1, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, err := cli(t, tt.args...)
			if got := code(err); got != tt.want || !strings.Contains(out, tt.out) {
				t.Errorf("exit %d, want %d; output lacks %q:\n%s\n%s", got, tt.want, tt.out, out, errOut)
			}
		})
	}
	// SARIF from stdin.
	cmd := exec.Command(cloudlessBin, "lint", "-o", "sarif", "-")
	cmd.Stdin = strings.NewReader(mustRead(t, withError))
	out, _ := cmd.Output()
	var sarif struct {
		Version string
		Runs    []struct{ Results []struct{ RuleID string } }
	}
	if err := json.Unmarshal(out, &sarif); err != nil || sarif.Version != "2.1.0" || len(sarif.Runs) != 1 || len(sarif.Runs[0].Results) == 0 {
		t.Errorf("sarif from stdin: %v\n%s", err, out)
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

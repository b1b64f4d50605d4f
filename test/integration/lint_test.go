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
// severity and --fail-on; input that cannot be parsed (random bytes,
// broken YAML, a binary) or read (a missing file) exits 2 with one line
// naming the file, unless --skip-unparseable makes it a note while the
// rest is checked; SARIF, and stdin.
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
	random := filepath.Join(corpus, "unparseable", "random.bin")
	binary := filepath.Join(corpus, "unparseable", "binary.elf")
	brokenOnly := filepath.Join(corpus, "unparseable", "broken.yaml")
	missing := filepath.Join(dir, "missing.yaml")
	const fix = "fix or remove it, or pass --skip-unparseable to skip it and check the rest"
	tests := []struct {
		name   string
		args   []string
		want   int
		out    string // in stdout
		errOut string // in stderr
	}{
		{name: "clean", args: []string{"lint", clean}, want: 0, out: "0 findings"},
		{name: "warnings only", args: []string{"lint", warnOnly}, want: 0, out: "CL-RES-001"},
		{name: "warnings with --fail-on warning", args: []string{"lint", "--fail-on", "warning", warnOnly}, want: 1, out: "CL-RES-001"},
		{name: "an error", args: []string{"lint", withError}, want: 2, out: "CL-SEC-003"},
		{name: "bad --fail-on", args: []string{"lint", "--fail-on", "fatal", clean}, want: 2, errOut: `error: --fail-on: severity "fatal": want info, warning or error`},

		{name: "random bytes", args: []string{"lint", "--fail-on", "info", random}, want: 2, errOut: "error: " + random + ": binary data, not YAML or JSON; " + fix},
		{name: "a binary file", args: []string{"lint", binary}, want: 2, errOut: "error: " + binary + ": binary data, not YAML or JSON; " + fix},
		{name: "broken YAML", args: []string{"lint", "--fail-on", "info", brokenOnly}, want: 2, errOut: "error: " + brokenOnly + ":4: not YAML or JSON: yaml: line 4"},
		{name: "broken document among good ones", args: []string{"lint", clean, broken}, want: 2, errOut: "error: " + broken + ":4: not YAML or JSON"},
		{name: "broken YAML from stdin", args: []string{"lint", "-"}, want: 2, errOut: "error: <stdin>:4: not YAML or JSON"},
		{name: "a missing file", args: []string{"lint", missing}, want: 2, errOut: "error: lint: " + missing + " does not exist: give a manifest file, a directory of them, or - for stdin"},
		{name: "a missing file, --skip-unparseable", args: []string{"lint", "--skip-unparseable", missing}, want: 2, errOut: missing + " does not exist"},

		{name: "--skip-unparseable: random bytes only", args: []string{"lint", "--skip-unparseable", random}, want: 0, out: "note: " + random + ": binary data, not YAML or JSON"},
		{name: "--skip-unparseable: binary and warnings, --fail-on warning", args: []string{"lint", "--skip-unparseable", "--fail-on", "warning", binary, warnOnly}, want: 1, out: "CL-RES-001"},
		{name: "--skip-unparseable: broken document named, the rest checked", args: []string{"lint", "--skip-unparseable", broken}, want: 2, out: "note: " + broken + ":4: not YAML or JSON"},
		{name: "--skip-unparseable: good file", args: []string{"lint", "--skip-unparseable", clean}, want: 0, out: "0 findings"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(cloudlessBin, tt.args...)
			cmd.Stdin = strings.NewReader(mustRead(t, brokenOnly))
			var o, e strings.Builder
			cmd.Stdout, cmd.Stderr = &o, &e
			got := code(cmd.Run())
			out, errOut := o.String(), e.String()
			if got != tt.want || !strings.Contains(out, tt.out) || !strings.Contains(errOut, tt.errOut) {
				t.Errorf("cloudless %s: exit %d, want %d; want stdout with %q and stderr with %q:\n%s\n%s", strings.Join(tt.args, " "), got, tt.want, tt.out, tt.errOut, out, errOut)
			}
			if tt.errOut != "" && strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
				t.Errorf("stderr is more than one line:\n%s", errOut)
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

package conformance

import (
	"bytes"
	"compress/gzip"
	"encoding/xml"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

type passResult struct {
	name                 string
	ran, passed, skipped int
	failed               []failure
	took                 time.Duration
}

type failure struct {
	spec, reason string
	pulls        []string // images the spec's pods failed to pull
}

type junitSuites struct {
	Suites []struct {
		Cases []struct {
			Name    string `xml:"name,attr"`
			Status  string `xml:"status,attr"`
			Failure *struct {
				Message string `xml:"message,attr"`
				Text    string `xml:",chardata"`
			} `xml:"failure"`
			Error *struct {
				Message string `xml:"message,attr"`
			} `xml:"error"`
			Skipped   *struct{} `xml:"skipped"`
			SystemOut string    `xml:"system-out"`
			SystemErr string    `xml:"system-err"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

// readJUnit sums the junit reports e2e.test wrote in dir.
func readJUnit(t *testing.T, dir string) passResult {
	t.Helper()
	var r passResult
	files, _ := filepath.Glob(filepath.Join(dir, "junit*.xml"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var js junitSuites
		if err := xml.Unmarshal(b, &js); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, s := range js.Suites {
			for _, c := range s.Cases {
				// Ginkgo's own setup and teardown nodes are reported too.
				if strings.HasPrefix(c.Name, "[SynchronizedBeforeSuite]") || strings.HasPrefix(c.Name, "[SynchronizedAfterSuite]") || strings.HasPrefix(c.Name, "[ReportAfterSuite]") || strings.HasPrefix(c.Name, "[ReportBeforeSuite]") {
					if c.Failure == nil && c.Error == nil {
						continue
					}
				}
				switch {
				case c.Skipped != nil || c.Status == "skipped" || c.Status == "pending":
					r.skipped++
				case c.Failure != nil || c.Error != nil:
					r.ran++
					msg := ""
					if c.Failure != nil {
						msg = c.Failure.Message
						if msg == "" {
							msg = c.Failure.Text
						}
					} else {
						msg = c.Error.Message
					}
					r.failed = append(r.failed, failure{c.Name, firstLine(msg), failedPulls(c.SystemOut + c.SystemErr)})
				default:
					r.ran++
					r.passed++
				}
			}
		}
	}
	sort.Slice(r.failed, func(i, j int) bool { return r.failed[i].spec < r.failed[j].spec })
	return r
}

// failedPull is the kubelet's event for an image it could not pull, as
// a failed spec's timeline dumps it.
var failedPull = regexp.MustCompile(`Failed to pull image \\?"([^"\\]+)\\?"`)

func failedPulls(timeline string) []string {
	seen := map[string]bool{}
	var out []string
	for _, m := range failedPull.FindAllStringSubmatch(timeline, -1) {
		if !seen[m[1]] {
			seen[m[1]] = true
			out = append(out, m[1])
		}
	}
	return out
}

func firstLine(s string) string {
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			if len(l) > 300 {
				l = l[:300] + "…"
			}
			return l
		}
	}
	return ""
}

// attribution says where a failure comes from when that can be told from
// the failure itself: an image that is not built here (named in the
// message, or a pull of it failed during the spec), or a spec a
// stand-in is known to fail. Anything else is Cloudless's until shown
// otherwise.
func attribution(f failure, plans []imagePlan) string {
	for _, p := range plans {
		if p.kind != "" {
			continue
		}
		if strings.Contains(f.reason, p.ref) || slices.Contains(f.pulls, p.ref) {
			return "image not built here (" + p.ref + ")"
		}
	}
	for _, e := range standInEffects {
		if strings.Contains(f.spec, e.spec) {
			return e.why
		}
	}
	return "Cloudless, until shown otherwise"
}

// writeReport writes <results>/<name>-<date>-<machine>.md and the junit
// files, gzipped, in the directory of the same name; it returns the
// Markdown file's path.
func writeReport(t *testing.T, s settings, results []passResult, plans []imagePlan, reports string, took time.Duration) string {
	t.Helper()
	date := time.Now().UTC().Format("2006-01-02")
	base := filepath.Join(s.results, fmt.Sprintf("%s-%s-%s", s.name, date, s.machine))
	if err := os.MkdirAll(base, 0o755); err != nil {
		t.Fatal(err)
	}
	// The tree run.sh built from; HEAD now, if run otherwise.
	commit := []byte(os.Getenv("CONFORMANCE_COMMIT"))
	if len(commit) == 0 {
		commit, _ = exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	}
	host, _ := os.Hostname()
	var b strings.Builder
	fmt.Fprintf(&b, "# Kubernetes conformance, %s, %s\n\n", date, host)
	fmt.Fprintf(&b, "`sudo test/conformance/run.sh` at commit %s: upstream e2e.test v1.35.4 (built from the pinned k8s.io/kubernetes module), two Cloudless nodes on one machine (server + agent, each in its own network and mount namespace), default settings. Total %s.\n\n",
		strings.TrimSpace(string(commit)), took.Round(time.Second))
	if s.focus != "" || s.skip != "" {
		fmt.Fprintf(&b, "Subset: focus `%s`, skip `%s`.\n\n", s.focus, s.skip)
	}
	b.WriteString("| pass | ginkgo label filter | processes | ran | passed | failed | skipped | time |\n|---|---|---|---|---|---|---|---|\n")
	labels := map[string]string{"parallel": "Conformance && !Serial && !Disruptive", "serial": "Conformance && (Serial || Disruptive)"}
	for _, r := range results {
		procs := s.procs
		if r.name == "serial" {
			procs = 1
		}
		fmt.Fprintf(&b, "| %s | `%s` | %d | %d | %d | %d | %d | %s |\n", r.name, labels[r.name], procs, r.ran, r.passed, len(r.failed), r.skipped, r.took.Round(time.Second))
	}
	b.WriteString("\n## Failures\n\n")
	n := 0
	for _, r := range results {
		for _, f := range r.failed {
			if n == 0 {
				b.WriteString("| pass | spec | reason (first line) | attributable to |\n|---|---|---|---|\n")
			}
			n++
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", r.name, mdEscape(f.spec), mdEscape(f.reason), attribution(f, plans))
		}
	}
	if n == 0 {
		b.WriteString("None.\n")
	}
	b.WriteString("\n## Images\n\nBuilt on this machine (no registry); test/conformance/README.md says what each is made of.\n\n| image | made as |\n|---|---|\n")
	for _, p := range plans {
		how := p.kind
		if how == "" {
			how = "not built: " + p.reason
		}
		fmt.Fprintf(&b, "| %s | %s |\n", p.ref, how)
	}
	// The junit files list every spec of the suite, skipped ones too
	// (megabytes): gzipped, `zcat` reads them.
	for _, r := range results {
		files, _ := filepath.Glob(filepath.Join(reports, r.name, "junit*.xml"))
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var gz bytes.Buffer
			w := gzip.NewWriter(&gz)
			w.Write(data)
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(base, r.name+"-"+filepath.Base(f)+".gz"), gz.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	md := base + ".md"
	if err := os.WriteFile(md, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return md
}

func mdEscape(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}

func TestAttribution(t *testing.T) {
	plans := []imagePlan{
		{ref: "registry.k8s.io/etcd:3.6.6-0"},
		{ref: "registry.k8s.io/e2e-test-images/agnhost:2.59", kind: "agnhost"},
	}
	timeline := `event for p: {kubelet node-b} Failed: Failed to pull image "registry.k8s.io/etcd:3.6.6-0": not found
event for p: {kubelet node-b} Failed: Failed to pull image "registry.k8s.io/etcd:3.6.6-0": not found`
	cases := []struct {
		f    failure
		want string
	}{
		{failure{spec: "[sig-api-machinery] Aggregator", reason: "deploying extension apiserver", pulls: failedPulls(timeline)},
			"image not built here (registry.k8s.io/etcd:3.6.6-0)"},
		// A built image that fails to pull is Cloudless's problem.
		{failure{spec: "x", reason: "y", pulls: failedPulls(`Failed to pull image \"registry.k8s.io/e2e-test-images/agnhost:2.59\"`)},
			"Cloudless, until shown otherwise"},
		{failure{spec: "[sig-node] Kubelet when scheduling a read only busybox container should not write to root filesystem", reason: "Expected"},
			standInEffects[0].why},
	}
	for _, c := range cases {
		if got := attribution(c.f, plans); got != c.want {
			t.Errorf("attribution(%q, pulls %q) = %q, want %q", c.f.spec, c.f.pulls, got, c.want)
		}
	}
	if got := failedPulls(timeline); len(got) != 1 {
		t.Errorf("failedPulls: %q, want the one image once", got)
	}
}

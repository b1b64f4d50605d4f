// Command lint compares `cloudless lint` with kube-score (built from its Go
// module in bench/lint/peers) on the project's pitfall corpus: for each
// pitfall, internal/lint/testdata/checks/<ID>.bad.yaml seeds it and
// <ID>.good.yaml is the same manifest without it. A tool finds the pitfall
// when it reports something on the bad file that it does not report on the
// good one. It also counts what each tool reports on the clean corpus
// (internal/lint/testdata/clean). kube-linter is not compared: its module
// host (golang.stackrox.io) is not reachable from here.
//
// Run it through bench/lint/run.sh.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

var (
	cloudless = flag.String("cloudless", "", "cloudless binary")
	kubeScore = flag.String("kube-score", "", "kube-score binary")
	corpus    = flag.String("corpus", "internal/lint/testdata", "corpus directory")
	out       = flag.String("out", "bench/results", "results directory")
	machine   = flag.String("machine", "vm", "machine name for the result file")
)

func cloudlessFindings(file string) map[string]bool {
	b, _ := exec.Command(*cloudless, "lint", "-o", "json", file).Output() // exit 1/2 with findings
	var rep struct {
		Findings []struct{ ID, Object, Message string }
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		log.Fatalf("cloudless lint %s: %v\n%s", file, err, b)
	}
	m := map[string]bool{}
	for _, f := range rep.Findings {
		m[f.ID+" "+f.Object] = true
	}
	return m
}

func kubeScoreFindings(file string) map[string]bool {
	b, _ := exec.Command(*kubeScore, "score", "--output-format", "ci", file).Output()
	m := map[string]bool{}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "[CRITICAL]") || strings.HasPrefix(l, "[WARNING]") {
			m[l] = true
		}
	}
	return m
}

func diff(bad, good map[string]bool) []string {
	var d []string
	for k := range bad {
		if !good[k] {
			d = append(d, k)
		}
	}
	sort.Strings(d)
	return d
}

func main() {
	flag.Parse()
	bads, _ := filepath.Glob(filepath.Join(*corpus, "checks", "*.bad.yaml"))
	var md strings.Builder
	host, _ := os.Hostname()
	date := time.Now().UTC().Format("2006-01-02")
	fmt.Fprintf(&md, "# Lint: pitfalls found, %s, %s\n\n`bench/lint/run.sh`. For each pitfall, a tool finds it when it reports something on `<ID>.bad.yaml` that it does not report on `<ID>.good.yaml` (the same manifest without the pitfall). kube-linter could not be built here: its module host is not reachable.\n\n", date, host)
	md.WriteString("| Pitfall | Cloudless | kube-score 1.20.0 |\n|---|---|---|\n")
	found := map[string]int{}
	for _, bad := range bads {
		id := strings.TrimSuffix(filepath.Base(bad), ".bad.yaml")
		good := strings.TrimSuffix(bad, ".bad.yaml") + ".good.yaml"
		cl := diff(cloudlessFindings(bad), cloudlessFindings(good))
		ks := diff(kubeScoreFindings(bad), kubeScoreFindings(good))
		cell := func(tool string, d []string) string {
			if len(d) == 0 {
				return "—"
			}
			found[tool]++
			for i := range d {
				d[i] = strings.ReplaceAll(d[i], "|", "/")
			}
			return "yes: " + strings.Join(d, "; ")
		}
		fmt.Fprintf(&md, "| %s | %s | %s |\n", id, cell("cloudless", cl), cell("kube-score", ks))
	}
	clean, _ := filepath.Glob(filepath.Join(*corpus, "clean", "*.yaml"))
	var clCount, ksCount int
	for _, f := range clean {
		clCount += len(cloudlessFindings(f))
		ksCount += len(kubeScoreFindings(f))
	}
	fmt.Fprintf(&md, "| **found** | **%d of %d** | **%d of %d** |\n\n", found["cloudless"], len(bads), found["kube-score"], len(bads))
	fmt.Fprintf(&md, "Findings on the clean corpus (%d files, written to pass every Cloudless check): Cloudless %d, kube-score %d (kube-score's are its own stricter defaults, e.g. ephemeral-storage limits, UID ≥ 10000, read-only root filesystem: choices, not pitfalls).\n", len(clean), clCount, ksCount)
	path := filepath.Join(*out, fmt.Sprintf("lint-%s-%s.md", date, *machine))
	if err := os.WriteFile(path, []byte(md.String()), 0o644); err != nil {
		log.Fatal(err)
	}
	log.Printf("wrote %s: Cloudless %d/%d, kube-score %d/%d", path, found["cloudless"], len(bads), found["kube-score"], len(bads))
}

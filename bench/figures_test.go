// Package bench holds the benchmarks (one directory each, run.sh to run)
// and this test, which keeps the figures the docs quote honest: every
// figure in a paragraph, bullet or section that cites a results file
// under bench/results must be in one of the files it cites, and the
// README's "latest" must be the newest run of that benchmark.
package bench

import (
	"bufio"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

const resultsDir = "results"

// citation names a results file, with or without its directory and
// extension: "server-2026-11-29-vm", "bench/results/size-2026-11-22-vm.md".
var citation = regexp.MustCompile(`\b([a-z]+(?:-[a-z]+)*)-(\d{4}-\d{2}-\d{2})-([a-z0-9]+(?:-[a-z0-9]+)*?)(?:\.md)?\b`)

// figure is a number the docs quote with a unit or as a ratio.
var figure = regexp.MustCompile(`(\d[\d,]*(?:\.\d+)?)\s?(ms|s|MiB|MB|GiB|KiB|×|%)(?:\W|$)`)

var number = regexp.MustCompile(`\d[\d,]*(?:\.\d+)?`)

// docs lists the Markdown files that quote benchmark figures.
func docs(t *testing.T) []string {
	t.Helper()
	files := []string{"../README.md"}
	for _, glob := range []string{"../docs/*.md", "../docs/adr/*.md", "../internal/*/README.md", "../internal/*/*/README.md", "../test/*/README.md", "../bench/*/README.md"} {
		m, err := filepath.Glob(glob)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	return files
}

// segments splits Markdown into what a figure belongs to: a bullet with
// its continuation lines, a paragraph, or a heading with everything up to
// the next heading when the heading itself cites a result.
func segments(text string) []string {
	var out []string
	var cur strings.Builder
	flush := func() {
		if s := strings.TrimSpace(cur.String()); s != "" {
			out = append(out, s)
		}
		cur.Reset()
	}
	inSection := false
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(trimmed, "#"):
			flush()
			inSection = citation.MatchString(trimmed)
		case inSection:
		case trimmed == "" || strings.HasPrefix(trimmed, "- ") || strings.HasPrefix(trimmed, "* "):
			flush()
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
	}
	flush()
	return out
}

// results reads the numbers of each results file once.
type results map[string][]float64

func (r results) numbers(t *testing.T, name string) ([]float64, bool) {
	if n, ok := r[name]; ok {
		return n, n != nil
	}
	b, err := os.ReadFile(filepath.Join(resultsDir, name+".md"))
	if err != nil {
		r[name] = nil
		return nil, false
	}
	var n []float64
	for _, s := range number.FindAllString(string(b), -1) {
		if f, err := strconv.ParseFloat(strings.ReplaceAll(s, ",", ""), 64); err == nil {
			n = append(n, f)
		}
	}
	r[name] = n
	return n, true
}

// matches says whether some number of a results file is the quoted figure
// at the precision it is quoted with ("215 MiB" matches 215.2); seconds
// also match milliseconds ("1.79 s" matches 1793.77).
func matches(quoted, unit string, in []float64) bool {
	q, err := strconv.ParseFloat(strings.ReplaceAll(quoted, ",", ""), 64)
	if err != nil {
		return false
	}
	decimals := 0
	if i := strings.IndexByte(quoted, '.'); i >= 0 {
		decimals = len(quoted) - i - 1
	}
	tolerance := 0.5*math.Pow(10, -float64(decimals)) + 1e-9
	for _, f := range in {
		if math.Abs(f-q) <= tolerance || unit == "s" && math.Abs(f/1000-q) <= tolerance {
			return true
		}
	}
	return false
}

func TestDocsFiguresMatchResults(t *testing.T) {
	cache := results{}
	checked := 0
	for _, file := range docs(t) {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, seg := range segments(string(b)) {
			var cited [][]float64
			var names []string
			for _, m := range citation.FindAllStringSubmatch(seg, -1) {
				name := m[0]
				name = strings.TrimSuffix(name, ".md")
				n, ok := cache.numbers(t, name)
				if !ok {
					if _, err := os.Stat(filepath.Join(resultsDir, name)); err == nil {
						continue // a directory of raw results
					}
					t.Errorf("%s cites %s, which is not in bench/results", file, name)
					continue
				}
				cited = append(cited, n)
				names = append(names, name)
			}
			if len(cited) == 0 {
				continue
			}
			for _, m := range figure.FindAllStringSubmatch(seg, -1) {
				checked++
				found := false
				for _, n := range cited {
					if matches(m[1], m[2], n) {
						found = true
						break
					}
				}
				if !found {
					t.Errorf("%s quotes %q, which none of %s has: re-run the benchmark or fix the figure\n  in: %s",
						file, strings.TrimSpace(m[0]), strings.Join(names, ", "), firstLine(seg))
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("no figure checked: is the citation pattern still what the docs use?")
	}
}

// TestREADMELatest holds the README's "Latest (name-date-machine)" to the
// newest results of that benchmark on that machine.
func TestREADMELatest(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(resultsDir)
	if err != nil {
		t.Fatal(err)
	}
	newest := map[string]string{} // name/machine → date
	for _, e := range entries {
		m := citation.FindStringSubmatch(e.Name())
		if m == nil || m[0] != e.Name() {
			continue
		}
		key := m[1] + "/" + m[3]
		if m[2] > newest[key] {
			newest[key] = m[2]
		}
	}
	latest := regexp.MustCompile(`(?i)latest\s*\(\s*` + citation.String())
	found := 0
	for _, m := range latest.FindAllStringSubmatch(string(b), -1) {
		found++
		key := m[1] + "/" + m[3]
		if d := newest[key]; d > m[2] {
			t.Errorf("README calls %s-%s-%s the latest, but bench/results has %s-%s-%s.md", m[1], m[2], m[3], m[1], d, m[3])
		}
	}
	if found == 0 {
		t.Fatal("README quotes no latest results")
	}
}

func TestMatches(t *testing.T) {
	for _, c := range []struct {
		quoted, unit string
		in           []float64
		want         bool
	}{
		{"215", "MiB", []float64{215.2}, true},
		{"215", "MiB", []float64{215.6}, false},
		{"0.64", "×", []float64{0.64}, true},
		{"0.6", "×", []float64{0.64}, true},
		{"0.64", "×", []float64{0.65}, false},
		{"20,030", "", []float64{20030}, true},
		{"1.79", "s", []float64{1793.77}, true},
		{"1.79", "MiB", []float64{1793.77}, false},
	} {
		if got := matches(c.quoted, c.unit, c.in); got != c.want {
			t.Errorf("matches(%q %s, %v) = %v, want %v", c.quoted, c.unit, c.in, got, c.want)
		}
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 100 {
		s = s[:100] + "…"
	}
	return s
}

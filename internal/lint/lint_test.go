package lint

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func ids(fs []Finding) map[string]bool {
	m := map[string]bool{}
	for _, f := range fs {
		m[f.ID] = true
	}
	return m
}

func load(t *testing.T, paths ...string) []*Object {
	t.Helper()
	objs, notes, err := Load(paths, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(notes) > 0 {
		t.Fatalf("notes on %v: %v", paths, notes)
	}
	return objs
}

// TestEveryCheck: each check has testdata/checks/<ID>.bad.yaml, which
// triggers it, and <ID>.good.yaml, which does not.
func TestEveryCheck(t *testing.T) {
	for _, c := range Checks() {
		t.Run(c.ID, func(t *testing.T) {
			bad := filepath.Join("testdata", "checks", c.ID+".bad.yaml")
			good := filepath.Join("testdata", "checks", c.ID+".good.yaml")
			for _, f := range []string{bad, good} {
				if _, err := os.Stat(f); err != nil {
					t.Fatalf("%s: every check needs a manifest that triggers it and one that does not", f)
				}
			}
			if fs := Run(load(t, bad)); !ids(fs)[c.ID] {
				t.Errorf("%s does not trigger %s; findings: %v", bad, c.ID, fs)
			}
			if fs := Run(load(t, good)); ids(fs)[c.ID] {
				t.Errorf("%s triggers %s: %v", good, c.ID, fs)
			}
		})
	}
}

// TestCleanCorpus: the clean manifests raise nothing at all.
func TestCleanCorpus(t *testing.T) {
	if fs := Run(load(t, "testdata/clean")); len(fs) > 0 {
		for _, f := range fs {
			t.Errorf("false alarm: %s %s %s:%d: %s", f.ID, f.Object, f.File, f.Line, f.Message)
		}
	}
}

func TestSilenced(t *testing.T) {
	doc := `apiVersion: v1
kind: Service
metadata:
  name: web
  annotations: {cloudless.dev/lint-ignore: "CL-NET-001: behind a proxy that adds X-Forwarded-For, CL-NET-004: "}
spec: {type: LoadBalancer, selector: {app: web}, ports: [{port: 80}]}
`
	objs, _ := parse("svc.yaml", []byte(doc))
	got := ids(Run(objs))
	if got["CL-NET-001"] {
		t.Error("CL-NET-001 reported although silenced with a reason")
	}
	if !got["CL-NET-004"] {
		t.Error("CL-NET-004 silenced without a reason")
	}
}

func TestBadInput(t *testing.T) {
	tests := []struct {
		name, doc string
		objects   int
		note      string // substring of the one note, with its line
	}{
		{"unparseable document, others still read", "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: [b\n---\napiVersion: v1\nkind: Service\nmetadata: {name: c}\n", 2, "x.yaml:8"},
		{"not an object", "just: text\n", 0, "x.yaml:1"},
		{"unknown kind kept, no crash", "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n", 1, ""},
		{"comments and empty documents", "# hello\n---\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: n}\n", 1, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, notes := parse("x.yaml", []byte(tt.doc))
			if len(objs) != tt.objects {
				t.Errorf("objects = %d, want %d", len(objs), tt.objects)
			}
			var got []string
			for _, n := range notes {
				got = append(got, n.File+":"+strconv.Itoa(n.Line)+": "+n.Message)
			}
			if tt.note == "" && len(notes) > 0 || tt.note != "" && (len(notes) != 1 || !strings.HasPrefix(got[0], tt.note)) {
				t.Errorf("notes = %q, want one starting %q", got, tt.note)
			}
			Run(objs) // must not panic on anything parsed
		})
	}
}

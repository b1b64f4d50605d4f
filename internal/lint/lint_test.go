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

// TestUnparseable: input that is not a Kubernetes object is one note
// marked Unparseable, with the file and the line where known, and
// Unparseable turns it into one error line that names the fix; the
// documents that do parse are still read.
func TestUnparseable(t *testing.T) {
	tests := []struct {
		file    string // in testdata/unparseable
		where   string // file:line, or file when the line is not known
		message string // substring of the note
		objects int
	}{
		{file: "random.bin", where: "random.bin", message: "binary data, not YAML or JSON"},
		{file: "binary.elf", where: "binary.elf", message: "binary data, not YAML or JSON"},
		{file: "latin1.yaml", where: "latin1.yaml", message: "binary data, not YAML or JSON"},
		{file: "broken.yaml", where: "broken.yaml:4", message: "not YAML or JSON: yaml: line 4"},
		{file: "broken.json", where: "broken.json:1", message: "not YAML or JSON: yaml: line 1"},
		{file: "scalar.yaml", where: "scalar.yaml:1", message: "not a Kubernetes object: want a mapping with apiVersion and kind"},
		{file: "list.yaml", where: "list.yaml:1", message: "not a Kubernetes object: want a mapping with apiVersion and kind"},
		{file: "no-kind.yaml", where: "no-kind.yaml:1", message: "not a Kubernetes object"},
		{file: "second-doc-broken.yaml", where: "second-doc-broken.yaml:8", message: "not YAML or JSON", objects: 1},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join("testdata", "unparseable", tt.file)
			objs, notes, err := Load([]string{path}, nil)
			if err != nil {
				t.Fatalf("Load(%q) = %v, want notes", path, err)
			}
			if len(objs) != tt.objects {
				t.Errorf("Load(%q) objects = %d, want %d", path, len(objs), tt.objects)
			}
			if len(notes) != 1 || !notes[0].Unparseable || notes[0].Where() != filepath.Join("testdata", "unparseable", tt.where) || !strings.Contains(notes[0].Message, tt.message) {
				t.Fatalf("Load(%q) notes = %+v, want one unparseable at %s containing %q", path, notes, tt.where, tt.message)
			}
			errs := Unparseable(notes)
			if len(errs) != 1 {
				t.Fatalf("Unparseable(%+v) = %v, want one error", notes, errs)
			}
			if msg := errs[0].Error(); !strings.HasPrefix(msg, notes[0].Where()+": ") || !strings.Contains(msg, "--skip-unparseable") || strings.Contains(msg, "\n") {
				t.Errorf("Unparseable error = %q, want one line starting %q that names --skip-unparseable", msg, notes[0].Where())
			}
			Run(objs) // must not panic on what parsed
		})
	}
}

// TestLoadMissing: a path that does not exist is an error naming it, not
// a note.
func TestLoadMissing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.yaml")
	_, _, err := Load([]string{path}, nil)
	if err == nil || !strings.Contains(err.Error(), path+" does not exist") {
		t.Errorf("Load(%q) = %v, want an error saying it does not exist", path, err)
	}
}

// TestSkippedKindsAreNotUnparseable: a kind no check knows (a CRD) is
// read, not refused.
func TestSkippedKindsAreNotUnparseable(t *testing.T) {
	objs, notes := parse("crd.yaml", []byte("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n"))
	if len(objs) != 1 || len(Unparseable(notes)) != 0 {
		t.Errorf("parse(Widget) = %d objects, %+v, want 1 object and nothing unparseable", len(objs), notes)
	}
}

func TestDefaultNamespaces(t *testing.T) {
	objs, notes, err := Load([]string{"testdata/scope.yaml"}, nil)
	if err != nil || len(notes) > 0 {
		t.Fatalf("load: %v %v", err, notes)
	}
	want := map[string]string{
		"widgets.example.com": "", "cluster-widget": "", "unknown-kind": "default",
		"cm": "default", "cm-in-ns": "team", "csi.example.com": "", "fs": "", "ic": "", "team": "", "psp": "",
	}
	for _, o := range objs {
		w, ok := want[o.Name]
		if !ok {
			t.Errorf("unexpected object %s", o.Name)
			continue
		}
		if o.Namespace != w {
			t.Errorf("%s %s: namespace %q, want %q", o.Kind, o.Name, o.Namespace, w)
		}
		delete(want, o.Name)
	}
	if len(want) > 0 {
		t.Errorf("not loaded: %v", want)
	}
}

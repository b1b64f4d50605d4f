package lint

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

// Note is something the input made us skip: a document that does not
// parse (with its file and line), or a kind no check knows.
type Note struct {
	File    string `json:"file"`
	Line    int    `json:"line,omitempty"` // 0: the whole file
	Message string `json:"message"`
	// Unparseable: the input is not a Kubernetes object at all (binary,
	// not YAML or JSON, no kind). `cloudless lint` refuses it (exit 2)
	// unless --skip-unparseable.
	Unparseable bool `json:"unparseable,omitempty"`
}

// Where is "file:line", or just "file" when the line is not known.
func (n Note) Where() string {
	if n.Line == 0 {
		return n.File
	}
	return n.File + ":" + strconv.Itoa(n.Line)
}

// Unparseable returns one error per unparseable note, each one line
// naming the file, the line where known, what is wrong and the fix.
func Unparseable(notes []Note) []error {
	var errs []error
	for _, n := range notes {
		if n.Unparseable {
			errs = append(errs, fmt.Errorf("%s: %s; fix or remove it, or pass --skip-unparseable to skip it and check the rest", n.Where(), n.Message))
		}
	}
	return errs
}

// Load reads manifests from paths (files, directories walked for .yaml,
// .yml and .json, or "-" for stdin). Bad documents become notes marked
// Unparseable and the rest are still read; objects of kinds the scheme
// does not know (CRDs) are kept as unstructured. A path that does not
// exist or cannot be read is an error.
func Load(paths []string, stdin io.Reader) ([]*Object, []Note, error) {
	var objs []*Object
	var notes []Note
	read := func(name string, data []byte) {
		o, n := parse(name, data)
		objs, notes = append(objs, o...), append(notes, n...)
	}
	for _, p := range paths {
		if p == "-" {
			data, err := io.ReadAll(stdin)
			if err != nil {
				return nil, nil, fmt.Errorf("read stdin: %w", err)
			}
			read("<stdin>", data)
			continue
		}
		st, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, fmt.Errorf("%s does not exist: give a manifest file, a directory of them, or - for stdin", p)
		}
		if err != nil {
			return nil, nil, err
		}
		if !st.IsDir() {
			data, err := os.ReadFile(p)
			if err != nil {
				return nil, nil, err
			}
			read(p, data)
			continue
		}
		err = filepath.WalkDir(p, func(f string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			switch strings.ToLower(filepath.Ext(f)) {
			case ".yaml", ".yml", ".json":
				if !d.IsDir() {
					data, err := os.ReadFile(f)
					if err != nil {
						return err
					}
					read(f, data)
				}
			}
			return nil
		})
		if err != nil {
			return nil, nil, err
		}
	}
	defaultNamespaces(objs)
	return objs, notes, nil
}

var yamlLine = regexp.MustCompile(`line (\d+)`)

// Parse reads one file's documents as Load does: objects, and notes for
// what does not parse (file and line).
func Parse(file string, data []byte) ([]*Object, []Note) {
	objs, notes := parse(file, data)
	defaultNamespaces(objs)
	return objs, notes
}

// parse splits a multi-document YAML stream and decodes each document.
func parse(file string, data []byte) ([]*Object, []Note) {
	var objs []*Object
	var notes []Note
	if bytes.IndexByte(data, 0) >= 0 || !utf8.Valid(data) {
		return nil, []Note{{File: file, Message: "binary data, not YAML or JSON", Unparseable: true}}
	}
	docs, err := splitDocs(data)
	if err != nil {
		return nil, []Note{{File: file, Message: "not YAML or JSON: " + err.Error(), Unparseable: true}}
	}
	for _, doc := range docs {
		if strings.TrimSpace(stripComments(doc.text)) == "" {
			continue
		}
		var tm metav1.TypeMeta
		js, err := yaml.YAMLToJSON([]byte(doc.text))
		if err != nil {
			line := doc.line
			if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
				n, _ := strconv.Atoi(m[1])
				line += n - 1
			}
			msg := strings.TrimPrefix(err.Error(), "error converting YAML to JSON: ")
			notes = append(notes, Note{File: file, Line: line, Message: "not YAML or JSON: " + msg, Unparseable: true})
			continue
		}
		if !bytes.HasPrefix(bytes.TrimSpace(js), []byte("{")) || yaml.Unmarshal(js, &tm) != nil {
			notes = append(notes, Note{File: file, Line: doc.line, Message: "not a Kubernetes object: want a mapping with apiVersion and kind", Unparseable: true})
			continue
		}
		if tm.Kind == "List" || strings.HasSuffix(tm.Kind, "List") && tm.APIVersion == "v1" {
			var list struct {
				Items []runtime.RawExtension `json:"items"`
			}
			if err := yaml.Unmarshal(js, &list); err == nil {
				for _, it := range list.Items {
					o, n := decode(file, doc.line, it.Raw)
					objs, notes = append(objs, o...), append(notes, n...)
				}
			}
			continue
		}
		o, n := decode(file, doc.line, js)
		objs, notes = append(objs, o...), append(notes, n...)
	}
	return objs, notes
}

func decode(file string, line int, js []byte) ([]*Object, []Note) {
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(js); err != nil {
		return nil, []Note{{File: file, Line: line, Message: "not a Kubernetes object: " + err.Error(), Unparseable: true}}
	}
	o := &Object{Obj: u, Kind: u.GetKind(), Namespace: u.GetNamespace(), Name: u.GetName(), Annotations: u.GetAnnotations(), File: file, Line: line, JSON: js}
	if typed, _, err := scheme.Codecs.UniversalDeserializer().Decode(js, nil, nil); err == nil {
		o.Obj = typed
	}
	return []*Object{o}, nil
}

type doc struct {
	text string
	line int // first line in the file
}

// splitDocs splits at "---" lines; a line too long to scan is an error
// naming it.
func splitDocs(data []byte) ([]doc, error) {
	var docs []doc
	var cur bytes.Buffer
	start, n := 1, 0
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		n++
		l := sc.Text()
		if strings.HasPrefix(l, "---") && strings.TrimSpace(strings.TrimPrefix(l, "---")) == "" {
			docs = append(docs, doc{cur.String(), start})
			cur.Reset()
			start = n + 1
			continue
		}
		cur.WriteString(l + "\n")
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("line %d: %w", n+1, err)
	}
	return append(docs, doc{cur.String(), start}), nil
}

func stripComments(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

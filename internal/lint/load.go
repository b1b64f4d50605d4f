package lint

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

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
	Line    int    `json:"line"`
	Message string `json:"message"`
}

// Load reads manifests from paths (files, directories walked for .yaml,
// .yml and .json, or "-" for stdin). Bad documents become notes and the
// rest are still read; objects of kinds the scheme does not know (CRDs)
// are kept as unstructured.
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
	return objs, notes, nil
}

var yamlLine = regexp.MustCompile(`line (\d+)`)

// parse splits a multi-document YAML stream and decodes each document.
func parse(file string, data []byte) ([]*Object, []Note) {
	var objs []*Object
	var notes []Note
	for _, doc := range splitDocs(data) {
		if strings.TrimSpace(stripComments(doc.text)) == "" {
			continue
		}
		var tm metav1.TypeMeta
		js, err := yaml.YAMLToJSON([]byte(doc.text))
		if err == nil {
			err = yaml.Unmarshal(js, &tm)
		}
		if err != nil {
			line := doc.line
			if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
				n, _ := strconv.Atoi(m[1])
				line += n - 1
			}
			notes = append(notes, Note{File: file, Line: line, Message: "not parsed: " + err.Error()})
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
		return nil, []Note{{File: file, Line: line, Message: "not a Kubernetes object: " + err.Error()}}
	}
	o := &Object{Obj: u, Kind: u.GetKind(), Namespace: u.GetNamespace(), Name: u.GetName(), Annotations: u.GetAnnotations(), File: file, Line: line}
	if typed, _, err := scheme.Codecs.UniversalDeserializer().Decode(js, nil, nil); err == nil {
		o.Obj = typed
	}
	if o.Namespace == "" && namespaced(o.Kind) {
		o.Namespace = "default"
	}
	return []*Object{o}, nil
}

func namespaced(kind string) bool {
	switch kind {
	case "Namespace", "Node", "PersistentVolume", "ClusterRole", "ClusterRoleBinding", "StorageClass",
		"CustomResourceDefinition", "PriorityClass", "IngressClass", "PodSecurityPolicy", "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration":
		return false
	}
	return true
}

type doc struct {
	text string
	line int // first line in the file
}

func splitDocs(data []byte) []doc {
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
	return append(docs, doc{cur.String(), start})
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

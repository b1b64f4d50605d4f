// Package lint finds the on-prem foot-guns in Kubernetes objects: each
// check has a stable ID (CL-NET-001), a severity, one sentence on what
// will go wrong, and the fix. `cloudless lint` runs the checks on
// manifests; `cloudless doctor` runs them on a live cluster's objects and
// adds host checks (internal/doctor).
//
// Files: lint.go (findings, silencing, running), load.go (YAML with file
// and line), checks.go (the checks), report.go (table, JSON, SARIF).
package lint

import (
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/runtime"
)

// Severity of a finding.
type Severity int

const (
	Info Severity = iota
	Warning
	Error
)

func (s Severity) String() string { return [...]string{"info", "warning", "error"}[s] }

// ParseSeverity reads info, warning or error.
func ParseSeverity(s string) (Severity, error) {
	for v := Info; v <= Error; v++ {
		if v.String() == s {
			return v, nil
		}
	}
	return 0, fmt.Errorf("severity %q: want info, warning or error", s)
}

// Finding is one problem with one object or host item.
type Finding struct {
	ID       string   `json:"id"`
	Severity Severity `json:"-"`
	Level    string   `json:"severity"`
	Object   string   `json:"object"` // Kind namespace/name, or a host item
	File     string   `json:"file,omitempty"`
	Line     int      `json:"line,omitempty"`
	Message  string   `json:"message"` // what will go wrong
	Fix      string   `json:"fix"`     // the exact field or flag
}

// Object is a parsed manifest or a live object.
type Object struct {
	Obj         runtime.Object
	Kind        string
	Namespace   string
	Name        string
	Annotations map[string]string
	File        string
	Line        int
	// JSON is the document as read, converted to JSON.
	JSON []byte
}

func (o *Object) ref() string {
	if o.Namespace == "" {
		return o.Kind + " " + o.Name
	}
	return o.Kind + " " + o.Namespace + "/" + o.Name
}

// Check is one rule.
type Check struct {
	ID       string
	Severity Severity
	Title    string
	// Run reports problems of objs (the whole input, for checks that
	// relate objects: Services to pods, HPAs to VPAs).
	Run func(objs []*Object, report func(o *Object, msg, fix string))
}

// IgnoreAnnotation silences findings on an object: a comma-separated list
// of "ID: reason" (the reason is required).
const IgnoreAnnotation = "cloudless.dev/lint-ignore"

// Checks returns every check, in ID order.
func Checks() []Check {
	cs := slices.Clone(checks)
	slices.SortFunc(cs, func(a, b Check) int { return strings.Compare(a.ID, b.ID) })
	return cs
}

// Run runs every check on objs and returns the findings not silenced,
// sorted by file, line and ID. Namespace defaulting: objects without
// one are taken as in "default".
func Run(objs []*Object) []Finding {
	var out []Finding
	for _, c := range Checks() {
		c.Run(objs, func(o *Object, msg, fix string) {
			if silenced(o, c.ID) {
				return
			}
			out = append(out, Finding{ID: c.ID, Severity: c.Severity, Level: c.Severity.String(), Object: o.ref(),
				File: o.File, Line: o.Line, Message: msg, Fix: fix})
		})
	}
	slices.SortStableFunc(out, func(a, b Finding) int {
		if c := strings.Compare(a.File, b.File); c != 0 {
			return c
		}
		if a.Line != b.Line {
			return a.Line - b.Line
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

func silenced(o *Object, id string) bool {
	for _, part := range strings.Split(o.Annotations[IgnoreAnnotation], ",") {
		k, reason, ok := strings.Cut(part, ":")
		if ok && strings.TrimSpace(k) == id && strings.TrimSpace(reason) != "" {
			return true
		}
	}
	return false
}

// Worst is the highest severity among findings, -1 if none.
func Worst(fs []Finding) Severity {
	w := Severity(-1)
	for _, f := range fs {
		w = max(w, f.Severity)
	}
	return w
}

// Known reports whether some check looks at objects of o's kind.
func Known(o *Object) bool {
	switch o.Kind {
	case "Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Service", "NetworkPolicy",
		"HorizontalPodAutoscaler", "VerticalPodAutoscaler", "Namespace":
		return true
	}
	_, removed := removedAPIs[apiVersion(o)+" "+o.Kind]
	return removed
}

func apiVersion(o *Object) string {
	if o.Obj == nil {
		return ""
	}
	return o.Obj.GetObjectKind().GroupVersionKind().GroupVersion().String()
}

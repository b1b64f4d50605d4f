package lint

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// sarifSchemaModule ships the OASIS SARIF 2.1.0 schema in its testdata;
// .ci/setup downloads it into the module cache.
const (
	sarifSchemaModule = "github.com/securego/gosec/v2@v2.30.0"
	sarifSchemaFile   = "report/sarif/testdata/sarif-schema-2.1.0.json"
)

func sarifSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		t.Fatalf("go env GOMODCACHE: %v", err)
	}
	path := filepath.Join(strings.TrimSpace(string(out)), sarifSchemaModule, sarifSchemaFile)
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("the SARIF schema: %v (run `go mod download %s`, as .ci/setup does)", err, sarifSchemaModule)
	}
	defer f.Close()
	doc, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("sarif.json", doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("sarif.json")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSARIFValidates(t *testing.T) {
	schema := sarifSchema(t)
	tests := []struct {
		name string
		r    Report
	}{
		{name: "no findings"},
		{name: "a finding in a file", r: Report{Findings: []Finding{{ID: "CL-LB-002", Severity: Error, Level: "error", Object: "Service/a", Message: "m", Fix: "f", File: "./x.yaml", Line: 3}}}},
		{name: "a finding on a live object", r: Report{Findings: []Finding{{ID: "CL-NET-001", Severity: Warning, Level: "warning", Object: "Pod/b", Message: "m", Fix: "f"}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := tc.r.Write(&buf, "sarif", "cloudless lint"); err != nil {
				t.Fatal(err)
			}
			doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(buf.Bytes()))
			if err != nil {
				t.Fatal(err)
			}
			if err := schema.Validate(doc); err != nil {
				t.Errorf("SARIF output does not validate: %v\n%s", err, buf.Bytes())
			}
			var out struct {
				Runs []struct {
					Results json.RawMessage `json:"results"`
				} `json:"runs"`
			}
			json.Unmarshal(buf.Bytes(), &out)
			if len(out.Runs) != 1 || string(out.Runs[0].Results) == "null" {
				t.Errorf("runs = %+v, want one run with a results array", out.Runs)
			}
		})
	}
}

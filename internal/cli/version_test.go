package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
)

func TestVersion(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := Run(context.Background(), []string{"version", "-o", "json"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var v map[string]string
	if err := json.Unmarshal(out.Bytes(), &v); err != nil {
		t.Fatalf("%v: %q", err, out.String())
	}
	if v["go"] == "" || v["kubernetes"] == "" || v["cloudless"] == "" {
		t.Errorf("version = %v", v)
	}
	out.Reset()
	if code := Run(context.Background(), []string{"--help"}, &out, &errOut); code != 0 || strings.Contains(out.String(), "--version") {
		t.Errorf("--help shows upstream's --version flag:\n%s", out.String())
	}
}

package dns

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConfigZone(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.zone")
	bad := filepath.Join(dir, "bad.zone")
	os.WriteFile(good, []byte("@ SOA ns1 h 1 1 1 1 1\n@ NS ns1\nns1 A 192.0.2.1\n"), 0o600)
	os.WriteFile(bad, []byte("@ SOA ns1 h 1 1 1 1 1\n@ NS ns1\nns1 A not-an-address\n"), 0o600)
	cm, err := ConfigZone("Example.COM=" + good)
	if err != nil {
		t.Fatal(err)
	}
	if cm.Name != "zone-example-com" || cm.Data[ZoneOriginKey] != "example.com" || cm.Labels[ZoneLabel] == "" || cm.Annotations[ZoneSourceAnnotation] != good {
		t.Errorf("ConfigMap %+v", cm)
	}
	if origin, _, err := ZoneText(cm); err != nil || origin != "example.com." {
		t.Errorf("the Builder reads it as %q, %v", origin, err)
	}
	for flag, want := range map[string]string{
		"example.com": "want ORIGIN=FILE",
		"example.com=" + filepath.Join(dir, "none"): "no such file",
		"example.com=" + bad:                        "not-an-address\" at line: 3",
	} {
		if _, err := ConfigZone(flag); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ConfigZone(%q): %v, want an error with %q", flag, err, want)
		}
	}
}

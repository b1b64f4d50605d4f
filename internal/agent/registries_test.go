package agent

import (
	"os"
	"strings"
	"testing"
)

func TestRegistries(t *testing.T) {
	r, err := loadRegistries("testdata/registries/mirrors.yaml")
	if err != nil {
		t.Fatal(err)
	}
	files := r.hostsFiles()
	want, _ := os.ReadFile("testdata/registries/docker.io.hosts.toml")
	if files["docker.io"] != string(want) {
		t.Errorf("docker.io hosts.toml:\n%s\nwant:\n%s", files["docker.io"], want)
	}
	if !strings.HasPrefix(files["quay.io"], `server = "https://quay.io"`) {
		t.Errorf("quay.io hosts.toml:\n%s", files["quay.io"])
	}
	for file, wantErr := range map[string]string{
		"testdata/registries/typo.yaml":    `unknown field "endpoints"`,
		"testdata/registries/bad-url.yaml": "is not an http(s) URL",
	} {
		if _, err := loadRegistries(file); err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("%s: err = %v, want %q", file, err, wantErr)
		}
	}
	if r, err := loadRegistries("testdata/registries/absent.yaml"); err != nil || len(r.hostsFiles()) != 0 {
		t.Errorf("absent file: %v, %v", r, err)
	}
}

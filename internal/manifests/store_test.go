package manifests

import (
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
)

func TestConfigMapName(t *testing.T) {
	seen := map[string]string{}
	for _, name := range []string{"app.yaml", "App.yaml", "app.yml", "a b/c.json", "very-long-name-of-a-manifest-file-that-goes-on-and-on.yaml", "..."} {
		got := ConfigMapName(name)
		if errs := validation.IsDNS1123Subdomain(got); len(errs) > 0 || len(got) > 63 {
			t.Errorf("ConfigMapName(%q) = %q: not a valid short name: %v", name, got, errs)
		}
		if other, dup := seen[got]; dup {
			t.Errorf("ConfigMapName(%q) = ConfigMapName(%q) = %q", name, other, got)
		}
		seen[got] = name
		if again := ConfigMapName(name); again != got {
			t.Errorf("ConfigMapName(%q) not stable: %q then %q", name, got, again)
		}
	}
}

func TestManifestFile(t *testing.T) {
	for name, want := range map[string]bool{
		"a.yaml": true, "a.yml": true, "a.json": true, "a.yaml.skip": false, ".hidden.yaml": false, "a.txt": false, "a.yaml~": false,
	} {
		if got := manifestFile(name); got != want {
			t.Errorf("manifestFile(%q) = %v, want %v", name, got, want)
		}
	}
}

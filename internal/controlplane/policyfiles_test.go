package controlplane

import (
	"bytes"
	"encoding/json"
	"slices"
	"testing"

	apiserverv1 "k8s.io/apiserver/pkg/apis/apiserver/v1"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"
	podsecurityv1 "k8s.io/pod-security-admission/admission/api/v1"
	"sigs.k8s.io/yaml"
)

// TestPolicyFiles: each file decodes strictly (no unknown field) into
// its upstream type and says what the server needs.
func TestPolicyFiles(t *testing.T) {
	t.Run("encryption", func(t *testing.T) {
		b, err := encryptionConfig(make([]byte, 32))
		if err != nil {
			t.Fatal(err)
		}
		var c apiserverv1.EncryptionConfiguration
		if err := yaml.UnmarshalStrict(b, &c); err != nil {
			t.Fatalf("%v\n%s", err, b)
		}
		if c.Kind != "EncryptionConfiguration" || len(c.Resources) != 1 || c.Resources[0].Resources[0] != "secrets" ||
			c.Resources[0].Providers[0].Secretbox == nil || c.Resources[0].Providers[1].Identity == nil {
			t.Errorf("decoded %+v", c)
		}
	})
	t.Run("authentication", func(t *testing.T) {
		b, err := authenticationConfig()
		if err != nil {
			t.Fatal(err)
		}
		var c apiserverv1.AuthenticationConfiguration
		if err := yaml.UnmarshalStrict(b, &c); err != nil {
			t.Fatalf("%v\n%s", err, b)
		}
		var paths []string
		for _, cond := range c.Anonymous.Conditions {
			paths = append(paths, cond.Path)
		}
		if c.Kind != "AuthenticationConfiguration" || !c.Anonymous.Enabled || !slices.Equal(paths, anonymousPaths) {
			t.Errorf("decoded %+v, anonymous paths %v", c, paths)
		}
	})
	t.Run("admission", func(t *testing.T) {
		b, err := admissionConfig("baseline", "restricted")
		if err != nil {
			t.Fatal(err)
		}
		var c apiserverv1.AdmissionConfiguration
		if err := yaml.UnmarshalStrict(b, &c); err != nil {
			t.Fatalf("%v\n%s", err, b)
		}
		if len(c.Plugins) != 1 || c.Plugins[0].Name != "PodSecurity" || c.Plugins[0].Configuration == nil {
			t.Fatalf("decoded %+v", c)
		}
		var ps podsecurityv1.PodSecurityConfiguration
		dec := json.NewDecoder(bytes.NewReader(c.Plugins[0].Configuration.Raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&ps); err != nil {
			t.Fatal(err)
		}
		if ps.Defaults.Enforce != "baseline" || ps.Defaults.Warn != "restricted" || ps.Defaults.Audit != "restricted" || !slices.Equal(ps.Exemptions.Namespaces, []string{"kube-system"}) {
			t.Errorf("Pod Security %+v", ps)
		}
	})
	t.Run("audit", func(t *testing.T) {
		b, err := auditPolicy()
		if err != nil {
			t.Fatal(err)
		}
		var p auditv1.Policy
		if err := yaml.UnmarshalStrict(b, &p); err != nil {
			t.Fatalf("%v\n%s", err, b)
		}
		if p.Kind != "Policy" || len(p.Rules) != 3 || p.Rules[2].Level != auditv1.LevelMetadata || p.OmitStages[0] != auditv1.StageRequestReceived {
			t.Errorf("decoded %+v", p)
		}
	})
}

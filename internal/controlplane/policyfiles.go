package controlplane

// The kube-apiserver's policy files, as upstream's typed structs: the
// Secrets encryption config, anonymous access, admission (Pod Security
// defaults) and the audit policy.

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	apiserverv1 "k8s.io/apiserver/pkg/apis/apiserver/v1"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"
	podsecurityv1 "k8s.io/pod-security-admission/admission/api/v1"
	"sigs.k8s.io/yaml"

	"github.com/cloudless-dev/cloudless/internal/clusterinfo"
)

func typeMeta(gv fmt.Stringer, kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: gv.String(), Kind: kind}
}

// encryptionConfig encrypts Secrets with secretbox under key, reading
// plain ones written before.
func encryptionConfig(key []byte) ([]byte, error) {
	return yaml.Marshal(&apiserverv1.EncryptionConfiguration{
		TypeMeta: typeMeta(apiserverv1.SchemeGroupVersion, "EncryptionConfiguration"),
		Resources: []apiserverv1.ResourceConfiguration{{
			Resources: []string{"secrets"},
			Providers: []apiserverv1.ProviderConfiguration{
				{Secretbox: &apiserverv1.SecretboxConfiguration{Keys: []apiserverv1.Key{{Name: fmt.Sprintf("key-%d", time.Now().Unix()), Secret: base64.StdEncoding.EncodeToString(key)}}}},
				{Identity: &apiserverv1.IdentityConfiguration{}},
			},
		}},
	})
}

// anonymousPaths are all an unauthenticated client may reach: health,
// and cluster-info (what a joining machine checks against its token).
var anonymousPaths = []string{"/livez", "/readyz", "/healthz",
	"/api/v1/namespaces/" + clusterinfo.Namespace + "/configmaps/" + clusterinfo.Name}

func authenticationConfig() ([]byte, error) {
	c := &apiserverv1.AuthenticationConfiguration{TypeMeta: typeMeta(apiserverv1.SchemeGroupVersion, "AuthenticationConfiguration"),
		Anonymous: &apiserverv1.AnonymousAuthConfig{Enabled: true}}
	for _, p := range anonymousPaths {
		c.Anonymous.Conditions = append(c.Anonymous.Conditions, apiserverv1.AnonymousAuthCondition{Path: p})
	}
	return yaml.Marshal(c)
}

// admissionConfig sets Pod Security's cluster-wide defaults
// (kube-system exempt: the cluster's own components run there).
func admissionConfig(enforce, warn string) ([]byte, error) {
	ps, err := json.Marshal(&podsecurityv1.PodSecurityConfiguration{
		TypeMeta:   typeMeta(podsecurityv1.SchemeGroupVersion, "PodSecurityConfiguration"),
		Defaults:   podsecurityv1.PodSecurityDefaults{Enforce: enforce, EnforceVersion: "latest", Audit: warn, AuditVersion: "latest", Warn: warn, WarnVersion: "latest"},
		Exemptions: podsecurityv1.PodSecurityExemptions{Namespaces: []string{metav1.NamespaceSystem}},
	})
	if err != nil {
		return nil, err
	}
	return yaml.Marshal(&apiserverv1.AdmissionConfiguration{
		TypeMeta: typeMeta(apiserverv1.SchemeGroupVersion, "AdmissionConfiguration"),
		Plugins:  []apiserverv1.AdmissionPluginConfiguration{{Name: "PodSecurity", Configuration: &runtime.Unknown{Raw: ps, ContentType: runtime.ContentTypeJSON}}},
	})
}

// auditPolicy records metadata of every request but health probes and
// the controllers' own reads.
func auditPolicy() ([]byte, error) {
	return yaml.Marshal(&auditv1.Policy{
		TypeMeta:   typeMeta(auditv1.SchemeGroupVersion, "Policy"),
		OmitStages: []auditv1.Stage{auditv1.StageRequestReceived},
		Rules: []auditv1.PolicyRule{
			{Level: auditv1.LevelNone, NonResourceURLs: []string{"/livez*", "/readyz*", "/healthz*"}},
			{Level: auditv1.LevelNone, Users: []string{"system:kube-controller-manager", "system:kube-scheduler"}, Verbs: []string{"get", "list", "watch"}},
			{Level: auditv1.LevelMetadata},
		},
	})
}

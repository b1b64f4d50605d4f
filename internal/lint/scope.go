package lint

import (
	"sync"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/scheme"

	apiextensionsscheme "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset/scheme"
	aggregatorscheme "k8s.io/kube-aggregator/pkg/client/clientset_generated/clientset/scheme"
)

// clusterScoped lists the built-in kinds that are not namespaced. lint
// reads manifests without a cluster, so it cannot ask discovery; the
// integration test TestServer holds this table to what the embedded API
// server's discovery serves, kind by kind, so it cannot drift when
// Kubernetes is upgraded.
var clusterScoped = map[schema.GroupKind]bool{
	{Kind: "Namespace"}: true, {Kind: "Node"}: true, {Kind: "PersistentVolume"}: true, {Kind: "ComponentStatus"}: true,
	{Group: "admissionregistration.k8s.io", Kind: "MutatingWebhookConfiguration"}:     true,
	{Group: "admissionregistration.k8s.io", Kind: "ValidatingWebhookConfiguration"}:   true,
	{Group: "admissionregistration.k8s.io", Kind: "ValidatingAdmissionPolicy"}:        true,
	{Group: "admissionregistration.k8s.io", Kind: "ValidatingAdmissionPolicyBinding"}: true,
	{Group: "admissionregistration.k8s.io", Kind: "MutatingAdmissionPolicy"}:          true,
	{Group: "admissionregistration.k8s.io", Kind: "MutatingAdmissionPolicyBinding"}:   true,
	{Group: "apiextensions.k8s.io", Kind: "CustomResourceDefinition"}:                 true,
	{Group: "apiregistration.k8s.io", Kind: "APIService"}:                             true,
	{Group: "authentication.k8s.io", Kind: "TokenReview"}:                             true,
	{Group: "authentication.k8s.io", Kind: "SelfSubjectReview"}:                       true,
	{Group: "authorization.k8s.io", Kind: "SubjectAccessReview"}:                      true,
	{Group: "authorization.k8s.io", Kind: "SelfSubjectAccessReview"}:                  true,
	{Group: "authorization.k8s.io", Kind: "SelfSubjectRulesReview"}:                   true,
	{Group: "certificates.k8s.io", Kind: "CertificateSigningRequest"}:                 true,
	{Group: "certificates.k8s.io", Kind: "ClusterTrustBundle"}:                        true,
	{Group: "flowcontrol.apiserver.k8s.io", Kind: "FlowSchema"}:                       true,
	{Group: "flowcontrol.apiserver.k8s.io", Kind: "PriorityLevelConfiguration"}:       true,
	{Group: "internal.apiserver.k8s.io", Kind: "StorageVersion"}:                      true,
	{Group: "metrics.k8s.io", Kind: "NodeMetrics"}:                                    true, // served by every Cloudless server
	{Group: "networking.k8s.io", Kind: "IngressClass"}:                                true,
	{Group: "networking.k8s.io", Kind: "IPAddress"}:                                   true,
	{Group: "networking.k8s.io", Kind: "ServiceCIDR"}:                                 true,
	{Group: "node.k8s.io", Kind: "RuntimeClass"}:                                      true,
	{Group: "policy", Kind: "PodSecurityPolicy"}:                                      true,
	{Group: "rbac.authorization.k8s.io", Kind: "ClusterRole"}:                         true,
	{Group: "rbac.authorization.k8s.io", Kind: "ClusterRoleBinding"}:                  true,
	{Group: "resource.k8s.io", Kind: "DeviceClass"}:                                   true,
	{Group: "resource.k8s.io", Kind: "ResourceSlice"}:                                 true,
	{Group: "resource.k8s.io", Kind: "DeviceTaintRule"}:                               true,
	{Group: "scheduling.k8s.io", Kind: "PriorityClass"}:                               true,
	{Group: "storage.k8s.io", Kind: "CSIDriver"}:                                      true,
	{Group: "storage.k8s.io", Kind: "CSINode"}:                                        true,
	{Group: "storage.k8s.io", Kind: "StorageClass"}:                                   true,
	{Group: "storage.k8s.io", Kind: "VolumeAttachment"}:                               true,
	{Group: "storage.k8s.io", Kind: "VolumeAttributesClass"}:                          true,
	{Group: "storagemigration.k8s.io", Kind: "StorageVersionMigration"}:               true,
}

// Namespaced reports whether a built-in kind lives in a namespace.
func Namespaced(gk schema.GroupKind) bool { return !clusterScoped[gk] }

// restMapper knows every built-in kind (client-go's, apiextensions' and
// the aggregator's schemes), scoped by
// clusterScoped, and the kinds that the CustomResourceDefinitions among
// objs define, scoped as they say. A kind it does not know is taken as
// namespaced, the common case for custom resources.
func restMapper(objs []*Object) meta.RESTMapper {
	m := meta.NewDefaultRESTMapper(nil)
	for _, o := range objs {
		u, ok := o.Obj.(*unstructured.Unstructured)
		if !ok || o.Kind != "CustomResourceDefinition" {
			continue
		}
		group, _, _ := unstructured.NestedString(u.Object, "spec", "group")
		kind, _, _ := unstructured.NestedString(u.Object, "spec", "names", "kind")
		s, _, _ := unstructured.NestedString(u.Object, "spec", "scope")
		versions, _, _ := unstructured.NestedSlice(u.Object, "spec", "versions")
		scope := meta.RESTScopeNamespace
		if s == "Cluster" {
			scope = meta.RESTScopeRoot
		}
		for _, v := range versions {
			if name, ok := v.(map[string]any)["name"].(string); ok {
				m.Add(schema.GroupVersionKind{Group: group, Version: name, Kind: kind}, scope)
			}
		}
	}
	return meta.MultiRESTMapper{m, builtinMapper()}
}

// builtinMapper maps the built-in kinds; built once, as the manifests
// applier parses every stored file with it.
var builtinMapper = sync.OnceValue(func() meta.RESTMapper {
	m := meta.NewDefaultRESTMapper(nil)
	for _, s := range []*runtime.Scheme{scheme.Scheme, apiextensionsscheme.Scheme, aggregatorscheme.Scheme} {
		for gvk := range s.AllKnownTypes() {
			scope := meta.RESTScopeNamespace
			if clusterScoped[gvk.GroupKind()] {
				scope = meta.RESTScopeRoot
			}
			m.Add(gvk, scope)
		}
	}
	return m
})

// defaultNamespaces gives namespaced objects without a namespace the one
// kubectl would apply them to, "default"; cluster-scoped ones keep none.
func defaultNamespaces(objs []*Object) {
	m := restMapper(objs)
	for _, o := range objs {
		if o.Namespace != "" || o.Obj == nil {
			continue
		}
		gvk := o.Obj.GetObjectKind().GroupVersionKind()
		mapping, err := m.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err == nil && mapping.Scope.Name() == meta.RESTScopeNameRoot ||
			err != nil && clusterScoped[gvk.GroupKind()] { // a removed API the schemes no longer hold (PodSecurityPolicy)
			continue
		}
		o.Namespace = "default"
	}
}

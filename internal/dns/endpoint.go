package dns

// External-dns's DNSEndpoint (externaldns.k8s.io/v1alpha1): the fields
// Cloudless reads, and a CRD of the same shape, so that DNSEndpoint
// objects written for external-dns are served unchanged. The types are
// our own: the external-dns module does not build against our
// Kubernetes modules.

import (
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
)

// EndpointGVR is the DNSEndpoint resource.
var EndpointGVR = schema.GroupVersionResource{Group: "externaldns.k8s.io", Version: "v1alpha1", Resource: "dnsendpoints"}

// DNSEndpoint asks for records directly: each endpoint is a name, a
// record type and its targets (an address per A or AAAA record, the
// record data in presentation format for the other types).
type DNSEndpoint struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              DNSEndpointSpec `json:"spec,omitempty"`
}

// DNSEndpointSpec is external-dns's spec.
type DNSEndpointSpec struct {
	Endpoints []Endpoint `json:"endpoints,omitempty"`
}

// Endpoint is one name's records of one type.
type Endpoint struct {
	DNSName    string   `json:"dnsName,omitempty"`
	Targets    []string `json:"targets,omitempty"`
	RecordType string   `json:"recordType,omitempty"`
	RecordTTL  int64    `json:"recordTTL,omitempty"`
	// SetIdentifier, Labels and ProviderSpecific are external-dns's
	// routing-policy fields; kept in the schema, not read.
	SetIdentifier string `json:"setIdentifier,omitempty"`
}

// EndpointCRD is the DNSEndpoint CustomResourceDefinition, installed
// by the server when it serves DNS and no such CRD exists (an
// external-dns installation's CRD is left as it is).
func EndpointCRD() *apiextensionsv1.CustomResourceDefinition {
	str := apiextensionsv1.JSONSchemaProps{Type: "string"}
	endpoint := apiextensionsv1.JSONSchemaProps{
		Type: "object",
		Properties: map[string]apiextensionsv1.JSONSchemaProps{
			"dnsName":       str,
			"recordType":    str,
			"recordTTL":     {Type: "integer", Format: "int64", Minimum: ptr.To(0.0)},
			"setIdentifier": str,
			"targets":       {Type: "array", Items: &apiextensionsv1.JSONSchemaPropsOrArray{Schema: &str}},
			"labels":        {Type: "object", AdditionalProperties: &apiextensionsv1.JSONSchemaPropsOrBool{Allows: true, Schema: &str}},
			"providerSpecific": {Type: "array", Items: &apiextensionsv1.JSONSchemaPropsOrArray{Schema: &apiextensionsv1.JSONSchemaProps{
				Type: "object", Properties: map[string]apiextensionsv1.JSONSchemaProps{"name": str, "value": str}}}},
		},
	}
	root := apiextensionsv1.JSONSchemaProps{
		Type: "object",
		Properties: map[string]apiextensionsv1.JSONSchemaProps{
			"apiVersion": str,
			"kind":       str,
			"metadata":   {Type: "object"},
			"spec": {Type: "object", Properties: map[string]apiextensionsv1.JSONSchemaProps{
				"endpoints": {Type: "array", Items: &apiextensionsv1.JSONSchemaPropsOrArray{Schema: &endpoint}},
			}},
			"status": {Type: "object", Properties: map[string]apiextensionsv1.JSONSchemaProps{
				"observedGeneration": {Type: "integer", Format: "int64"},
			}},
		},
	}
	return &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: EndpointGVR.Resource + "." + EndpointGVR.Group, Labels: map[string]string{"app.kubernetes.io/managed-by": "cloudless"},
			// *.k8s.io groups are protected: the API server wants the
			// approval of the group's API, external-dns's, as its CRD
			// carries it.
			Annotations: map[string]string{"api-approved.kubernetes.io": "https://github.com/kubernetes-sigs/external-dns/pull/2007"}},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: EndpointGVR.Group,
			Names: apiextensionsv1.CustomResourceDefinitionNames{Kind: "DNSEndpoint", ListKind: "DNSEndpointList", Plural: EndpointGVR.Resource, Singular: "dnsendpoint"},
			Scope: apiextensionsv1.NamespaceScoped,
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
				Name: EndpointGVR.Version, Served: true, Storage: true,
				Schema:       &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &root},
				Subresources: &apiextensionsv1.CustomResourceSubresources{Status: &apiextensionsv1.CustomResourceSubresourceStatus{}},
			}},
		},
	}
}

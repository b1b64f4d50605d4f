package lb

// The metallb.io CRDs, built from the types in api.go: a schema per
// type by reflection, typed apiextensions objects, applied by the server
// at start (internal/controlplane, join.go, through internal/apply).

import (
	"fmt"
	"reflect"
	"strings"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
)

// Resource is one metallb.io resource: its kind, plural and the
// versions served (the first is stored).
type Resource struct {
	Kind, Plural string
	Versions     []string
	Type         reflect.Type
}

// Resources are the metallb.io resources Cloudless installs and reads.
var Resources = []Resource{
	{"IPAddressPool", "ipaddresspools", []string{"v1beta1"}, reflect.TypeFor[IPAddressPool]()},
	{"L2Advertisement", "l2advertisements", []string{"v1beta1"}, reflect.TypeFor[L2Advertisement]()},
	{"BGPAdvertisement", "bgpadvertisements", []string{"v1beta1"}, reflect.TypeFor[BGPAdvertisement]()},
	{"BGPPeer", "bgppeers", []string{"v1beta2", "v1beta1"}, reflect.TypeFor[BGPPeer]()},
	{"Community", "communities", []string{"v1beta1"}, reflect.TypeFor[Community]()},
}

// ResourceOf returns the resource of kind.
func ResourceOf(kind string) Resource {
	for _, r := range Resources {
		if r.Kind == kind {
			return r
		}
	}
	panic("lb: no resource " + kind)
}

// GVR is kind's resource at the version Cloudless reads (the first).
func GVR(kind string) schema.GroupVersionResource {
	r := ResourceOf(kind)
	return schema.GroupVersionResource{Group: Group, Version: r.Versions[0], Resource: r.Plural}
}

// CRDs returns the CustomResourceDefinitions of Resources, namespaced
// as MetalLB's are. Each spec's schema lists the fields of api.go and
// keeps unknown ones, so manifests written for MetalLB apply unchanged.
func CRDs() []*apiextensionsv1.CustomResourceDefinition {
	var out []*apiextensionsv1.CustomResourceDefinition
	for _, r := range Resources {
		spec, _ := r.Type.FieldByName("Spec")
		specSchema := schemaOf(spec.Type)
		specSchema.XPreserveUnknownFields = ptr.To(true)
		if v := validations[r.Kind]; v != nil {
			v(&specSchema)
		}
		schema := apiextensionsv1.JSONSchemaProps{
			Type: "object",
			Properties: map[string]apiextensionsv1.JSONSchemaProps{
				"apiVersion": {Type: "string"},
				"kind":       {Type: "string"},
				"metadata":   {Type: "object"},
				"spec":       specSchema,
				"status":     {Type: "object", XPreserveUnknownFields: ptr.To(true)},
			},
		}
		crd := &apiextensionsv1.CustomResourceDefinition{
			ObjectMeta: metav1.ObjectMeta{Name: r.Plural + "." + Group, Labels: map[string]string{"app.kubernetes.io/managed-by": "cloudless"}},
			Spec: apiextensionsv1.CustomResourceDefinitionSpec{
				Group: Group,
				Names: apiextensionsv1.CustomResourceDefinitionNames{
					Kind: r.Kind, ListKind: r.Kind + "List", Plural: r.Plural, Singular: strings.ToLower(r.Kind),
					Categories: []string{"metallb"},
				},
				Scope: apiextensionsv1.NamespaceScoped,
			},
		}
		for i, v := range r.Versions {
			crd.Spec.Versions = append(crd.Spec.Versions, apiextensionsv1.CustomResourceDefinitionVersion{
				Name: v, Served: true, Storage: i == 0,
				Schema:       &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: schema.DeepCopy()},
				Subresources: &apiextensionsv1.CustomResourceSubresources{Status: &apiextensionsv1.CustomResourceSubresourceStatus{}},
			})
		}
		out = append(out, crd)
	}
	return out
}

// validations reject, when an object is written, what is wrong in the
// object itself: the API server answers with the object's name, the
// field and the rule's message, and the object is not stored. What
// needs other objects (overlapping pools, a missing pool) is reported
// by the allocator and speakers as events instead.
var validations = map[string]func(spec *apiextensionsv1.JSONSchemaProps){
	"IPAddressPool": func(spec *apiextensionsv1.JSONSchemaProps) {
		a := spec.Properties["addresses"]
		a.MaxItems = ptr.To[int64](1024)
		a.Items.Schema.MaxLength = ptr.To[int64](100)
		a.Items.Schema.XValidations = apiextensionsv1.ValidationRules{{
			Rule: `isCIDR(self) || (self.split('-').size() == 2 && isIP(self.split('-')[0].trim()) && isIP(self.split('-')[1].trim()) && ` +
				`ip(self.split('-')[0].trim()).family() == ip(self.split('-')[1].trim()).family())`,
			Message: "each address must be a CIDR (192.168.10.0/24) or a range within one family (192.168.10.10-192.168.10.20)",
		}}
		spec.Properties["addresses"] = a
	},
	"BGPPeer": func(spec *apiextensionsv1.JSONSchemaProps) {
		asn := func(name string, min float64) {
			p := spec.Properties[name]
			p.Minimum, p.Maximum = ptr.To(min), ptr.To(float64(1<<32-1))
			spec.Properties[name] = p
		}
		asn("myASN", 1)
		asn("peerASN", 0)
		for _, f := range []string{"peerAddress", "sourceAddress", "routerID", "password", "interface", "dynamicASN", "vrf", "bfdProfile"} {
			p := spec.Properties[f]
			p.MaxLength = ptr.To[int64](256)
			spec.Properties[f] = p
		}
		spec.XValidations = apiextensionsv1.ValidationRules{
			{Rule: `has(self.peerAddress) ? isIP(self.peerAddress) : has(self.interface)`, Message: "spec.peerAddress must be the router's IP address"},
			{Rule: `!has(self.sourceAddress) || isIP(self.sourceAddress)`, Message: "spec.sourceAddress must be an IP address"},
			{Rule: `has(self.dynamicASN) || (has(self.peerASN) && self.peerASN > 0)`, Message: "spec.peerASN (the router's AS number, 1-4294967295) is required unless spec.dynamicASN is set"},
		}
	},
	"BGPAdvertisement": func(spec *apiextensionsv1.JSONSchemaProps) {
		for name, max := range map[string]float64{"aggregationLength": 32, "aggregationLengthV6": 128} {
			p := spec.Properties[name]
			p.Minimum, p.Maximum = ptr.To(0.0), ptr.To(max)
			spec.Properties[name] = p
		}
	},
}

var durationType = reflect.TypeFor[metav1.Duration]()

// schemaOf is the structural schema of t, from its Go types and json tags.
func schemaOf(t reflect.Type) apiextensionsv1.JSONSchemaProps {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == durationType {
		return apiextensionsv1.JSONSchemaProps{Type: "string"}
	}
	switch t.Kind() {
	case reflect.String:
		return apiextensionsv1.JSONSchemaProps{Type: "string"}
	case reflect.Bool:
		return apiextensionsv1.JSONSchemaProps{Type: "boolean"}
	case reflect.Int, reflect.Int32, reflect.Int64, reflect.Uint, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return apiextensionsv1.JSONSchemaProps{Type: "integer"}
	case reflect.Slice:
		items := schemaOf(t.Elem())
		return apiextensionsv1.JSONSchemaProps{Type: "array", Items: &apiextensionsv1.JSONSchemaPropsOrArray{Schema: &items}}
	case reflect.Map:
		v := schemaOf(t.Elem())
		return apiextensionsv1.JSONSchemaProps{Type: "object", AdditionalProperties: &apiextensionsv1.JSONSchemaPropsOrBool{Allows: true, Schema: &v}}
	case reflect.Struct:
		s := apiextensionsv1.JSONSchemaProps{Type: "object", Properties: map[string]apiextensionsv1.JSONSchemaProps{}}
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "-" || !f.IsExported() {
				continue
			}
			if name == "" {
				name = f.Name
			}
			s.Properties[name] = schemaOf(f.Type)
		}
		return s
	}
	panic(fmt.Sprintf("lb: no schema for %v", t))
}

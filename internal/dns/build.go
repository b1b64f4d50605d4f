package dns

import (
	"fmt"
	"slices"
	"sort"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/cloudless-dev/cloudless/internal/dns/zone"
)

// Builder turns zone ConfigMaps and Services into zones, keeping each
// ConfigMap's last text that parsed: a bad edit gets an event and the
// zone keeps its last good records.
type Builder struct {
	lastGood map[string][]zone.Record // ConfigMap namespace/name → records
}

// NewBuilder makes a Builder with no history.
func NewBuilder() *Builder { return &Builder{lastGood: map[string][]zone.Record{}} }

// Objects are what the zones are built from.
type Objects struct {
	// ConfigMaps are kube-system's ConfigMaps labelled ZoneLabel.
	ConfigMaps []*corev1.ConfigMap
	Services   []*corev1.Service
	Ingresses  []*networkingv1.Ingress
	// Custom holds the objects of the OptionalAPIs installed, by kind.
	Custom map[string][]*unstructured.Unstructured
}

// Build returns the zones by origin and the problems to report.
func (b *Builder) Build(objs Objects) (map[string]*zone.Zone, []zone.Problem) {
	var problems []zone.Problem
	static := map[string][]zone.Record{}
	cms := slices.Clone(objs.ConfigMaps)
	sort.Slice(cms, func(i, j int) bool { return cms[i].Namespace+"/"+cms[i].Name < cms[j].Namespace+"/"+cms[j].Name })
	seen := map[string]bool{}
	for _, cm := range cms {
		if cm.Name == SerialsConfigMap {
			continue
		}
		key := cm.Namespace + "/" + cm.Name
		seen[key] = true
		ref := Ref("ConfigMap", cm.Namespace, cm.Name)
		origin, text, err := ZoneText(cm)
		var recs []zone.Record
		if err == nil {
			recs, err = zone.Parse(origin, text, ref)
		}
		if err != nil {
			problems = append(problems, zone.Problem{Ref: ref, Reason: zone.ReasonInvalidZone, Message: err.Error() + keptMessage(b.lastGood[key] != nil)})
			recs = b.lastGood[key]
			if recs == nil {
				continue
			}
		} else {
			b.lastGood[key] = recs
		}
		for _, r := range recs { // the origin is the SOA's owner, which Parse checked
			if r.RR.Header().Rrtype == dns.TypeSOA {
				origin = r.RR.Header().Name
			}
		}
		if _, dup := static[origin]; dup {
			problems = append(problems, zone.Problem{Ref: ref, Reason: zone.ReasonConflict,
				Message: "zone " + origin + " is declared by another ConfigMap too (the first by name is served): keep one"})
			continue
		}
		static[origin] = recs
	}
	for k := range b.lastGood {
		if !seen[k] {
			delete(b.lastGood, k)
		}
	}
	claims, p := objs.claims()
	problems = append(problems, p...)
	zones, p := zone.Build(static, claims)
	return zones, append(problems, p...)
}

// claims are every source object's claims.
func (objs Objects) claims() ([]zone.Claim, []zone.Problem) {
	var claims []zone.Claim
	var problems []zone.Problem
	add := func(c []zone.Claim, p []zone.Problem) {
		claims, problems = append(claims, c...), append(problems, p...)
	}
	for _, svc := range objs.Services {
		add(ServiceClaims(svc))
	}
	for _, ing := range objs.Ingresses {
		add(IngressClaims(ing))
	}
	for _, u := range objs.Custom["DNSEndpoint"] {
		var e DNSEndpoint
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &e); err != nil {
			problems = append(problems, invalidObject("DNSEndpoint", u, err))
			continue
		}
		add(EndpointClaims(&e))
	}
	gateways := map[string]*gatewayv1.Gateway{}
	for _, u := range objs.Custom["Gateway"] {
		var gw gatewayv1.Gateway
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &gw); err != nil {
			problems = append(problems, invalidObject("Gateway", u, err))
			continue
		}
		gateways[gw.Namespace+"/"+gw.Name] = &gw
	}
	gateway := func(ns, name string) *gatewayv1.Gateway { return gateways[ns+"/"+name] }
	for _, kind := range []string{"HTTPRoute", "GRPCRoute", "TLSRoute"} {
		for _, u := range objs.Custom[kind] {
			r, err := routeOf(kind, u)
			if err != nil {
				problems = append(problems, invalidObject(kind, u, err))
				continue
			}
			add(RouteClaims(r, gateway))
		}
	}
	return claims, problems
}

// routeOf reads the fields the DNS needs from a route of kind. The
// three kinds share them, and TLSRoute's v1alpha2 has the same shape.
func routeOf(kind string, u *unstructured.Unstructured) (Route, error) {
	var v struct {
		metav1.ObjectMeta `json:"metadata"`
		Spec              struct {
			gatewayv1.CommonRouteSpec `json:",inline"`
			Hostnames                 []gatewayv1.Hostname `json:"hostnames,omitempty"`
		} `json:"spec"`
		Status gatewayv1.RouteStatus `json:"status"`
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &v); err != nil {
		return Route{}, err
	}
	return Route{Kind: kind, ObjectMeta: v.ObjectMeta, Hostnames: v.Spec.Hostnames, ParentRefs: v.Spec.ParentRefs, Parents: v.Status.Parents}, nil
}

// ReasonInvalidObject: a custom resource whose fields do not have their
// types.
const ReasonInvalidObject = "InvalidObject"

func invalidObject(kind string, u *unstructured.Unstructured, err error) zone.Problem {
	return zone.Problem{Ref: Ref(kind, u.GetNamespace(), u.GetName()), Reason: ReasonInvalidObject,
		Message: fmt.Sprintf("cannot read it as a %s: %v", kind, err)}
}

func keptMessage(kept bool) string {
	if kept {
		return "; the zone's last good text is still served"
	}
	return "; the zone is not served until it parses"
}

package dns

// Claims of the sources other than Services: Ingress hosts, Gateway API
// routes' hostnames (intersected with their Gateways' listeners), and
// external-dns's DNSEndpoint objects.

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/miekg/dns"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/cloudless-dev/cloudless/internal/dns/zone"
)

// OptionalAPI is a custom resource the DNS reads once its CRD is
// installed and established, at the first of Versions the CRD serves.
type OptionalAPI struct {
	Kind     string
	Resource schema.GroupResource
	Versions []string
}

// CRD is the API's CustomResourceDefinition name.
func (a OptionalAPI) CRD() string { return a.Resource.Resource + "." + a.Resource.Group }

// The Gateway API's group, as routes' parent references default to it.
const gatewayGroup = gatewayv1.GroupName

// OptionalAPIs are the custom resources that feed the zones. TLSRoute
// is v1 since Gateway API 1.5 and v1alpha2 in older experimental
// installations.
var OptionalAPIs = []OptionalAPI{
	{"DNSEndpoint", EndpointGVR.GroupResource(), []string{EndpointGVR.Version}},
	{"Gateway", schema.GroupResource{Group: gatewayGroup, Resource: "gateways"}, []string{"v1"}},
	{"HTTPRoute", schema.GroupResource{Group: gatewayGroup, Resource: "httproutes"}, []string{"v1"}},
	{"GRPCRoute", schema.GroupResource{Group: gatewayGroup, Resource: "grpcroutes"}, []string{"v1"}},
	{"TLSRoute", schema.GroupResource{Group: gatewayGroup, Resource: "tlsroutes"}, []string{"v1", "v1alpha2"}},
}

// Route is what HTTPRoute, GRPCRoute and TLSRoute share and the DNS
// reads.
type Route struct {
	Kind string
	metav1.ObjectMeta
	Hostnames  []gatewayv1.Hostname
	ParentRefs []gatewayv1.ParentReference
	Parents    []gatewayv1.RouteParentStatus
}

// listenerProtocols are the listener protocols each route kind attaches
// to.
var listenerProtocols = map[string][]gatewayv1.ProtocolType{
	"HTTPRoute": {gatewayv1.HTTPProtocolType, gatewayv1.HTTPSProtocolType},
	"GRPCRoute": {gatewayv1.HTTPProtocolType, gatewayv1.HTTPSProtocolType},
	"TLSRoute":  {gatewayv1.TLSProtocolType},
}

// IngressClaims are an Ingress's rules' hosts (and hostname annotation)
// pointing at its status addresses, or at its target annotation.
func IngressClaims(ing *networkingv1.Ingress) ([]zone.Claim, []zone.Problem) {
	var hosts []string
	for _, r := range ing.Spec.Rules {
		if r.Host != "" {
			hosts = append(hosts, r.Host)
		}
	}
	if v, ok := annotation(ing.Annotations, "hostname"); ok {
		hosts = append(hosts, splitList(v)...)
	}
	var targets []string
	for _, in := range ing.Status.LoadBalancer.Ingress {
		targets = append(targets, cmp.Or(in.IP, in.Hostname))
	}
	return claimsFor("Ingress", ing.ObjectMeta, hosts, targets)
}

// RouteClaims are a route's hostnames on each Gateway listener that has
// accepted it (route hostnames intersected with the listener's, as the
// Gateway API matches them), pointing at the Gateway's addresses or the
// route's target annotation. gateway returns a Gateway or nil.
func RouteClaims(r Route, gateway func(namespace, name string) *gatewayv1.Gateway) ([]zone.Claim, []zone.Problem) {
	byTargets := map[string][]string{} // targets joined → hosts
	for _, ref := range r.ParentRefs {
		if ref.Group != nil && *ref.Group != gatewayGroup || ref.Kind != nil && *ref.Kind != "Gateway" {
			continue
		}
		ns := r.Namespace
		if ref.Namespace != nil {
			ns = string(*ref.Namespace)
		}
		if !r.accepted(ref, ns) {
			continue // the Gateway's controller has not attached it (yet)
		}
		gw := gateway(ns, string(ref.Name))
		if gw == nil {
			continue
		}
		var hosts []string
		for _, l := range gw.Spec.Listeners {
			if ref.SectionName != nil && l.Name != *ref.SectionName || ref.Port != nil && l.Port != *ref.Port ||
				!slices.Contains(listenerProtocols[r.Kind], l.Protocol) {
				continue
			}
			hosts = append(hosts, intersect(l.Hostname, r.Hostnames)...)
		}
		var targets []string
		for _, a := range gw.Status.Addresses {
			targets = append(targets, a.Value)
		}
		slices.Sort(targets)
		key := strings.Join(targets, ",")
		byTargets[key] = append(byTargets[key], hosts...)
	}
	var claims []zone.Claim
	var problems []zone.Problem
	for key, hosts := range byTargets {
		c, p := claimsFor(r.Kind, r.ObjectMeta, hosts, splitList(key))
		claims, problems = append(claims, c...), append(problems, p...)
	}
	return claims, problems
}

// accepted reports whether the route's status says the parent ref (in
// namespace ns) accepted it.
func (r Route) accepted(ref gatewayv1.ParentReference, ns string) bool {
	for _, p := range r.Parents {
		pns := r.Namespace
		if p.ParentRef.Namespace != nil {
			pns = string(*p.ParentRef.Namespace)
		}
		if p.ParentRef.Name != ref.Name || pns != ns || !equalPtr(p.ParentRef.SectionName, ref.SectionName) {
			continue
		}
		if c := findCondition(p.Conditions, string(gatewayv1.RouteConditionAccepted)); c != nil && c.Status == metav1.ConditionTrue {
			return true
		}
	}
	return false
}

func findCondition(cs []metav1.Condition, t string) *metav1.Condition {
	for i := range cs {
		if cs[i].Type == t {
			return &cs[i]
		}
	}
	return nil
}

func equalPtr[T comparable](a, b *T) bool {
	return a == nil && b == nil || a != nil && b != nil && *a == *b
}

// intersect returns the names a route publishes on a listener: the
// route's hostnames that the listener's matches ("*.example.com" matches
// any name below example.com), the more specific of the two where one
// is a wildcard, and the listener's own hostname for a route without
// hostnames. A listener without a hostname takes the route's as they
// are.
func intersect(listener *gatewayv1.Hostname, route []gatewayv1.Hostname) []string {
	if listener == nil || *listener == "" {
		var out []string
		for _, h := range route {
			out = append(out, string(h))
		}
		return out
	}
	l := strings.ToLower(string(*listener))
	if len(route) == 0 {
		return []string{l}
	}
	var out []string
	for _, h := range route {
		r := strings.ToLower(string(h))
		switch {
		case r == l, coveredBy(r, l):
			out = append(out, r)
		case coveredBy(l, r):
			out = append(out, l)
		}
	}
	return out
}

// coveredBy reports whether wildcard w ("*.example.com") matches name
// n below it (one label or more).
func coveredBy(n, w string) bool {
	return strings.HasPrefix(w, "*.") && strings.HasSuffix(n, w[1:]) && len(n) > len(w)-1
}

// claimsFor turns one object's hosts and targets into claims, reading
// its ttl and target annotations (a target annotation replaces the
// targets); problems name the object as kind namespace/name.
func claimsFor(kind string, meta metav1.ObjectMeta, hosts, targets []string) ([]zone.Claim, []zone.Problem) {
	if len(hosts) == 0 {
		return nil, nil
	}
	ref := Ref(kind, meta.Namespace, meta.Name)
	owner := zone.Owner{Ref: ref, Created: meta.CreationTimestamp.Unix()}
	ttl, problems := ttlOf(ref, meta.Annotations)
	if v, ok := annotation(meta.Annotations, "target"); ok {
		targets = splitList(v)
	}
	rrs, err := targetRecords(targets, ttl)
	if err != nil {
		return nil, append(problems, zone.Problem{Ref: ref, Reason: ReasonInvalidTarget, Message: err.Error()})
	}
	if len(rrs) == 0 {
		return nil, problems // no address yet: published once there is one
	}
	var claims []zone.Claim
	for _, h := range hosts {
		name, err := hostname(h)
		if err != nil {
			problems = append(problems, zone.Problem{Ref: ref, Reason: ReasonInvalidHostname, Message: err.Error()})
			continue
		}
		claims = append(claims, zone.Claim{Name: name, RRs: rrs, Owner: owner})
	}
	return claims, problems
}

// EndpointTypes are the record types a DNSEndpoint may ask for.
var EndpointTypes = []string{"A", "AAAA", "CNAME", "TXT", "SRV", "MX", "CAA"}

// EndpointClaims are a DNSEndpoint's endpoints, one claim each; an
// endpoint that is wrong is left out with a problem naming it.
func EndpointClaims(e *DNSEndpoint) ([]zone.Claim, []zone.Problem) {
	ref := Ref("DNSEndpoint", e.Namespace, e.Name)
	owner := zone.Owner{Ref: ref, Created: e.CreationTimestamp.Unix()}
	var claims []zone.Claim
	var problems []zone.Problem
	for i, ep := range e.Spec.Endpoints {
		name, err := hostname(ep.DNSName)
		if err != nil {
			problems = append(problems, zone.Problem{Ref: ref, Reason: ReasonInvalidHostname, Message: fmt.Sprintf("endpoints[%d]: %v", i, err)})
			continue
		}
		ttl := uint32(DefaultTTL)
		if ep.RecordTTL > 0 && ep.RecordTTL < 1<<31 {
			ttl = uint32(ep.RecordTTL)
		}
		rrs, err := endpointRecords(strings.ToUpper(ep.RecordType), ep.Targets, ttl)
		if err != nil {
			problems = append(problems, zone.Problem{Ref: ref, Reason: ReasonInvalidTarget, Message: fmt.Sprintf("endpoints[%d] (%s): %v", i, ep.DNSName, err)})
			continue
		}
		claims = append(claims, zone.Claim{Name: name, RRs: rrs, Owner: owner})
	}
	return claims, problems
}

// endpointRecords makes the records of one endpoint: addresses for A
// and AAAA, one host name for CNAME, text for TXT (split into strings
// of 255 bytes), presentation-format data for SRV, MX and CAA.
func endpointRecords(typ string, targets []string, ttl uint32) ([]dns.RR, error) {
	if !slices.Contains(EndpointTypes, typ) {
		return nil, fmt.Errorf("record type %q is not served: use one of %s", typ, strings.Join(EndpointTypes, ", "))
	}
	if len(targets) == 0 {
		return nil, fmt.Errorf("no targets")
	}
	hdr := func(t uint16) dns.RR_Header {
		return dns.RR_Header{Name: ".", Rrtype: t, Class: dns.ClassINET, Ttl: ttl}
	}
	var rrs []dns.RR
	for _, t := range targets {
		switch typ {
		case "A", "AAAA":
			a, err := netip.ParseAddr(strings.TrimSpace(t))
			if err != nil || (typ == "A") != (a.Is4() || a.Is4In6()) {
				return nil, fmt.Errorf("target %q is not an IPv%s address", t, map[string]string{"A": "4", "AAAA": "6"}[typ])
			}
			if typ == "A" {
				rrs = append(rrs, &dns.A{Hdr: hdr(dns.TypeA), A: a.Unmap().AsSlice()})
			} else {
				rrs = append(rrs, &dns.AAAA{Hdr: hdr(dns.TypeAAAA), AAAA: a.AsSlice()})
			}
		case "CNAME":
			if len(targets) != 1 {
				return nil, fmt.Errorf("a CNAME has one target, not %d", len(targets))
			}
			name, err := hostname(t)
			if err != nil {
				return nil, err
			}
			rrs = append(rrs, &dns.CNAME{Hdr: hdr(dns.TypeCNAME), Target: name})
		case "TXT":
			var parts []string
			for s := t; len(s) > 0; {
				n := min(len(s), 255)
				parts, s = append(parts, s[:n]), s[n:]
			}
			if len(parts) == 0 {
				parts = []string{""}
			}
			rrs = append(rrs, &dns.TXT{Hdr: hdr(dns.TypeTXT), Txt: parts})
		default: // SRV, MX, CAA: their data in presentation format
			rr, err := dns.NewRR(fmt.Sprintf(". %d IN %s %s", ttl, typ, t))
			if err != nil || rr == nil {
				return nil, fmt.Errorf("target %q is not %s record data (%s)", t, typ, map[string]string{
					"SRV": "priority weight port host", "MX": "preference host", "CAA": `flags tag "value"`}[typ])
			}
			rrs = append(rrs, rr)
		}
	}
	return rrs, nil
}

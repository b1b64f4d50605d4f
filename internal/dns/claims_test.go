package dns

import (
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/cloudless-dev/cloudless/internal/dns/zone"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// claimText renders claims as "name type data" lines, sorted.
func claimText(cs []zone.Claim) []string {
	var out []string
	for _, c := range cs {
		for _, rr := range c.RRs {
			h := rr.Header()
			out = append(out, c.Name+" "+dns.TypeToString[h.Rrtype]+" "+strings.TrimSpace(strings.TrimPrefix(rr.String(), h.String())))
		}
	}
	slices.Sort(out)
	return out
}

func reasons(ps []zone.Problem) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Reason)
	}
	slices.Sort(out)
	return out
}

func TestIntersect(t *testing.T) {
	h := func(s string) *gatewayv1.Hostname { v := gatewayv1.Hostname(s); return &v }
	for _, tc := range []struct {
		listener *gatewayv1.Hostname
		route    []gatewayv1.Hostname
		want     []string
	}{
		{nil, []gatewayv1.Hostname{"a.example.com"}, []string{"a.example.com"}},
		{nil, nil, nil},
		{h("a.example.com"), nil, []string{"a.example.com"}},
		{h("a.example.com"), []gatewayv1.Hostname{"a.example.com", "b.example.com"}, []string{"a.example.com"}},
		{h("*.example.com"), []gatewayv1.Hostname{"a.example.com", "x.y.example.com", "example.com", "a.example.org"}, []string{"a.example.com", "x.y.example.com"}},
		{h("a.example.com"), []gatewayv1.Hostname{"*.example.com"}, []string{"a.example.com"}},
		{h("*.example.com"), []gatewayv1.Hostname{"*.a.example.com"}, []string{"*.a.example.com"}},
		{h("*.a.example.com"), []gatewayv1.Hostname{"*.example.com"}, []string{"*.a.example.com"}},
		{h("A.Example.com"), []gatewayv1.Hostname{"a.example.COM"}, []string{"a.example.com"}},
	} {
		if got := intersect(tc.listener, tc.route); !slices.Equal(got, tc.want) {
			l := "<none>"
			if tc.listener != nil {
				l = string(*tc.listener)
			}
			t.Errorf("listener %s, route %v: %v, want %v", l, tc.route, got, tc.want)
		}
	}
}

func TestRouteClaims(t *testing.T) {
	section := gatewayv1.SectionName("tls")
	gw := &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: "edge", Namespace: "infra"},
		Spec: gatewayv1.GatewaySpec{Listeners: []gatewayv1.Listener{
			{Name: "web", Protocol: gatewayv1.HTTPSProtocolType, Port: 443, Hostname: ptrTo(gatewayv1.Hostname("*.example.com"))},
			{Name: "tls", Protocol: gatewayv1.TLSProtocolType, Port: 443, Hostname: ptrTo(gatewayv1.Hostname("db.example.com"))},
		}},
		Status: gatewayv1.GatewayStatus{Addresses: []gatewayv1.GatewayStatusAddress{{Value: "192.0.2.7"}, {Value: "2001:db8::7"}}}}
	gateways := func(ns, name string) *gatewayv1.Gateway {
		if ns == gw.Namespace && name == gw.Name {
			return gw
		}
		return nil
	}
	ns := gatewayv1.Namespace("infra")
	accepted := []gatewayv1.RouteParentStatus{{ParentRef: gatewayv1.ParentReference{Name: "edge", Namespace: &ns},
		Conditions: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue}}}}
	for _, tc := range []struct {
		name string
		r    Route
		want []string
	}{
		{"HTTPRoute on the HTTPS listener", Route{Kind: "HTTPRoute", ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: "apps"},
			Hostnames: []gatewayv1.Hostname{"app.example.com", "db.example.com", "app.example.org"}, ParentRefs: []gatewayv1.ParentReference{{Name: "edge", Namespace: &ns}},
			Parents: accepted}, []string{"app.example.com. A 192.0.2.7", "app.example.com. AAAA 2001:db8::7", "db.example.com. A 192.0.2.7", "db.example.com. AAAA 2001:db8::7"}},
		{"not accepted yet", Route{Kind: "HTTPRoute", ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: "apps"},
			Hostnames: []gatewayv1.Hostname{"app.example.com"}, ParentRefs: []gatewayv1.ParentReference{{Name: "edge", Namespace: &ns}}}, nil},
		{"TLSRoute without hostnames takes its listener's", Route{Kind: "TLSRoute", ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "apps"},
			ParentRefs: []gatewayv1.ParentReference{{Name: "edge", Namespace: &ns, SectionName: &section}},
			Parents: []gatewayv1.RouteParentStatus{{ParentRef: gatewayv1.ParentReference{Name: "edge", Namespace: &ns, SectionName: &section},
				Conditions: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue}}}}},
			[]string{"db.example.com. A 192.0.2.7", "db.example.com. AAAA 2001:db8::7"}},
		{"a Gateway that does not exist", Route{Kind: "HTTPRoute", ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: "infra"},
			Hostnames: []gatewayv1.Hostname{"app.example.com"}, ParentRefs: []gatewayv1.ParentReference{{Name: "gone"}},
			Parents: []gatewayv1.RouteParentStatus{{ParentRef: gatewayv1.ParentReference{Name: "gone"}, Conditions: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue}}}}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			claims, problems := RouteClaims(tc.r, gateways)
			if got := claimText(claims); !slices.Equal(got, tc.want) {
				t.Errorf("claims:\n got %q\nwant %q", got, tc.want)
			}
			if len(problems) > 0 {
				t.Errorf("problems: %v", problems)
			}
		})
	}
}

func TestIngressClaims(t *testing.T) {
	ing := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Name: "shop", Namespace: "default",
		Annotations: map[string]string{"external-dns.kubernetes.io/hostname": "extra.example.com", "external-dns.kubernetes.io/ttl": "300"}},
		Spec:   networkingv1.IngressSpec{Rules: []networkingv1.IngressRule{{Host: "shop.example.com"}, {}}},
		Status: networkingv1.IngressStatus{LoadBalancer: networkingv1.IngressLoadBalancerStatus{Ingress: []networkingv1.IngressLoadBalancerIngress{{IP: "192.0.2.80"}}}}}
	claims, problems := IngressClaims(ing)
	want := []string{"extra.example.com. A 192.0.2.80", "shop.example.com. A 192.0.2.80"}
	if got := claimText(claims); !slices.Equal(got, want) || len(problems) > 0 {
		t.Errorf("claims %q problems %v, want %q", got, problems, want)
	}
	if claims[0].RRs[0].Header().Ttl != 300 {
		t.Errorf("ttl %d, want the annotation's 300", claims[0].RRs[0].Header().Ttl)
	}
	ing.Status.LoadBalancer.Ingress = nil
	if claims, _ := IngressClaims(ing); len(claims) != 0 {
		t.Errorf("claims before the Ingress has an address: %v", claims)
	}
}

func TestEndpointClaims(t *testing.T) {
	for _, tc := range []struct {
		ep      Endpoint
		want    []string
		problem string
	}{
		{Endpoint{DNSName: "a.example.com", RecordType: "A", Targets: []string{"192.0.2.1", "192.0.2.2"}}, []string{"a.example.com. A 192.0.2.1", "a.example.com. A 192.0.2.2"}, ""},
		{Endpoint{DNSName: "a.example.com", RecordType: "aaaa", Targets: []string{"2001:db8::1"}}, []string{"a.example.com. AAAA 2001:db8::1"}, ""},
		{Endpoint{DNSName: "a.example.com", RecordType: "A", Targets: []string{"2001:db8::1"}}, nil, ReasonInvalidTarget},
		{Endpoint{DNSName: "c.example.com", RecordType: "CNAME", Targets: []string{"a.example.com"}}, []string{"c.example.com. CNAME a.example.com."}, ""},
		{Endpoint{DNSName: "c.example.com", RecordType: "CNAME", Targets: []string{"a.example.com", "b.example.com"}}, nil, ReasonInvalidTarget},
		{Endpoint{DNSName: "t.example.com", RecordType: "TXT", Targets: []string{"v=spf1 -all"}}, []string{`t.example.com. TXT "v=spf1 -all"`}, ""},
		{Endpoint{DNSName: "t.example.com", RecordType: "TXT", Targets: []string{strings.Repeat("x", 300)}},
			[]string{`t.example.com. TXT "` + strings.Repeat("x", 255) + `" "` + strings.Repeat("x", 45) + `"`}, ""},
		{Endpoint{DNSName: "example.com", RecordType: "MX", Targets: []string{"10 mail.example.com"}}, []string{"example.com. MX 10 mail.example.com."}, ""},
		{Endpoint{DNSName: "example.com", RecordType: "MX", Targets: []string{"mail.example.com"}}, nil, ReasonInvalidTarget},
		{Endpoint{DNSName: "_sip._tcp.example.com", RecordType: "SRV", Targets: []string{"0 5 5060 sip.example.com"}}, []string{"_sip._tcp.example.com. SRV 0 5 5060 sip.example.com."}, ""},
		{Endpoint{DNSName: "example.com", RecordType: "CAA", Targets: []string{`0 issue "letsencrypt.org"`}}, []string{`example.com. CAA 0 issue "letsencrypt.org"`}, ""},
		{Endpoint{DNSName: "x.example.com", RecordType: "PTR", Targets: []string{"a.example.com"}}, nil, ReasonInvalidTarget},
		{Endpoint{DNSName: "bad name.example.com", RecordType: "A", Targets: []string{"192.0.2.1"}}, nil, ReasonInvalidHostname},
		{Endpoint{DNSName: "a.example.com", RecordType: "A"}, nil, ReasonInvalidTarget},
	} {
		e := &DNSEndpoint{ObjectMeta: metav1.ObjectMeta{Name: "e", Namespace: "default"}, Spec: DNSEndpointSpec{Endpoints: []Endpoint{tc.ep}}}
		claims, problems := EndpointClaims(e)
		got := claimText(claims)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%+v: claims %q, want %q", tc.ep, got, tc.want)
		}
		if r := strings.Join(reasons(problems), ","); r != tc.problem {
			t.Errorf("%+v: problems %v, want %s", tc.ep, problems, tc.problem)
		}
	}
}

func ptrTo[T any](v T) *T { return &v }

// TestBuildCustom: custom resources read from their unstructured form
// (as the dynamic informers hold them) become records; one that does not
// have its fields' types is a problem, not a crash.
func TestBuildCustom(t *testing.T) {
	zoneCM := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "z", Namespace: "kube-system"},
		Data: map[string]string{ZoneOriginKey: "example.com", ZoneTextKey: "@ SOA ns1 h 1 1 1 1 1\n@ NS ns1\nns1 A 192.0.2.1\n"}}
	obj := func(o map[string]any) *unstructured.Unstructured { return &unstructured.Unstructured{Object: o} }
	objs := Objects{ConfigMaps: []*corev1.ConfigMap{zoneCM}, Custom: map[string][]*unstructured.Unstructured{
		"Gateway": {obj(map[string]any{"metadata": map[string]any{"name": "edge", "namespace": "default"},
			"spec":   map[string]any{"listeners": []any{map[string]any{"name": "web", "protocol": "HTTP", "port": int64(80)}}},
			"status": map[string]any{"addresses": []any{map[string]any{"value": "192.0.2.9"}}}})},
		"HTTPRoute": {obj(map[string]any{"metadata": map[string]any{"name": "app", "namespace": "default"},
			"spec": map[string]any{"parentRefs": []any{map[string]any{"name": "edge"}}, "hostnames": []any{"app.example.com"}},
			"status": map[string]any{"parents": []any{map[string]any{"parentRef": map[string]any{"name": "edge"}, "controllerName": "x/y",
				"conditions": []any{map[string]any{"type": "Accepted", "status": "True"}}}}}})},
		"DNSEndpoint": {obj(map[string]any{"metadata": map[string]any{"name": "broken", "namespace": "default"},
			"spec": map[string]any{"endpoints": "not a list"}})},
	}}
	zones, problems := NewBuilder().Build(objs)
	z := zones["example.com."]
	if z == nil {
		t.Fatalf("no zone: %v", problems)
	}
	found := false
	for _, r := range z.Records {
		found = found || r.Source == "HTTPRoute default/app" && r.RR.String() == "app.example.com.\t60\tIN\tA\t192.0.2.9"
	}
	if !found {
		t.Errorf("app.example.com A 192.0.2.9 from HTTPRoute default/app not in %v", z.Records)
	}
	if got := reasons(problems); !slices.Equal(got, []string{ReasonInvalidObject}) {
		t.Errorf("problems %v, want one %s for the broken DNSEndpoint", problems, ReasonInvalidObject)
	}
}

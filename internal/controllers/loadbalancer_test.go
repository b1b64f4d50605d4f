package controllers

import (
	"log/slog"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/cloudless-dev/cloudless/internal/lb"
)

// TestLBRequest: what a Service asks the allocator for, read from both
// annotation prefixes and spec.loadBalancerIP, and what is refused before
// any pool is looked at.
func TestLBRequest(t *testing.T) {
	v4 := []corev1.IPFamily{corev1.IPv4Protocol}
	svc := func(ann map[string]string, lbIP string, fams []corev1.IPFamily) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "s", Annotations: ann},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerIP: lbIP, IPFamilies: fams,
				Ports: []corev1.ServicePort{{Protocol: corev1.ProtocolTCP, Port: 80}}}}
	}
	for _, tc := range []struct {
		name           string
		svc            *corev1.Service
		wantWant       []string
		wantPool       string
		wantShare      string
		wantDeprecated []string
		wantRefusal    string // substring of the refusal's message; reason is always InvalidRequest
	}{
		{name: "nothing asked", svc: svc(nil, "", v4)},
		{name: "current prefix", svc: svc(map[string]string{"metallb.io/loadBalancerIPs": "192.0.2.10", "metallb.io/address-pool": "p", "metallb.io/allow-shared-ip": "k"}, "", v4),
			wantWant: []string{"192.0.2.10"}, wantPool: "p", wantShare: "k"},
		{name: "old prefix, deprecated", svc: svc(map[string]string{"metallb.universe.tf/loadBalancerIPs": "192.0.2.11", "metallb.universe.tf/address-pool": "q"}, "", v4),
			wantWant: []string{"192.0.2.11"}, wantPool: "q", wantDeprecated: []string{lb.AddressPool, lb.LoadBalancerIPs}},
		{name: "spec.loadBalancerIP", svc: svc(nil, "192.0.2.12", v4), wantWant: []string{"192.0.2.12"}},
		{name: "annotation wins over spec.loadBalancerIP", svc: svc(map[string]string{"metallb.io/loadBalancerIPs": "192.0.2.13"}, "192.0.2.12", v4), wantWant: []string{"192.0.2.13"}},
		{name: "two addresses", svc: svc(map[string]string{"metallb.io/loadBalancerIPs": "192.0.2.14, 2001:db8::14"}, "", []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}), wantWant: []string{"192.0.2.14", "2001:db8::14"}},
		{name: "not an address", svc: svc(map[string]string{"metallb.io/loadBalancerIPs": "web.example"}, "", v4), wantRefusal: `"web.example"`},
		{name: "IPv6 address on an IPv4 Service", svc: svc(map[string]string{"metallb.io/loadBalancerIPs": "2001:db8::1"}, "", v4), wantRefusal: "spec.ipFamilies"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &lbAllocator{namespaces: corelisters.NewNamespaceLister(cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{}))}
			r, deprecated, refusal := c.request(tc.svc)
			if tc.wantRefusal != "" {
				if refusal == nil || refusal.Reason != lb.ReasonInvalid || !strings.Contains(refusal.Message, tc.wantRefusal) {
					t.Fatalf("refusal = %+v, want %s naming %s", refusal, lb.ReasonInvalid, tc.wantRefusal)
				}
				return
			}
			if refusal != nil {
				t.Fatalf("refused: %+v", refusal)
			}
			var want []string
			for _, ip := range r.Want {
				want = append(want, ip.String())
			}
			if strings.Join(want, ",") != strings.Join(tc.wantWant, ",") || r.Pool != tc.wantPool || r.SharingKey != tc.wantShare {
				t.Errorf("request = want %v pool %q share %q; want %v %q %q", want, r.Pool, r.SharingKey, tc.wantWant, tc.wantPool, tc.wantShare)
			}
			if strings.Join(deprecated, ",") != strings.Join(tc.wantDeprecated, ",") {
				t.Errorf("deprecated = %v, want %v", deprecated, tc.wantDeprecated)
			}
			if len(r.Want) > 0 && len(r.IPv6) != len(r.Want) {
				t.Errorf("families %v for addresses %v", r.IPv6, r.Want)
			}
		})
	}
}

// TestAdvertisementsNamingMissingPools: an advertisement naming a pool
// that does not exist gets one warning per distinct problem, and none
// once the pool exists.
func TestAdvertisementsNamingMissingPools(t *testing.T) {
	obj := func(kind, name string, pools ...string) *unstructured.Unstructured {
		u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": lb.Group + "/v1beta1", "kind": kind,
			"metadata": map[string]any{"namespace": lb.Namespace, "name": name}}}
		if pools != nil {
			var ps []any
			for _, p := range pools {
				ps = append(ps, p)
			}
			unstructured.SetNestedSlice(u.Object, ps, "spec", "ipAddressPools")
		}
		return u
	}
	idx := func(objs ...*unstructured.Unstructured) (cache.Indexer, cache.GenericLister) {
		i := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
		for _, o := range objs {
			i.Add(o)
		}
		return i, cache.NewGenericLister(i, lb.GVR("IPAddressPool").GroupResource())
	}
	poolIdx, pools := idx(obj("IPAddressPool", "lan"))
	_, l2 := idx(obj("L2Advertisement", "ok", "lan"), obj("L2Advertisement", "typo", "lna"), obj("L2Advertisement", "all"))
	_, bgp := idx(obj("BGPAdvertisement", "two", "lan", "wan"))
	rec := record.NewFakeRecorder(10)
	c := &lbAllocator{pools: pools, ads: []cache.GenericLister{l2, bgp}, events: rec, adErrors: map[string]string{}}
	c.queue = newQueue("test", slog.Default(), nil)
	events := func() []string {
		var out []string
		for {
			select {
			case e := <-rec.Events:
				out = append(out, e)
			default:
				return out
			}
		}
	}
	c.checkAdvertisements()
	got := events()
	if len(got) != 2 || !strings.Contains(strings.Join(got, "\n"), "L2Advertisement typo names IPAddressPool lna") || !strings.Contains(strings.Join(got, "\n"), "BGPAdvertisement two names IPAddressPool wan") {
		t.Fatalf("events %q, want one %s each for typo (lna) and two (wan)", got, ReasonUnknownPool)
	}
	c.checkAdvertisements()
	if got := events(); len(got) != 0 {
		t.Errorf("the same problems reported again: %q", got)
	}
	poolIdx.Add(obj("IPAddressPool", "wan"))
	poolIdx.Add(obj("IPAddressPool", "lna"))
	c.checkAdvertisements()
	if got := events(); len(got) != 0 || len(c.adErrors) != 0 {
		t.Errorf("after the pools exist: events %q, problems kept %v", got, c.adErrors)
	}
}

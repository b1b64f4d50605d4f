package controllers

import (
	"context"
	"log/slog"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic/dynamicinformer"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/cloudless-dev/cloudless/internal/dns"
	"github.com/cloudless-dev/cloudless/internal/dns/zone"
)

// TestDNSSerials: the writer records a serial for new content, a newer
// one for changed content, none for unchanged content; a server serves a
// zone only under the serial recorded for the content it built, and
// keeps the version it served while its build is ahead of the record.
func TestDNSSerials(t *testing.T) {
	ctx := context.Background()
	zoneCM := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "z", Namespace: metav1.NamespaceSystem, Labels: map[string]string{dns.ZoneLabel: "true"}},
		Data: map[string]string{dns.ZoneOriginKey: "example.test", dns.ZoneTextKey: "@ SOA ns1 h 100 1 1 1 1\n@ NS ns1\nns1 A 192.0.2.1\n"}}
	cs := fake.NewClientset(zoneCM)
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		dns.CRDResource: "CustomResourceDefinitionList", dns.EndpointGVR: "DNSEndpointList"})
	env := func() (Env, factories) {
		f := informers.NewSharedInformerFactory(cs, 0)
		df := dynamicinformer.NewDynamicSharedInformerFactory(dyn, 0)
		return Env{Client: cs, Informers: f, Dynamic: dyn, DynamicInformers: df, Log: slog.New(slog.DiscardHandler)}, factories{f, df}
	}
	// A fresh factory per step stands in for informers catching up.
	write := func() dns.Record {
		t.Helper()
		e, f := env()
		c, err := NewDNSSerials(e)
		if err != nil {
			t.Fatal(err)
		}
		f.Start(ctx.Done())
		f.WaitForCacheSync(ctx.Done())
		if err := c.(*dnsSerials).reconcile(ctx, dnsKey); err != nil {
			t.Fatal(err)
		}
		cm, err := cs.CoreV1().ConfigMaps(metav1.NamespaceSystem).Get(ctx, dns.SerialsConfigMap, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return dns.Recorded(cm)["example.test."]
	}
	srv := dns.NewServer(dns.Config{}, slog.New(slog.DiscardHandler))
	serve := func() {
		t.Helper()
		e, f := env()
		c, err := NewDNSServe(srv, dns.Replica{Name: "s1", Addr: "192.0.2.53:53"})(e)
		if err != nil {
			t.Fatal(err)
		}
		f.Start(ctx.Done())
		f.WaitForCacheSync(ctx.Done())
		if err := c.(*dnsServe).reconcile(ctx, dnsKey); err != nil {
			t.Fatal(err)
		}
	}

	serve()
	if n := len(srv.Zones()); n != 0 {
		t.Fatalf("a zone served before any serial was recorded: %v", srv.Zones())
	}
	// The server listed itself for dns check and doctor.
	reg, err := cs.CoreV1().ConfigMaps(metav1.NamespaceSystem).Get(ctx, dns.ReplicasConfigMap, metav1.GetOptions{})
	if err != nil || len(dns.Replicas(reg)) != 1 || dns.Replicas(reg)[0] != (dns.Replica{Name: "s1", Addr: "192.0.2.53:53"}) {
		t.Errorf("replicas ConfigMap: %v %v, want s1 at 192.0.2.53:53", reg, err)
	}
	r1 := write()
	if r1.Serial != 100 {
		t.Errorf("first serial %d, want the zone text's 100", r1.Serial)
	}
	if r := write(); r != r1 {
		t.Errorf("unchanged content got a new record %v, was %v", r, r1)
	}
	serve()
	if sv := srv.Zones()["example.test."]; sv.Serial != r1.Serial || sv.Zone.Hash != r1.Hash {
		t.Fatalf("served %d %s, want the recorded %v", sv.Serial, sv.Zone.Hash, r1)
	}

	// The content changes: until the writer records it, the server keeps
	// serving the recorded version.
	zoneCM.Data[dns.ZoneTextKey] += "www A 192.0.2.2\n"
	if _, err := cs.CoreV1().ConfigMaps(metav1.NamespaceSystem).Update(ctx, zoneCM, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	serve()
	if sv := srv.Zones()["example.test."]; sv.Serial != r1.Serial || sv.Zone.Hash != r1.Hash {
		t.Errorf("served %d %s before the writer recorded the change, want the old %v", sv.Serial, sv.Zone.Hash, r1)
	}
	r2 := write()
	if !zone.Newer(r2.Serial, r1.Serial) || r2.Hash == r1.Hash {
		t.Errorf("after a change: %v, was %v: want a newer serial and another hash", r2, r1)
	}
	serve()
	if sv := srv.Zones()["example.test."]; sv.Serial != r2.Serial {
		t.Errorf("served serial %d, want %d", sv.Serial, r2.Serial)
	}

	// Once a DNSEndpoint CRD is established, its objects join the zone
	// (TestAuthoritativeDNS installs one into a running server).
	crd := dns.EndpointCRD()
	crd.Status.Conditions = []apiextensionsv1.CustomResourceDefinitionCondition{{Type: apiextensionsv1.Established, Status: apiextensionsv1.ConditionTrue}}
	ep := &dns.DNSEndpoint{TypeMeta: metav1.TypeMeta{APIVersion: dns.EndpointGVR.GroupVersion().String(), Kind: "DNSEndpoint"},
		ObjectMeta: metav1.ObjectMeta{Name: "e", Namespace: "default"},
		Spec: dns.DNSEndpointSpec{Endpoints: []dns.Endpoint{{DNSName: "api.example.test", RecordType: "A", Targets: []string{"192.0.2.9"}},
			{DNSName: "api.example.test", RecordType: "TXT", Targets: []string{"hello"}}}}}
	for gvr, obj := range map[schema.GroupVersionResource]any{dns.CRDResource: crd, dns.EndpointGVR: ep} {
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
		if err != nil {
			t.Fatal(err)
		}
		if gvr == dns.CRDResource {
			u["apiVersion"], u["kind"] = "apiextensions.k8s.io/v1", "CustomResourceDefinition"
		}
		obj := &unstructured.Unstructured{Object: u}
		if _, err := dyn.Resource(gvr).Namespace(obj.GetNamespace()).Create(ctx, obj, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	r3 := write()
	if !zone.Newer(r3.Serial, r2.Serial) {
		t.Errorf("after a DNSEndpoint: %v, was %v: want a newer serial", r3, r2)
	}
	serve()
	var got []string
	for _, r := range srv.Zones()["example.test."].Zone.Records {
		if r.Source == "DNSEndpoint default/e" {
			got = append(got, r.RR.String())
		}
	}
	if len(got) != 2 {
		t.Errorf("records of the DNSEndpoint: %q, want its A and TXT", got)
	}
}

// factories starts and syncs a test's typed and dynamic informers.
type factories struct {
	f  informers.SharedInformerFactory
	df dynamicinformer.DynamicSharedInformerFactory
}

func (fs factories) Start(stop <-chan struct{}) { fs.f.Start(stop); fs.df.Start(stop) }
func (fs factories) WaitForCacheSync(stop <-chan struct{}) {
	fs.f.WaitForCacheSync(stop)
	fs.df.WaitForCacheSync(stop)
}

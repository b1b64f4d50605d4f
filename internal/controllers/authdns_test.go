package controllers

import (
	"context"
	"log/slog"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
	cs := fake.NewSimpleClientset(zoneCM)
	env := func() (Env, informers.SharedInformerFactory) {
		f := informers.NewSharedInformerFactory(cs, 0)
		return Env{Client: cs, Informers: f, Log: slog.New(slog.DiscardHandler)}, f
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
		c, err := NewDNSServe(srv)(e)
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
}

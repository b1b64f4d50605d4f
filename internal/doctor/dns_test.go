package doctor

import (
	"context"
	"log/slog"
	"net"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	authdns "github.com/cloudless-dev/cloudless/internal/dns"
	"github.com/cloudless-dev/cloudless/internal/dns/zone"
)

// TestDNSChecks: of three listed servers, one answers under the
// recorded serial (nothing said), one under an older one (CL-DNS-002),
// one not at all (CL-DNS-001).
func TestDNSChecks(t *testing.T) {
	text := "@ SOA ns1 h 1 1 1 1 1\n@ NS ns1\nns1 A 192.0.2.1\n"
	recs, err := zone.Parse("example.test", text, "test")
	if err != nil {
		t.Fatal(err)
	}
	zones, _ := zone.Build(map[string][]zone.Record{"example.test.": recs}, nil)
	z := zones["example.test."]
	serve := func(serial uint32) string {
		t.Helper()
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		s := authdns.NewServer(authdns.Config{Listen: addr}, slog.New(slog.DiscardHandler))
		s.Set(map[string]authdns.Served{"example.test.": {Zone: z, Serial: serial}})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); s.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
		for deadline := time.Now().Add(10 * time.Second); ; {
			if c, err := net.Dial("tcp", addr); err == nil {
				c.Close()
				return addr
			}
			if time.Now().After(deadline) {
				t.Fatalf("no DNS server on %s", addr)
			}
			time.Sleep(10 * time.Millisecond) // polling for the listener
		}
	}
	current, behind := serve(7), serve(6)
	down := "127.0.0.1:1" // nothing answers there
	kube := metav1.ObjectMeta{Namespace: metav1.NamespaceSystem}
	cm := func(name string, labels, data map[string]string) *corev1.ConfigMap {
		m := kube
		m.Name, m.Labels = name, labels
		return &corev1.ConfigMap{ObjectMeta: m, Data: data}
	}
	cs := fake.NewClientset(
		cm("example-test", map[string]string{authdns.ZoneLabel: "true"}, map[string]string{authdns.ZoneOriginKey: "example.test", authdns.ZoneTextKey: text}),
		cm(authdns.SerialsConfigMap, map[string]string{authdns.ZoneLabel: "serials"}, map[string]string{"example.test": "7 " + z.Hash}),
		cm(authdns.ReplicasConfigMap, nil, map[string]string{"a": current, "b": behind, "c": down}),
	)
	r := &reporter{}
	dnsChecks(context.Background(), cs, time.Second, r)
	var got []string
	for _, f := range r.findings {
		got = append(got, f.ID+" "+f.Object)
	}
	want := []string{"CL-DNS-002 DNS server b (" + behind + ")", "CL-DNS-001 DNS server c (" + down + ")"}
	if !slices.Equal(got, want) {
		t.Errorf("findings %q, want %q", got, want)
	}
}

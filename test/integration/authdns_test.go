package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/cloudless-dev/cloudless/internal/controlplane"
	"github.com/cloudless-dev/cloudless/internal/dns"
	"github.com/cloudless-dev/cloudless/internal/dns/zone"
	"github.com/cloudless-dev/cloudless/internal/lb"
	"k8s.io/client-go/dynamic"
)

const testZone = `$TTL 300
@     SOA  ns1 hostmaster 1 3600 600 604800 60
@     NS   ns1
@     NS   ns2
ns1   A    192.0.2.53
ns2   A    192.0.2.54
www   CNAME web
`

// dig runs Debian's dig against the server and returns its short answer
// lines, or its status for a failure.
func dig(t *testing.T, addr string, args ...string) (status string, answer []string) {
	t.Helper()
	host, port, _ := strings.Cut(addr, ":")
	out, err := exec.Command("dig", append([]string{"@" + host, "-p", port, "+tries=1", "+time=2", "+norecurse"}, args...)...).CombinedOutput()
	if err != nil {
		return "error: " + strings.TrimSpace(string(out)), nil
	}
	for _, l := range strings.Split(string(out), "\n") {
		if i := strings.Index(l, "status: "); i >= 0 && status == "" {
			status = strings.TrimSuffix(strings.Fields(l[i+len("status: "):])[0], ",")
		}
		if l != "" && !strings.HasPrefix(l, ";") {
			answer = append(answer, strings.Join(strings.Fields(l), " "))
		}
	}
	return status, answer
}

func soaSerial(t *testing.T, addr, zoneName string) uint32 {
	t.Helper()
	_, ans := dig(t, addr, zoneName, "SOA")
	for _, l := range ans {
		f := strings.Fields(l)
		if len(f) >= 7 && f[3] == "SOA" {
			n, _ := strconv.ParseUint(f[6], 10, 32)
			return uint32(n)
		}
	}
	return 0
}

// TestAuthoritativeDNS: zones from a ConfigMap, records from annotated
// LoadBalancer Services, served to dig: serials that only grow, AXFR
// with the apex NS, REFUSED outside the zones, conflicts and bad input
// as events, and all of it again after the server restarts.
func TestAuthoritativeDNS(t *testing.T) {
	dir, err := os.MkdirTemp("", "cl-dns-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	nsdPort := freePort(t)
	// A zone from the server's configuration too (--dns-zone).
	fileZone := filepath.Join(t.TempDir(), "other.test.zone")
	if err := os.WriteFile(fileZone, []byte(strings.ReplaceAll(testZone, "192.0.2.53", "192.0.2.153")), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"--dns-listen", addr, "--dns-transfer-allow", "127.0.0.1", "--dns-notify", fmt.Sprintf("127.0.0.1:%d", nsdPort),
		"--dns-zone", "other.test=" + fileZone}
	p, cs, rc := startServer(t, dir, port, args...)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server's log, last lines:\n%s", tail(p.stderr.Bytes(), 80))
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "example-test", Namespace: metav1.NamespaceSystem, Labels: map[string]string{dns.ZoneLabel: "true"}},
		Data: map[string]string{dns.ZoneOriginKey: "example.test", dns.ZoneTextKey: testZone}}
	if _, err := cs.CoreV1().ConfigMaps(metav1.NamespaceSystem).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	answers := func(name, typ string, want ...string) {
		t.Helper()
		poll(t, ctx, fmt.Sprintf("%s %s answering %v", name, typ, want), func() (bool, error) {
			status, ans := dig(t, addr, name, typ, "+short")
			return status == "" && strings.Join(ans, ",") == strings.Join(want, ","), nil
		})
	}
	answers("ns1.example.test", "A", "192.0.2.53")
	answers("ns1.other.test", "A", "192.0.2.153")
	s1 := soaSerial(t, addr, "example.test")
	if s1 == 0 {
		t.Fatal("no SOA serial")
	}
	if status, _ := dig(t, addr, "example.org", "A"); status != "REFUSED" {
		t.Errorf("a name outside the zones: %s, want REFUSED (never an open resolver)", status)
	}
	// A real secondary, nsd, with the cluster's TSIG key.
	key := readTSIG(t, dir)
	nsd := startNSD(t, nsdPort, "example.test", addr, key)
	secondaryAnswers := func(name, want string) {
		t.Helper()
		poll(t, ctx, fmt.Sprintf("nsd answering %s %s", name, want), func() (bool, error) {
			status, ans := dig(t, nsd, name, "A", "+short")
			return status == "" && strings.Join(ans, ",") == want, nil
		})
	}
	secondaryAnswers("ns1.example.test", "192.0.2.53")

	kubectl := func(args ...string) {
		t.Helper()
		cmd := exec.Command(cloudlessBin, append([]string{"kubectl"}, args...)...)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+controlplane.AdminKubeconfig(dir))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("kubectl %v: %v\n%s", args, err, out)
		}
	}
	kubectl("apply", "-f", filepath.Join("testdata", "metallb", "l2.yaml"))
	lbService := func(name string, ann map[string]string) {
		t.Helper()
		s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Annotations: ann},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": name}, Ports: []corev1.ServicePort{{Port: 80}}}}
		if _, err := cs.CoreV1().Services("default").Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// Both annotation prefixes: external-dns's since 0.22, and before.
	lbService("web", map[string]string{"external-dns.kubernetes.io/hostname": "web.example.test", "external-dns.kubernetes.io/ttl": "30"})
	webIP := ingressIP(waitAllocated(t, ctx, cs, "web", metav1.ConditionTrue, lb.ReasonAllocated))
	answers("web.example.test", "A", webIP)
	answers("www.example.test", "A", "web.example.test.", webIP)
	lbService("api", map[string]string{"external-dns.alpha.kubernetes.io/hostname": "api.example.test,api2.example.test"})
	apiIP := ingressIP(waitAllocated(t, ctx, cs, "api", metav1.ConditionTrue, lb.ReasonAllocated))
	answers("api2.example.test", "A", apiIP)
	s2 := soaSerial(t, addr, "example.test")
	if !zone.Newer(s2, s1) {
		t.Errorf("serial %d after adding records, was %d: want it newer", s2, s1)
	}
	// The secondary was told (RFC 1996), transferred, and answers: its
	// SOA refresh (an hour) is not what brought the change.
	secondaryAnswers("web.example.test", webIP)

	// AXFR: refused without the key; with it, the whole zone between two
	// SOAs, apex NS included.
	if _, axfr := dig(t, addr, "example.test", "AXFR"); strings.Contains(strings.Join(axfr, "\n"), "IN SOA") {
		t.Errorf("an unsigned AXFR got the zone:\n%s", strings.Join(axfr, "\n"))
	}
	_, axfr := dig(t, addr, "example.test", "AXFR", key.digArg())
	text := strings.Join(axfr, "\n")
	for _, want := range []string{"example.test. 300 IN NS ns1.example.test.", "web.example.test. 30 IN A " + webIP, "api.example.test. 60 IN A " + apiIP} {
		if !strings.Contains(text, want) {
			t.Errorf("AXFR lacks %q:\n%s", want, text)
		}
	}
	if n := strings.Count(text, "IN SOA"); n != 2 {
		t.Errorf("AXFR holds %d SOA records, want 2 (first and last):\n%s", n, text)
	}

	// IXFR from s1: only the difference (condensed), between SOAs.
	_, ixfr := dig(t, addr, "example.test", fmt.Sprintf("IXFR=%d", s1), key.digArg())
	text = strings.Join(ixfr, "\n")
	if !strings.Contains(text, "web.example.test. 30 IN A "+webIP) || strings.Contains(text, "ns1.example.test. 300 IN A") || strings.Count(text, "IN SOA") != 4 {
		t.Errorf("IXFR from %d is not the difference (new SOA, old SOA, none gone, new SOA, added, new SOA):\n%s", s1, text)
	}

	// Bad input: a second Service claiming web's name (the older keeps
	// it), a name outside every zone, an invalid hostname; events say so.
	lbService("web-copy", map[string]string{"external-dns.kubernetes.io/hostname": "web.example.test"})
	lbService("stray", map[string]string{"external-dns.kubernetes.io/hostname": "stray.example.org,bad_name!.example.test"})
	waitDNSEvent(t, ctx, cs, "default", "web-copy", zone.ReasonConflict)
	waitDNSEvent(t, ctx, cs, "default", "web", zone.ReasonConflict)
	waitDNSEvent(t, ctx, cs, "default", "stray", zone.ReasonOutsideZone)
	waitDNSEvent(t, ctx, cs, "default", "stray", dns.ReasonInvalidHostname)
	answers("web.example.test", "A", webIP)

	// A broken zone edit: an event naming the line, and the last good
	// zone still served.
	cur, err := cs.CoreV1().ConfigMaps(metav1.NamespaceSystem).Get(ctx, cm.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.Data[dns.ZoneTextKey] = testZone + "broken A not-an-address\n"
	if _, err := cs.CoreV1().ConfigMaps(metav1.NamespaceSystem).Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitDNSEvent(t, ctx, cs, metav1.NamespaceSystem, cm.Name, zone.ReasonInvalidZone)
	answers("ns1.example.test", "A", "192.0.2.53")
	// Fixed again (a server that starts while the text is broken has no
	// last good version to serve).
	cur, err = cs.CoreV1().ConfigMaps(metav1.NamespaceSystem).Get(ctx, cm.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.Data[dns.ZoneTextKey] = testZone
	if _, err := cs.CoreV1().ConfigMaps(metav1.NamespaceSystem).Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	// Deleting a Service takes its names away; the serial grows again.
	if err := cs.CoreV1().Services("default").Delete(ctx, "api", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "api2.example.test gone", func() (bool, error) {
		status, _ := dig(t, addr, "api2.example.test", "A")
		return status == "NXDOMAIN", nil
	})
	s3 := soaSerial(t, addr, "example.test")
	if !zone.Newer(s3, s2) {
		t.Errorf("serial %d after a deletion, was %d: want it newer", s3, s2)
	}

	// Ingress, DNSEndpoint and Gateway API sources; then a record nsd
	// only learns through NOTIFY.
	gone := func(name string) {
		t.Helper()
		poll(t, ctx, name+" gone", func() (bool, error) {
			status, _ := dig(t, addr, name, "A")
			return status == "NXDOMAIN", nil
		})
	}
	checkSources(t, ctx, addr, cs, dynamic.NewForConfigOrDie(rc), kubectl, answers, gone)
	lbService("late", map[string]string{"external-dns.kubernetes.io/hostname": "late.example.test"})
	secondaryAnswers("late.example.test", ingressIP(waitAllocated(t, ctx, cs, "late", metav1.ConditionTrue, lb.ReasonAllocated)))

	// `cloudless dns records` names each record's source.
	code, out, stderr := runExit(t, time.Minute, "dns", "records", "example.test", "--data-dir", dir, "-o", "json")
	if code != 0 {
		t.Fatalf("dns records: exit %d: %s", code, stderr)
	}
	var rows []struct{ Name, Type, Data, Source string }
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("dns records -o json: %v\n%s", err, out)
	}
	found := false
	for _, r := range rows {
		found = found || r.Name == "web.example.test." && r.Type == "A" && strings.TrimSpace(r.Data) == webIP && r.Source == "Service default/web"
	}
	if !found {
		t.Errorf("dns records does not list web.example.test A %s from Service default/web:\n%s", webIP, out)
	}
	if code, out, _ := runExit(t, time.Minute, "dns", "check", "example.test", addr); code != 0 {
		t.Errorf("dns check with one replica: exit %d\n%s", code, out)
	}

	// A restart: the same records, and the serial does not go back.
	p.kill()
	p, cs, _ = startServer(t, dir, port, args...)
	answers("web.example.test", "A", webIP)
	if s4 := soaSerial(t, addr, "example.test"); s4 != s3 && !zone.Newer(s4, s3) {
		t.Errorf("serial %d after a restart, was %d: it went back", s4, s3)
	}
}

func waitDNSEvent(t *testing.T, ctx context.Context, cs kubernetes.Interface, ns, name, reason string) {
	t.Helper()
	waitEventFromComponent(t, ctx, cs, ns, name, reason, dns.Component)
}

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/cloudless-dev/cloudless/internal/dns"
	"github.com/cloudless-dev/cloudless/internal/dns/zone"
)

// tsigKey is the cluster's TSIG key as `cloudless dns tsig -o json`
// prints it.
type tsigKey struct{ Name, Algorithm, Secret string }

func (k tsigKey) digArg() string { return "-y" + k.Algorithm + ":" + k.Name + ":" + k.Secret }

func readTSIG(t *testing.T, dir string) tsigKey {
	t.Helper()
	code, out, stderr := runExit(t, time.Minute, "dns", "tsig", "--data-dir", dir, "-o", "json")
	if code != 0 {
		t.Fatalf("dns tsig: exit %d: %s", code, stderr)
	}
	var k tsigKey
	if err := json.Unmarshal([]byte(out), &k); err != nil || k.Secret == "" {
		t.Fatalf("dns tsig -o json: %v\n%s", err, out)
	}
	return k
}

// startNSD runs Debian's nsd on port as a secondary of zoneName,
// transferring from primary and taking NOTIFY from it, both signed with
// key; it returns nsd's address. It stops with the test.
func startNSD(t *testing.T, port int, zoneName, primary string, key tsigKey) string {
	t.Helper()
	if _, err := exec.LookPath("nsd"); err != nil {
		t.Fatal("nsd is missing: apt-get install nsd (.ci/setup installs it)")
	}
	dir := t.TempDir()
	host, pport, _ := strings.Cut(primary, ":")
	conf := fmt.Sprintf(`server:
  ip-address: 127.0.0.1@%d
  do-ip6: no
  username: ""
  chroot: ""
  zonesdir: %q
  database: ""
  zonelistfile: %q
  xfrdfile: %q
  xfrdir: %q
  pidfile: %q
  verbosity: 2
remote-control:
  control-enable: no
key:
  name: %q
  algorithm: %s
  secret: %q
zone:
  name: %q
  zonefile: "secondary.zone"
  request-xfr: %s@%s %s
  allow-notify: %s %s
`, port, dir, filepath.Join(dir, "zone.list"), filepath.Join(dir, "xfrd.state"), dir, filepath.Join(dir, "nsd.pid"),
		key.Name, key.Algorithm, key.Secret, zoneName, host, pport, key.Name, host, key.Name)
	confPath := filepath.Join(dir, "nsd.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	log, err := os.Create(filepath.Join(dir, "nsd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("nsd", "-d", "-c", confPath)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // nsd forks; the group goes with it
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(log.Name())
			t.Logf("nsd's log:\n%s", b)
		}
	})
	return fmt.Sprintf("127.0.0.1:%d", port)
}

// checkSources: an Ingress's hosts, a DNSEndpoint's records and an
// HTTPRoute's hostnames on its Gateway's listener are served, and go
// away with their objects. answers polls dig until name's answer is
// want; gone polls until name is NXDOMAIN.
func checkSources(t *testing.T, ctx context.Context, addr string, cs kubernetes.Interface, dyn dynamic.Interface, kubectl func(...string),
	answers func(name, typ string, want ...string), gone func(name string)) {
	t.Helper()

	// Ingress: rules' hosts, at the status addresses (no ingress
	// controller runs here: the test writes the status one would).
	ing := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Name: "shop", Namespace: "default"},
		Spec: networkingv1.IngressSpec{Rules: []networkingv1.IngressRule{{Host: "shop.example.test"}, {Host: "*.shop.example.test"}}}}
	ing, err := cs.NetworkingV1().Ingresses("default").Create(ctx, ing, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ing.Status.LoadBalancer.Ingress = []networkingv1.IngressLoadBalancerIngress{{IP: "192.0.2.80"}}
	if _, err := cs.NetworkingV1().Ingresses("default").UpdateStatus(ctx, ing, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	answers("shop.example.test", "A", "192.0.2.80")
	answers("cart.shop.example.test", "A", "192.0.2.80")

	// DNSEndpoint, external-dns's CRD as the server installed it: every
	// record type, one name with two types.
	ep := map[string]any{
		"apiVersion": dns.EndpointGVR.GroupVersion().String(), "kind": "DNSEndpoint",
		"metadata": map[string]any{"name": "records", "namespace": "default"},
		"spec": map[string]any{"endpoints": []any{
			map[string]any{"dnsName": "mail.example.test", "recordType": "A", "targets": []any{"192.0.2.25"}, "recordTTL": int64(120)},
			map[string]any{"dnsName": "mail.example.test", "recordType": "TXT", "targets": []any{"v=spf1 a -all"}},
			map[string]any{"dnsName": "v6.example.test", "recordType": "AAAA", "targets": []any{"2001:db8::25"}},
			map[string]any{"dnsName": "example.test", "recordType": "MX", "targets": []any{"10 mail.example.test"}},
			map[string]any{"dnsName": "_sip._tcp.example.test", "recordType": "SRV", "targets": []any{"0 5 5060 mail.example.test"}},
			map[string]any{"dnsName": "alias.example.test", "recordType": "CNAME", "targets": []any{"mail.example.test"}},
			map[string]any{"dnsName": "ca.example.test", "recordType": "CAA", "targets": []any{`0 issue "letsencrypt.org"`}},
		}},
	}
	poll(t, ctx, "a DNSEndpoint created", func() (bool, error) {
		_, err := dyn.Resource(dns.EndpointGVR).Namespace("default").Create(ctx, &unstructured.Unstructured{Object: ep}, metav1.CreateOptions{})
		return err == nil, err // the CRD is established shortly after the server starts
	})
	answers("mail.example.test", "A", "192.0.2.25")
	answers("mail.example.test", "TXT", `"v=spf1 a -all"`)
	answers("v6.example.test", "AAAA", "2001:db8::25")
	answers("_sip._tcp.example.test", "SRV", "0 5 5060 mail.example.test.")
	answers("alias.example.test", "A", "mail.example.test.", "192.0.2.25")
	answers("ca.example.test", "CAA", `0 issue "letsencrypt.org"`)
	// The zone text holds the apex: an MX there is refused with an event,
	// as is a record type not served.
	bad := map[string]any{
		"apiVersion": dns.EndpointGVR.GroupVersion().String(), "kind": "DNSEndpoint",
		"metadata": map[string]any{"name": "bad", "namespace": "default"},
		"spec":     map[string]any{"endpoints": []any{map[string]any{"dnsName": "ptr.example.test", "recordType": "PTR", "targets": []any{"x.example.test"}}}},
	}
	if _, err := dyn.Resource(dns.EndpointGVR).Namespace("default").Create(ctx, &unstructured.Unstructured{Object: bad}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitDNSEvent(t, ctx, cs, "default", "bad", dns.ReasonInvalidTarget)
	waitDNSEvent(t, ctx, cs, "default", "records", zone.ReasonStatic)

	// Gateway API: the CRDs as the project publishes them, a Gateway
	// with a wildcard listener and an address, an HTTPRoute it accepted.
	gwDir := gatewayCRDs(t)
	for _, crd := range []string{"gateways", "httproutes"} {
		kubectl("apply", "--server-side", "-f", filepath.Join(gwDir, "gateway.networking.k8s.io_"+crd+".yaml"))
	}
	gwGVR := schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "gateways"}
	routeGVR := gwGVR.GroupResource().WithVersion("v1")
	routeGVR.Resource = "httproutes"
	now := metav1.Now().UTC().Format(time.RFC3339)
	gw := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
		"metadata": map[string]any{"name": "edge", "namespace": "default"},
		"spec": map[string]any{"gatewayClassName": "test", "listeners": []any{
			map[string]any{"name": "web", "protocol": "HTTP", "port": int64(80), "hostname": "*.gw.example.test"}}},
	}}
	poll(t, ctx, "a Gateway created", func() (bool, error) {
		var err error
		gw, err = dyn.Resource(gwGVR).Namespace("default").Create(ctx, gw, metav1.CreateOptions{})
		return err == nil, err // until the CRD is established
	})
	gw.Object["status"] = map[string]any{"addresses": []any{map[string]any{"type": "IPAddress", "value": "192.0.2.90"}}}
	if _, err := dyn.Resource(gwGVR).Namespace("default").UpdateStatus(ctx, gw, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	route := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
		"metadata": map[string]any{"name": "app", "namespace": "default"},
		"spec": map[string]any{"parentRefs": []any{map[string]any{"name": "edge"}},
			"hostnames": []any{"app.gw.example.test", "elsewhere.example.test"}},
	}}
	poll(t, ctx, "an HTTPRoute created", func() (bool, error) {
		var err error
		route, err = dyn.Resource(routeGVR).Namespace("default").Create(ctx, route, metav1.CreateOptions{})
		return err == nil, err
	})
	route.Object["status"] = map[string]any{"parents": []any{map[string]any{
		"parentRef": map[string]any{"name": "edge"}, "controllerName": "example.net/gateway",
		"conditions": []any{map[string]any{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "", "lastTransitionTime": now}},
	}}}
	if _, err := dyn.Resource(routeGVR).Namespace("default").UpdateStatus(ctx, route, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	answers("app.gw.example.test", "A", "192.0.2.90")
	// A route hostname outside the listener's is not published.
	if status, _ := dig(t, addr, "elsewhere.example.test", "A"); status != "NXDOMAIN" {
		t.Errorf("elsewhere.example.test (not matched by the listener's *.gw.example.test): %s, want NXDOMAIN", status)
	}

	// Deleting each object takes its names away.
	if err := cs.NetworkingV1().Ingresses("default").Delete(ctx, "shop", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := dyn.Resource(dns.EndpointGVR).Namespace("default").Delete(ctx, "records", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := dyn.Resource(routeGVR).Namespace("default").Delete(ctx, "app", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	gone("shop.example.test")
	gone("mail.example.test")
	gone("app.gw.example.test")
}

// gatewayCRDs is the directory of the Gateway API's standard CRDs in
// the module cache (the version go.mod pins).
func gatewayCRDs(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/gateway-api").Output()
	if err != nil {
		t.Fatalf("locate sigs.k8s.io/gateway-api: %v (go mod download fetches it)", err)
	}
	return filepath.Join(strings.TrimSpace(string(out)), "config", "crd", "standard")
}

// createZone declares zoneName with testZone's text.
func createZone(t *testing.T, ctx context.Context, cs kubernetes.Interface, zoneName string) {
	t.Helper()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: strings.ReplaceAll(zoneName, ".", "-"), Namespace: metav1.NamespaceSystem, Labels: map[string]string{dns.ZoneLabel: "true"}},
		Data: map[string]string{dns.ZoneOriginKey: zoneName, dns.ZoneTextKey: testZone}}
	if _, err := cs.CoreV1().ConfigMaps(metav1.NamespaceSystem).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// sameReplicas waits until every replica answers name with want, then
// checks that they agree on zoneName's serial (cloudless dns check) and
// transfer the same zone; it returns the serial.
func sameReplicas(t *testing.T, ctx context.Context, dataDir, zoneName, name, want string, replicas ...string) uint32 {
	t.Helper()
	for _, r := range replicas {
		poll(t, ctx, fmt.Sprintf("%s answering %s %s", r, name, want), func() (bool, error) {
			status, ans := dig(t, r, name, "A", "+short")
			return status == "" && strings.Join(ans, ",") == want, nil
		})
	}
	var serial uint32
	poll(t, ctx, "the replicas agreeing on "+zoneName+"'s serial", func() (bool, error) {
		answers, agree := dns.CheckSerials(zoneName, replicas, 2*time.Second)
		serial = answers[0].Serial
		return agree, fmt.Errorf("%+v", answers)
	})
	if code, out, stderr := runExit(t, time.Minute, append([]string{"dns", "check", zoneName}, replicas...)...); code != 0 {
		t.Errorf("dns check: exit %d\n%s%s", code, out, stderr)
	}
	key := readTSIG(t, dataDir)
	var first string
	for i, r := range replicas {
		_, axfr := dig(t, r, zoneName, "AXFR", key.digArg())
		axfr = slices.DeleteFunc(axfr, func(l string) bool { return strings.Contains(l, " TSIG ") }) // signed per reply
		slices.Sort(axfr)
		text := strings.Join(axfr, "\n")
		if !strings.Contains(text, name) {
			t.Errorf("AXFR from %s lacks %s:\n%s", r, name, text)
		}
		if i == 0 {
			first = text
		} else if text != first {
			t.Errorf("replicas transfer different zones:\n%s:\n%s\n%s:\n%s", replicas[0], first, r, text)
		}
	}
	return serial
}

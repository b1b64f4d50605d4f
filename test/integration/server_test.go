package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/cloudless-dev/cloudless/internal/controllers"
	"github.com/cloudless-dev/cloudless/internal/controlplane"
	"github.com/cloudless-dev/cloudless/internal/datadir"
	authdns "github.com/cloudless-dev/cloudless/internal/dns"
	"github.com/cloudless-dev/cloudless/internal/dns/zone"
	"github.com/cloudless-dev/cloudless/internal/lb"
)

// startServer runs `cloudless server` without its node agent (see
// startServerWithAgent) and returns a client-go clientset for its admin
// kubeconfig once /readyz answers.
func startServer(t *testing.T, dir string, port int, extra ...string) (*proc, *kubernetes.Clientset, *rest.Config) {
	t.Helper()
	return startServerArgs(t, dir, port, append([]string{"--disable-agent"}, extra...)...)
}

func startServerArgs(t *testing.T, dir string, port int, extra ...string) (*proc, *kubernetes.Clientset, *rest.Config) {
	t.Helper()
	args := append([]string{"server", "--data-dir", dir, "--bind-address", "127.0.0.1", "--https-listen-port", fmt.Sprint(port)}, extra...)
	p := start(t, args...)
	kc := datadir.Of(dir).AdminKubeconfig()
	deadline := time.Now().Add(4 * time.Minute)
	for {
		if p.exited() {
			t.Fatalf("server exited:\n%s", tail(p.stderr.Bytes(), 60))
		}
		if cfg, err := restConfig(kc); err == nil {
			cs := kubernetes.NewForConfigOrDie(cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			body, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
			cancel()
			if err == nil && string(body) == "ok" {
				return p, cs, cfg
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not ready after 4 minutes:\n%s", tail(p.stderr.Bytes(), 60))
		}
		time.Sleep(250 * time.Millisecond) // polling for readiness
	}
}

// TestServer boots the control plane from the real binary, drives it with
// client-go, restarts it, and watches a certificate renew while running.
func TestServer(t *testing.T) {
	dir, err := os.MkdirTemp("", "cl-server-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	port := freePort(t)
	// Short-lived certificates: renewed a third of the way before expiry.
	p, cs, cfg := startServer(t, dir, port, "--cert-validity", "90s")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "demo"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	replicas := int32(2)
	labels := map[string]string{"app": "web"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "demo"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "example.invalid/web:1"}}},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments("demo").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The controller-manager makes a ReplicaSet and Pods; with no node
	// they stay Pending.
	poll(t, ctx, "two Pending pods of the Deployment", func() (bool, error) {
		rs, err := cs.AppsV1().ReplicaSets("demo").List(ctx, metav1.ListOptions{})
		if err != nil || len(rs.Items) != 1 {
			return false, err
		}
		pods, err := cs.CoreV1().Pods("demo").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil || len(pods.Items) != 2 {
			return false, err
		}
		for _, p := range pods.Items {
			if p.Status.Phase != corev1.PodPending {
				return false, fmt.Errorf("pod %s is %s, want Pending", p.Name, p.Status.Phase)
			}
		}
		return true, nil
	})

	// RBAC: a user the CA knows but no role grants is denied.
	alice := userConfig(t, cfg, dir, "alice")
	_, err = kubernetes.NewForConfigOrDie(alice).CoreV1().Pods("demo").List(ctx, metav1.ListOptions{})
	if !apierrors.IsForbidden(err) {
		t.Errorf("unprivileged user listing pods: err = %v, want Forbidden", err)
	}
	// Anonymous requests reach health endpoints only.
	anon := rest.AnonymousClientConfig(cfg)
	if _, err := kubernetes.NewForConfigOrDie(anon).CoreV1().Namespaces().List(ctx, metav1.ListOptions{}); !apierrors.IsUnauthorized(err) && !apierrors.IsForbidden(err) {
		t.Errorf("anonymous list of namespaces: err = %v, want Unauthorized", err)
	}
	checkLintScopes(t, ctx, cs)
	editOwned(t, ctx, cs)

	// The serving certificate is renewed while running and served without
	// a restart.
	first := servedSerial(t, port)
	poll(t, ctx, "a renewed serving certificate", func() (bool, error) {
		return servedSerial(t, port).Cmp(first) != 0, nil
	})
	if p.exited() {
		t.Fatal("server restarted to renew certificates")
	}

	// Restart: everything is still there.
	p.kill()
	_, cs, _ = startServer(t, dir, port, "--cert-validity", "90s")
	if _, err := cs.AppsV1().Deployments("demo").Get(ctx, "web", metav1.GetOptions{}); err != nil {
		t.Fatalf("Deployment after restart: %v", err)
	}
	checkOwned(t, ctx, cs)
}

func poll(t *testing.T, ctx context.Context, what string, cond func() (bool, error)) {
	t.Helper()
	var last error
	for {
		ok, err := cond()
		if ok {
			return
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v (last error: %v)", what, ctx.Err(), last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func servedSerial(t *testing.T, port int) *big.Int {
	t.Helper()
	conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("dial apiserver: %v", err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber
}

// userConfig returns cfg authenticated as user, with a certificate signed
// by the cluster CA from the data dir.
func userConfig(t *testing.T, cfg *rest.Config, dir, user string) *rest.Config {
	t.Helper()
	caPEM, err := os.ReadFile(datadir.Of(dir).CA())
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(datadir.Of(dir).ServerTLS(), "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	cb, _ := pem.Decode(caPEM)
	ca, _ := x509.ParseCertificate(cb.Bytes)
	kb, _ := pem.Decode(keyPEM)
	caKey, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: user},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	out := rest.AnonymousClientConfig(cfg)
	out.TLSClientConfig.CertData = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	out.TLSClientConfig.KeyData = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	return out
}

// eventHosts waits for component's events on Service default/name and
// lists the servers (event source hosts) they came from.
func eventHosts(t *testing.T, ctx context.Context, cs kubernetes.Interface, name, component string) []string {
	t.Helper()
	var hosts []string
	poll(t, ctx, component+"'s events on Service "+name, func() (bool, error) {
		evs, err := cs.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
		if err != nil {
			return false, err
		}
		hosts = nil
		for _, e := range evs.Items {
			if e.Source.Component == component && !slices.Contains(hosts, e.Source.Host) {
				hosts = append(hosts, e.Source.Host)
			}
		}
		return len(hosts) > 0, nil
	})
	slices.Sort(hosts)
	return hosts
}

// haToken is strong enough for a new cluster (controlplane.CheckToken).
const haToken = "k3v9q2m7x4c8w1z6p5t0r2n8b4"

// TestTwoServersHA runs two servers on one PostgreSQL database: both serve
// the API with one CA, and either can stop without the other losing
// anything.
func TestTwoServersHA(t *testing.T) {
	dsn, err := pg.NewDatabase(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for i := 0; i < 2; i++ {
		d, err := os.MkdirTemp("", "cl-ha-server-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		dirs = append(dirs, d)
	}
	// Two servers on one machine: the components' own health ports would
	// collide, so they are turned off (on separate machines they differ),
	// and so would the metrics APIs' (127.0.0.1:10261).
	// A new cluster refuses a weak token, suggesting a strong one.
	weak := filepath.Join(dirs[0], "weak")
	out, err := exec.Command(cloudlessBin, "server", "--data-dir", weak, "--bind-address", "127.0.0.1", "--https-listen-port", fmt.Sprint(freePort(t)),
		"--disable-agent", "--datastore-endpoint", dsn, "--token", "ha-test-token").CombinedOutput()
	os.RemoveAll(weak)
	if err == nil || !strings.Contains(string(out), "--token is too weak") || !strings.Contains(string(out), "e.g. --token ") {
		t.Fatalf("a new cluster with token ha-test-token: err = %v, output:\n%s\nwant a refusal naming a strong token", err, tail(out, 5))
	}
	common := []string{"--datastore-endpoint", dsn, "--token", haToken,
		"--kube-controller-manager-arg=--secure-port=0", "--kube-scheduler-arg=--secure-port=0", "--disable", controlplane.ComponentMetrics}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	// Each server answers DNS on its own port (on separate machines,
	// both on :53).
	dnsA, dnsB := fmt.Sprintf("127.0.0.1:%d", freePort(t)), fmt.Sprintf("127.0.0.1:%d", freePort(t))
	dnsArgs := func(addr string) []string {
		return []string{"--dns-listen", addr, "--dns-transfer-allow", "127.0.0.1"}
	}
	pa, a, _ := startServer(t, dirs[0], freePort(t), slices.Concat([]string{"--node-name", "ha-a"}, dnsArgs(dnsA), common)...)
	// A alone holds the allocator's Lease (named after the server), so
	// killing A below is a real takeover.
	holder := func(lease string) string {
		l, err := a.CoordinationV1().Leases("kube-system").Get(ctx, lease, metav1.GetOptions{})
		if err != nil {
			return ""
		}
		return ptr.Deref(l.Spec.HolderIdentity, "")
	}
	poll(t, ctx, "server A holds the allocator's Lease", func() (bool, error) {
		return strings.HasPrefix(holder(controlplane.LBLease), "ha-a_"), nil
	})
	portB := freePort(t)
	poll(t, ctx, "server A holds the DNS serials' Lease", func() (bool, error) {
		return strings.HasPrefix(holder(authdns.Lease), "ha-a_"), nil
	})
	_, b, cfgB := startServer(t, dirs[1], portB, slices.Concat([]string{"--node-name", "ha-b"}, dnsArgs(dnsB), common)...)

	caA, _ := os.ReadFile(datadir.Of(dirs[0]).CA())
	caB, _ := os.ReadFile(datadir.Of(dirs[1]).CA())
	if string(caA) != string(caB) || len(caA) == 0 {
		t.Fatal("the two servers have different cluster CAs")
	}
	if _, err := a.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "from-a"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.CoreV1().Namespaces().Get(ctx, "from-a", metav1.GetOptions{}); err != nil {
		t.Fatalf("server B does not see server A's namespace: %v", err)
	}
	// One server at a time runs the cluster controllers, under their Lease.
	poll(t, ctx, "a server holds the controllers' Lease", func() (bool, error) {
		l, err := b.CoordinationV1().Leases("kube-system").Get(ctx, controlplane.NodesLease, metav1.GetOptions{})
		return err == nil && ptr.Deref(l.Spec.HolderIdentity, "") != "", nil
	})
	// One allocator too: a LoadBalancer Service gets an address before
	// the takeover, and one made after gets another (the new leader read
	// the first back), never the same.
	pool := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": controllers.PoolGVR.GroupVersion().String(), "kind": "IPAddressPool",
		"metadata": map[string]any{"name": "ha", "namespace": lb.Namespace},
		"spec":     map[string]any{"addresses": []any{"192.168.50.10-192.168.50.11"}},
	}}
	if _, err := dynamic.NewForConfigOrDie(cfgB).Resource(controllers.PoolGVR).Namespace(lb.Namespace).Create(ctx, pool, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	createZone(t, ctx, b, "example.test")
	lbService := func(name string) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default",
			Annotations: map[string]string{"external-dns.kubernetes.io/hostname": name + ".example.test"}},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": name}, Ports: []corev1.ServicePort{{Port: 80}}}}
	}
	if _, err := b.CoreV1().Services("default").Create(ctx, lbService("before"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	before := waitAllocated(t, ctx, b, "before", metav1.ConditionTrue, lb.ReasonAllocated)
	// Exactly one allocator acted: every allocation event is A's.
	if h := holder(controlplane.LBLease); !strings.HasPrefix(h, "ha-a_") {
		t.Errorf("allocator's Lease held by %q, want server A (ha-a_…)", h)
	}
	if hosts := eventHosts(t, ctx, b, "before", controllers.LBComponent); !slices.Equal(hosts, []string{"ha-a"}) {
		t.Errorf("allocation events for Service before come from %v, want only ha-a", hosts)
	}
	// A manifest stored through server A is applied (by whichever server
	// holds the manifests Lease) and seen through B.
	mf := filepath.Join(dirs[0], "ha.yaml")
	if err := os.WriteFile(mf, []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: from-manifest, namespace: default}\ndata: {k: v}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(cloudlessBin, "manifests", "put", "--data-dir", dirs[0], mf).CombinedOutput(); err != nil {
		t.Fatalf("manifests put through server A: %v\n%s", err, out)
	}
	poll(t, ctx, "the manifest's ConfigMap through server B", func() (bool, error) {
		_, err := b.CoreV1().ConfigMaps("default").Get(ctx, "from-manifest", metav1.GetOptions{})
		return err == nil, nil
	})
	if l, err := b.CoordinationV1().Leases("kube-system").Get(ctx, controlplane.ManifestsLease, metav1.GetOptions{}); err != nil || ptr.Deref(l.Spec.HolderIdentity, "") == "" {
		t.Errorf("manifests Lease: %v, %v; want one holder", l, err)
	}
	// Both replicas answer alike: one serial, the same zone.
	serial := sameReplicas(t, ctx, dirs[0], "example.test", "before.example.test", ingressIP(before), dnsA, dnsB)
	pa.kill()
	killed := time.Now()
	// Queries keep working on B at once.
	if status, ans := dig(t, dnsB, "before.example.test", "A", "+short"); status != "" || strings.Join(ans, ",") != ingressIP(before) {
		t.Errorf("server B right after A stopped: %s %v, want %s", status, ans, ingressIP(before))
	}
	if _, err := b.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "from-b"}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("server B after A stopped: %v", err)
	}
	poll(t, ctx, "server B renews the allocator's Lease after A stopped", func() (bool, error) {
		l, err := b.CoordinationV1().Leases("kube-system").Get(ctx, controlplane.LBLease, metav1.GetOptions{})
		return err == nil && l.Spec.RenewTime != nil && l.Spec.RenewTime.After(killed), nil
	})
	if _, err := b.CoreV1().Services("default").Create(ctx, lbService("after"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if ip := ingressIP(waitAllocated(t, ctx, b, "after", metav1.ConditionTrue, lb.ReasonAllocated)); ip == ingressIP(before) || ip == "" {
		t.Errorf("after the takeover a new Service got %q, the one before has %q: want two addresses", ip, ingressIP(before))
	}
	if hosts := eventHosts(t, ctx, b, "after", controllers.LBComponent); !slices.Equal(hosts, []string{"ha-b"}) {
		t.Errorf("allocation events for Service after come from %v, want only ha-b", hosts)
	}
	// The DNS writer moved to B with its Lease, and the serial went on
	// growing from A's.
	afterIP := ingressIP(waitAllocated(t, ctx, b, "after", metav1.ConditionTrue, lb.ReasonAllocated))
	poll(t, ctx, "server B answering after.example.test", func() (bool, error) {
		status, ans := dig(t, dnsB, "after.example.test", "A", "+short")
		return status == "" && strings.Join(ans, ",") == afterIP, nil
	})
	if l, err := b.CoordinationV1().Leases("kube-system").Get(ctx, authdns.Lease, metav1.GetOptions{}); err != nil || !strings.HasPrefix(ptr.Deref(l.Spec.HolderIdentity, ""), "ha-b_") {
		t.Errorf("DNS serials' Lease after A stopped: %v %v, want it held by server B", l, err)
	}
	if s := soaSerial(t, dnsB, "example.test"); !zone.Newer(s, serial) {
		t.Errorf("serial %d from B after the leader change, was %d from both: want it newer", s, serial)
	}
	// dns check, with the servers each listed itself as, names the one
	// that stopped.
	reg, err := b.CoreV1().ConfigMaps("kube-system").Get(ctx, authdns.ReplicasConfigMap, metav1.GetOptions{})
	if want := []authdns.Replica{{Name: "ha-a", Addr: dnsA}, {Name: "ha-b", Addr: dnsB}}; err != nil || !slices.Equal(authdns.Replicas(reg), want) {
		t.Errorf("servers listed as answering DNS: %v %v, want %v", reg, err, want)
	}
	if code, out, _ := runExit(t, time.Minute, "dns", "check", "example.test", "--data-dir", dirs[1]); code == 0 || !strings.Contains(out, dnsA) {
		t.Errorf("dns check with server A stopped: exit %d\n%s\nwant a failure naming %s", code, out, dnsA)
	}
	// B holds the Lease once A is gone (A's term runs out if it held it),
	// and its controllers act: the cluster DNS Service, deleted, returns.
	poll(t, ctx, "server B renews the controllers' Lease after A stopped", func() (bool, error) {
		l, err := b.CoordinationV1().Leases("kube-system").Get(ctx, controlplane.NodesLease, metav1.GetOptions{})
		return err == nil && l.Spec.RenewTime != nil && l.Spec.RenewTime.After(killed), nil
	})
	if err := b.CoreV1().Services("kube-system").Delete(ctx, controllers.DNSService, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete the cluster DNS Service: %v", err)
	}
	poll(t, ctx, "server B's controllers recreate the cluster DNS Service", func() (bool, error) {
		svc, err := b.CoreV1().Services("kube-system").Get(ctx, controllers.DNSService, metav1.GetOptions{})
		return err == nil && svc.Spec.ClusterIP != "", nil
	})
	// A's admin credentials work on B: one CA.
	cfgA, err := restConfig(datadir.Of(dirs[0]).AdminKubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	cfgA.Host = cfgB.Host
	if _, err := kubernetes.NewForConfigOrDie(cfgA).CoreV1().Namespaces().Get(ctx, "from-b", metav1.GetOptions{}); err != nil {
		t.Fatalf("server A's admin credentials on server B: %v", err)
	}
	// A wrong token is refused with a clear message.
	d3, _ := os.MkdirTemp("", "cl-ha-server-")
	defer os.RemoveAll(d3)
	out, err = exec.Command(cloudlessBin, "server", "--data-dir", d3, "--bind-address", "127.0.0.1", "--https-listen-port", fmt.Sprint(freePort(t)),
		"--datastore-endpoint", dsn, "--token", "wrong").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--token differs") {
		t.Errorf("server with a wrong token: err = %v, output:\n%s\nwant a refusal naming --token", err, tail(out, 5))
	}
}

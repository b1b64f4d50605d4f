package integration

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/cloudless-dev/cloudless/internal/agent"
	"github.com/cloudless-dev/cloudless/internal/controllers"
	"github.com/cloudless-dev/cloudless/internal/controlplane"
	"github.com/cloudless-dev/cloudless/internal/datadir"
	"github.com/cloudless-dev/cloudless/internal/network"
	"github.com/cloudless-dev/cloudless/internal/testutil/nodens"
)

// netCluster is two nodes, each a network and mount namespace: node-a
// runs the server with its agent, node-b an agent that joined. The host
// routes between them (so VXLAN crosses a routed network) and to the
// "outside" namespaces a test adds.
type netCluster struct {
	t              *testing.T // the whole test's: what runs for all subtests is tied to it
	a, b           *nodens.Node
	dir            string
	cs             *kubernetes.Clientset
	agentB         *proc
	agentBArgs     []string
	kubeconfig     string // the admin kubeconfig, as seen inside node-a
	resolvConfPath string
	volumesB       string // node-b's volume root
}

func startNetCluster(t *testing.T, ctx context.Context, resolvConf string, serverArgs ...string) *netCluster {
	t.Helper()
	dir, err := os.MkdirTemp("", "cl-net-")
	if err != nil {
		t.Fatal(err)
	}
	c := &netCluster{t: t, a: nodens.New(t, "na", 11), b: nodens.New(t, "nb", 12), dir: dir}
	dataA, dataB := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	t.Cleanup(func() {
		for _, d := range []string{dataA, dataB} {
			agent.KillShims(datadir.Of(d).RunDir())
			os.RemoveAll(datadir.Of(d).RunDir())
			agent.RemoveCgroups(d)
		}
		os.RemoveAll(dir)
	})
	c.resolvConfPath = filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(c.resolvConfPath, []byte(resolvConf), 0o644); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"server", "--data-dir", dataA, "--node-name", "node-a", "--advertise-address", c.a.IP,
		"--resolv-conf", c.resolvConfPath, "--kube-controller-manager-arg=--node-monitor-grace-period=20s"}, serverArgs...)
	server := startCmd(t, c.a.Command(cloudlessBin, args...))
	c.kubeconfig = controlplane.AdminKubeconfig(dataA)
	poll(t, ctx, "the server's admin kubeconfig", func() (bool, error) {
		if server.exited() {
			t.Fatalf("server exited:\n%s", tail(server.stderr.Bytes(), 40))
		}
		_, err := os.Stat(c.kubeconfig)
		return err == nil, nil
	})
	rc, err := restConfig(c.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	rc.Host = "https://" + c.a.IP + ":6443" // the kubeconfig says 127.0.0.1, inside node-a
	c.cs = kubernetes.NewForConfigOrDie(rc)
	poll(t, ctx, "kube-apiserver ready", func() (bool, error) {
		if server.exited() {
			t.Fatalf("server exited:\n%s", tail(server.stderr.Bytes(), 40))
		}
		body, err := c.cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err == nil && string(body) == "ok", nil
	})
	for _, d := range []string{dataA, dataB} {
		if err := os.MkdirAll(datadir.Of(d).Images(), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(datadir.Of(d).Images(), "app.tar"), appArchive(t), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tok := strings.TrimSpace(c.runIn(t, c.a, cloudlessBin, "token", "create", "--data-dir", dataA))
	// node-b keeps its volumes on a btrfs with quotas, where their sizes
	// are enforced; node-a on the host's filesystem, where they may not be.
	c.volumesB = loopBtrfs(t, filepath.Join(dir, "volumes-b"))
	c.agentBArgs = []string{"agent", "--server", "https://" + c.a.IP + ":6443", "--token", tok, "--data-dir", dataB,
		"--node-name", "node-b", "--node-ip", c.b.IP, "--resolv-conf", c.resolvConfPath, "--volume-root", c.volumesB}
	c.agentB = startCmd(t, c.b.Command(cloudlessBin, c.agentBArgs...))
	for _, n := range []string{"node-a", "node-b"} {
		poll(t, ctx, n+" Ready", func() (bool, error) {
			if server.exited() || c.agentB.exited() {
				t.Fatalf("a node exited:\nserver:\n%s\nagent:\n%s", tail(server.stderr.Bytes(), 30), tail(c.agentB.stderr.Bytes(), 30))
			}
			node, err := c.cs.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{})
			return err == nil && nodeIsReady(node), nil
		})
	}
	return c
}

// runIn runs a command in node's namespaces with the admin kubeconfig.
func (c *netCluster) runIn(t *testing.T, node *nodens.Node, bin string, args ...string) string {
	t.Helper()
	out, err := c.tryIn(node, bin, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, out)
	}
	return out
}

func (c *netCluster) tryIn(node *nodens.Node, bin string, args ...string) (string, error) {
	cmd := node.Command(bin, args...)
	cmd.Env = append(os.Environ(), "CLOUDLESS_CONFIG=", "KUBECONFIG="+c.kubeconfig)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// exec runs the app in pod (ns/name, or name in default) with args and
// returns its output.
func (c *netCluster) exec(pod string, args ...string) (string, error) {
	ns, name, ok := strings.Cut(pod, "/")
	if !ok {
		ns, name = "default", pod
	}
	return c.tryIn(c.a, cloudlessBin, append([]string{"kubectl", "exec", "-n", ns, name, "--", "/app"}, args...)...)
}

// appPod is the test app pinned to node, labelled app=name.
func appPod(name, node string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: labels},
		Spec: corev1.PodSpec{NodeName: node, TerminationGracePeriodSeconds: ptr.To[int64](1), Containers: []corev1.Container{{
			Name: "app", Image: appImage, ImagePullPolicy: corev1.PullNever,
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
			ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromInt32(8080)}},
				PeriodSeconds: 1},
			SecurityContext: &corev1.SecurityContext{
				RunAsNonRoot: ptr.To(true), AllowPrivilegeEscalation: ptr.To(false),
				Capabilities:   &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
		}}},
	}
}

// runPods creates pods and waits until each is Ready; it returns their IPs.
func (c *netCluster) runPods(t *testing.T, ctx context.Context, ns string, pods ...*corev1.Pod) map[string]string {
	t.Helper()
	ips := map[string]string{}
	for _, p := range pods {
		p.Namespace = ns
		if _, err := c.cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range pods {
		poll(t, ctx, "pod "+ns+"/"+p.Name+" Ready", func() (bool, error) {
			got, err := c.cs.CoreV1().Pods(ns).Get(ctx, p.Name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			for _, cond := range got.Status.Conditions {
				if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
					ips[p.Name] = got.Status.PodIP
					return true, nil
				}
			}
			return false, nil
		})
	}
	return ips
}

// expect polls until the app in pod, run with args, prints want.
func (c *netCluster) expect(t *testing.T, ctx context.Context, what, pod, want string, args ...string) {
	t.Helper()
	for {
		out, err := c.exec(pod, args...)
		if err == nil && strings.TrimSpace(out) == want {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: want %q, last got %v: %s", what, want, err, out)
		case <-time.After(500 * time.Millisecond): // polling
		}
	}
}

// expectBlocked polls until the app in pod, run with args, fails (each
// try gives up after 5 s inside the app), then checks it fails again.
func (c *netCluster) expectBlocked(t *testing.T, ctx context.Context, what, pod string, args ...string) {
	t.Helper()
	poll(t, ctx, what+" blocked", func() (bool, error) {
		_, err := c.exec(pod, args...)
		return err != nil, nil
	})
	if out, err := c.exec(pod, args...); err == nil {
		t.Errorf("%s: got through again after being blocked: %s", what, out)
	}
}

func service(name string, typ corev1.ServiceType, selector map[string]string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.ServiceSpec{Type: typ, Selector: selector,
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}}},
	}
}

// TestNetwork runs two nodes and checks the pod network across them, the
// Service proxy (ClusterIP, NodePort, externalTrafficPolicy Local keeping
// the client's address), masquerade to the outside, and that restarting
// an agent keeps established connections.
func TestNetwork(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 14*time.Minute)
	defer cancel()
	outside := nodens.New(t, "out", 13)   // a server outside the cluster
	client := nodens.New(t, "client", 14) // a client outside the cluster
	c := startNetCluster(t, ctx, "nameserver "+outside.IP+"\n")
	startCmd(t, outside.Command(appBinary(t)))
	upstream := startCmd(t, outside.Command(appBinary(t), "dns", ":53"))

	ips := c.runPods(t, ctx, "default",
		appPod("a1", "node-a", nil), appPod("a2", "node-a", nil), appPod("b1", "node-b", map[string]string{"app": "web"}))
	if ips["a1"] == ips["b1"] || !strings.HasPrefix(ips["a1"], "10.42.") || !strings.HasPrefix(ips["b1"], "10.42.") {
		t.Fatalf("pod IPs %v: want distinct addresses in the cluster CIDR", ips)
	}

	t.Run("pod to pod", func(t *testing.T) {
		c.expect(t, ctx, "a1 → a2 on the same node", "a1", ips["a1"], "get", "http://"+ips["a2"]+":8080/whoami")
		c.expect(t, ctx, "a1 → b1 across nodes, source address kept", "a1", ips["a1"], "get", "http://"+ips["b1"]+":8080/whoami")
		c.expect(t, ctx, "b1 → a2 across nodes", "b1", ips["b1"], "get", "http://"+ips["a2"]+":8080/whoami")
	})

	web, err := c.cs.CoreV1().Services("default").Create(ctx, service("web", corev1.ServiceTypeNodePort, map[string]string{"app": "web"}), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	local := service("web-local", corev1.ServiceTypeNodePort, map[string]string{"app": "web"})
	local.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	if local, err = c.cs.CoreV1().Services("default").Create(ctx, local, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	t.Run("ClusterIP", func(t *testing.T) {
		c.expect(t, ctx, "a1 → web's ClusterIP", "a1", "pong", "get", "http://"+web.Spec.ClusterIP+"/")
		c.expect(t, ctx, "b1 → web's ClusterIP (itself, hairpin)", "b1", "pong", "get", "http://"+web.Spec.ClusterIP+"/")
	})

	t.Run("NodePort from outside the cluster", func(t *testing.T) {
		np := web.Spec.Ports[0].NodePort
		for _, node := range []*nodens.Node{c.a, c.b} {
			url := fmt.Sprintf("http://%s:%d/", node.IP, np)
			poll(t, ctx, "client → "+url, func() (bool, error) {
				out, err := exec.Command("nsenter", "--net=/var/run/netns/"+client.Name, appBinary(t), "get", url).CombinedOutput()
				return err == nil && string(out) == "pong", nil
			})
		}
		// externalTrafficPolicy Local: the pod sees the client's own address.
		url := fmt.Sprintf("http://%s:%d/whoami", c.b.IP, local.Spec.Ports[0].NodePort)
		poll(t, ctx, "client → web-local on node-b sees the client's address", func() (bool, error) {
			out, err := exec.Command("nsenter", "--net=/var/run/netns/"+client.Name, appBinary(t), "get", url).CombinedOutput()
			return err == nil && string(out) == client.IP, nil
		})
	})

	t.Run("masquerade to the outside", func(t *testing.T) {
		// The outside has no route to pod CIDRs: only a masqueraded
		// request (from the node's address) gets an answer.
		for pod, node := range map[string]*nodens.Node{"a1": c.a, "b1": c.b} {
			c.expect(t, ctx, pod+" → outside server, seen from its node's address", pod, node.IP, "get", "http://"+outside.IP+":8080/whoami")
		}
	})

	t.Run("hostPort", func(t *testing.T) {
		// As the conformance spec does: one port, three pods on one node,
		// told apart by host address and protocol.
		const port = 54323
		// hostPorts are beyond Pod Security's baseline level, the default.
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "hostports",
			Labels: map[string]string{"pod-security.kubernetes.io/enforce": "privileged"}}}
		if _, err := c.cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		hp := func(name, hostIP string, proto corev1.Protocol, containerPort int32) *corev1.Pod {
			p := appPod(name, "node-b", nil)
			p.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: 8080},
				{ContainerPort: containerPort, HostPort: port, HostIP: hostIP, Protocol: proto}}
			if containerPort == 8080 {
				p.Spec.Containers[0].Ports = p.Spec.Containers[0].Ports[1:]
			}
			return p
		}
		c.runPods(t, ctx, "hostports", hp("hp-local", "127.0.0.1", corev1.ProtocolTCP, 8080),
			hp("hp-tcp", c.b.IP, corev1.ProtocolTCP, 8080), hp("hp-udp", c.b.IP, corev1.ProtocolUDP, 8081))
		tcp := func(ip string) []string { return []string{"get", fmt.Sprintf("http://%s:%d/hostname", ip, port)} }
		udp := []string{"udp", fmt.Sprintf("%s:%d", c.b.IP, port)}
		onNode := func(what, want string, args ...string) {
			poll(t, ctx, what, func() (bool, error) {
				out, err := c.tryIn(c.b, appBinary(t), args...)
				return err == nil && out == want, nil
			})
		}
		onNode("node-b → 127.0.0.1 TCP reaches hp-local", "hp-local", tcp("127.0.0.1")...)
		onNode("node-b → its address, TCP, reaches hp-tcp", "hp-tcp", tcp(c.b.IP)...)
		onNode("node-b → its address, UDP, reaches hp-udp", "hp-udp", udp...)
		inClient := func(args ...string) (string, error) {
			out, err := exec.Command("nsenter", append([]string{"--net=/var/run/netns/" + client.Name, appBinary(t)}, args...)...).CombinedOutput()
			return string(out), err
		}
		poll(t, ctx, "a host outside → node-b TCP reaches hp-tcp", func() (bool, error) {
			out, err := inClient(tcp(c.b.IP)...)
			return err == nil && out == "hp-tcp", nil
		})
		poll(t, ctx, "a host outside → node-b UDP reaches hp-udp", func() (bool, error) {
			out, err := inClient(udp...)
			return err == nil && out == "hp-udp", nil
		})
		c.expect(t, ctx, "a1 (a pod on node-a) → node-b's hostPort", "a1", "hp-tcp", tcp(c.b.IP)...)
	})

	t.Run("cluster DNS", func(t *testing.T) {
		poll(t, ctx, "both nodes serve cluster DNS", func() (bool, error) {
			es, err := c.cs.DiscoveryV1().EndpointSlices("kube-system").Get(ctx, controllers.DNSSlice, metav1.GetOptions{})
			return err == nil && len(es.Endpoints) == 2, nil
		})
		// Pods get ndots:2 unless they set their own.
		p, err := c.cs.CoreV1().Pods("default").Get(ctx, "a1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := ndots(p); got != "2" {
			t.Errorf("pod a1's dnsConfig ndots = %q, want 2 (the server's default)", got)
		}
		own := appPod("own-ndots", "node-a", nil)
		own.Spec.DNSConfig = &corev1.PodDNSConfig{Options: []corev1.PodDNSConfigOption{{Name: "ndots", Value: ptr.To("5")}}}
		if own, err = c.cs.CoreV1().Pods("default").Create(ctx, own, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if got := ndots(own); got != "5" {
			t.Errorf("a pod that sets ndots 5 got %q", got)
		}

		// web.default.svc has as many dots as ndots: the resolver asks for
		// it as an absolute name first. Cluster DNS must answer that itself,
		// and nothing may leave.
		for _, name := range []string{"web.default", "web.default.svc", "web.default.svc.cluster.local"} {
			c.expect(t, ctx, "a1 resolves "+name, "a1", web.Spec.ClusterIP, "resolve", name)
			c.expect(t, ctx, "b1 resolves "+name, "b1", web.Spec.ClusterIP, "resolve", name)
		}
		for _, l := range strings.Split(upstream.stderr.String(), "\n") {
			if strings.Contains(l, ".svc.") || strings.Contains(l, "cluster.local.") {
				t.Errorf("a cluster name left the cluster: the upstream saw %q", l)
			}
		}
		// The node's cluster DNS answers the node itself, but not a LAN
		// host that routes the pod CIDR through the node (no open resolver).
		na, err := c.cs.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		dnsAddr := na.Annotations[network.AnnotationDNS]
		svc := "web.default.svc.cluster.local"
		// The absolute name web.default.svc. too: resolvers that take a
		// name with ndots dots as absolute ask only for that (dig +search).
		for _, name := range []string{svc, "web.default.svc"} {
			if out, err := c.tryIn(c.a, appBinary(t), "query", dnsAddr, name); err != nil || strings.TrimSpace(out) != web.Spec.ClusterIP {
				t.Errorf("node-a asking its own cluster DNS %s for %s.: %q, %v; want %s", dnsAddr, name, out, err, web.Spec.ClusterIP)
			}
		}
		route := []string{"route", "replace", na.Spec.PodCIDR, "via", c.a.IP}
		if out, err := exec.Command("ip", route...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v\n%s", route, err, out)
		}
		t.Cleanup(func() { exec.Command("ip", "route", "del", na.Spec.PodCIDR, "via", c.a.IP).Run() })
		inClient := func(args ...string) (string, error) {
			out, err := exec.Command("nsenter", append([]string{"--net=/var/run/netns/" + client.Name, appBinary(t)}, args...)...).CombinedOutput()
			return string(out), err
		}
		// The route works: the client reaches a pod on node-a...
		poll(t, ctx, "client → a1 through node-a", func() (bool, error) {
			out, err := inClient("get", "http://"+ips["a1"]+":8080/whoami")
			return err == nil && out == client.IP, nil
		})
		// ...but not its DNS. A negative check: each query waits 2 s.
		for i := 0; i < 3; i++ {
			if out, err := inClient("query", dnsAddr, svc); err == nil {
				t.Fatalf("a host outside the cluster got an answer from node-a's cluster DNS %s: %q", dnsAddr, out)
			}
		}
		// One external lookup: one upstream query per record type.
		c.expect(t, ctx, "a1 resolves an external name", "a1", "192.0.2.10", "resolve", "api.example.test")
		queries := strings.Count(upstream.stderr.String(), "query api.example.test")
		if a := strings.Count(upstream.stderr.String(), "query api.example.test. A\n"); a != 1 || queries > 2 {
			t.Errorf("one lookup of api.example.test cost %d upstream A queries (%d in all), want 1 (and at most one AAAA):\n%s", a, queries, upstream.stderr.String())
		}
	})

	t.Run("NetworkPolicy", func(t *testing.T) {
		for _, ns := range []string{"locked", "open"} {
			if _, err := c.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		lip := c.runPods(t, ctx, "locked", appPod("srv", "node-b", map[string]string{"app": "srv"}),
			appPod("friend", "node-a", map[string]string{"role": "friend"}), appPod("stranger", "node-a", nil))
		oip := c.runPods(t, ctx, "open", appPod("o1", "node-a", nil))
		srv := "http://" + lip["srv"] + ":8080/"
		c.expect(t, ctx, "stranger → srv before any policy", "locked/stranger", "pong", "get", srv)

		// Default-deny ingress in locked: nothing reaches srv.
		denyAll := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "default-deny", Namespace: "locked"},
			Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}}
		if _, err := c.cs.NetworkingV1().NetworkPolicies("locked").Create(ctx, denyAll, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		c.expectBlocked(t, ctx, "stranger → srv under default-deny", "locked/stranger", "get", srv)
		c.expectBlocked(t, ctx, "a1 (another namespace) → srv under default-deny", "a1", "get", srv)

		// Allow exactly role=friend pods of locked, on the named port.
		allow := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "friends", Namespace: "locked"},
			Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "srv"}},
				Ingress: []networkingv1.NetworkPolicyIngressRule{{
					From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "friend"}}}},
					Ports: []networkingv1.NetworkPolicyPort{{Port: ptr.To(intstr.FromString("http"))}},
				}}}}
		if _, err := c.cs.NetworkingV1().NetworkPolicies("locked").Create(ctx, allow, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		c.expect(t, ctx, "friend → srv (allowed, across nodes)", "locked/friend", "pong", "get", srv)
		c.expectBlocked(t, ctx, "stranger → srv (not a friend)", "locked/stranger", "get", srv)
		// Pods no policy selects stay open.
		c.expect(t, ctx, "a1 → o1 (open namespace)", "a1", "pong", "get", "http://"+oip["o1"]+":8080/")
		c.expect(t, ctx, "srv → a1 (egress of srv is not isolated)", "locked/srv", "pong", "get", "http://"+ips["a1"]+":8080/")

		// Egress: o1 may reach app=web pods in default only (and DNS).
		egress := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "only-web", Namespace: "open"},
			Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
				Egress: []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{
					NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "default"}},
					PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
				}}}}}}
		if _, err := c.cs.NetworkingV1().NetworkPolicies("open").Create(ctx, egress, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		c.expectBlocked(t, ctx, "o1 → a2 under egress policy", "open/o1", "get", "http://"+ips["a2"]+":8080/")
		c.expectBlocked(t, ctx, "o1 → the outside under egress policy", "open/o1", "get", "http://"+outside.IP+":8080/")
		c.expect(t, ctx, "o1 → b1 (app=web, allowed)", "open/o1", "pong", "get", "http://"+ips["b1"]+":8080/")
		c.expect(t, ctx, "o1 → web via its ClusterIP and DNS (allowed)", "open/o1", "pong", "get", "http://web.default/")
	})

	t.Run("debug network snapshot", func(t *testing.T) {
		cmd := c.a.Command(cloudlessBin, "debug", "network", "--data-dir", filepath.Join(c.dir, "a"), "-o", "-")
		cmd.Env = append(os.Environ(), "CLOUDLESS_CONFIG=")
		var stderr strings.Builder
		cmd.Stderr = &stderr
		raw, err := cmd.Output()
		if err != nil || !strings.Contains(stderr.String(), "collecting nft-ruleset.txt") {
			t.Fatalf("debug network: %v (progress on stderr: %q)", err, tail([]byte(stderr.String()), 5))
		}
		out := string(raw)
		files := map[string]string{}
		zr, err := gzip.NewReader(strings.NewReader(out))
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(zr)
		for {
			h, err := tr.Next()
			if err != nil {
				break
			}
			b, _ := io.ReadAll(tr)
			files[h.Name] = string(b)
		}
		for name, want := range map[string]string{
			"network/nft-ruleset.txt":                        "table ip kube-proxy",
			"network/ip-route.txt":                           "dev cl-vxlan",
			"network/conntrack.txt":                          "flow entries",
			"network/kube-proxy-healthz.txt":                 "lastUpdated",
			"network/data-dir/agent/network/kube-proxy.yaml": "mode: nftables",
		} {
			if !strings.Contains(files[name], want) {
				t.Errorf("snapshot %s does not contain %q:\n%s", name, want, tail([]byte(files[name]), 5))
			}
		}
		if !strings.Contains(files["network/nft-ruleset.txt"], "table ip cloudless-policy") {
			t.Error("the snapshot's ruleset has no NetworkPolicy table")
		}
	})

	t.Run("LoadBalancer on the LAN", func(t *testing.T) { testLoadBalancerL2(t, ctx, c) })
	t.Run("LoadBalancer by BGP", func(t *testing.T) { testLoadBalancerBGP(t, ctx, c) })

	t.Run("local volumes", func(t *testing.T) { testLocalVolumes(t, ctx, c) })
	t.Run("metrics and HPA", func(t *testing.T) { testMetrics(t, ctx, c) })

	t.Run("agent restart keeps connections", func(t *testing.T) {
		// A keep-alive connection from the host through node-b's NodePort
		// to b1 must survive the agent's restart.
		url := fmt.Sprintf("http://%s:%d/whoami", c.b.IP, local.Spec.Ports[0].NodePort)
		tr := &http.Transport{MaxConnsPerHost: 1, IdleConnTimeout: 5 * time.Minute,
			DialContext: (&net.Dialer{KeepAlive: -1}).DialContext}
		hc := &http.Client{Transport: tr, Timeout: 5 * time.Second}
		get := func() (reused bool, err error) {
			trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
			req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), "GET", url, nil)
			resp, err := hc.Do(req)
			if err != nil {
				return false, err
			}
			defer resp.Body.Close()
			_, err = io.ReadAll(resp.Body)
			return reused, err
		}
		poll(t, ctx, "host → node-b NodePort", func() (bool, error) { _, err := get(); return err == nil, nil })
		c.agentB.kill()
		c.restartAgentB(t, ctx)
		reused, err := get()
		if err != nil || !reused {
			t.Errorf("the connection opened before the restart: reused %v, err %v", reused, err)
		}
	})

	t.Run("cluster DNS survives the loss of a node", func(t *testing.T) {
		c.agentB.kill()
		poll(t, ctx, "node-b NotReady", func() (bool, error) {
			n, err := c.cs.CoreV1().Nodes().Get(ctx, "node-b", metav1.GetOptions{})
			return err == nil && !nodeIsReady(n), err
		})
		poll(t, ctx, "node-b's DNS endpoint not ready", func() (bool, error) {
			es, err := c.cs.DiscoveryV1().EndpointSlices("kube-system").Get(ctx, controllers.DNSSlice, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			for _, e := range es.Endpoints {
				if *e.NodeName == "node-b" {
					return !*e.Conditions.Ready, nil
				}
			}
			return false, nil
		})
		// Once kube-proxy on node-a no longer balances to node-b's DNS
		// (its kube-dns chains' endpoint maps lack node-b's address), every
		// lookup must succeed.
		nb, err := c.cs.CoreV1().Nodes().Get(ctx, "node-b", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		bDNS, _, _ := strings.Cut(nb.Annotations[network.AnnotationDNS], ":")
		poll(t, ctx, "kube-proxy on node-a drops node-b's DNS endpoint", func() (bool, error) {
			out, err := exec.Command("nsenter", "--net=/var/run/netns/"+c.a.Name, "nft", "list", "table", "ip", "kube-proxy").Output()
			if err != nil {
				return false, err
			}
			for _, l := range strings.Split(string(out), "\n") {
				if strings.Contains(l, "numgen") && strings.Contains(l, "kube-dns") && strings.Contains(l, bDNS) {
					return false, nil
				}
			}
			return strings.Contains(string(out), "kube-dns"), nil
		})
		for i := range 5 {
			if out, err := c.exec("a1", "resolve", "web.default"); err != nil || strings.TrimSpace(out) != web.Spec.ClusterIP {
				t.Errorf("lookup %d with node-b gone: %v %s", i, err, out)
			}
		}
	})
}

func ndots(p *corev1.Pod) string {
	if p.Spec.DNSConfig != nil {
		for _, o := range p.Spec.DNSConfig.Options {
			if o.Name == "ndots" && o.Value != nil {
				return *o.Value
			}
		}
	}
	return ""
}

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
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/cloudless-dev/cloudless/internal/lb"
)

// bgpRouter is BIRD in a namespace of its own: one leg on the LAN
// (192.168.77.254, AS 64500), one towards a client behind it
// (192.168.80.0/24). It learns the nodes' routes and installs them in
// its kernel table, several next hops for one prefix (ECMP).
type bgpRouter struct {
	ns, far, dir string
}

func newBGPRouter(t *testing.T, l *lan, nodes map[string]string) *bgpRouter {
	t.Helper()
	if _, err := exec.LookPath("bird"); err != nil {
		t.Fatal("bird (Debian's bird2) is needed for the BGP test: apt-get install bird2 (.ci/setup does)")
	}
	r := &bgpRouter{ns: fmt.Sprintf("cl-router-%d", os.Getpid()), far: fmt.Sprintf("cl-far-%d", os.Getpid()), dir: t.TempDir()}
	sh := func(must bool, args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil && must {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	var bird *proc
	t.Cleanup(func() {
		if bird != nil {
			bird.kill()
		}
		for ns := range nodes {
			sh(false, "ip", "-n", ns, "route", "del", "192.168.80.0/24")
		}
		sh(false, "ip", "netns", "delete", r.far)
		sh(false, "ip", "netns", "delete", r.ns)
	})
	sh(true, "ip", "netns", "add", r.ns)
	sh(true, "ip", "netns", "add", r.far)
	sh(true, "ip", "-n", l.ns, "link", "add", "prouter", "type", "veth", "peer", "name", "lan0", "netns", r.ns)
	sh(true, "ip", "-n", l.ns, "link", "set", "prouter", "master", "br0", "up")
	sh(true, "ip", "-n", r.ns, "addr", "add", "192.168.77.254/24", "dev", "lan0")
	sh(true, "ip", "-n", r.ns, "link", "set", "lan0", "up")
	sh(true, "ip", "-n", r.ns, "link", "set", "lo", "up")
	sh(true, "ip", "-n", r.ns, "link", "add", "down0", "type", "veth", "peer", "name", "up0", "netns", r.far)
	sh(true, "ip", "-n", r.ns, "addr", "add", "192.168.80.1/24", "dev", "down0")
	sh(true, "ip", "-n", r.ns, "link", "set", "down0", "up")
	sh(true, "ip", "-n", r.far, "addr", "add", "192.168.80.2/24", "dev", "up0")
	sh(true, "ip", "-n", r.far, "link", "set", "up0", "up")
	sh(true, "ip", "-n", r.far, "link", "set", "lo", "up")
	sh(true, "ip", "-n", r.far, "route", "add", "default", "via", "192.168.80.1")
	sh(true, "ip", "netns", "exec", r.ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	// The nodes reach the far client through the router, as a LAN's
	// default gateway would take them there.
	for ns := range nodes {
		sh(true, "ip", "-n", ns, "route", "add", "192.168.80.0/24", "via", "192.168.77.254")
	}
	conf := `router id 192.168.77.254;
protocol device { }
protocol kernel { ipv4 { import none; export all; }; merge paths yes; }
`
	for ns, ip := range nodes {
		conf += fmt.Sprintf("protocol bgp %s { local 192.168.77.254 as 64500; neighbor %s as 64512; connect delay time 1; ipv4 { import all; export none; }; }\n",
			strings.ReplaceAll(ns, "-", "_"), ip)
	}
	if err := os.WriteFile(filepath.Join(r.dir, "bird.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	bird = startCmd(t, exec.Command("ip", "netns", "exec", r.ns, "bird", "-f", "-c", filepath.Join(r.dir, "bird.conf"), "-s", r.sock()))
	return r
}

func (r *bgpRouter) sock() string { return filepath.Join(r.dir, "bird.ctl") }

// nextHops are the next hops of the router's kernel route to prefix.
func (r *bgpRouter) nextHops(prefix string) []string {
	out, _ := exec.Command("ip", "-n", r.ns, "-j", "route", "show", prefix).Output()
	var routes []struct {
		Gateway  string `json:"gateway"`
		Nexthops []struct {
			Gateway string `json:"gateway"`
		} `json:"nexthops"`
	}
	json.Unmarshal(out, &routes)
	var hops []string
	for _, rt := range routes {
		if rt.Gateway != "" {
			hops = append(hops, rt.Gateway)
		}
		for _, h := range rt.Nexthops {
			hops = append(hops, h.Gateway)
		}
	}
	slices.Sort(hops)
	return hops
}

// birdc runs a BIRD command.
func (r *bgpRouter) birdc(args ...string) string {
	out, _ := exec.Command("birdc", append([]string{"-s", r.sock()}, args...)...).CombinedOutput()
	return string(out)
}

// testLoadBalancerBGP (in TestNetwork's cluster): both nodes peer with a
// router; it learns a LoadBalancer Service's address from both (with the
// advertisement's community), a client behind it reaches the pod; with
// Local only the node with the endpoint advertises; a stopped agent's
// routes are withdrawn and come back when it restarts.
func testLoadBalancerBGP(t *testing.T, ctx context.Context, c *netCluster) {
	l := newLAN(t, c.a, c.b)
	r := newBGPRouter(t, l, map[string]string{c.a.Name: l.nodeIP[c.a.Name], c.b.Name: l.nodeIP[c.b.Name]})
	hopA, hopB := l.nodeIP[c.a.Name], l.nodeIP[c.b.Name]
	manifest := filepath.Join(c.dir, "bgp.yaml")
	if err := os.WriteFile(manifest, []byte(`apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: router, namespace: metallb-system}
spec:
  myASN: 64512
  peerASN: 64500
  peerAddress: 192.168.77.254
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: routed, namespace: metallb-system}
spec:
  addresses: [192.168.79.10-192.168.79.20]
  autoAssign: false
---
apiVersion: metallb.io/v1beta1
kind: Community
metadata: {name: communities, namespace: metallb-system}
spec:
  communities:
  - {name: web, value: "64512:100"}
---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: {name: routed, namespace: metallb-system}
spec:
  ipAddressPools: [routed]
  communities: [web]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	c.runIn(t, c.a, cloudlessBin, "kubectl", "apply", "-f", manifest)
	t.Cleanup(func() { c.runIn(t, c.a, cloudlessBin, "kubectl", "delete", "--ignore-not-found", "-f", manifest) })
	routed := func(name string, local bool) string {
		t.Helper()
		s := service(name, corev1.ServiceTypeLoadBalancer, map[string]string{"app": "web"})
		s.Annotations = map[string]string{lb.AnnotationPrefix + lb.AddressPool: "routed"}
		if local {
			s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		}
		if _, err := c.cs.CoreV1().Services("default").Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.cs.CoreV1().Services("default").Delete(context.Background(), name, metav1.DeleteOptions{}) })
		return ingressIP(waitAllocated(t, ctx, c.cs, name, metav1.ConditionTrue, lb.ReasonAllocated))
	}
	hops := func(ip string, want ...string) {
		t.Helper()
		slices.Sort(want)
		var got []string
		poll(t, ctx, fmt.Sprintf("the router's route to %s via %v", ip, want), func() (bool, error) {
			got = r.nextHops(ip)
			return slices.Equal(got, want), fmt.Errorf("via %v; bird:\n%s", got, r.birdc("show", "protocols"))
		})
	}
	reach := func(ip string) {
		t.Helper()
		poll(t, ctx, "the client behind the router → "+ip+" → web's pod", func() (bool, error) {
			out, err := exec.Command("ip", "netns", "exec", r.far, appBinary(t), "get", "http://"+ip+"/").CombinedOutput()
			return err == nil && string(out) == "pong", fmt.Errorf("%v: %s", err, out)
		})
	}

	ip := routed("web-bgp", false)
	hops(ip, hopA, hopB)
	if all := r.birdc("show", "route", "all", ip+"/32"); !strings.Contains(all, "(64512,100)") {
		t.Errorf("the route to %s lacks the advertisement's community 64512:100:\n%s", ip, all)
	}
	reach(ip)
	waitEventFrom(t, ctx, c, "web-bgp", lb.ReasonAnnouncingBGP, "node-a")
	waitEventFrom(t, ctx, c, "web-bgp", lb.ReasonAnnouncingBGP, "node-b")
	var rows []struct {
		Service  string
		BGPNodes []string
	}
	out := c.runIn(t, c.a, cloudlessBin, "lb", "status", "-o", "json", "--data-dir", filepath.Join(c.dir, "a"))
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("lb status -o json: %v\n%s", err, out)
	}
	for _, row := range rows {
		if row.Service == "default/web-bgp" && !slices.Equal(row.BGPNodes, []string{"node-a", "node-b"}) {
			t.Errorf("lb status: web-bgp advertised by %v, want node-a and node-b", row.BGPNodes)
		}
	}

	// Local: web's only endpoint is b1 on node-b, so only node-b
	// advertises; labelling a2 (node-a) app=web adds node-a, and taking
	// the label away withdraws it again.
	localIP := routed("web-bgp-local", true)
	hops(localIP, hopB)
	reach(localIP)
	label := func(value string) {
		t.Helper()
		v := "null"
		if value != "" {
			v = fmt.Sprintf("%q", value)
		}
		if _, err := c.cs.CoreV1().Pods("default").Patch(ctx, "a2", types.MergePatchType, []byte(`{"metadata":{"labels":{"app":`+v+`}}}`), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	label("web")
	t.Cleanup(func() { label("") })
	hops(localIP, hopA, hopB)
	label("")
	hops(localIP, hopB)

	// node-b's agent stopped: it ends its session with a Cease and the
	// router withdraws its routes at once (not after the 90 s hold
	// time); traffic goes through node-a. Restarted, it advertises again.
	if code := c.agentB.stop(t); code != 0 {
		t.Errorf("node-b's agent exited %d on SIGTERM", code)
	}
	hops(ip, hopA)
	reach(ip)
	c.restartAgentB(t, ctx)
	hops(ip, hopA, hopB)
}

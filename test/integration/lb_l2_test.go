package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/cloudless-dev/cloudless/internal/controlplane"
	"github.com/cloudless-dev/cloudless/internal/lb"
	"github.com/cloudless-dev/cloudless/internal/testutil/nodens"
	"k8s.io/utils/ptr"
)

// lan is an Ethernet segment: a bridge in a namespace of its own, a
// port (lan0) in each node's namespace, and a client namespace on it.
type lan struct {
	ns, client string
	nodeIP     map[string]string // node namespace -> its lan0 address
}

func newLAN(t *testing.T, nodes ...*nodens.Node) *lan {
	t.Helper()
	l := &lan{ns: fmt.Sprintf("cl-lan-%d", os.Getpid()), client: fmt.Sprintf("cl-lanclient-%d", os.Getpid()), nodeIP: map[string]string{}}
	sh := func(must bool, args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil && must {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	t.Cleanup(func() {
		// Each port's node end first: deleting a veth end deletes its
		// peer at once, while a deleted namespace's devices go later, in
		// the background, and a next LAN would find lan0 still there.
		for _, n := range nodes {
			sh(false, "ip", "-n", n.Name, "link", "del", "lan0")
		}
		sh(false, "ip", "netns", "delete", l.client)
		sh(false, "ip", "netns", "delete", l.ns)
	})
	sh(true, "ip", "netns", "add", l.ns)
	sh(true, "ip", "netns", "add", l.client)
	sh(true, "ip", "-n", l.ns, "link", "add", "br0", "type", "bridge")
	sh(true, "ip", "-n", l.ns, "link", "set", "br0", "up")
	port := func(i int, ns, addr string) {
		p := fmt.Sprintf("p%d", i)
		sh(true, "ip", "-n", l.ns, "link", "add", p, "type", "veth", "peer", "name", "lan0", "netns", ns)
		sh(true, "ip", "-n", l.ns, "link", "set", p, "master", "br0", "up")
		sh(true, "ip", "-n", ns, "addr", "add", addr+"/24", "dev", "lan0")
		sh(true, "ip", "-n", ns, "link", "set", "lan0", "up")
	}
	for i, n := range nodes {
		l.nodeIP[n.Name] = fmt.Sprintf("192.168.77.%d", i+1)
		port(i, n.Name, l.nodeIP[n.Name])
	}
	port(len(nodes), l.client, "192.168.77.100")
	sh(true, "ip", "-n", l.client, "link", "set", "lo", "up")
	return l
}

// mac is the lan0 MAC of the namespace ns.
func (l *lan) mac(t *testing.T, ns string) string {
	t.Helper()
	b, err := exec.Command("ip", "-n", ns, "-br", "link", "show", "lan0").CombinedOutput()
	f := strings.Fields(string(b))
	if err != nil || len(f) < 3 {
		t.Fatalf("lan0 in %s: %v %s", ns, err, b)
	}
	return strings.ToLower(f[2])
}

var arpingReply = regexp.MustCompile(`reply from [0-9.]+ \[([0-9A-Fa-f:]+)\]`)

// arping asks who has ip from the client, and returns the distinct MACs
// that answered.
func (l *lan) arping(ip string) []string {
	out, _ := exec.Command("ip", "netns", "exec", l.client, "arping", "-c", "3", "-w", "3", "-I", "lan0", ip).CombinedOutput()
	var macs []string
	for _, m := range arpingReply.FindAllStringSubmatch(string(out), -1) {
		macs = append(macs, strings.ToLower(m[1]))
	}
	slices.Sort(macs)
	return slices.Compact(macs)
}

// testLoadBalancerL2 (in TestNetwork's cluster): a LoadBalancer Service's
// address, announced by ARP from exactly one node, reaches its pod from a
// client on the LAN, and moves when that node may no longer announce.
func testLoadBalancerL2(t *testing.T, ctx context.Context, c *netCluster) {
	l := newLAN(t, c.a, c.b)
	nodeNS := map[string]string{"node-a": c.a.Name, "node-b": c.b.Name}
	manifest := filepath.Join(c.dir, "lan-pool.yaml")
	if err := os.WriteFile(manifest, []byte(`apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: lan, namespace: metallb-system}
spec:
  addresses: [192.168.77.240-192.168.77.250]
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: lan, namespace: metallb-system}
spec:
  ipAddressPools: [lan]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	c.runIn(t, c.a, cloudlessBin, "kubectl", "apply", "-f", manifest)
	if _, err := c.cs.CoreV1().Services("default").Create(ctx, service("web-lb", corev1.ServiceTypeLoadBalancer, map[string]string{"app": "web"}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := waitAllocated(t, ctx, c.cs, "web-lb", metav1.ConditionTrue, lb.ReasonAllocated)
	ip := ingressIP(svc)
	if ip != "192.168.77.240" {
		t.Fatalf("web-lb got %q, want 192.168.77.240", ip)
	}
	check := func(ip, svcName string, nodes []string) string {
		t.Helper()
		want := lb.Announcer(netip.MustParseAddr(ip), nodes)
		wantMAC := l.mac(t, nodeNS[want])
		var got []string
		poll(t, ctx, "exactly one MAC, "+want+"'s ("+wantMAC+"), answering ARP for "+ip, func() (bool, error) {
			got = l.arping(ip)
			return slices.Equal(got, []string{wantMAC}), fmt.Errorf("answers from %v", got)
		})
		poll(t, ctx, "the client on the LAN → "+ip+" → web's pod", func() (bool, error) {
			out, err := exec.Command("ip", "netns", "exec", l.client, appBinary(t), "get", "http://"+ip+"/").CombinedOutput()
			return err == nil && string(out) == "pong", fmt.Errorf("%v: %s", err, out)
		})
		waitEventFrom(t, ctx, c, svcName, lb.ReasonAnnouncingL2, want)
		return want
	}
	first := check(ip, "web-lb", []string{"node-a", "node-b"})
	// cloudless lb status names the address, its pool and the node.
	var rows []struct {
		Service, Pool, Announcer, Announced string
		Addresses                           []string
		Allocated                           bool
	}
	out := c.runIn(t, c.a, cloudlessBin, "lb", "status", "-o", "json", "--data-dir", filepath.Join(c.dir, "a"))
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("lb status -o json: %v\n%s", err, out)
	}
	found := false
	for _, r := range rows {
		if r.Service == "default/web-lb" {
			found = true
			if !r.Allocated || r.Pool != "lan" || r.Announcer != first || !slices.Equal(r.Addresses, []string{ip}) {
				t.Errorf("lb status for web-lb: %+v, want %s from pool lan announced by %s", r, ip, first)
			}
			// The interface is named too: the LAN one, not the pod network's.
			if !strings.Contains(r.Announced, ip+" on lan0") {
				t.Errorf("lb status says %q, want %s on lan0", r.Announced, ip)
			}
		}
	}
	if !found {
		t.Errorf("lb status does not list default/web-lb:\n%s", out)
	}
	// doctor, on node-a, asks the LAN who has each address: one answer
	// is healthy; a host on the LAN holding the address too (the client,
	// here) is a second MAC, reported as CL-LB-009 with both.
	doctorARP := func() []string {
		t.Helper()
		out, err := c.tryIn(c.a, cloudlessBin, "doctor", "-o", "json", "--data-dir", filepath.Join(c.dir, "a"), "--fsync-samples", "10")
		var rep struct {
			Findings []struct{ ID, Object, Message string }
		}
		i := strings.Index(out, "{")
		if i < 0 {
			t.Fatalf("doctor printed no JSON: %v\n%s", err, out)
		}
		if jerr := json.NewDecoder(strings.NewReader(out[i:])).Decode(&rep); jerr != nil {
			t.Fatalf("doctor -o json: %v, %v\n%s", err, jerr, out)
		}
		var got []string
		for _, f := range rep.Findings {
			if f.ID == "CL-LB-009" {
				got = append(got, f.Object+": "+f.Message)
			}
		}
		return got
	}
	if got := doctorARP(); len(got) != 0 {
		t.Errorf("doctor reports duplicate ARP answers with one announcer: %v", got)
	}
	clientMAC := l.mac(t, l.client)
	sh := func(args ...string) {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	sh("ip", "-n", l.client, "addr", "add", ip+"/32", "dev", "lan0")
	got := doctorARP()
	sh("ip", "-n", l.client, "addr", "del", ip+"/32", "dev", "lan0")
	if len(got) != 1 || !strings.Contains(got[0], "Service default/web-lb") || !strings.Contains(got[0], clientMAC) || !strings.Contains(got[0], "2 hardware addresses") {
		t.Errorf("doctor with the client holding %s too: %v, want one CL-LB-009 on web-lb naming 2 addresses, %s among them", ip, got, clientMAC)
	}
	// The announcing node excluded from load balancers: the other takes
	// the address over (its gratuitous ARP updates the client's cache).
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:""}}}`, lb.ExcludeLabel)
	if _, err := c.cs.CoreV1().Nodes().Patch(ctx, first, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	unexclude := func() error {
		_, err := c.cs.CoreV1().Nodes().Patch(context.Background(), first, types.MergePatchType, []byte(fmt.Sprintf(`{"metadata":{"labels":{%q:null}}}`, lb.ExcludeLabel)), metav1.PatchOptions{})
		return err
	}
	t.Cleanup(func() { unexclude() })
	other := "node-a"
	if first == "node-a" {
		other = "node-b"
	}
	if got := check(ip, "web-lb", []string{other}); got != other {
		t.Errorf("after excluding %s, %s announces", first, got)
	}
	if err := unexclude(); err != nil {
		t.Fatal(err)
	}

	// externalTrafficPolicy Local: only a node with a ready endpoint may
	// announce, whatever the hash prefers, and the address follows the
	// endpoint when it moves.
	var la string
	for i := 250; i > 240 && la == ""; i-- {
		if cand := fmt.Sprintf("192.168.77.%d", i); lb.Announcer(netip.MustParseAddr(cand), []string{"node-a", "node-b"}) == "node-a" {
			la = cand
		}
	}
	c.runPods(t, ctx, "default", appPod("l2local-b", "node-b", map[string]string{"app": "l2local"}))
	local := service("l2local", corev1.ServiceTypeLoadBalancer, map[string]string{"app": "l2local"})
	local.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	local.Annotations = map[string]string{lb.AnnotationPrefix + lb.LoadBalancerIPs: la}
	if _, err := c.cs.CoreV1().Services("default").Create(ctx, local, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitAllocated(t, ctx, c.cs, "l2local", metav1.ConditionTrue, lb.ReasonAllocated)
	if got := check(la, "l2local", []string{"node-b"}); got != "node-b" {
		t.Errorf("Local with its endpoint on node-b: %s announces %s (the hash prefers node-a)", got, la)
	}
	c.runPods(t, ctx, "default", appPod("l2local-a", "node-a", map[string]string{"app": "l2local"}))
	if err := c.cs.CoreV1().Pods("default").Delete(ctx, "l2local-b", metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
		t.Fatal(err)
	}
	if got := check(la, "l2local", []string{"node-a"}); got != "node-a" {
		t.Errorf("Local with its endpoint moved to node-a: %s announces %s", got, la)
	}

	// Failover: an address node-b announces; SIGKILL node-b's agent and
	// cut its LAN link. node-a's speaker sees node-b's gone from the
	// gossip (long before its Node turns NotReady) and takes over.
	var onB string
	for i := 241; i <= 250 && onB == ""; i++ {
		if cand := fmt.Sprintf("192.168.77.%d", i); lb.Announcer(netip.MustParseAddr(cand), []string{"node-a", "node-b"}) == "node-b" {
			onB = cand
		}
	}
	fo := service("web-failover", corev1.ServiceTypeLoadBalancer, map[string]string{"app": "web"})
	fo.Annotations = map[string]string{lb.AnnotationPrefix + lb.LoadBalancerIPs: onB}
	if _, err := c.cs.CoreV1().Services("default").Create(ctx, fo, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitAllocated(t, ctx, c.cs, "web-failover", metav1.ConditionTrue, lb.ReasonAllocated)
	check(onB, "web-failover", []string{"node-a", "node-b"})
	c.agentB.kill()
	killed := time.Now()
	if out, err := exec.Command("ip", "-n", c.b.Name, "link", "set", "lan0", "down").CombinedOutput(); err != nil {
		t.Fatalf("cut node-b's LAN link: %v %s", err, out)
	}
	check(onB, "web-failover", []string{"node-a"})
	t.Logf("failover: node-b's agent killed, the client reached %s through node-a %.1f s later (arping every 3 s bounds this from above)", onB, time.Since(killed).Seconds())
	if n, err := c.cs.CoreV1().Nodes().Get(ctx, "node-b", metav1.GetOptions{}); err == nil && !nodeIsReady(n) {
		t.Log("node-b was already NotReady: the takeover may have come from the Node's condition, not the gossip")
	}
	exec.Command("ip", "-n", c.b.Name, "link", "set", "lan0", "up").Run()
	c.restartAgentB(t, ctx)

	// The API server unreachable from node-b (its traffic with port 6443
	// dropped): node-b goes NotReady in the API, but its speaker, alive
	// in the gossip, keeps announcing from its cache and node-a does not
	// take over, so one MAC still answers and the client still gets
	// through.
	check(onB, "web-failover", []string{"node-a", "node-b"})
	// Both ways: with only its requests dropped, node-b would still read
	// what the API server had already sent on its open watches.
	port := controlplane.DefaultConfig().HTTPSPort
	rules := fmt.Sprintf(`table ip cl-apidown {
	chain out { type filter hook output priority 0; ip daddr %[1]s tcp dport %[2]d drop; }
	chain in { type filter hook input priority 0; ip saddr %[1]s tcp sport %[2]d drop; }
}`, c.a.IP, port)
	block := c.b.Command("nft", "-f", "-")
	block.Stdin = strings.NewReader(rules)
	if out, err := block.CombinedOutput(); err != nil {
		t.Fatalf("block node-b's API traffic: %v %s", err, out)
	}
	unblock := func() { c.b.Command("nft", "delete", "table", "ip", "cl-apidown").Run() }
	t.Cleanup(unblock)
	poll(t, ctx, "node-b NotReady, its API traffic dropped", func() (bool, error) {
		n, err := c.cs.CoreV1().Nodes().Get(ctx, "node-b", metav1.GetOptions{})
		return err == nil && !nodeIsReady(n), err
	})
	check(onB, "web-failover", []string{"node-a", "node-b"})
	unblock()
	poll(t, ctx, "node-b Ready again", func() (bool, error) {
		n, err := c.cs.CoreV1().Nodes().Get(ctx, "node-b", metav1.GetOptions{})
		return err == nil && nodeIsReady(n), err
	})
}

// restartAgentB starts node-b's agent again, after a test stopped it.
// It runs until the whole test ends, not only the subtest.
func (c *netCluster) restartAgentB(t *testing.T, ctx context.Context) {
	t.Helper()
	c.agentB = startCmd(c.t, c.b.Command(cloudlessBin, c.agentBArgs...))
	poll(t, ctx, "node-b's restarted agent up", func() (bool, error) {
		if c.agentB.exited() {
			t.Fatalf("agent exited:\n%s", tail(c.agentB.stderr.Bytes(), 30))
		}
		return strings.Contains(c.agentB.stderr.String(), "node is up"), nil
	})
}

// waitEventFrom waits for an event of reason on Service name whose
// message names node.
func waitEventFrom(t *testing.T, ctx context.Context, c *netCluster, name, reason, node string) {
	t.Helper()
	poll(t, ctx, fmt.Sprintf("event %s on %s from %s", reason, name, node), func() (bool, error) {
		evs, err := c.cs.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
		if err != nil {
			return false, err
		}
		for _, e := range evs.Items {
			if e.Reason == reason && e.Source.Component == lb.SpeakerComponent && strings.HasPrefix(e.Message, node+" ") {
				return true, nil
			}
		}
		return false, nil
	})
}

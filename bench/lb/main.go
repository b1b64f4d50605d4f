// Command lbbench measures the load balancer on two nodes and a client in
// network namespaces on one bridge (see run.sh): L2 failover time with
// each failure-detection profile, and Service create -> first request.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/cloudless-dev/cloudless/internal/agent"
	"github.com/cloudless-dev/cloudless/internal/controllers"
	"github.com/cloudless-dev/cloudless/internal/controlplane"
	"github.com/cloudless-dev/cloudless/internal/datadir"
	"github.com/cloudless-dev/cloudless/internal/lb"
	"github.com/cloudless-dev/cloudless/internal/lb/speaker"
)

var (
	work      = flag.String("work", "", "scratch directory")
	bin       = flag.String("bin", "", "directory with cloudless and its helpers (build/build.sh)")
	appBin    = flag.String("app", "", "test app binary (test/integration/testdata/app)")
	failovers = flag.Int("failovers", 20, "failovers per profile")
	creates   = flag.Int("creates", 10, "Services created for create-to-reachable")
	machine   = flag.String("machine", "vm", "machine name for the result files")
	out       = flag.String("out", "bench/results", "results directory")
	probe     = flag.String("probe", "", "internal: GET this URL from inside the client namespace until it answers")
	wantNot   = flag.String("want-not", "", "internal: with -probe, until the answer differs from this")
)

// The LAN: a bridge in its own namespace; the host joins it (.254) to
// reach the API; nothing routes beyond it.
const (
	lanNS    = "cl-blb-lan"
	clientNS = "cl-blb-client"
	hostIf   = "clblb0"
	hostIP   = "192.168.78.254"
	clientIP = "192.168.78.100"
	pool     = "192.168.78.10-192.168.78.99"
	appImage = "registry.cloudless.local/bench-app:1"
)

type node struct {
	name, ns, ip, data string
	cmd                *exec.Cmd
	args               []string
}

func main() {
	flag.Parse()
	if *probe != "" {
		os.Exit(runProbe())
	}
	log.SetFlags(log.Ltime)
	profiles := []string{speaker.Fast, speaker.Tolerant}
	samples := map[string][]time.Duration{}
	var createTimes []time.Duration
	for _, p := range profiles {
		fo, cr := runProfile(p)
		samples[p] = fo
		if p == speaker.Fast {
			createTimes = cr
		}
	}
	report(profiles, samples, createTimes)
}

func sh(args ...string) {
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		log.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func setupLAN(nodes []*node) {
	teardown(nodes)
	sh("ip", "netns", "add", lanNS)
	sh("ip", "-n", lanNS, "link", "add", "br0", "type", "bridge")
	sh("ip", "-n", lanNS, "link", "set", "br0", "up")
	port := func(i int, ns, ifname, addr string) {
		p := fmt.Sprintf("p%d", i)
		if ns == "" {
			sh("ip", "link", "add", ifname, "type", "veth", "peer", "name", p, "netns", lanNS)
			sh("ip", "addr", "add", addr+"/24", "dev", ifname)
			sh("ip", "link", "set", ifname, "up")
		} else {
			sh("ip", "-n", lanNS, "link", "add", p, "type", "veth", "peer", "name", ifname, "netns", ns)
			sh("ip", "-n", ns, "addr", "add", addr+"/24", "dev", ifname)
			sh("ip", "-n", ns, "link", "set", ifname, "up")
			sh("ip", "-n", ns, "link", "set", "lo", "up")
		}
		sh("ip", "-n", lanNS, "link", "set", p, "master", "br0", "up")
	}
	for i, n := range nodes {
		sh("ip", "netns", "add", n.ns)
		port(i, n.ns, "lan0", n.ip)
	}
	sh("ip", "netns", "add", clientNS)
	port(len(nodes), clientNS, "lan0", clientIP)
	port(len(nodes)+1, "", hostIf, hostIP)
}

func teardown(nodes []*node) {
	for _, n := range nodes {
		if n.cmd != nil && n.cmd.Process != nil {
			n.cmd.Process.Kill()
			n.cmd.Wait()
		}
		if n.data != "" {
			inNode(n, filepath.Join(*bin, "cloudless"), "reset", "--data-dir", n.data, "--yes").Run()
			agent.KillShims(datadir.Of(n.data).RunDir())
			os.RemoveAll(datadir.Of(n.data).RunDir())
			agent.RemoveCgroups(n.data)
		}
		exec.Command("ip", "netns", "delete", n.ns).Run()
	}
	exec.Command("ip", "netns", "delete", clientNS).Run()
	exec.Command("ip", "netns", "delete", lanNS).Run()
	exec.Command("ip", "link", "delete", hostIf).Run()
}

func inNode(n *node, bin string, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--net=/var/run/netns/" + n.ns, "unshare", "-m", "--propagation", "private", bin}, args...)...)
}

func start(n *node, profile string) {
	f, err := os.OpenFile(filepath.Join(*work, profile+"-"+n.name+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		log.Fatal(err)
	}
	n.cmd = inNode(n, filepath.Join(*bin, "cloudless"), n.args...)
	n.cmd.Stdout, n.cmd.Stderr = f, f
	n.cmd.Env = append(os.Environ(), "CLOUDLESS_CONFIG=")
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := n.cmd.Start(); err != nil {
		log.Fatal(err)
	}
}

// poll calls cond until it is true, or fails the run after limit.
func poll(what string, limit time.Duration, cond func() bool) {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			log.Fatalf("timed out waiting for %s (logs in %s)", what, *work)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func runProfile(profile string) (failover, create []time.Duration) {
	a := &node{name: "node-a", ns: "cl-blb-a", ip: "192.168.78.1", data: filepath.Join(*work, profile, "a")}
	b := &node{name: "node-b", ns: "cl-blb-b", ip: "192.168.78.2", data: filepath.Join(*work, profile, "b")}
	nodes := []*node{a, b}
	setupLAN(nodes)
	defer teardown(nodes)
	resolv := filepath.Join(*work, "resolv.conf")
	os.WriteFile(resolv, []byte("nameserver "+hostIP+"\n"), 0o644)
	img, err := os.ReadFile(*appBin)
	if err != nil {
		log.Fatal(err)
	}
	archive, err := agent.BinaryImageArchive(appImage, "app", img, "65534:65534")
	if err != nil {
		log.Fatal(err)
	}
	for _, n := range nodes {
		os.MkdirAll(datadir.Of(n.data).Images(), 0o700)
		os.WriteFile(filepath.Join(datadir.Of(n.data).Images(), "app.tar"), archive, 0o600)
	}
	log.Printf("%s: starting two nodes", profile)
	a.args = []string{"server", "--data-dir", a.data, "--node-name", a.name, "--advertise-address", a.ip, "--resolv-conf", resolv, "--lb-failure-detection", profile}
	start(a, profile)
	kc := controlplane.AdminKubeconfig(a.data)
	var cs *kubernetes.Clientset
	var dyn *dynamic.DynamicClient
	ctx := context.Background()
	poll("the API", 4*time.Minute, func() bool {
		rc, err := clientcmd.BuildConfigFromFlags("", kc)
		if err != nil {
			return false
		}
		rc.Host = "https://" + a.ip + ":6443"
		cs, dyn = kubernetes.NewForConfigOrDie(rc), dynamic.NewForConfigOrDie(rc)
		body, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err == nil && string(body) == "ok"
	})
	tok, err := inNode(a, filepath.Join(*bin, "cloudless"), "token", "create", "--data-dir", a.data).Output()
	if err != nil {
		log.Fatalf("token create: %v", err)
	}
	b.args = []string{"agent", "--server", "https://" + a.ip + ":6443", "--token", strings.TrimSpace(string(tok)), "--data-dir", b.data,
		"--node-name", b.name, "--node-ip", b.ip, "--resolv-conf", resolv, "--lb-failure-detection", profile}
	start(b, profile)
	for _, n := range nodes {
		poll(n.name+" Ready", 4*time.Minute, func() bool {
			nd, err := cs.CoreV1().Nodes().Get(ctx, n.name, metav1.GetOptions{})
			return err == nil && ready(nd)
		})
	}
	for _, o := range []*unstructured.Unstructured{
		{Object: map[string]any{"apiVersion": lb.Group + "/v1beta1", "kind": "IPAddressPool", "metadata": map[string]any{"name": "lan", "namespace": lb.Namespace}, "spec": map[string]any{"addresses": []any{pool}}}},
		{Object: map[string]any{"apiVersion": lb.Group + "/v1beta1", "kind": "L2Advertisement", "metadata": map[string]any{"name": "lan", "namespace": lb.Namespace}}},
	} {
		r := lb.ResourceOf(o.GetKind())
		gvr := controllers.PoolGVR.GroupVersion().WithResource(r.Plural)
		if _, err := dyn.Resource(gvr).Namespace(lb.Namespace).Create(ctx, o, metav1.CreateOptions{}); err != nil {
			log.Fatalf("create %s: %v", o.GetKind(), err)
		}
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{NodeName: a.name, Containers: []corev1.Container{{Name: "app", Image: appImage, ImagePullPolicy: corev1.PullNever,
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}}}
	if _, err := cs.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		log.Fatal(err)
	}
	poll("the web pod Ready", 3*time.Minute, func() bool {
		p, err := cs.CoreV1().Pods("default").Get(ctx, "web", metav1.GetOptions{})
		return err == nil && podReady(p)
	})
	svc := func(name, ip string) *corev1.Service {
		s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "web"},
				Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromString("http")}}}}
		if ip != "" {
			s.Annotations = map[string]string{lb.AnnotationPrefix + lb.LoadBalancerIPs: ip}
		}
		return s
	}
	if profile == speaker.Fast {
		for i := range *creates {
			t0 := time.Now()
			if _, err := cs.CoreV1().Services("default").Create(ctx, svc(fmt.Sprintf("c%d", i), ""), metav1.CreateOptions{}); err != nil {
				log.Fatal(err)
			}
			var ip string
			poll("an address for c", time.Minute, func() bool {
				s, err := cs.CoreV1().Services("default").Get(ctx, fmt.Sprintf("c%d", i), metav1.GetOptions{})
				if err == nil && len(s.Status.LoadBalancer.Ingress) > 0 {
					ip = s.Status.LoadBalancer.Ingress[0].IP
				}
				return ip != ""
			})
			if _, err := clientProbe("http://"+ip+"/whoami", "", 60*time.Second); err != nil {
				log.Fatalf("create-to-reachable %s: %v", ip, err)
			}
			create = append(create, time.Since(t0))
			log.Printf("create -> first request %d: %s", i, time.Since(t0).Round(time.Millisecond))
		}
	}
	// An address node-b announces.
	var onB string
	for i := 99; onB == ""; i-- {
		if ip := fmt.Sprintf("192.168.78.%d", i); lb.Announcer(netip.MustParseAddr(ip), []string{a.name, b.name}) == b.name {
			onB = ip
		}
	}
	if _, err := cs.CoreV1().Services("default").Create(ctx, svc("failover", onB), metav1.CreateOptions{}); err != nil {
		log.Fatal(err)
	}
	url := "http://" + onB + "/whoami"
	macB := mac(b.ns)
	viaB := ""
	for i := range *failovers {
		// node-b announces and serves.
		poll("node-b announcing "+onB, 2*time.Minute, func() bool { return slices.Equal(arping(onB), []string{macB}) })
		body, err := clientProbe(url, "", time.Minute)
		if err != nil {
			log.Fatalf("before failover %d: %v", i, err)
		}
		if viaB == "" {
			viaB = body
		}
		// Kill it, cut its link, and time the first answer through node-a.
		probeCmd := exec.Command("ip", "netns", "exec", clientNS, os.Args[0], "-probe", url, "-want-not", viaB)
		var probeOut strings.Builder
		probeCmd.Stdout = &probeOut
		if err := probeCmd.Start(); err != nil {
			log.Fatal(err)
		}
		t0 := time.Now()
		b.cmd.Process.Kill()
		b.cmd.Wait()
		sh("ip", "-n", b.ns, "link", "set", "lan0", "down")
		if err := probeCmd.Wait(); err != nil {
			log.Fatalf("failover %d: no answer through node-a: %v", i, err)
		}
		at, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(probeOut.String()))
		if err != nil {
			log.Fatalf("failover %d: probe said %q", i, probeOut.String())
		}
		failover = append(failover, at.Sub(t0))
		log.Printf("%s failover %d: %s", profile, i, at.Sub(t0).Round(time.Millisecond))
		sh("ip", "-n", b.ns, "link", "set", "lan0", "up")
		start(b, profile)
	}
	return failover, create
}

// clientProbe runs the probe in the client namespace.
func clientProbe(url, wantNot string, limit time.Duration) (string, error) {
	args := []string{"netns", "exec", clientNS, os.Args[0], "-probe", url, "-want-not", wantNot}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", append(args, "-print-body")...).Output()
	return strings.TrimSpace(string(out)), err
}

var printBody = flag.Bool("print-body", false, "internal: with -probe, print the answer instead of the time")

// runProbe GETs -probe every 10 ms (200 ms timeout) until an answer
// other than -want-not, then prints its time (or body); 2 minutes at most.
func runProbe() int {
	c := &http.Client{Timeout: 200 * time.Millisecond, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		resp, err := c.Get(*probe)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && string(b) != *wantNot {
				if *printBody {
					fmt.Println(string(b))
				} else {
					fmt.Println(time.Now().Format(time.RFC3339Nano))
				}
				return 0
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Fprintln(os.Stderr, errors.New("no answer in 2 minutes"))
	return 1
}

func mac(ns string) string {
	out, err := exec.Command("ip", "-n", ns, "-br", "link", "show", "lan0").Output()
	f := strings.Fields(string(out))
	if err != nil || len(f) < 3 {
		log.Fatalf("lan0 in %s: %v", ns, err)
	}
	return strings.ToLower(f[2])
}

func arping(ip string) []string {
	out, _ := exec.Command("ip", "netns", "exec", clientNS, "arping", "-c", "1", "-w", "1", "-I", "lan0", ip).CombinedOutput()
	var macs []string
	for _, line := range strings.Split(string(out), "\n") {
		if i, j := strings.Index(line, "["), strings.Index(line, "]"); strings.Contains(line, "reply from") && i > 0 && j > i {
			macs = append(macs, strings.ToLower(line[i+1:j]))
		}
	}
	slices.Sort(macs)
	return slices.Compact(macs)
}

func ready(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

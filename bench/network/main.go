// Command network measures the cluster network of a one-node Cloudless
// cluster, run in a network namespace of its own:
//
//   - Service programming: kube-proxy's time to program 1,000 Services of
//     3 endpoints each, and then one more, in each proxy mode (nftables,
//     iptables, ipvs where the kernel has it), compared in the same run;
//   - cluster DNS: queries per second on a node's CoreDNS, for a cluster
//     name and (cached) for an external one;
//   - lookup cost: queries to cluster DNS and to the upstream resolver for
//     one lookup of an external name, a cluster name and a partial one
//     (kubernetes.default.svc), as a pod's stub
//     resolver makes them (search list and ndots, A and AAAA), with
//     Kubernetes' defaults (ndots 5, the host's search domain passed on)
//     against Cloudless's (ndots 2, no host search domains).
//
// It writes <out>/network-<date>-<machine>.md and .csv. Run it through
// bench/network/run.sh, which builds the binaries.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"github.com/cloudless-dev/cloudless/internal/agent"
	"github.com/cloudless-dev/cloudless/internal/controlplane"
	"github.com/cloudless-dev/cloudless/internal/datadir"
)

const (
	netns    = "cl-bench-net"
	hostIf   = "cln250"
	hostIP   = "10.250.250.1"
	nodeIP   = "10.250.250.2"
	nodeName = "bench"
	dnsAddr  = "10.42.0.1:10053" // the node's cluster DNS (first pod CIDR's gateway)
)

var (
	bin      = flag.String("bin", "", "dir with cloudless and its helpers (build/build.sh)")
	work     = flag.String("work", "", "scratch directory")
	services = flag.Int("services", 1000, "Services, each with -endpoints endpoints")
	eps      = flag.Int("endpoints", 3, "endpoints per Service")
	dnsFor   = flag.Duration("dns-duration", 10*time.Second, "length of each DNS load run")
	out      = flag.String("out", "bench/results", "results directory")
	machine  = flag.String("machine", "vm", "machine name for the result file")
	// Set when the bench runs itself as a DNS client inside the node's
	// network namespace: cluster DNS answers only the cluster CIDR and
	// the node's own addresses (internal/network's DNS guard).
	clientLoad   = flag.String("client-load", "", "internal: run the DNS load for this name, print queries/s")
	clientLookup = flag.String("client-lookup", "", "internal: look this name up, print the queries sent")
	clientSearch = flag.String("client-search", "", "internal: search list for -client-lookup, comma-separated")
	clientNdots  = flag.Int("client-ndots", 1, "internal: ndots for -client-lookup")
)

var upstreamQueries atomic.Int64

func main() {
	flag.Parse()
	switch {
	case *clientLoad != "":
		fmt.Printf("%.0f\n", dnsLoadOne(*clientLoad))
		return
	case *clientLookup != "":
		fmt.Println(lookup(*clientLookup, strings.Split(*clientSearch, ","), *clientNdots))
		return
	}
	setupNetns()
	defer teardown()
	go serveUpstream()

	type progResult struct {
		mode          string
		note          string
		all, one, fst time.Duration
	}
	var prog []progResult
	var qps []string
	var cost [][]string
	for i, mode := range []string{"nftables", "iptables", "ipvs"} {
		if mode == "ipvs" {
			if _, err := os.Stat("/proc/net/ip_vs"); err != nil {
				prog = append(prog, progResult{mode: mode, note: "not measured: this kernel has no ip_vs (the agent falls back to nftables and says so)"})
				continue
			}
		}
		data := filepath.Join(*work, mode)
		srv := startServer(data, mode)
		cs := waitAPI(data)
		waitNodeReady(cs)
		r := progResult{mode: mode}
		r.fst, r.all, r.one = programServices(cs, mode)
		prog = append(prog, r)
		log.Printf("%s: first Service %s, %d Services %s, one more %s", mode, r.fst, *services, r.all, r.one)
		if i == 0 { // DNS does not depend on the proxy mode
			qps = dnsLoad()
			cost = lookupCost()
		}
		srv.Process.Kill()
		srv.Wait()
		cleanupNode(data)
	}

	host, _ := os.Hostname()
	date := time.Now().UTC().Format("2006-01-02")
	base := filepath.Join(*out, fmt.Sprintf("network-%s-%s", date, *machine))
	var md, csv strings.Builder
	fmt.Fprintf(&md, "# Cluster network, %s, %s\n\n`sudo bench/network/run.sh` (one node in a network namespace; %d Services × %d endpoints).\n\n", date, host, *services, *eps)
	md.WriteString("## Service programming (kube-proxy embedded in the agent)\n\nTime from creating the objects until the node's ruleset holds the ClusterIPs (nftables: `nft get element ip kube-proxy service-ips {…}`, a lookup that costs kube-proxy no CPU; iptables: `iptables-save -t nat`), polled every 50 ms; Services have no selector and hand-made EndpointSlices, so no pods are involved. The ratio is against nftables, the default.\n\n")
	md.WriteString("| Proxy mode | first Service | all Services | one more Service with all in place (median of 5) | ratio (all) | ratio (one more) |\n|---|---|---|---|---|---|\n")
	csv.WriteString("section,metric,value\n")
	for _, r := range prog {
		if r.note != "" {
			fmt.Fprintf(&md, "| %s | %s | | | | |\n", r.mode, r.note)
			continue
		}
		fmt.Fprintf(&md, "| %s | %.2f s | %.2f s | %.2f s | %.2f× | %.2f× |\n", r.mode, r.fst.Seconds(), r.all.Seconds(), r.one.Seconds(),
			r.all.Seconds()/prog[0].all.Seconds(), r.one.Seconds()/prog[0].one.Seconds())
		fmt.Fprintf(&csv, "programming,%s first s,%.3f\nprogramming,%s all s,%.3f\nprogramming,%s one more s,%.3f\n", r.mode, r.fst.Seconds(), r.mode, r.all.Seconds(), r.mode, r.one.Seconds())
	}
	md.WriteString("\n## Cluster DNS throughput (one node's CoreDNS, 2 cores shared with everything else)\n\n| Query | queries/s |\n|---|---|\n")
	for _, l := range qps {
		md.WriteString(l + "\n")
	}
	md.WriteString("\n## Queries per lookup, as a pod's stub resolver makes them (A and AAAA for each candidate name)\n\n")
	md.WriteString("Kubernetes defaults: ndots 5, search `default.svc.cluster.local svc.cluster.local cluster.local lan` (the host's search domain `lan` passed on by the kubelet). Cloudless: ndots 2 (the CloudlessDNSDefaults admission plugin), no host search domains (the agent's resolv.conf).\n\n")
	md.WriteString("| Lookup | Settings | queries to cluster DNS | queries to the upstream resolver |\n|---|---|---|---|\n")
	for _, row := range cost {
		fmt.Fprintf(&md, "| %s |\n", strings.Join(row, " | "))
		fmt.Fprintf(&csv, "lookup,%s,%s/%s\n", strings.Join(row[:2], " "), row[2], row[3])
	}
	if err := os.WriteFile(base+".md", []byte(md.String()), 0o644); err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(base+".csv", []byte(csv.String()), 0o644); err != nil {
		log.Fatal(err)
	}
	log.Printf("wrote %s.md and .csv", base)
}

func sh(args ...string) {
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		log.Fatalf("%v: %v\n%s", args, err, out)
	}
}

func setupNetns() {
	teardown()
	sh("ip", "netns", "add", netns)
	sh("ip", "link", "add", hostIf, "type", "veth", "peer", "name", "eth0", "netns", netns)
	sh("ip", "addr", "add", hostIP+"/24", "dev", hostIf)
	sh("ip", "link", "set", hostIf, "up")
	sh("ip", "-n", netns, "addr", "add", nodeIP+"/24", "dev", "eth0")
	sh("ip", "-n", netns, "link", "set", "eth0", "up")
	sh("ip", "-n", netns, "link", "set", "lo", "up")
	sh("ip", "-n", netns, "route", "add", "default", "via", hostIP)
	sh("ip", "route", "add", "10.42.0.0/16", "via", nodeIP) // reach the node's cluster DNS from here
	if err := os.WriteFile(filepath.Join(*work, "resolv.conf"), []byte("nameserver "+hostIP+"\n"), 0o644); err != nil {
		log.Fatal(err)
	}
}

func teardown() {
	exec.Command("ip", "route", "del", "10.42.0.0/16", "via", nodeIP).Run()
	exec.Command("ip", "netns", "delete", netns).Run()
	exec.Command("ip", "link", "delete", hostIf).Run()
}

func cleanupNode(data string) {
	agent.KillShims(datadir.Of(data).RunDir())
	os.RemoveAll(datadir.Of(data).RunDir())
	agent.RemoveCgroups(data)
	// A fresh namespace for the next mode: no rules left from this one.
	teardown()
	setupNetns()
}

func startServer(data, mode string) *exec.Cmd {
	f, err := os.Create(filepath.Join(*work, mode+".log"))
	if err != nil {
		log.Fatal(err)
	}
	c := exec.Command("nsenter", "--net=/var/run/netns/"+netns, "unshare", "-m", "--propagation", "private",
		filepath.Join(*bin, "cloudless"), "server", "--data-dir", data, "--node-name", nodeName, "--advertise-address", nodeIP,
		"--proxy-mode", mode, "--resolv-conf", filepath.Join(*work, "resolv.conf"), "--log-level", "warn")
	c.Stdout, c.Stderr = f, f
	c.Env = append(os.Environ(), "CLOUDLESS_CONFIG=")
	if err := c.Start(); err != nil {
		log.Fatal(err)
	}
	return c
}

func waitAPI(data string) *kubernetes.Clientset {
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		if rc, err := clientcmd.BuildConfigFromFlags("", controlplane.AdminKubeconfig(data)); err == nil {
			rc.Host = "https://" + nodeIP + ":6443"
			rc.QPS, rc.Burst = 500, 1000
			cs := kubernetes.NewForConfigOrDie(rc)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			b, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
			cancel()
			if err == nil && string(b) == "ok" {
				return cs
			}
		}
		time.Sleep(200 * time.Millisecond) // polling
	}
	log.Fatal("API not ready after 3 minutes")
	return nil
}

func waitNodeReady(cs *kubernetes.Clientset) {
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		n, err := cs.CoreV1().Nodes().Get(context.Background(), nodeName, metav1.GetOptions{})
		if err == nil && n.Annotations["cloudless.dev/dns-address"] != "" {
			for _, c := range n.Status.Conditions {
				if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
					return
				}
			}
		}
		time.Sleep(200 * time.Millisecond) // polling
	}
	log.Fatal("node not Ready with cluster DNS after 3 minutes")
}

// programmed reports whether kube-proxy in mode has programmed every ip
// (port 80/TCP). nftables: one element lookup in its service-ips map
// (listing a large ruleset costs more CPU than kube-proxy's own sync);
// iptables: iptables-save of the nat table.
func programmed(mode string, ips []string) bool {
	ns := "--net=/var/run/netns/" + netns
	if mode == "nftables" {
		// In batches: nft 1.0.6 crashes on a few hundred elements at once.
		for len(ips) > 0 {
			n := min(len(ips), 25)
			var elems []string
			for _, ip := range ips[:n] {
				elems = append(elems, ip+" . tcp . 80")
			}
			if exec.Command("nsenter", ns, "nft", "get", "element", "ip", "kube-proxy", "service-ips", "{ "+strings.Join(elems, ", ")+" }").Run() != nil {
				return false
			}
			ips = ips[n:]
		}
		return true
	}
	out, _ := exec.Command("nsenter", ns, "iptables-save", "-t", "nat").Output()
	for _, ip := range ips {
		if !strings.Contains(string(out), "-d "+ip+"/32") {
			return false
		}
	}
	return true
}

// waitProgrammed polls until every ip is programmed.
func waitProgrammed(mode string, t0 time.Time, ips ...string) time.Duration {
	for time.Since(t0) < 10*time.Minute {
		if programmed(mode, ips) {
			return time.Since(t0)
		}
		time.Sleep(50 * time.Millisecond) // polling
	}
	log.Fatalf("%s: Services not programmed after 10 minutes", mode)
	return 0
}

// programServices creates the Services and measures until the first, the
// last and then one extra are in the ruleset.
func programServices(cs *kubernetes.Clientset, mode string) (first, all, one time.Duration) {
	ctx := context.Background()
	ns := "bench"
	cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	create := func(i int) string {
		name := fmt.Sprintf("svc-%04d", i)
		svc, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}}}, metav1.CreateOptions{})
		if err != nil {
			log.Fatalf("create Service: %v", err)
		}
		es := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: name}},
			AddressType: discoveryv1.AddressTypeIPv4, Ports: []discoveryv1.EndpointPort{{Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}}}
		for e := range *eps {
			es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.42.%d.%d", 100+e, i%250+1)},
				Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}})
		}
		if _, err := cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, es, metav1.CreateOptions{}); err != nil {
			log.Fatalf("create EndpointSlice: %v", err)
		}
		return svc.Spec.ClusterIP
	}
	t0 := time.Now()
	firstIP := create(0)
	var wg sync.WaitGroup
	ips := make([]string, *services)
	ips[0] = firstIP
	next := atomic.Int64{}
	next.Store(1)
	var firstAt time.Duration
	wg.Add(1)
	go func() { defer wg.Done(); firstAt = waitProgrammed(mode, t0, firstIP) }()
	var creators sync.WaitGroup
	for range 8 {
		creators.Add(1)
		go func() {
			defer creators.Done()
			for i := int(next.Add(1) - 1); i < *services; i = int(next.Add(1) - 1) {
				ips[i] = create(i)
			}
		}()
	}
	creators.Wait()
	wg.Wait()
	all = waitProgrammed(mode, t0, ips...)
	// One more, five times: the median.
	var ones []time.Duration
	for i := range 5 {
		t1 := time.Now()
		ip := create(*services + i)
		ones = append(ones, waitProgrammed(mode, t1, ip))
	}
	slices.Sort(ones)
	return firstAt, all, ones[2]
}

// serveUpstream is the "upstream resolver" on the host end of the link:
// example.test names have an address, the rest do not exist.
func serveUpstream() {
	h := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		upstreamQueries.Add(1)
		m := new(dns.Msg)
		m.SetReply(q)
		name := q.Question[0].Name
		switch {
		case !dns.IsSubDomain("example.test.", name):
			m.Rcode = dns.RcodeNameError
		case q.Question[0].Qtype == dns.TypeA:
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP("192.0.2.10")})
		}
		w.WriteMsg(m)
	})
	log.Fatal((&dns.Server{Addr: hostIP + ":53", Net: "udp", Handler: h}).ListenAndServe())
}

// dnsLoad runs 16 clients against the node's cluster DNS.
// inNode runs this program with args in the node's network namespace
// and returns what it prints.
func inNode(args ...string) string {
	self, err := os.Executable()
	if err != nil {
		log.Fatal(err)
	}
	out, err := exec.Command("ip", append([]string{"netns", "exec", netns, self}, args...)...).Output()
	if err != nil {
		log.Fatalf("%v in the node's namespace: %v", args, err)
	}
	return strings.TrimSpace(string(out))
}

func dnsLoad() []string {
	var rows []string
	for _, q := range []string{"kubernetes.default.svc.cluster.local.", "api.example.test."} {
		qps := inNode("-client-load", q, "-dns-duration", dnsFor.String())
		rows = append(rows, fmt.Sprintf("| %s A | %s |", q, qps))
		log.Printf("DNS %s: %s q/s", q, qps)
	}
	return rows
}

// dnsLoadOne sends A queries for q from 16 clients for -dns-duration
// and returns the answers per second.
func dnsLoadOne(q string) float64 {
	var n atomic.Int64
	var wg sync.WaitGroup
	deadline := time.Now().Add(*dnsFor)
	for range 16 {
		wg.Go(func() {
			c := &dns.Client{Timeout: 2 * time.Second}
			m := new(dns.Msg)
			m.SetQuestion(q, dns.TypeA)
			for time.Now().Before(deadline) {
				if r, _, err := c.Exchange(m, dnsAddr); err == nil && r.Rcode == dns.RcodeSuccess {
					n.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return float64(n.Load()) / dnsFor.Seconds()
}

// lookup resolves name as glibc's stub resolver would with search and
// ndots (A and AAAA for each candidate, in order, until one answers) and
// returns the queries it sent to cluster DNS.
func lookup(name string, search []string, ndots int) int {
	var candidates []string
	abs := dns.Fqdn(name)
	var searched []string
	for _, s := range search {
		searched = append(searched, dns.Fqdn(name+"."+s))
	}
	if strings.Count(name, ".") >= ndots {
		candidates = append([]string{abs}, searched...)
	} else {
		candidates = append(searched, abs)
	}
	c := &dns.Client{Timeout: 2 * time.Second}
	sent := 0
	for _, cand := range candidates {
		found := false
		for _, t := range []uint16{dns.TypeA, dns.TypeAAAA} {
			m := new(dns.Msg)
			m.SetQuestion(cand, t)
			sent++
			if r, _, err := c.Exchange(m, dnsAddr); err == nil && r.Rcode == dns.RcodeSuccess {
				found = true
			}
		}
		if found {
			break
		}
	}
	return sent
}

func lookupCost() [][]string {
	cluster := []string{"default.svc.cluster.local", "svc.cluster.local", "cluster.local"}
	settings := []struct {
		name   string
		search []string
		ndots  int
	}{
		{"Kubernetes defaults (ndots 5, host search domain)", append(cluster, "lan"), 5},
		{"ndots 5, no host search domain", cluster, 5},
		{"Cloudless (ndots 2, no host search domain)", cluster, 2},
	}
	var rows [][]string
	// kubernetes.default.svc has ndots 2's two dots: tried as an absolute
	// name first, which cluster DNS must answer without the upstream.
	for i, name := range []string{"api.example.test", "kubernetes.default", "kubernetes.default.svc"} {
		for j, s := range settings {
			// A name of its own per run: nothing cached from a previous one.
			n := name
			if i == 0 {
				n = fmt.Sprintf("api%d.example.test", j)
			}
			before := upstreamQueries.Load()
			sent := inNode("-client-lookup", n, "-client-search", strings.Join(s.search, ","), "-client-ndots", fmt.Sprint(s.ndots))
			rows = append(rows, []string{name, s.name, sent, fmt.Sprint(upstreamQueries.Load() - before)})
		}
	}
	return rows
}

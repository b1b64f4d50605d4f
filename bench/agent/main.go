// Command agent measures a one-machine cluster with Cloudless's node agent
// (kubelet in the server process, containerd as its child) against the
// same control plane with upstream kubelet and containerd binaries run as
// separate processes, on the configuration files the agent wrote:
//
//   - time from start until the node reports Ready;
//   - pod start latency (create to Running), sequential pods;
//   - resident memory and CPU of everything after an idle period;
//   - on Cloudless only, what provisioning a local volume adds to pod start
//     (volumes.go);
//   - the metrics API in the server against metrics-server as a process
//     (metrics.go).
//
// It writes <out>/agent-<date>-<machine>.md and .csv, and
// <out>/volumes-<date>-<machine>.md and metrics-<date>-<machine>.md. Run it through
// bench/agent/run.sh, which builds the binaries.
package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"github.com/cloudless-dev/cloudless/internal/agent"
	"github.com/cloudless-dev/cloudless/internal/controlplane"
	"github.com/cloudless-dev/cloudless/internal/datadir"
	"github.com/cloudless-dev/cloudless/internal/klogslog"
)

const (
	port     = 17643
	nodeName = "bench"
	image    = "registry.cloudless.local/app:1"
)

var (
	bin      = flag.String("bin", "", "dir with cloudless and its helpers (build/build.sh)")
	upstream = flag.String("upstream", "", "dir with upstream kubelet, containerd, containerd-shim-runc-v2")
	appTar   = flag.String("app", "", "image archive of the test app ("+image+")")
	work     = flag.String("work", "", "scratch directory")
	pods     = flag.Int("pods", 20, "pods started one after another")
	idle     = flag.Duration("idle", 2*time.Minute, "idle period before reading memory")
	out      = flag.String("out", "bench/results", "results directory")
	machine  = flag.String("machine", "vm", "machine name for the result file")
	packApp  = flag.String("pack-app", "", "pack this static binary into the -app archive and exit")
	vols     = flag.Int("volumes", 10, "pods with a volume started one after another, for each kind (static hostPath, local-path)")
	onlyVols = flag.Bool("only-volumes", false, "measure only volume provisioning (Cloudless's run), not the upstream agent")
	onlyMetr = flag.Bool("only-metrics", false, "measure only the metrics API: in-process against metrics-server as its own process")
)

type result struct {
	nodeReady time.Duration
	podStarts []time.Duration
	rss, pss  map[string]int64
	cpu       time.Duration
}

func main() {
	flag.Parse()
	if *packApp != "" {
		b, err := os.ReadFile(*packApp)
		if err != nil {
			log.Fatal(err)
		}
		archive, err := agent.BinaryImageArchive(image, "app", b, "65534:65534")
		if err != nil {
			log.Fatal(err)
		}
		if err := os.WriteFile(*appTar, archive, 0o644); err != nil {
			log.Fatal(err)
		}
		return
	}
	if *bin == "" || *upstream == "" || *appTar == "" || *work == "" {
		fatalf("need -bin, -upstream, -app and -work (use bench/agent/run.sh)")
	}
	ctx := context.Background()
	data := filepath.Join(*work, "data")
	cleanup = func() {
		for g := range live {
			g.stop()
		}
		exec.Command(filepath.Join(*bin, "cloudless"), "reset", "--data-dir", data, "--yes").Run()
	}
	defer cleanup()

	// Cloudless: one process (plus containerd, its child).
	procs := &group{}
	t0 := time.Now()
	procs.start("cloudless", filepath.Join(*bin, "cloudless"), serverArgs(data, false)...)
	cs := waitAPI(ctx, data)
	ours := result{nodeReady: waitNodeReady(ctx, cs, t0)}
	if *onlyMetr {
		procs.stop()
		agent.KillShims(datadir.Of(data).RunDir())
		metricsBench(ctx, data)
		return
	}
	run(filepath.Join(*bin, "cloudless"), "images", "import", "--data-dir", data, *appTar)
	if *vols > 0 {
		static, dynamic := volumeStarts(ctx, cs, filepath.Join(*work, "static"))
		if err := writeVolumes(static, dynamic); err != nil {
			fatalf("%v", err)
		}
		if *onlyVols {
			return
		}
	}
	ours.podStarts = startPods(ctx, cs, "ours")
	cfgPath := filepath.Join(data, "agent", "containerd.toml")
	ours.rss, ours.pss, ours.cpu = measureIdle(procs, map[string][]string{"containerd": {"containerd", "--config", cfgPath}})
	procs.stop()
	agent.KillShims(datadir.Of(data).RunDir())

	// Upstream: the same control plane without its agent, and upstream
	// containerd and kubelet binaries on the files the agent wrote.
	procs = &group{}
	t0 = time.Now()
	procs.start("cloudless", filepath.Join(*bin, "cloudless"), serverArgs(data, true)...)
	cs = waitAPI(ctx, data)
	procs.startEnv("containerd", []string{"PATH=" + *upstream + ":" + *bin + ":" + os.Getenv("PATH")}, filepath.Join(*upstream, "containerd"), "--config", cfgPath)
	// As systemd's ordering would: the kubelet exits if the runtime is
	// not up yet.
	sock := filepath.Join(datadir.Of(data).RunDir(), "containerd", "containerd.sock")
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			fatalf("upstream containerd not answering on %s", sock)
		}
	}
	p := func(parts ...string) string { return filepath.Join(append([]string{data}, parts...)...) }
	// The agent's kubelet logs through Cloudless's own klog format,
	// which upstream's kubelet does not know: its copy says text.
	cfg, err := os.ReadFile(p("agent", "kubelet.yaml"))
	if err != nil {
		fatalf("read the agent's kubelet config: %v", err)
	}
	cfg = []byte(strings.Replace(string(cfg), "format: "+klogslog.Format, "format: text", 1))
	if err := os.WriteFile(p("agent", "kubelet-upstream.yaml"), cfg, 0o600); err != nil {
		fatalf("%v", err)
	}
	procs.start("kubelet", filepath.Join(*upstream, "kubelet"),
		"--config="+p("agent", "kubelet-upstream.yaml"), "--kubeconfig="+p("server", "cred", "kubelet-client.kubeconfig"),
		"--root-dir="+p("agent", "kubelet"), "--cert-dir="+p("agent", "kubelet", "pki"),
		"--hostname-override="+nodeName, "--node-ip=127.0.0.1")
	theirs := result{nodeReady: waitNodeReady(ctx, cs, t0)}
	theirs.podStarts = startPods(ctx, cs, "upstream")
	theirs.rss, theirs.pss, theirs.cpu = measureIdle(procs, nil)
	procs.stop()
	agent.KillShims(datadir.Of(data).RunDir())

	if err := write(ours, theirs); err != nil {
		fatalf("%v", err)
	}
}

func serverArgs(data string, disableAgent bool) []string {
	a := []string{"server", "--data-dir", data, "--https-listen-port", strconv.Itoa(port), "--bind-address", "127.0.0.1",
		"--advertise-address", "127.0.0.1", "--node-name", nodeName, "--log-level", "warn"}
	if disableAgent {
		a = append(a, "--disable-agent")
	}
	return a
}

func run(name string, args ...string) {
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

func waitAPI(ctx context.Context, data string) *kubernetes.Clientset {
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		if rc, err := clientcmd.BuildConfigFromFlags("", controlplane.AdminKubeconfig(data)); err == nil {
			cs := kubernetes.NewForConfigOrDie(rc)
			if b, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx); err == nil && string(b) == "ok" {
				return cs
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	fatalf("API not ready after 3 minutes")
	return nil
}

// waitNodeReady waits until the kubelet started after t0 reports Ready.
func waitNodeReady(ctx context.Context, cs *kubernetes.Clientset, t0 time.Time) time.Duration {
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		if n, err := cs.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{}); err == nil {
			for _, c := range n.Status.Conditions {
				if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue && !c.LastHeartbeatTime.Time.Before(t0.Truncate(time.Second)) {
					return time.Since(t0)
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	fatalf("node not Ready after 3 minutes")
	return 0
}

func startPods(ctx context.Context, cs *kubernetes.Clientset, tag string) []time.Duration {
	var d []time.Duration
	for i := range *pods {
		name := fmt.Sprintf("%s-%d", tag, i)
		pod := appPod(name)
		t0 := createPod(ctx, cs, pod)
		d = append(d, waitRunning(ctx, cs, name, t0))
		cs.CoreV1().Pods("default").Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
	}
	// Wait for them to be gone before idling.
	for {
		l, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
		if err == nil && len(l.Items) == 0 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	log.Printf("%s: %d pods, median start %s", tag, len(d), median(d))
	return d
}

// appPod is the test app on the node, as restricted as Pod Security allows.
func appPod(name string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PodSpec{
		NodeName: nodeName, TerminationGracePeriodSeconds: ptr.To[int64](1),
		Containers: []corev1.Container{{Name: "app", Image: image, ImagePullPolicy: corev1.PullNever,
			SecurityContext: &corev1.SecurityContext{RunAsNonRoot: ptr.To(true), AllowPrivilegeEscalation: ptr.To(false),
				Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}, SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}}}}}}
}

// createPod creates pod, retrying for a minute while the default
// ServiceAccount does not exist yet (shortly after start), and returns
// when its successful create was sent.
func createPod(ctx context.Context, cs *kubernetes.Clientset, pod *corev1.Pod) time.Time {
	for first := time.Now(); ; time.Sleep(100 * time.Millisecond) {
		t0 := time.Now()
		_, err := cs.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{})
		if err == nil {
			return t0
		}
		if time.Since(first) > time.Minute {
			fatalf("create pod: %v", err)
		}
	}
}

// waitRunning returns how long after t0 pod name was Running.
func waitRunning(ctx context.Context, cs *kubernetes.Clientset, name string, t0 time.Time) time.Duration {
	for {
		p, err := cs.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
		if err == nil && p.Status.Phase == corev1.PodRunning {
			return time.Since(t0)
		}
		if time.Since(t0) > 2*time.Minute {
			fatalf("pod %s not Running after 2 minutes", name)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cleanup stops what runs and resets the data dir; fatalf runs it.
var (
	cleanup = func() {}
	live    = map[*group]bool{}
)

func fatalf(format string, args ...any) {
	cleanup()
	log.Fatalf(format, args...)
}

// group is processes started together.
type group struct {
	names []string
	cmds  []*exec.Cmd
}

func (g *group) start(name, bin string, args ...string) { g.startEnv(name, nil, bin, args...) }

func (g *group) startEnv(name string, env []string, bin string, args ...string) {
	f, err := os.Create(filepath.Join(*work, name+".log"))
	if err != nil {
		fatalf("%v", err)
	}
	c := exec.Command(bin, args...)
	c.Stdout, c.Stderr = f, f
	c.Env = append(append(os.Environ(), "CLOUDLESS_CONFIG="), env...)
	if err := c.Start(); err != nil {
		fatalf("%v", err)
	}
	g.names, g.cmds = append(g.names, name), append(g.cmds, c)
	live[g] = true
}

func (g *group) stop() {
	delete(live, g)
	for _, c := range g.cmds {
		c.Process.Signal(syscall.SIGTERM)
	}
	for _, c := range g.cmds {
		done := make(chan struct{})
		go func() { c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			c.Process.Kill()
			<-done
		}
	}
}

// measureIdle waits -idle and returns the RSS and PSS of the group's
// processes and of the extra processes found by command line, and the CPU
// they used in the second half. PSS splits pages shared between processes
// (Cloudless's containerd runs from the same binary as the server), so
// its sum is the memory the whole uses; RSS counts shared pages in each.
func measureIdle(g *group, extra map[string][]string) (rss, pss map[string]int64, cpu time.Duration) {
	pids := map[string]int{}
	for i, c := range g.cmds {
		pids[g.names[i]] = c.Process.Pid
	}
	for name, args := range extra {
		if p := findProc(args); p > 0 {
			pids[name] = p
		}
	}
	time.Sleep(*idle / 2)
	cpu0 := cpuTime(pids)
	time.Sleep(*idle / 2)
	cpu = cpuTime(pids) - cpu0
	rss, pss = map[string]int64{}, map[string]int64{}
	for name, pid := range pids {
		rss[name] = statusKB(fmt.Sprintf("/proc/%d/status", pid), "VmRSS:")
		pss[name] = statusKB(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss:")
	}
	return rss, pss, cpu
}

func findProc(args []string) int {
	want := []byte(strings.Join(args, "\x00") + "\x00")
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if bytes.Contains(cmd, want) {
			return pid
		}
	}
	return 0
}

// statusKB reads a "Key:   N kB" line of a /proc file, in bytes.
func statusKB(path, key string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), key); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func cpuTime(pids map[string]int) time.Duration {
	var ticks int64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += u + s
	}
	return time.Duration(ticks) * time.Second / 100
}

func median(d []time.Duration) time.Duration { return pct(d, 50) }

func pct(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

func total(m map[string]int64) int64 {
	var t int64
	for _, v := range m {
		t += v
	}
	return t
}

func write(ours, theirs result) error {
	host, _ := os.Hostname()
	date := time.Now().UTC().Format("2006-01-02")
	base := filepath.Join(*out, fmt.Sprintf("agent-%s-%s", date, *machine))
	mib := func(b int64) float64 { return float64(b) / (1 << 20) }
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	rows := []struct {
		name   string
		a, b   float64
		unit   string
		target string
	}{
		{"start to node Ready", ours.nodeReady.Seconds(), theirs.nodeReady.Seconds(), "s", "—"},
		{"pod start (create to Running), median", ms(median(ours.podStarts)), ms(median(theirs.podStarts)), "ms", "—"},
		{"pod start, p95", ms(pct(ours.podStarts, 95)), ms(pct(theirs.podStarts, 95)), "ms", "—"},
		{fmt.Sprintf("memory (PSS) after %s idle, all processes", *idle), mib(total(ours.pss)), mib(total(theirs.pss)), "MiB", "—"},
		{fmt.Sprintf("RSS after %s idle, all processes (shared pages counted per process)", *idle), mib(total(ours.rss)), mib(total(theirs.rss)), "MiB", "—"},
		{"CPU in the second half of idle", ours.cpu.Seconds(), theirs.cpu.Seconds(), "s", "—"},
	}
	var md, csv strings.Builder
	csv.WriteString("metric,unit,cloudless,upstream\n")
	fmt.Fprintf(&md, "# Node agent, %s, %s\n\n`sudo bench/agent/run.sh` (%d pods, %s idle).\n\n", date, host, *pods, *idle)
	md.WriteString("Cloudless: `cloudless server` with its agent (kubelet in the server process, containerd its child). Upstream: `cloudless server --disable-agent` with upstream kubelet 1.35.4 and containerd 2.2.1 binaries (built from the same modules) as separate processes, on the kubelet and containerd configuration files the agent wrote. Upstream runs second, on the files the first run left: images already unpacked and the pod-network (CNI) config already in place, as a pre-installed CNI would have it; Cloudless writes that config only once the controller-manager has given the node its pod CIDR, and starts its kubelet only once the API is ready, so node-Ready favours upstream.\n\n")
	md.WriteString("| Metric | Cloudless | Upstream | Ratio |\n|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&md, "| %s | %.2f %s | %.2f %s | %.2f× |\n", r.name, r.a, r.unit, r.b, r.unit, r.a/r.b)
		fmt.Fprintf(&csv, "%s,%s,%.3f,%.3f\n", r.name, r.unit, r.a, r.b)
	}
	fmt.Fprintf(&md, "\nPSS by process: Cloudless %s; upstream %s. RSS by process: Cloudless %s; upstream %s.\n", byProc(ours.pss), byProc(theirs.pss), byProc(ours.rss), byProc(theirs.rss))
	if err := os.WriteFile(base+".md", []byte(md.String()), 0o644); err != nil {
		return err
	}
	log.Printf("wrote %s.md and .csv", base)
	return os.WriteFile(base+".csv", []byte(csv.String()), 0o644)
}

func byProc(m map[string]int64) string {
	var parts []string
	for _, n := range []string{"cloudless", "containerd", "kubelet"} {
		if v, ok := m[n]; ok {
			parts = append(parts, fmt.Sprintf("%s %.0f MiB", n, float64(v)/(1<<20)))
		}
	}
	return strings.Join(parts, ", ")
}

// Command server measures `cloudless server` against the same upstream
// components run the classic way, as separate processes on etcd, with the
// same flags and certificates (controlplane.ComponentArgs):
//
//   - time from process start to kube-apiserver's /readyz, with an empty
//     data dir (cold) and again on the data it left (warm), median of -runs;
//   - resident memory (VmRSS) and CPU used while idle for -idle after start.
//
// It writes <out>/server-<date>-<host>.md and .csv. Run it through
// bench/server/run.sh, which builds the binaries.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cloudless-dev/cloudless/internal/controlplane"
)

const port = 16443

var (
	cloudlessBin = flag.String("cloudless", "", "cloudless binary")
	apiserverBin = flag.String("kube-apiserver", "", "kube-apiserver binary")
	cmBin        = flag.String("kube-controller-manager", "", "kube-controller-manager binary")
	schedBin     = flag.String("kube-scheduler", "", "kube-scheduler binary")
	etcdBin      = flag.String("etcd", "etcd", "etcd binary (Debian's etcd-server)")
	work         = flag.String("work", "", "scratch directory")
	runs         = flag.Int("runs", 3, "cold and warm starts per setup")
	idle         = flag.Duration("idle", 5*time.Minute, "how long to idle before reading memory")
	out          = flag.String("out", "bench/results", "results directory")
	machine      = flag.String("machine", "vm", "machine name for the result file")
)

func main() {
	flag.Parse()
	if *work == "" || *cloudlessBin == "" || *apiserverBin == "" || *cmBin == "" || *schedBin == "" {
		log.Fatal("need -work, -cloudless, -kube-apiserver, -kube-controller-manager and -kube-scheduler (use bench/server/run.sh)")
	}
	ctx := context.Background()
	var res results

	// Cloudless: one process, embedded datastore.
	var certDir string
	for i := range *runs {
		dir := filepath.Join(*work, fmt.Sprintf("cloudless-%d", i))
		certDir = dir
		for _, warm := range []bool{false, true} {
			g, d := startCloudless(ctx, dir)
			res.add("cloudless", warm, d)
			last := i == *runs-1 && warm
			if last {
				res.idleCloudless = measureIdle(g)
			}
			g.stop()
		}
	}

	// Upstream: etcd and three processes, the flags and certificates the
	// last cloudless run made (so cold excludes making certificates).
	cfg := controlplane.DefaultConfig()
	cfg.DataDir, cfg.HTTPSPort, cfg.AdvertiseAddress = certDir, port, "127.0.0.1"
	api, cm, sched, err := controlplane.ComponentArgs(cfg, "http://127.0.0.1:23790")
	check(err)
	for i := range *runs {
		etcdDir := filepath.Join(*work, fmt.Sprintf("etcd-%d", i))
		for _, warm := range []bool{false, true} {
			g, d := startUpstream(ctx, etcdDir, api, cm, sched)
			res.add("upstream", warm, d)
			if i == *runs-1 && warm {
				res.idleUpstream = measureIdle(g)
			}
			g.stop()
		}
	}
	check(res.write())
}

// group is a set of processes started together.
type group struct {
	names []string
	cmds  []*exec.Cmd
	done  []chan struct{} // closed when the process has exited
}

// live are the groups running, stopped by fatalf.
var live = map[*group]bool{}

func fatalf(format string, args ...any) {
	for g := range live {
		g.stop()
	}
	log.Fatalf(format, args...)
}

func (g *group) start(ctx context.Context, name, logFile string, bin string, args ...string) {
	f, err := os.Create(logFile)
	check(err)
	c := exec.CommandContext(ctx, bin, args...)
	c.Stdout, c.Stderr = f, f
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	check(c.Start())
	done := make(chan struct{})
	go func() { c.Wait(); f.Close(); close(done) }()
	g.names, g.cmds, g.done = append(g.names, name), append(g.cmds, c), append(g.done, done)
	live[g] = true
}

func (g *group) stop() {
	delete(live, g)
	for _, c := range g.cmds {
		c.Process.Signal(syscall.SIGTERM)
	}
	for i, c := range g.cmds {
		select {
		case <-g.done[i]:
		case <-time.After(30 * time.Second):
			syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
			<-g.done[i]
		}
	}
}

func startCloudless(ctx context.Context, dir string) (*group, time.Duration) {
	check(os.MkdirAll(dir, 0o700))
	g := &group{}
	t0 := time.Now()
	g.start(ctx, "cloudless", filepath.Join(*work, "cloudless.log"), *cloudlessBin, "server",
		"--data-dir", dir, "--https-listen-port", strconv.Itoa(port), "--advertise-address", "127.0.0.1", "--log-level", "warn", "--disable-agent")
	return g, waitReady(g, t0)
}

func startUpstream(ctx context.Context, etcdDir string, api, cm, sched []string) (*group, time.Duration) {
	g := &group{}
	t0 := time.Now()
	g.start(ctx, "etcd", filepath.Join(*work, "etcd.log"), *etcdBin, "--data-dir", etcdDir,
		"--listen-client-urls", "http://127.0.0.1:23790", "--advertise-client-urls", "http://127.0.0.1:23790",
		"--listen-peer-urls", "http://127.0.0.1:23800", "--initial-advertise-peer-urls", "http://127.0.0.1:23800",
		"--initial-cluster", "default=http://127.0.0.1:23800")
	g.start(ctx, "kube-apiserver", filepath.Join(*work, "kube-apiserver.log"), *apiserverBin, api...)
	d := waitReady(g, t0)
	// As cloudless does, and as a supervisor restarting them would: the
	// controller-manager exits if the apiserver is not up yet.
	g.start(ctx, "kube-controller-manager", filepath.Join(*work, "kube-controller-manager.log"), *cmBin, cm...)
	g.start(ctx, "kube-scheduler", filepath.Join(*work, "kube-scheduler.log"), *schedBin, sched...)
	return g, d
}

// waitReady polls /readyz (anonymous access is allowed there) and returns
// the time since t0.
func waitReady(g *group, t0 time.Time) time.Duration {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	deadline := t0.Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		resp, err := client.Get(fmt.Sprintf("https://127.0.0.1:%d/readyz", port))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(t0)
			}
		}
		for i := range g.cmds {
			select {
			case <-g.done[i]:
				fatalf("%s exited before ready; see %s/%s.log", g.names[i], *work, g.names[i])
			default:
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	fatalf("not ready after 3 minutes; logs in %s", *work)
	return 0
}

type idleStats struct {
	rss map[string]int64 // bytes, per process
	cpu time.Duration    // user+system CPU over the second half of the idle period, all processes
}

func (s idleStats) total() int64 {
	var t int64
	for _, v := range s.rss {
		t += v
	}
	return t
}

// measureIdle waits -idle and returns RSS at the end and the CPU used in
// the second half (the first includes the controllers' start-up).
func measureIdle(g *group) idleStats {
	log.Printf("idling %s (%s)", *idle, strings.Join(g.names, ", "))
	time.Sleep(*idle / 2)
	cpu0 := cpuTime(g)
	time.Sleep(*idle / 2)
	s := idleStats{rss: map[string]int64{}, cpu: cpuTime(g) - cpu0}
	for i, c := range g.cmds {
		s.rss[g.names[i]] = rss(c.Process.Pid)
	}
	return s
}

func rss(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	check(err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			check(err)
			return kb * 1024
		}
	}
	fatalf("no VmRSS for pid %d", pid)
	return 0
}

func cpuTime(g *group) time.Duration {
	var ticks int64
	for _, c := range g.cmds {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.Process.Pid))
		check(err)
		// Fields after the command name, which is in parentheses.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += u + s
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ
}

type results struct {
	starts                      map[string][]time.Duration // "cloudless cold" -> durations
	idleCloudless, idleUpstream idleStats
}

func (r *results) add(setup string, warm bool, d time.Duration) {
	if r.starts == nil {
		r.starts = map[string][]time.Duration{}
	}
	k := setup + " cold"
	if warm {
		k = setup + " warm"
	}
	r.starts[k] = append(r.starts[k], d)
	log.Printf("%s start: %.2f s", k, d.Seconds())
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func (r *results) write() error {
	host, _ := os.Hostname()
	date := time.Now().UTC().Format("2006-01-02")
	base := filepath.Join(*out, fmt.Sprintf("server-%s-%s", date, *machine))
	mib := func(b int64) float64 { return float64(b) / (1 << 20) }
	var csv strings.Builder
	csv.WriteString("metric,cloudless,upstream\n")
	for _, k := range []string{"cold", "warm"} {
		for i := range r.starts["cloudless "+k] {
			fmt.Fprintf(&csv, "start_%s_s_run%d,%.3f,%.3f\n", k, i+1, r.starts["cloudless "+k][i].Seconds(), r.starts["upstream "+k][i].Seconds())
		}
	}
	fmt.Fprintf(&csv, "idle_rss_mib,%.1f,%.1f\n", mib(r.idleCloudless.total()), mib(r.idleUpstream.total()))
	fmt.Fprintf(&csv, "idle_cpu_s,%.2f,%.2f\n", r.idleCloudless.cpu.Seconds(), r.idleUpstream.cpu.Seconds())
	if err := os.WriteFile(base+".csv", []byte(csv.String()), 0o644); err != nil {
		return err
	}

	var md strings.Builder
	fmt.Fprintf(&md, "# Server start and idle footprint, %s, %s\n\n", date, host)
	fmt.Fprintf(&md, "`sudo bench/server/run.sh` (%d cold and warm starts each, %s idle). Machine: %s.\n\n", *runs, *idle, machineInfo())
	md.WriteString("Cloudless: `cloudless server --disable-agent`, one process with its embedded datastore. Upstream: etcd 3.4 (Debian), kube-apiserver, kube-controller-manager and kube-scheduler 1.35.4 as separate processes, with the same flags and certificates (`controlplane.ComponentArgs`); their cold start does not include making certificates, Cloudless's does.\n\n")
	md.WriteString("| Metric | Cloudless | Upstream | Ratio | Target |\n|---|---|---|---|---|\n")
	for _, k := range []string{"cold", "warm"} {
		c, u := median(r.starts["cloudless "+k]), median(r.starts["upstream "+k])
		target := "—"
		if k == "warm" {
			target = fmt.Sprintf("≤ 5 s: %s", metStr(c <= 5*time.Second))
		}
		fmt.Fprintf(&md, "| %s start to /readyz, median | %.2f s | %.2f s | %.2f× | %s |\n", k, c.Seconds(), u.Seconds(), c.Seconds()/u.Seconds(), target)
	}
	c, u := r.idleCloudless.total(), r.idleUpstream.total()
	fmt.Fprintf(&md, "| RSS after %s idle (sum of processes) | %.0f MiB | %.0f MiB | %.2f× | ≤ 500 MB: %s |\n", *idle, mib(c), mib(u), float64(c)/float64(u), metStr(c <= 500e6))
	fmt.Fprintf(&md, "| CPU used in the second half of idle | %.1f s | %.1f s | %.2f× | — |\n\n", r.idleCloudless.cpu.Seconds(), r.idleUpstream.cpu.Seconds(), r.idleCloudless.cpu.Seconds()/r.idleUpstream.cpu.Seconds())
	md.WriteString("Upstream RSS by process: ")
	var parts []string
	for _, n := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
		parts = append(parts, fmt.Sprintf("%s %.0f MiB", n, mib(r.idleUpstream.rss[n])))
	}
	md.WriteString(strings.Join(parts, ", ") + ".\n\nEvery start, in seconds:\n\n| Run | Cloudless cold | Cloudless warm | Upstream cold | Upstream warm |\n|---|---|---|---|---|\n")
	for i := range r.starts["cloudless cold"] {
		fmt.Fprintf(&md, "| %d | %.2f | %.2f | %.2f | %.2f |\n", i+1, r.starts["cloudless cold"][i].Seconds(), r.starts["cloudless warm"][i].Seconds(), r.starts["upstream cold"][i].Seconds(), r.starts["upstream warm"][i].Seconds())
	}
	if err := os.WriteFile(base+".md", []byte(md.String()), 0o644); err != nil {
		return err
	}
	log.Printf("wrote %s.md and .csv", base)
	return nil
}

func metStr(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

func machineInfo() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	cpus, model := 0, ""
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "processor") {
			cpus++
		}
		if v, ok := strings.CutPrefix(l, "model name"); ok && model == "" {
			model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
		}
	}
	var si syscall.Sysinfo_t
	syscall.Sysinfo(&si)
	return fmt.Sprintf("%d × %s, %d GiB RAM", cpus, model, si.Totalram*uint64(si.Unit)>>30)
}

func check(err error) {
	if err != nil && !errors.Is(err, os.ErrProcessDone) {
		fatalf("%v", err)
	}
}

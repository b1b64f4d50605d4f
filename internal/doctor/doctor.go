// Package doctor checks this host and the live cluster for the on-prem
// foot-guns: kernel settings and modules, conntrack, swap, clock, the
// data dir's fsync latency, certificate expiry, the datastore, and the
// cluster's objects (internal/lint's checks, plus what only a live
// cluster shows: pending LoadBalancers and claims, rollouts that do not
// fit). `cloudless doctor` prints its report.
package doctor

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cloudless-dev/cloudless/internal/controlplane"
	"github.com/cloudless-dev/cloudless/internal/datadir"
	"github.com/cloudless-dev/cloudless/internal/datastore"
	"github.com/cloudless-dev/cloudless/internal/datastore/engine/pebble"
	"github.com/cloudless-dev/cloudless/internal/lint"
	"github.com/cloudless-dev/cloudless/internal/metrics"
	"github.com/cloudless-dev/cloudless/internal/network"
	"k8s.io/kubernetes/pkg/cluster/ports"
	schedulerconfig "k8s.io/kubernetes/pkg/scheduler/apis/config"
)

// Facts are what the host checks measured, reported as they are.
type Facts struct {
	IPForward        int     `json:"ip_forward"`
	BridgeNFCall     int     `json:"bridge_nf_call_iptables"` // -1: br_netfilter absent
	ConntrackCount   int     `json:"conntrack_count"`         // -1: nf_conntrack absent
	ConntrackMax     int     `json:"conntrack_max"`
	SwapTotalKB      int     `json:"swap_total_kb"`
	ClockSynced      bool    `json:"clock_synchronized"`
	FsyncP99Millis   float64 `json:"fsync_p99_ms"`
	FsyncDir         string  `json:"fsync_dir"`
	Overlayfs        bool    `json:"overlayfs"`
	DatastoreBytes   int64   `json:"datastore_bytes"`
	NameserversValid bool    `json:"upstream_nameservers"`

	// The data dir's free disk and the embedded engine's reserve (both
	// 0 when no embedded engine is there).
	DiskFreeBytes uint64 `json:"disk_free_bytes"`
	ReservedBytes uint64 `json:"datastore_reserved_bytes"`
}

// Config says where to look.
type Config struct {
	DataDir    string
	Kubeconfig string // empty: host checks only
	// Root is where /proc and /etc are read from (tests use a fake tree).
	Root string
	// FsyncThreshold is the p99 above which the disk is reported
	// (default 10 ms, etcd's guidance); PendingAfter is how long a claim
	// may stay Pending before it is reported (default 1 minute).
	FsyncThreshold time.Duration
	PendingAfter   time.Duration
	// FsyncSamples is how many 2 KiB write+fdatasync rounds measure the
	// data dir's disk (etcd's guidance: p99 under 10 ms).
	FsyncSamples int
	// ReservedSpace is the server's --datastore-reserved-space (0:
	// automatic, as the server computes it).
	ReservedSpace uint64
}

// Result is the report plus the measured facts.
type Result struct {
	lint.Report
	Facts   Facts   `json:"facts"`
	Seconds float64 `json:"seconds"`
}

type reporter struct{ findings []lint.Finding }

func (r *reporter) add(id string, sev lint.Severity, object, msg, fix string) {
	r.findings = append(r.findings, lint.Finding{ID: id, Severity: sev, Level: sev.String(), Object: object, Message: msg, Fix: fix})
}

// Run checks the host and, with a kubeconfig, the cluster.
func Run(ctx context.Context, cfg Config) (Result, error) {
	start := time.Now()
	if cfg.Root == "" {
		cfg.Root = "/"
	}
	if cfg.FsyncThreshold == 0 {
		cfg.FsyncThreshold = 10 * time.Millisecond
	}
	if cfg.PendingAfter == 0 {
		cfg.PendingAfter = time.Minute
	}
	if cfg.FsyncSamples == 0 {
		cfg.FsyncSamples = 200
	}
	var r reporter
	f := hostChecks(cfg, &r)
	var notes []lint.Note
	if cfg.Kubeconfig != "" {
		if err := clusterChecks(ctx, cfg, &r); err != nil {
			return Result{}, err
		}
	}
	slices.SortStableFunc(r.findings, func(a, b lint.Finding) int { return strings.Compare(a.ID, b.ID) })
	return Result{Report: lint.Report{Findings: r.findings, Notes: notes}, Facts: f, Seconds: time.Since(start).Seconds()}, nil
}

func readInt(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return -1
	}
	return n
}

func hostChecks(cfg Config, r *reporter) Facts {
	var f Facts
	f.IPForward = readInt(filepath.Join(cfg.Root, "/proc/sys/net/ipv4/ip_forward"))
	if f.IPForward != 1 {
		r.add("CL-HOST-001", lint.Error, "sysctl net.ipv4.ip_forward", "IP forwarding is off: pod traffic cannot leave its node", "sysctl -w net.ipv4.ip_forward=1 and set it in /etc/sysctl.d/ (the agent sets it at start)")
	}
	f.BridgeNFCall = readInt(filepath.Join(cfg.Root, "/proc/sys/net/bridge/bridge-nf-call-iptables"))
	if f.BridgeNFCall < 0 {
		r.add("CL-HOST-006", lint.Error, "kernel module br_netfilter", "br_netfilter is not loaded: Service traffic between pods on one node and NetworkPolicy on a node do not work", "modprobe br_netfilter, and list it in /etc/modules-load.d/cloudless.conf")
	}
	f.ConntrackCount = readInt(filepath.Join(cfg.Root, "/proc/sys/net/netfilter/nf_conntrack_count"))
	f.ConntrackMax = readInt(filepath.Join(cfg.Root, "/proc/sys/net/netfilter/nf_conntrack_max"))
	if f.ConntrackCount >= 0 && f.ConntrackMax > 0 {
		used := float64(f.ConntrackCount) / float64(f.ConntrackMax)
		switch {
		case used >= 0.9:
			r.add("CL-HOST-002", lint.Error, "conntrack table", fmt.Sprintf("the conntrack table is %.0f%% full (%d of %d): new connections are dropped when it fills", used*100, f.ConntrackCount, f.ConntrackMax), "raise net.netfilter.nf_conntrack_max (sysctl.d), or find what opens so many connections")
		case used >= 0.75:
			r.add("CL-HOST-002", lint.Warning, "conntrack table", fmt.Sprintf("the conntrack table is %.0f%% full (%d of %d): new connections are dropped when it fills", used*100, f.ConntrackCount, f.ConntrackMax), "raise net.netfilter.nf_conntrack_max (sysctl.d)")
		}
	}
	if b, err := os.ReadFile(filepath.Join(cfg.Root, "/proc/swaps")); err == nil {
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n")[1:] {
			if fs := strings.Fields(l); len(fs) >= 3 {
				n, _ := strconv.Atoi(fs[2])
				f.SwapTotalKB += n
			}
		}
	}
	if f.SwapTotalKB > 0 {
		r.add("CL-HOST-003", lint.Error, "swap", fmt.Sprintf("%d KiB of swap is on: the kubelet refuses to start, and memory limits stop meaning what they say", f.SwapTotalKB), "swapoff -a and remove swap from /etc/fstab")
	}
	f.ClockSynced = clockSynced()
	if !f.ClockSynced {
		r.add("CL-HOST-004", lint.Warning, "clock", "the kernel clock is not synchronized: certificates look expired or not yet valid, and leases misbehave across nodes", "run a time sync daemon (systemd-timesyncd, chrony) against reachable NTP servers")
	}
	if fs, err := os.ReadFile(filepath.Join(cfg.Root, "/proc/filesystems")); err == nil {
		f.Overlayfs = strings.Contains(string(fs), "overlay")
	}
	if !f.Overlayfs {
		r.add("CL-HOST-006", lint.Error, "kernel module overlay", "overlayfs is missing: containerd cannot unpack images", "modprobe overlay, and list it in /etc/modules-load.d/cloudless.conf")
	}
	f.FsyncDir = cfg.DataDir
	if _, err := os.Stat(cfg.DataDir); err != nil {
		f.FsyncDir = filepath.Dir(cfg.DataDir)
	}
	p99, err := fsyncP99(f.FsyncDir, cfg.FsyncSamples)
	if err != nil {
		r.add("CL-HOST-005", lint.Warning, "disk of "+f.FsyncDir, "fsync latency could not be measured: "+err.Error(), "run doctor as root")
	} else {
		f.FsyncP99Millis = float64(p99.Microseconds()) / 1000
		if p99 > cfg.FsyncThreshold {
			r.add("CL-HOST-005", lint.Warning, "disk of "+f.FsyncDir, fmt.Sprintf("fsync p99 is %.2f ms (etcd's guidance: under 10 ms): every API write waits for it, and leader leases and watches stall", f.FsyncP99Millis), "put --data-dir on an SSD with power-loss protection, away from busy disks")
		}
	}
	f.DatastoreBytes = dirSize(datadir.Of(cfg.DataDir).Engine())
	if f.DatastoreBytes > 2<<30 {
		r.add("CL-DS-001", lint.Warning, "datastore", fmt.Sprintf("the datastore holds %.1f GiB: start and compaction slow down, and something is likely writing too much", float64(f.DatastoreBytes)/(1<<30)), "find the biggest keys with `cloudless datastore` tools; check Events and leases churn")
	}
	diskSpaceCheck(cfg, &f, r)
	f.NameserversValid = upstreamResolvers(cfg.Root)
	if !f.NameserversValid {
		r.add("CL-DNS-002", lint.Warning, "/etc/resolv.conf", "no upstream resolver besides loopback stubs: pods resolve cluster names only, and a kubelet pointed at 127.0.0.53 makes pods query themselves", "configure real nameservers (or systemd-resolved's upstreams), or give --resolv-conf")
	}
	certChecks(cfg.DataDir, r)
	portChecks(cfg.DataDir, r)
	return f
}

// port is one a server or node listens on: node ports are the agent's
// (a joined node's too), the others the control plane's.
type port struct {
	port int
	udp  bool
	node bool
	what string
}

// serverPorts are what a server and its node listen on, with the flag or
// setting that moves each.
var serverPorts = []port{
	{controlplane.DefaultConfig().HTTPSPort, false, false, "kube-apiserver (--https-listen-port)"},
	{ports.KubeletPort, false, true, "the kubelet"},
	{ports.ProxyHealthzPort, false, true, "kube-proxy's health check"},
	{ports.KubeControllerManagerPort, false, false, "kube-controller-manager"},
	{schedulerconfig.DefaultKubeSchedulerPort, false, false, "kube-scheduler"},
	{metrics.Port, false, false, "the metrics API (kubectl top, HPA)"},
	{network.VXLANPort, true, true, "VXLAN between nodes (--network-backend host-gw avoids it)"},
}

// portChecks reports ports a server or agent on this data dir would need
// that something else holds. A port is skipped while its owner on this
// data dir runs: the control plane's while the server holds server.lock,
// the node's while a server or a joined agent holds the node lock.
func portChecks(dataDir string, r *reporter) {
	d := datadir.Of(dataDir)
	server := d.ServerRunning()
	node := server || d.NodeRunning()
	for _, p := range serverPorts {
		if server || p.node && node {
			continue // its own
		}
		addr := net.JoinHostPort("", strconv.Itoa(p.port))
		var err error
		if p.udp {
			var c net.PacketConn
			if c, err = net.ListenPacket("udp", addr); err == nil {
				c.Close()
			}
		} else {
			var l net.Listener
			if l, err = net.Listen("tcp", addr); err == nil {
				l.Close()
			}
		}
		if err != nil {
			proto := "tcp"
			if p.udp {
				proto = "udp"
			}
			r.add("CL-HOST-008", lint.Error, fmt.Sprintf("port %d/%s", p.port, proto), fmt.Sprintf("port %d/%s, needed by %s, is in use: the server or agent will not start", p.port, proto, p.what),
				fmt.Sprintf("find the owner with `ss -lntup 'sport = :%d'` and stop it, or move it", p.port))
		}
	}
}

func upstreamResolvers(root string) bool {
	for _, src := range []string{"/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"} {
		b, err := os.ReadFile(filepath.Join(root, src))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			fs := strings.Fields(l)
			if len(fs) >= 2 && fs[0] == "nameserver" && !strings.HasPrefix(fs[1], "127.") && fs[1] != "::1" {
				return true
			}
		}
	}
	return false
}

// fsyncP99 writes 2 KiB and fdatasyncs, n times, as etcd's WAL does.
func fsyncP99(dir string, n int) (time.Duration, error) {
	f, err := os.CreateTemp(dir, ".cloudless-doctor-fsync-")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 2048)
	lat := make([]time.Duration, 0, n)
	for range n {
		t := time.Now()
		if _, err := f.Write(buf); err != nil {
			return 0, err
		}
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			return 0, err
		}
		lat = append(lat, time.Since(t))
	}
	slices.Sort(lat)
	return lat[len(lat)*99/100], nil
}

// diskSpaceCheck reports an embedded datastore whose disk is below its
// reserve (writes are refused) or within twice of it.
func diskSpaceCheck(cfg Config, f *Facts, r *reporter) {
	ds := datastore.Config{DataDir: cfg.DataDir, ReservedSpace: cfg.ReservedSpace}
	if _, err := os.Stat(pebble.WALPath(ds.EngineDir())); err != nil {
		return // no embedded engine here
	}
	free, size, err := ds.DiskSpace()
	if err != nil {
		return
	}
	f.DiskFreeBytes, f.ReservedBytes = free, ds.Reserve(size)
	msg := fmt.Sprintf("%d MiB free on the disk of %s, against the datastore's %d MiB reserve", free>>20, cfg.DataDir, f.ReservedBytes>>20)
	switch {
	case free < f.ReservedBytes:
		r.add("CL-DS-003", lint.Error, "disk of "+cfg.DataDir, msg+": the datastore refuses writes (the API still serves reads)",
			"free disk space or grow the disk: writes resume by themselves, no restart needed")
	case free < 2*f.ReservedBytes:
		r.add("CL-DS-003", lint.Warning, "disk of "+cfg.DataDir, msg+": below it the datastore refuses writes",
			"free disk space or grow the disk")
	}
}

func dirSize(dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

// certChecks reports certificates under the data dir close to expiry.
func certChecks(dataDir string, r *reporter) {
	filepath.Walk(dataDir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() || !strings.HasSuffix(p, ".crt") && !strings.HasSuffix(p, ".pem") || strings.Contains(p, "/containerd/") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		blk, _ := pem.Decode(b)
		if blk == nil || blk.Type != "CERTIFICATE" {
			return nil
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil
		}
		left := time.Until(c.NotAfter)
		sev := lint.Severity(-1)
		switch {
		case left < 7*24*time.Hour:
			sev = lint.Error
		case left < 30*24*time.Hour:
			sev = lint.Warning
		}
		if sev >= 0 {
			r.add("CL-HOST-007", sev, p, fmt.Sprintf("certificate %q expires %s (%s, in %.0f days): clients are refused from then on", c.Subject.CommonName, c.NotAfter.Format(time.RFC3339), c.NotAfter.Weekday(), left.Hours()/24),
				"a running server renews its leaf certificates itself; for the CA see docs/security.md (CA rotation)")
		}
		return nil
	})
}

// clockSynced asks the kernel whether a time sync daemon keeps the clock
// disciplined (a variable so tests can stand in for the kernel).
var clockSynced = func() bool {
	var tx unix.Timex
	state, err := unix.Adjtimex(&tx)
	return err == nil && state != unix.TIME_ERROR && tx.Status&unix.STA_UNSYNC == 0
}

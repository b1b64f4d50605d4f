package network

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"fmt"
	"github.com/cloudless-dev/cloudless/internal/datadir"
	"io"
	"io/fs"
	"k8s.io/kubernetes/pkg/cluster/ports"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// snapshotCommands are what someone debugging a node's network asks for
// first; each goes into the archive under its name, with its error if it
// failed (a missing tool does not stop the rest).
var snapshotCommands = []struct {
	file string
	argv []string
}{
	{"nft-ruleset.txt", []string{"nft", "list", "ruleset"}},
	{"iptables-save.txt", []string{"iptables-save"}},
	{"ip6tables-save.txt", []string{"ip6tables-save"}},
	{"ipvsadm.txt", []string{"ipvsadm", "-Ln"}},
	{"ip-addr.txt", []string{"ip", "-d", "addr"}},
	{"ip-link.txt", []string{"ip", "-d", "-s", "link"}},
	{"ip-route.txt", []string{"ip", "route", "show", "table", "all"}},
	{"ip-rule.txt", []string{"ip", "rule"}},
	{"ip-neigh.txt", []string{"ip", "neigh"}},
	{"bridge-fdb.txt", []string{"bridge", "fdb", "show"}},
	{"conntrack.txt", []string{"conntrack", "-L", "-o", "extended"}},
	{"conntrack-stats.txt", []string{"conntrack", "-S"}},
	{"ss.txt", []string{"ss", "-tunap"}},
}

var snapshotFiles = []string{
	"/proc/sys/net/ipv4/ip_forward",
	"/proc/sys/net/bridge/bridge-nf-call-iptables",
	"/proc/sys/net/netfilter/nf_conntrack_count",
	"/proc/sys/net/netfilter/nf_conntrack_max",
	"/etc/resolv.conf",
}

// Snapshot writes a gzipped tar of this node's network state: rules,
// conntrack, routes, addresses, neighbours, CNI state under dataDir and
// kube-proxy's state, taken as close together as the tools allow. It
// reports each part on progress.
func Snapshot(ctx context.Context, dataDir string, w io.Writer, progress func(string)) error {
	gz := gzip.NewWriter(w)
	tw := tar.NewWriter(gz)
	now := time.Now()
	add := func(name string, data []byte) error {
		progress(name)
		return tw.WriteHeader(&tar.Header{Name: "network/" + name, Mode: 0o600, Size: int64(len(data)), ModTime: now})
	}
	put := func(name string, data []byte) error {
		if err := add(name, data); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	for _, c := range snapshotCommands {
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		out, err := exec.CommandContext(cctx, c.argv[0], c.argv[1:]...).CombinedOutput()
		cancel()
		if err != nil {
			out = append(out, fmt.Sprintf("\n# %s: %v\n", strings.Join(c.argv, " "), err)...)
		}
		if err := put(c.file, out); err != nil {
			return err
		}
	}
	for _, f := range snapshotFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			b = []byte(err.Error() + "\n")
		}
		if err := put("files"+f, b); err != nil {
			return err
		}
	}
	// CNI config and IPAM state, kube-proxy's configuration.
	agentDir := datadir.Of(dataDir).Agent()
	for _, dir := range []string{filepath.Join(agentDir, "cni"), filepath.Join(agentDir, "network")} {
		_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return nil
			}
			rel, _ := filepath.Rel(dataDir, p)
			return put("data-dir/"+rel, b)
		})
	}
	hc := &http.Client{Timeout: 5 * time.Second}
	for name, url := range map[string]string{
		"kube-proxy-metrics.txt": "http://" + KubeProxyMetricsAddr + "/metrics",
		"kube-proxy-healthz.txt": fmt.Sprintf("http://127.0.0.1:%d/healthz", ports.ProxyHealthzPort),
		"cluster-dns-ready.txt":  "http://" + dnsReadyAddr + "/ready",
	} {
		var b []byte
		resp, err := hc.Get(url)
		if err == nil {
			b, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		if err != nil {
			b = append(b, []byte("\n# "+url+": "+err.Error()+"\n")...)
		}
		if err := put(name, b); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return gz.Close()
}

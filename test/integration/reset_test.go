package integration

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cloudless-dev/cloudless/internal/datadir"
	"github.com/cloudless-dev/cloudless/internal/footprint"
	"github.com/cloudless-dev/cloudless/internal/network"
	"github.com/cloudless-dev/cloudless/internal/testutil/nodens"
)

// nodeTables are the nftables tables (family ip) a node's network has.
var nodeTables = []string{network.Table, network.PolicyTable, "kube-proxy"}

// netState is what a network namespace holds of what a node makes: the
// bridge, the VXLAN device, the nftables tables and owned routes.
func netState(t *testing.T, ns string) (links []string, tables []string, routes string) {
	t.Helper()
	for _, l := range []string{network.BridgeName, network.VXLANDevice} {
		if exec.Command("ip", "-n", ns, "link", "show", l).Run() == nil {
			links = append(links, l)
		}
	}
	out, err := exec.Command("ip", "netns", "exec", ns, "nft", "list", "tables").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list tables in %s: %v\n%s", ns, err, out)
	}
	for _, tb := range nodeTables {
		if strings.Contains(string(out), "table ip "+tb+"\n") {
			tables = append(tables, tb)
		}
	}
	r, _ := exec.Command("ip", "-n", ns, "route", "show", "proto", "193").CombinedOutput()
	return links, tables, strings.TrimSpace(string(r))
}

// resetIn runs `cloudless reset --yes` in node's namespaces, from dir.
func resetIn(node *nodens.Node, dir, dataDir string) (string, error) {
	cmd := node.Command(cloudlessBin, "reset", "--data-dir", dataDir, "--yes")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CLOUDLESS_CONFIG=")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestReset: reset removes what its own node made and nothing else. A
// namespace holding another node's bridge and tables (made by hand here)
// keeps them through every reset run in it: of a dir that is not a data
// dir (refused, left intact), of a dir with only layout-version (no
// record: nothing outside it touched), and of a joined agent whose
// network is in another namespace (refused). From its own namespace,
// with --data-dir relative and with a trailing slash, reset removes the
// joined agent completely: containers, processes, cgroups, mounts, its
// bridge, VXLAN device, tables and routes, its run dir and data dir;
// the server's node in its own namespace keeps all of its.
func TestReset(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	c := startNetCluster(t, ctx, "nameserver 127.0.0.53\n")
	dataB := filepath.Join(c.dir, "b")
	runB := datadir.Of(dataB).RunDir()
	c.runPods(t, ctx, "default", appPod("b1", "node-b", nil))

	// Another node's bridge and tables, in a namespace of their own.
	other := nodens.New(t, "rx", 15)
	for _, args := range [][]string{
		{"ip", "-n", other.Name, "link", "add", network.BridgeName, "type", "bridge"},
		{"ip", "netns", "exec", other.Name, "nft", "add", "table", "ip", network.Table},
		{"ip", "netns", "exec", other.Name, "nft", "add", "table", "ip", network.PolicyTable},
		{"ip", "netns", "exec", other.Name, "nft", "add", "table", "ip", "kube-proxy"},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	otherIntact := func(after string) {
		t.Helper()
		links, tables, _ := netState(t, other.Name)
		if len(links) != 1 || len(tables) != len(nodeTables) {
			t.Errorf("after %s, the other namespace holds links %v and tables %v, want %s and %v", after, links, tables, network.BridgeName, nodeTables)
		}
	}
	linksA, tablesA, _ := netState(t, c.a.Name)

	t.Run("a dir that is not a data dir", func(t *testing.T) {
		dir := t.TempDir()
		notes := filepath.Join(dir, "notes.txt")
		os.WriteFile(notes, []byte("mine"), 0o600)
		out, err := resetIn(other, "/", dir)
		if err == nil || !strings.Contains(out, "does not look like a Cloudless data dir") || strings.Count(strings.TrimSpace(out), "\n") > 0 {
			t.Errorf("reset of %s: %v, want a one-line refusal:\n%s", dir, err, out)
		}
		if b, err := os.ReadFile(notes); err != nil || string(b) != "mine" {
			t.Errorf("%s after the refused reset: %q, %v", notes, b, err)
		}
		entries, _ := os.ReadDir(dir)
		if len(entries) != 1 {
			t.Errorf("the refused reset left %d entries in %s, want only notes.txt", len(entries), dir)
		}
		otherIntact("a refused reset")
	})

	t.Run("a dir with only layout-version", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "data")
		os.MkdirAll(dir, 0o700)
		os.WriteFile(datadir.Of(dir).LayoutFile(), []byte("1\n"), 0o600)
		out, err := resetIn(other, "/", dir)
		if err != nil || !strings.Contains(out, "refuses to guess") {
			t.Errorf("reset of a dir with only layout-version: %v\n%s", err, out)
		}
		if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s after reset: %v, want it removed", dir, err)
		}
		otherIntact("resetting a dir without a record")
	})

	rec, err := footprint.Load(dataB)
	if err != nil {
		t.Fatalf("node-b's footprint: %v", err)
	}
	if rec.RunDir != runB || len(rec.Cgroups) == 0 || !contains(rec.Links, network.BridgeName) || len(rec.NFTables) < 3 {
		t.Errorf("node-b's footprint misses what it made: %+v", rec)
	}
	if out, err := resetIn(c.b, "/", dataB); err == nil || !strings.Contains(out, "is running") {
		t.Errorf("reset with node-b's agent running: %v\n%s", err, out)
	}
	c.agentB.kill()
	// A stopped node whose network is in another namespace: refused
	// from here, nothing removed.
	if out, err := resetIn(other, "/", dataB); err == nil || !strings.Contains(out, "nsenter --net=") {
		t.Errorf("reset of node-b from another namespace: %v, want a refusal naming the namespace:\n%s", err, out)
	}
	if _, err := os.Stat(dataB); err != nil {
		t.Errorf("node-b's data dir after a refused reset: %v", err)
	}
	if links, _, _ := netState(t, c.b.Name); !contains(links, network.BridgeName) {
		t.Error("node-b's bridge is gone after a refused reset")
	}
	otherIntact("the refused reset of node-b")

	// From node-b's namespace, relative and with a trailing slash.
	out, err := resetIn(c.b, c.dir, "b/")
	if err != nil {
		t.Fatalf("reset of node-b: %v\n%s", err, out)
	}
	for _, want := range []string{network.BridgeName, rec.Cgroups[0], runB} {
		if !strings.Contains(out, want) {
			t.Errorf("reset did not say it removes %s:\n%s", want, out)
		}
	}
	poll(t, ctx, "no process of node-b left", func() (bool, error) {
		return len(procsWithArg(dataB))+len(procsWithArg(runB)) == 0, nil
	})
	if links, tables, routes := netState(t, c.b.Name); len(links)+len(tables) > 0 || routes != "" {
		t.Errorf("node-b's namespace after reset holds links %v, tables %v, routes %q", links, tables, routes)
	}
	for _, d := range append([]string{dataB, runB}, rec.Cgroups...) {
		if _, err := os.Stat(d); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s after reset: %v, want it removed", d, err)
		}
	}
	if mounts, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mounts), dataB) || strings.Contains(string(mounts), runB) {
		t.Errorf("mounts under %s or %s left after reset", dataB, runB)
	}
	otherIntact("the reset of node-b")
	if links, tables, _ := netState(t, c.a.Name); len(links) != len(linksA) || len(tables) != len(tablesA) || !contains(links, network.BridgeName) {
		t.Errorf("node-a's namespace after node-b's reset holds links %v and tables %v, want %v and %v", links, tables, linksA, tablesA)
	}
	if n, err := c.cs.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{}); err != nil || !nodeIsReady(n) {
		t.Errorf("node-a after node-b's reset: ready %v, %v", n != nil && nodeIsReady(n), err)
	}
}

// procsWithArg returns the PIDs whose command line has an argument
// holding s.
func procsWithArg(s string) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(cmd), s) {
			var pid int
			for _, ch := range e.Name() {
				pid = pid*10 + int(ch-'0')
			}
			out = append(out, pid)
		}
	}
	return out
}

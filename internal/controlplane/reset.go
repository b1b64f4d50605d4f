package controlplane

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cloudless-dev/cloudless/internal/agent"
	"github.com/cloudless-dev/cloudless/internal/datadir"
	"github.com/cloudless-dev/cloudless/internal/footprint"
	"github.com/cloudless-dev/cloudless/internal/network"
)

// ResetPlan is what Reset removes: the data dir, and outside it exactly
// what the node's footprint record lists (nothing without one).
type ResetPlan struct {
	DataDir string `json:"dataDir"`
	// Footprint is the node's record of what it made outside the data
	// dir, nil without one: then nothing outside is touched.
	Footprint *footprint.Record `json:"footprint,omitempty"`
	// Network: the recorded network objects are in this process's network
	// namespace and are removed.
	Network bool     `json:"network"`
	Shims   []int    `json:"shims"`  // container shims, killed with their containers
	Mounts  []string `json:"mounts"` // unmounted, deepest first
	Shared  bool     `json:"sharedDatastore"`
	// Outside lists what is removed outside the data dir; Notes what is
	// left alone and why.
	Outside []string `json:"outside"`
	Notes   []string `json:"notes"`
}

// PlanReset says what Reset(dataDir) would do. It refuses a dir that is
// not a Cloudless data dir, so a typo cannot remove /srv, and a node
// whose network namespace is another one that still exists.
func PlanReset(dataDir string) (ResetPlan, error) {
	d, err := datadir.New(dataDir)
	if err != nil {
		return ResetPlan{}, err
	}
	abs := string(d)
	p := ResetPlan{DataDir: abs}
	if _, err := os.Stat(abs); errors.Is(err, fs.ErrNotExist) {
		return p, nil
	}
	if ok, markers := d.IsDataDir(); !ok {
		return ResetPlan{}, fmt.Errorf("%s does not look like a Cloudless data dir (none of %s in it), so reset deletes nothing in it: check --data-dir", abs, strings.Join(markers, ", "))
	}
	rec, err := footprint.Load(abs)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		p.Notes = append(p.Notes, fmt.Sprintf("%s has no record of what its node made outside it (%s): reset removes nothing outside it and refuses to guess; remove any leftovers by hand", abs, footprint.Path(abs)))
	case err != nil:
		return ResetPlan{}, err
	default:
		if err := p.planFootprint(rec); err != nil {
			return ResetPlan{}, err
		}
	}
	dirs := []string{abs}
	if p.Footprint != nil && p.Footprint.RunDir != "" {
		dirs = append(dirs, p.Footprint.RunDir)
	}
	if p.Mounts, err = mountsUnder(dirs...); err != nil {
		return ResetPlan{}, err
	}
	p.Shared = d.Shared()
	return p, nil
}

// planFootprint plans the removal of what rec lists, after checking it
// names only what a node makes: a run dir under /run, cgroups under
// /sys/fs/cgroup. What an earlier boot recorded is gone; network objects
// are removed only in the namespace they were made in.
func (p *ResetPlan) planFootprint(rec footprint.Record) error {
	path := footprint.Path(p.DataDir)
	if rec.RunDir != "" && (filepath.Clean(rec.RunDir) != rec.RunDir || !strings.HasPrefix(rec.RunDir, "/run/")) {
		return fmt.Errorf("%s names run dir %q, which is not under /run: the record is damaged; remove what the node made by hand, then the record", path, rec.RunDir)
	}
	for _, c := range rec.Cgroups {
		if filepath.Clean(c) != c || !strings.HasPrefix(c, agent.CgroupFS+"/") {
			return fmt.Errorf("%s names cgroup %q, which is not under %s: the record is damaged; remove what the node made by hand, then the record", path, c, agent.CgroupFS)
		}
	}
	boot, here, err := footprint.Here()
	if err != nil {
		return err
	}
	if rec.BootID != boot {
		p.Notes = append(p.Notes, "the node last ran before this machine rebooted: its run dir, cgroups and network objects went with that boot")
		return nil
	}
	p.Footprint = &rec
	p.Shims = agent.Shims(rec.RunDir)
	network := len(rec.Links) > 0 || len(rec.NFTables) > 0 || len(rec.IPTables) > 0 || rec.RouteProtocol != 0
	switch {
	case !network:
	case rec.Netns.Same(here):
		p.Network = true
	default:
		if where := findNetns(rec.Netns); where != "" {
			return fmt.Errorf("the node of %s ran in network namespace %s (%s), not this one (%s): run reset there, e.g. nsenter --net=%s cloudless reset --data-dir %s; nothing was removed",
				p.DataDir, rec.Netns, where, here, where, p.DataDir)
		}
		p.Notes = append(p.Notes, fmt.Sprintf("the node's network namespace %s is gone, and its devices and tables with it: no network object is touched here", rec.Netns))
	}
	for _, line := range rec.Outside() {
		if p.Network || !strings.HasSuffix(line, " in "+rec.Netns.String()) {
			p.Outside = append(p.Outside, line)
		}
	}
	return nil
}

// findNetns returns a file naming the network namespace ns (a name under
// /run/netns, or a process's), or "" if none exists any more.
func findNetns(ns footprint.Netns) string {
	var candidates []string
	if entries, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range entries {
			candidates = append(candidates, filepath.Join("/run/netns", e.Name()))
		}
	}
	if entries, err := os.ReadDir("/proc"); err == nil {
		for _, e := range entries {
			if _, err := strconv.Atoi(e.Name()); err == nil {
				candidates = append(candidates, filepath.Join("/proc", e.Name(), "ns", "net"))
			}
		}
	}
	for _, c := range candidates {
		var st syscall.Stat_t
		if syscall.Stat(c, &st) == nil && st.Ino == ns.Inode && st.Dev == ns.Dev && netnsCookie(c, ns) {
			return c
		}
	}
	return ""
}

// netnsCookie reports whether the namespace at path has ns's cookie (an
// inode may be reused once its namespace is gone; a cookie is not). It
// enters the namespace on a thread of its own, which then exits.
func netnsCookie(path string, ns footprint.Netns) bool {
	if ns.Cookie == 0 {
		return true
	}
	ok := make(chan bool, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		f, err := os.Open(path)
		if err != nil {
			ok <- false
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			ok <- false
			return
		}
		_, there, err := footprint.Here()
		ok <- err == nil && there.Cookie == ns.Cookie
	}()
	return <-ok
}

// Reset refuses a running server's or node's data dir. Then, if the node
// left a footprint record, it kills the containers the agent left running
// (their shims and the processes under them), removes its cgroups,
// unmounts what is mounted under the data dir and the run dir, removes
// the recorded network objects (in their own network namespace only) and
// the run dir; last the data dir. A shared PostgreSQL datastore is left
// alone; other servers keep the cluster.
func Reset(p ResetPlan) error {
	if _, err := os.Stat(p.DataDir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	release, err := datadir.Dir(p.DataDir).LockServer()
	if err != nil {
		return err
	}
	defer release()
	releaseNode, err := datadir.Dir(p.DataDir).LockNode()
	if err != nil {
		return err
	}
	defer releaseNode()
	rec := p.Footprint
	if rec != nil {
		// Containers first: they hold the mounts and the cgroups.
		agent.KillShims(rec.RunDir)
		if err := removeCgroups(rec.Cgroups); err != nil {
			return err
		}
	}
	for _, m := range p.Mounts {
		if err := syscall.Unmount(m, 0); err != nil && !errors.Is(err, syscall.EINVAL) {
			if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
				return fmt.Errorf("unmount %s: %w", m, err)
			}
		}
	}
	if rec != nil && p.Network {
		if err := network.Remove(context.Background(), *rec); err != nil {
			return err
		}
	}
	dirs := []string{p.DataDir}
	if rec != nil && rec.RunDir != "" {
		dirs = append([]string{rec.RunDir}, dirs...)
	}
	for _, d := range dirs {
		if err := os.RemoveAll(d); err != nil {
			return fmt.Errorf("remove %s: %w", d, err)
		}
	}
	return nil
}

// mountsUnder lists mount points at or below dirs, deepest first.
func mountsUnder(dirs ...string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		for _, dir := range dirs {
			if mp == dir || strings.HasPrefix(mp, dir+"/") {
				out = append(out, mp)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return strings.Count(out[i], "/") > strings.Count(out[j], "/") })
	return out, sc.Err()
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// removeCgroups retries while the killed containers' cgroups empty.
func removeCgroups(dirs []string) error {
	var err error
	for range 50 {
		if err = agent.RemoveCgroupDirs(dirs); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond) // the kernel empties a cgroup after its last task exits
	}
	return err
}

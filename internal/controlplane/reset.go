package controlplane

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cloudless-dev/cloudless/internal/agent"
)

// lockDataDir takes the exclusive lock a running server holds on its data
// dir, so that a second server, or reset, on the same dir is refused. The
// kernel drops it when the process exits, however it exits.
func lockDataDir(dataDir string) (release func(), err error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w (run as root or choose a writable --data-dir)", dataDir, err)
	}
	path := filepath.Join(dataDir, "server.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		pid, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("a cloudless server (pid %s) is running with --data-dir %s; stop it first, or choose another --data-dir", strings.TrimSpace(string(pid)), dataDir)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	f.Truncate(0)
	f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return func() { f.Close() }, nil
}

// ResetPlan is what Reset removes.
type ResetPlan struct {
	DataDir string   `json:"dataDir"`
	RunDir  string   `json:"runDir"` // the agent's runtime state
	Shims   []int    `json:"shims"`  // container shims, killed with their containers
	Mounts  []string `json:"mounts"` // unmounted, deepest first
	Shared  bool     `json:"sharedDatastore"`
}

// PlanReset says what Reset(dataDir) would do, and refuses a dir that is
// not a Cloudless data dir, so a typo cannot remove /srv.
func PlanReset(dataDir string) (ResetPlan, error) {
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return ResetPlan{}, err
	}
	p := ResetPlan{DataDir: abs, RunDir: agent.RunDirFor(abs)}
	if _, err := os.Stat(abs); errors.Is(err, fs.ErrNotExist) {
		return p, nil
	}
	marked := false
	for _, m := range []string{"server", "datastore", "server.lock", "layout-version"} {
		if _, err := os.Stat(filepath.Join(abs, m)); err == nil {
			marked = true
		}
	}
	if !marked || abs == "/" {
		return ResetPlan{}, fmt.Errorf("%s does not look like a Cloudless data dir (no server/ or datastore/ in it); check --data-dir", abs)
	}
	if p.Mounts, err = mountsUnder(abs, p.RunDir); err != nil {
		return ResetPlan{}, err
	}
	p.Shims = agent.Shims(p.RunDir)
	if b, err := os.ReadFile(filepath.Join(abs, "server", "datastore")); err == nil && string(b) == "shared" {
		p.Shared = true
	}
	return p, nil
}

// Reset refuses a running server's data dir. It kills the containers the
// agent left running (their shims and the processes under them), unmounts
// what is mounted under the data dir and the agent's run dir, removes the
// pod network's bridge and both dirs. A shared
// PostgreSQL datastore is left alone; other servers keep the cluster.
func Reset(p ResetPlan) error {
	if _, err := os.Stat(p.DataDir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	release, err := lockDataDir(p.DataDir)
	if err != nil {
		return err
	}
	defer release()
	// Containers first: they hold the mounts.
	agent.KillShims(p.RunDir)
	if err := removeCgroups(p.DataDir); err != nil {
		return err
	}
	for _, m := range p.Mounts {
		if err := syscall.Unmount(m, 0); err != nil && !errors.Is(err, syscall.EINVAL) {
			if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
				return fmt.Errorf("unmount %s: %w", m, err)
			}
		}
	}
	if err := agent.RemoveNetwork(context.Background()); err != nil {
		return err
	}
	for _, d := range []string{p.DataDir, p.RunDir} {
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
func removeCgroups(dataDir string) error {
	var err error
	for range 50 {
		if err = agent.RemoveCgroups(dataDir); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond) // the kernel empties a cgroup after its last task exits
	}
	return err
}

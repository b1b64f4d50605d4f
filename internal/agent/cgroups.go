package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/cloudless-dev/cloudless/internal/datadir"
	"github.com/cloudless-dev/cloudless/internal/footprint"
)

// CgroupFS is where the cgroup hierarchies are mounted.
const CgroupFS = "/sys/fs/cgroup"

// cgroupRoot is the root of the kubelet's cgroups: "/" for the default
// data dir; an agent with another data dir (several nodes on one machine,
// as in the tests) gets one of its own, or each kubelet would remove the
// other's pod cgroups as orphans, killing its containers.
func (a *Agent) cgroupRoot() string { return cgroupRootFor(a.cfg.DataDir) }

func cgroupRootFor(dataDir string) string {
	if run := datadir.Of(dataDir).RunDir(); run != datadir.DefaultRunDir {
		return "/" + filepath.Base(run)
	}
	return "/"
}

// cgroupDirs are root's directories in every hierarchy.
func cgroupDirs(root string) []string {
	if root == "/" {
		return nil
	}
	var st unix.Statfs_t
	if unix.Statfs(CgroupFS, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		return []string{filepath.Join(CgroupFS, root)}
	}
	entries, _ := os.ReadDir(CgroupFS)
	var dirs []string
	for _, e := range entries {
		if e.IsDir() { // cpu,cpuacct and the like are symlinks
			dirs = append(dirs, filepath.Join(CgroupFS, e.Name(), root))
		}
	}
	return dirs
}

// ensureCgroupRoot creates root in every hierarchy, each recorded first;
// a v1 cpuset needs its CPUs and memory nodes before anything can join it.
func ensureCgroupRoot(root string, rec *footprint.Recorder) error {
	for _, d := range cgroupDirs(root) {
		if err := rec.Add(func(r *footprint.Record) { r.Cgroups = append(r.Cgroups, d) }); err != nil {
			return err
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("create cgroup %s: %w", d, err)
		}
		if filepath.Base(filepath.Dir(d)) == "cpuset" {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				v, err := os.ReadFile(filepath.Join(filepath.Dir(d), f))
				if err == nil {
					err = os.WriteFile(filepath.Join(d, f), v, 0o644)
				}
				if err != nil {
					return fmt.Errorf("cgroup %s: %s: %w", d, f, err)
				}
			}
		}
	}
	return nil
}

// RemoveCgroups removes the cgroups under the kubelet's root for dataDir
// (its own root only: the default root "/" holds the host's). Processes
// must be gone first.
func RemoveCgroups(dataDir string) error {
	root := cgroupRootFor(dataDir)
	if root == "/" {
		return nil
	}
	return RemoveCgroupDirs(cgroupDirs(root))
}

// RemoveCgroupDirs removes each of roots (cgroup directories, as recorded
// in the node's footprint) and everything below it, deepest first; those
// already gone are skipped. Their processes must be gone first.
func RemoveCgroupDirs(roots []string) error {
	var errs []error
	for _, d := range roots {
		var dirs []string
		_ = filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		slices.Reverse(dirs) // children first
		for _, p := range dirs {
			if err := unix.Rmdir(p); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", p, err))
			}
		}
	}
	return errors.Join(errs...)
}

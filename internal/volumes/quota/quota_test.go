package quota

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cloudless-dev/cloudless/internal/testutil/loopfs"
)

// loopFS mounts a fresh filesystem image of the given type at a temporary
// directory and undoes it at cleanup. With skipMount, a failing mount skips
// the test (a kernel built without quota support refuses prjquota).
func loopFS(t *testing.T, fstype string, mkfs []string, opts string, skipMount bool) string {
	t.Helper()
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := loopfs.Mount(t, mnt, fstype, 160<<20, mkfs, opts); err != nil {
		if skipMount {
			t.Skipf("this kernel cannot do it (built without quota support?): %v", err)
		}
		t.Fatal(err)
	}
	return mnt
}

func loopExt4(t *testing.T, prjquota bool) string {
	if prjquota {
		return loopFS(t, "ext4", []string{"-q", "-F", "-I", "256", "-O", "quota,project"}, "prjquota", true)
	}
	return loopFS(t, "ext4", []string{"-q", "-F"}, "rw", false)
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// fill writes up to n bytes to path, synced, and returns the error that
// stopped it.
func fill(path string, n int) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	chunk := bytes.Repeat([]byte{'x'}, 64<<10)
	for written := 0; written < n; written += len(chunk) {
		if _, err := f.Write(chunk); err != nil {
			return err
		}
	}
	return f.Sync()
}

func TestLimitEnforced(t *testing.T) {
	mnt := loopExt4(t, true)
	if err := Check(mnt); err != nil {
		t.Fatalf("Check on an ext4 mounted with prjquota: %v", err)
	}
	vol := filepath.Join(mnt, "vol")
	if err := os.Mkdir(vol, 0o755); err != nil {
		t.Fatal(err)
	}
	const id = 4242
	if err := SetProject(vol, id); err != nil {
		t.Fatal(err)
	}
	if got, err := Project(vol); err != nil || got != id {
		t.Fatalf("Project = %d, %v; want %d", got, err, id)
	}
	if err := SetLimit(vol, id, 1<<20); err != nil {
		t.Fatal(err)
	}
	// A subdirectory inherits the project: the cap holds for its files.
	sub := filepath.Join(vol, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	err := fill(filepath.Join(sub, "big"), 4<<20)
	if !errors.Is(err, unix.EDQUOT) && !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("writing 4 MiB under a 1 MiB limit: err = %v, want EDQUOT", err)
	}
	used, limit, err := Usage(vol, id)
	if err != nil {
		t.Fatal(err)
	}
	if limit != 1<<20 || used > limit || used < limit/2 {
		t.Fatalf("Usage = %d of %d, want about 1 MiB of 1 MiB", used, limit)
	}
	// Raising the limit (a volume expansion) lets it write more.
	if err := SetLimit(vol, id, 8<<20); err != nil {
		t.Fatal(err)
	}
	if err := fill(filepath.Join(sub, "more"), 2<<20); err != nil {
		t.Fatalf("writing 2 MiB more after raising the limit to 8 MiB: %v", err)
	}
}

func TestCheckWithoutPrjquota(t *testing.T) {
	mnt := loopExt4(t, false)
	err := Check(mnt)
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "prjquota") {
		t.Fatalf("Check on ext4 without prjquota = %v, want ErrUnsupported naming prjquota", err)
	}
}

func TestCheckTmpfs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount")
	}
	mnt := t.TempDir()
	run(t, "mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt)
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	if err := Check(mnt); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "tmpfs") {
		t.Fatalf("Check on tmpfs = %v, want ErrUnsupported naming tmpfs", err)
	}
}

// TestVolumeLifecycle runs Create, Resize and Remove where each backend
// can: btrfs everywhere, ext4 where the kernel has quota support.
func TestVolumeLifecycle(t *testing.T) {
	for _, tc := range []struct {
		name  string
		mount func(t *testing.T) string
	}{
		{"btrfs", func(t *testing.T) string {
			mnt := loopFS(t, "btrfs", []string{"-q", "-f"}, "rw", false)
			run(t, "btrfs", "quota", "enable", mnt)
			return mnt
		}},
		{"ext4", func(t *testing.T) string { return loopExt4(t, true) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mnt := tc.mount(t)
			vol := filepath.Join(mnt, "pvc-1")
			if err := Create(vol, 0o777, 1<<20); err != nil {
				t.Fatalf("Create: %v", err)
			}
			if fi, err := os.Stat(vol); err != nil || fi.Mode().Perm() != 0o777 {
				t.Fatalf("volume dir: %v, %v; want mode 0777", fi, err)
			}
			err := fill(filepath.Join(vol, "big"), 4<<20)
			if !errors.Is(err, unix.EDQUOT) && !errors.Is(err, unix.ENOSPC) {
				t.Fatalf("writing 4 MiB into a 1 MiB volume: err = %v, want EDQUOT", err)
			}
			if err := Resize(vol, 16<<20); err != nil {
				t.Fatalf("Resize: %v", err)
			}
			if err := fill(filepath.Join(vol, "more"), 2<<20); err != nil {
				t.Fatalf("writing 2 MiB more after growing to 16 MiB: %v", err)
			}
			if err := Remove(vol); err != nil {
				t.Fatalf("Remove: %v", err)
			}
			if _, err := os.Stat(vol); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("volume dir after Remove: %v", err)
			}
		})
	}
}

// TestCreateUnenforced: on a filesystem that cannot cap the volume, Create
// still makes it and says why the size is not enforced.
func TestCreateUnenforced(t *testing.T) {
	for _, tc := range []struct {
		name, want string
		mount      func(t *testing.T) string
	}{
		{"btrfs without quotas", "btrfs quota enable", func(t *testing.T) string { return loopFS(t, "btrfs", []string{"-q", "-f"}, "rw", false) }},
		{"ext4 without prjquota", "prjquota", func(t *testing.T) string { return loopExt4(t, false) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vol := filepath.Join(tc.mount(t), "pvc-1")
			err := Create(vol, 0o777, 1<<20)
			if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Create = %v, want ErrUnsupported saying %q", err, tc.want)
			}
			if fi, err := os.Stat(vol); err != nil || !fi.IsDir() {
				t.Fatalf("the volume dir must exist all the same: %v", err)
			}
			if err := Remove(vol); err != nil {
				t.Fatalf("Remove: %v", err)
			}
		})
	}
}

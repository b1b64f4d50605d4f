// Package loopfs mounts throwaway filesystem images for tests (root only):
// a sparse image file, mkfs, a loop mount, and the unmount at cleanup.
package loopfs

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Mount makes a size-byte image of type fstype next to dir (dir + ".img"),
// formats it with mkfs args and mounts it at dir with options opts (loop
// is added). A failed mount is returned, for the caller to skip or fail
// on; anything else failing fails the test.
func Mount(t testing.TB, dir, fstype string, size int64, mkfs []string, opts string) error {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: loop devices")
	}
	if _, err := exec.LookPath("mkfs." + fstype); err != nil {
		t.Fatalf("mkfs.%s is not installed (.ci/setup installs it): %v", fstype, err)
	}
	img := dir + ".img"
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	args := append(append([]string(nil), mkfs...), img)
	if out, err := exec.Command("mkfs."+fstype, args...).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.%s %s: %v\n%s", fstype, strings.Join(args, " "), err, out)
	}
	if out, err := exec.Command("mount", "-o", "loop,"+opts, img, dir).CombinedOutput(); err != nil {
		return fmt.Errorf("mount %s with %s: %v: %s", fstype, opts, err, out)
	}
	t.Cleanup(func() {
		// Lazy: processes of the test (in mount namespaces of their own)
		// may still hold it; the loop device goes with the last user.
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
		os.Remove(img)
	})
	return nil
}

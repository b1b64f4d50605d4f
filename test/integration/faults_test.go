package integration

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// loopFS mounts a fresh ext4 filesystem of size bytes on a loop device and
// removes it when the test ends, even if it fails.
func loopFS(t *testing.T, size int64) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "cl-loop-")
	if err != nil {
		t.Fatal(err)
	}
	img, mnt := filepath.Join(dir, "img"), filepath.Join(dir, "mnt")
	sh := func(name string, args ...string) string {
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Truncate(img, size); err != nil {
		if f, err := os.Create(img); err == nil {
			f.Close()
		}
		if err := os.Truncate(img, size); err != nil {
			t.Fatal(err)
		}
	}
	sh("mkfs.ext4", "-q", img)
	dev := sh("losetup", "--find", "--show", img)
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	sh("mount", dev, mnt)
	t.Cleanup(func() { exec.Command("umount", "-l", mnt).Run() })
	return mnt
}

// TestDiskFull fills the disk under the embedded engine: writes fail
// cleanly with ResourceExhausted, reads keep working, the process lives.
func TestDiskFull(t *testing.T) {
	mnt := loopFS(t, 192<<20)
	sock := mnt + "/etcd.sock"
	p := start(t, "datastore", "--data-dir", mnt, "--listen-socket", sock, "--log-level", "warn",
		"--datastore-reserved-space", fmt.Sprint(24<<20))
	cli := connect(t, p, sock)
	defer cli.Close()
	ctx := context.Background()
	val := make([]byte, 1<<20)
	var written int
	for ; written < 400; written++ {
		rand.Read(val) // incompressible
		_, err := cli.Put(ctx, fmt.Sprintf("/big/%03d", written), string(val))
		if err == nil {
			continue
		}
		if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "free disk space") {
			t.Fatalf("write %d on a full disk: err = %v, want ResourceExhausted naming the fix", written, err)
		}
		break
	}
	if written == 400 {
		t.Fatal("400 MiB written to a 192 MiB disk")
	}
	r, err := cli.Get(ctx, "/big/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || r.Count != int64(written) {
		t.Fatalf("read on a full disk: count %v, err %v; want %d", r, err, written)
	}
	// Space may come back as the engine compacts; writes either succeed
	// or are refused the same clean way, never anything else.
	for i := 0; i < 10; i++ {
		rand.Read(val)
		if _, err := cli.Put(ctx, "/again", string(val)); err != nil && status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("write on a full disk: err = %v, want success or ResourceExhausted", err)
		}
	}
	if p.exited() {
		t.Fatalf("datastore exited on a full disk:\n%s", p.stderr)
	}
}

// TestDataDirLocked starts a second datastore on a data dir in use: it
// must refuse, naming the problem, instead of corrupting the first.
func TestDataDirLocked(t *testing.T) {
	dir, sock, args := datastoreArgs(t, "pebble")
	p := start(t, args...)
	cli := connect(t, p, sock)
	defer cli.Close()
	out, err := exec.Command(cloudlessBin, "datastore", "--data-dir", dir, "--listen-socket", dir+"/second.sock").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "locked by another running cloudless process") {
		t.Fatalf("second datastore on %s: err = %v, output:\n%s\nwant a refusal naming the lock", dir, err, out)
	}
	if _, err := cli.Put(context.Background(), "/still", "works"); err != nil {
		t.Fatalf("first datastore after the refused second one: %v", err)
	}
}

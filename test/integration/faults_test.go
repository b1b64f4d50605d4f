package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

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
	val := strings.Repeat("x", 1<<20)
	var written int
	for ; written < 400; written++ {
		_, err := cli.Put(ctx, fmt.Sprintf("/big/%03d", written), val)
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
	if _, err := cli.Put(ctx, "/small", "x"); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("small write on a full disk: err = %v, want ResourceExhausted", err)
	}
	if p.exited() {
		t.Fatalf("datastore exited on a full disk:\n%s", p.stderr)
	}
}

// TestTornLogTail appends garbage to the newest write-ahead log after a
// SIGKILL, as a write torn by a crash leaves it: the engine must start,
// keep every acknowledged write, and serve no garbage.
func TestTornLogTail(t *testing.T) {
	for _, tail := range []struct {
		name string
		data []byte
	}{
		{"garbage", []byte(strings.Repeat("\xde\xad\xbe\xef torn record ", 200))},
		{"zeros", make([]byte, 8192)},
	} {
		t.Run(tail.name, func(t *testing.T) {
			dir, err := os.MkdirTemp("", "cl-torn-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			sock := dir + "/etcd.sock"
			args := []string{"datastore", "--data-dir", dir, "--listen-socket", sock, "--log-level", "warn"}
			p := start(t, args...)
			cli := connect(t, p, sock)
			ctx := context.Background()
			want := map[string]string{}
			for i := 0; i < 200; i++ {
				k, v := fmt.Sprintf("/torn/%03d", i), fmt.Sprintf("value-%d", i)
				if _, err := cli.Put(ctx, k, v); err != nil {
					t.Fatal(err)
				}
				want[k] = v
			}
			cli.Close()
			p.kill()

			logs, _ := filepath.Glob(filepath.Join(dir, "datastore", "db", "*.log"))
			if len(logs) == 0 {
				t.Fatal("no write-ahead log found")
			}
			sort.Strings(logs)
			newest := logs[len(logs)-1]
			st, err := os.Stat(newest)
			if err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(newest, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			// Write right after the last record pebble wrote; the file may
			// be preallocated, so find the end of the data.
			data, _ := os.ReadFile(newest)
			end := len(data)
			for end > 0 && data[end-1] == 0 {
				end--
			}
			_ = st
			if _, err := f.WriteAt(tail.data, int64(end)); err != nil {
				t.Fatal(err)
			}
			f.Close()

			p = start(t, args...)
			cli = connect(t, p, sock)
			defer cli.Close()
			r, err := cli.Get(ctx, "/torn/", clientv3.WithPrefix())
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Kvs) != len(want) {
				t.Fatalf("after a torn tail: %d keys, want %d", len(r.Kvs), len(want))
			}
			for _, kv := range r.Kvs {
				if want[string(kv.Key)] != string(kv.Value) {
					t.Fatalf("after a torn tail: %s = %q, want %q", kv.Key, kv.Value, want[string(kv.Key)])
				}
			}
			if _, err := cli.Put(ctx, "/torn/after", "ok"); err != nil {
				t.Fatalf("write after recovery: %v", err)
			}
			_ = time.Second
		})
	}
}

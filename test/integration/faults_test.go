package integration

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cloudless-dev/cloudless/internal/datastore"
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

// TestDatastoreDiskFull fills the disk under `cloudless datastore`:
// writes fail cleanly with ResourceExhausted, reads keep working, the
// process lives.
func TestDatastoreDiskFull(t *testing.T) {
	// Just big enough to start on (log + reserve + database room), so
	// that it fills quickly.
	mnt := loopFS(t, 320<<20)
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
		t.Fatal("400 MiB written to a 320 MiB disk")
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

// diskFullWindow is how long TestDiskFull keeps the disk full while it
// reads: the issue asks for 5 minutes, and the whole test stays under 7.
// Every embedded component loses its lease within 15 s of the fill (the
// lease duration), so the window covers many failed renewals, not only
// the first.
const diskFullWindow = 5 * time.Minute

// TestDiskFull fills the disk under a running server while it takes
// writes: for diskFullWindow every read succeeds, every refused write
// names the fix, and the process never exits, though kube-controller-
// manager and kube-scheduler lose their leases (they restart inside the
// server). When space is freed, writes resume, both components lead again
// (a new holder identity: a new term in the same process), and every
// acknowledged write is there.
func TestDiskFull(t *testing.T) {
	mnt := loopFS(t, 1<<30)
	data := filepath.Join(mnt, "data")
	port := freePort(t)
	p, cs, _ := startServer(t, data, port)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute+diskFullWindow)
	defer cancel()
	const ns = "default"

	leaders := map[string]string{}
	poll(t, ctx, "both components holding their leases", func() (bool, error) {
		for _, name := range []string{"kube-controller-manager", "kube-scheduler"} {
			l, err := cs.CoordinationV1().Leases("kube-system").Get(ctx, name, metav1.GetOptions{})
			if err != nil || l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" {
				return false, err
			}
			leaders[name] = *l.Spec.HolderIdentity
		}
		return true, nil
	})

	// Writers run throughout; a write counts once acknowledged.
	var mu sync.Mutex
	acked := map[string]string{}
	var refused int
	var badErr error
	writing, stopWriting := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; writing.Err() == nil; i++ {
				name := fmt.Sprintf("w%d-%06d", w, i)
				cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"v": strings.Repeat(name, 100)}}
				_, err := cs.CoreV1().ConfigMaps(ns).Create(writing, cm, metav1.CreateOptions{})
				mu.Lock()
				switch {
				case err == nil:
					acked[name] = cm.Data["v"]
				case writing.Err() != nil:
				case strings.Contains(err.Error(), "free disk space"):
					refused++
				default:
					if badErr == nil {
						badErr = fmt.Errorf("write %s: %w", name, err)
					}
				}
				mu.Unlock()
				if err != nil {
					time.Sleep(200 * time.Millisecond) // paces refused writes; not synchronisation
				}
			}
		}()
	}
	defer func() { stopWriting(); wg.Wait() }()
	poll(t, ctx, "100 acknowledged writes before the fill", func() (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) >= 100, nil
	})

	// Fill: leave half the reserve free.
	var st unix.Statfs_t
	if err := unix.Statfs(data, &st); err != nil {
		t.Fatal(err)
	}
	dscfg := datastore.DefaultConfig()
	reserve := dscfg.Reserve(st.Blocks * uint64(st.Bsize))
	fill := filepath.Join(mnt, "fill")
	f, err := os.Create(fill)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Fallocate(int(f.Fd()), 0, 0, int64(st.Bavail*uint64(st.Bsize)-reserve/2)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	poll(t, ctx, "writes refused naming the fix", func() (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		return refused > 0, badErr
	})

	// Reads, for the whole window: every one must succeed.
	var reads int
	deadline := time.Now().Add(diskFullWindow)
	for time.Now().Before(deadline) {
		if p.exited() {
			t.Fatalf("server exited on a full disk:\n%s", tail(p.stderr.Bytes(), 40))
		}
		mu.Lock()
		var some string
		for name := range acked {
			some = name
			break
		}
		mu.Unlock()
		if _, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, some, metav1.GetOptions{}); err != nil {
			t.Fatalf("read %d on a full disk: %v", reads, err)
		}
		if _, err := cs.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{Limit: 50}); err != nil {
			t.Fatalf("list %d on a full disk: %v", reads, err)
		}
		reads++
		time.Sleep(time.Second) // the read rate; not synchronisation
	}
	mu.Lock()
	if badErr != nil {
		t.Fatalf("a write on a full disk failed other than with the clear refusal: %v", badErr)
	}
	mu.Unlock()
	t.Logf("%d reads on a full disk, all served; %d writes refused", reads, refused)
	// The components could not renew their leases on a full disk.
	for name := range leaders {
		l, err := cs.CoordinationV1().Leases("kube-system").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if l.Spec.RenewTime != nil && time.Since(l.Spec.RenewTime.Time) < diskFullWindow/2 {
			t.Fatalf("%s renewed its lease at %s, on a full disk", name, l.Spec.RenewTime.Time)
		}
	}

	// Free the space: writes resume, and both components lead again,
	// with a new term's identity, renewing.
	if err := os.Remove(fill); err != nil {
		t.Fatal(err)
	}
	freed := time.Now()
	poll(t, ctx, "a write after the space returned", func() (bool, error) {
		_, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "after-free"}}, metav1.CreateOptions{})
		return err == nil, err
	})
	for name, before := range leaders {
		poll(t, ctx, name+" leading again in the same process", func() (bool, error) {
			l, err := cs.CoordinationV1().Leases("kube-system").Get(ctx, name, metav1.GetOptions{})
			if err != nil || l.Spec.HolderIdentity == nil || l.Spec.RenewTime == nil {
				return false, err
			}
			return *l.Spec.HolderIdentity != before && l.Spec.RenewTime.Time.After(freed), nil
		})
	}
	body, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
	if err != nil || string(body) != "ok" {
		t.Fatalf("/readyz after the space returned: %q, %v", body, err)
	}
	stopWriting()
	wg.Wait()
	// Nothing acknowledged is lost.
	mu.Lock()
	defer mu.Unlock()
	for name, v := range acked {
		cm, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("acknowledged write %s, after the disk was full: %v", name, err)
		}
		if cm.Data["v"] != v {
			t.Fatalf("acknowledged write %s: value changed", name)
		}
	}
	if p.exited() {
		t.Fatalf("server exited:\n%s", tail(p.stderr.Bytes(), 40))
	}
	t.Logf("%d acknowledged writes, all readable after the disk was full", len(acked))
}

// TestDiskTooSmall starts the server and the datastore on a filesystem
// too small for the embedded engine: each refuses before starting
// anything, in one line naming the size needed, and exits non-zero.
func TestDiskTooSmall(t *testing.T) {
	mnt := loopFS(t, 200<<20)
	for _, args := range [][]string{
		{"server", "--disable-agent", "--bind-address", "127.0.0.1", "--https-listen-port", fmt.Sprint(freePort(t))},
		{"datastore", "--listen-socket", filepath.Join(mnt, "etcd.sock")},
	} {
		t.Run(args[0], func(t *testing.T) {
			data := filepath.Join(mnt, args[0])
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, cloudlessBin, append(args, "--data-dir", data)...)
			cmd.Env = append(os.Environ(), "CLOUDLESS_CONFIG=")
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() == 0 {
				t.Fatalf("%s on a 200 MB disk: err = %v, want a non-zero exit; output:\n%s", args[0], err, out)
			}
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], "too small for the embedded engine: it needs at least") || strings.Contains(string(out), "ready") {
				t.Fatalf("%s on a 200 MB disk: output:\n%s\nwant one line naming the size needed", args[0], out)
			}
			if _, err := os.Stat(filepath.Join(data, "datastore")); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("%s on a 200 MB disk created its datastore (stat: %v)", args[0], err)
			}
		})
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

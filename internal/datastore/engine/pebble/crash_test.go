package pebble

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/cockroachdb/pebble/vfs"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/cloudless-dev/cloudless/internal/datastore/engine/wal"
	"github.com/cloudless-dev/cloudless/internal/datastore/mvcc"
)

// crashDevice is a log segment on a disk that loses power: writes stay in
// the device's volatile cache until Sync; at the crash the cache is lost,
// except for a random subset of its 512-byte sectors that had reached the
// medium (a torn write). After the crash every operation fails.
type crashDevice struct {
	f   *os.File
	rng *rand.Rand

	mu      sync.Mutex
	cache   []pendingWrite
	crashed bool
}

type pendingWrite struct {
	off  int64
	data []byte
}

func (d *crashDevice) WriteAt(b []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.crashed {
		return 0, syscall.EIO
	}
	d.cache = append(d.cache, pendingWrite{off, append([]byte(nil), b...)})
	return len(b), nil
}

func (d *crashDevice) Sync() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.crashed {
		return syscall.EIO
	}
	for _, w := range d.cache {
		if _, err := d.f.WriteAt(w.data, w.off); err != nil {
			return err
		}
	}
	d.cache = d.cache[:0]
	return nil
}

// crash loses the cache but for a random subset of its sectors.
func (d *crashDevice) crash() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.crashed = true
	for _, w := range d.cache {
		for s := 0; s < len(w.data); s += 512 {
			if d.rng.IntN(2) == 0 {
				d.f.WriteAt(w.data[s:min(s+512, len(w.data))], w.off+int64(s))
			}
		}
	}
	d.cache = nil
}

func (d *crashDevice) Close() error { return d.f.Close() }

// TestPowerLoss crashes the engine at random moments under concurrent
// writers, losing everything neither the log device nor the database's
// filesystem had synced (with torn sectors in the log), then reopens it:
// every acknowledged write must be there, and the revision must never be
// below one that was acknowledged.
func TestPowerLoss(t *testing.T) {
	rounds := 60
	if testing.Short() {
		rounds = 10
	}
	seed := uint64(os.Getpid())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	dir := t.TempDir()
	memfs := vfs.NewStrictMem()
	// The data dir exists, durably, before the engine is created in it.
	if err := memfs.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		f, err := memfs.OpenDir(d)
		if err != nil {
			t.Fatal(err)
		}
		f.Sync()
		f.Close()
		if d == filepath.Dir(d) {
			break
		}
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	acked := map[string]int64{} // key → revision acknowledged
	var maxAcked int64
	for round := 0; round < rounds; round++ {
		var dev *crashDevice
		o := Options{
			FS:      memfs,
			WALSize: 64 << 10, // small: rotations (flush + new generation) happen often
			WALDevice: func(path string) (wal.Device, error) {
				f, err := os.OpenFile(path, os.O_RDWR, 0)
				if err != nil {
					return nil, err
				}
				dev = &crashDevice{f: f, rng: rng}
				return dev, nil
			},
		}
		e, err := Open(dir, o, log)
		if err != nil {
			t.Fatalf("round %d: reopen after power loss: %v", round, err)
		}
		checkAcked(t, round, e, acked, maxAcked)

		// Writers run until the power goes.
		var mu sync.Mutex
		var n atomic.Int64
		stop := int64(20 + rng.IntN(400))
		crashed := make(chan struct{})
		var wg sync.WaitGroup
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					k := fmt.Sprintf("r%03d/w%d/%05d", round, w, i)
					rev, err := e.Update(context.Background(), func(tx mvcc.Tx) error {
						return tx.Put(&mvccpb.KeyValue{Key: []byte(k), Value: []byte(k), CreateRevision: tx.Rev(), ModRevision: tx.Rev(), Version: 1}, nil)
					})
					if err != nil {
						if !errors.Is(err, mvcc.ErrEngineDegraded) {
							t.Errorf("round %d: write failed with %v, want a degraded engine after the crash", round, err)
						}
						return
					}
					mu.Lock()
					acked[k] = rev
					maxAcked = max(maxAcked, rev)
					mu.Unlock()
					if n.Add(1) == stop {
						close(crashed)
					}
				}
			}()
		}
		<-crashed
		// Power loss: the log device first, then the database's
		// filesystem stops syncing.
		dev.crash()
		memfs.SetIgnoreSyncs(true)
		wg.Wait()
		e.Close()
		memfs.ResetToSyncedState()
		memfs.SetIgnoreSyncs(false)
	}
	e, err := Open(dir, Options{FS: memfs, WALSize: 64 << 10}, log)
	if err != nil {
		t.Fatalf("final reopen: %v", err)
	}
	defer e.Close()
	checkAcked(t, rounds, e, acked, maxAcked)
	t.Logf("%d rounds, %d acknowledged writes, all present", rounds, len(acked))
}

func checkAcked(t *testing.T, round int, e *Engine, acked map[string]int64, maxAcked int64) {
	t.Helper()
	cur, _, err := e.Revisions(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if cur < maxAcked {
		t.Fatalf("round %d: revision %d after reopening, below the acknowledged %d", round, cur, maxAcked)
	}
	res, err := e.Range(context.Background(), mvcc.RangeQuery{Key: []byte("r"), End: []byte{0}})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, kv := range res.KVs {
		got[string(kv.Key)] = kv.ModRevision
	}
	for k, rev := range acked {
		if got[k] != rev {
			t.Fatalf("round %d: acknowledged %s at revision %d, found at %d after power loss", round, k, rev, got[k])
		}
	}
}

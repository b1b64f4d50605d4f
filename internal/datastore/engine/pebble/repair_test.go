package pebble

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/cloudless-dev/cloudless/internal/datastore/engine/wal"
	"github.com/cloudless-dev/cloudless/internal/datastore/mvcc"
)

func TestRepair(t *testing.T) {
	const writes = 100
	tests := []struct {
		name   string
		damage func(t *testing.T, dir string)
		// wantKept is how many of the writes survive repair; -1: the
		// database's last flush, whatever it holds.
		wantKept    int
		wantDropped int64
	}{
		{name: "bit flip in record 50", damage: func(t *testing.T, dir string) {
			flip(t, WALPath(dir), recordOffset(t, dir, 50)+40)
		}, wantKept: 49, wantDropped: writes - 49},
		{name: "segment truncated in record 50", damage: func(t *testing.T, dir string) {
			if err := os.Truncate(WALPath(dir), recordOffset(t, dir, 50)+10); err != nil {
				t.Fatal(err)
			}
		}, wantKept: 49, wantDropped: -1},
		{name: "segment deleted", damage: func(t *testing.T, dir string) {
			if err := os.Remove(WALPath(dir)); err != nil {
				t.Fatal(err)
			}
		}, wantKept: 0, wantDropped: -1},
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			e, err := Open(dir, Options{}, log)
			if err != nil {
				t.Fatal(err)
			}
			var lastRev int64
			for i := 1; i <= writes; i++ {
				if lastRev, err = put(e, fmt.Sprintf("k%03d", i)); err != nil {
					t.Fatal(err)
				}
			}
			// A crash: the engine is never closed, so its database holds
			// only what the open flushed, and the log the writes.
			e.wal.Close()
			e.db.Close()
			tc.damage(t, dir)

			_, err = Open(dir, Options{}, log)
			if !errors.Is(err, ErrNeedsRepair) {
				t.Fatalf("Open after damage = %v, want ErrNeedsRepair", err)
			}
			dry, err := Repair(dir, Options{}, true, log)
			if err != nil {
				t.Fatal(err)
			}
			if dry.Repaired || dry.Damage == "" || dry.DroppedRecords != tc.wantDropped {
				t.Fatalf("dry run = %+v, want damage found, %d records dropped, nothing done", dry, tc.wantDropped)
			}
			rep, err := Repair(dir, Options{}, false, log)
			if err != nil {
				t.Fatal(err)
			}
			if !rep.Repaired || rep.DroppedRecords != dry.DroppedRecords {
				t.Fatalf("repair = %+v, want what the dry run said (%+v)", rep, dry)
			}
			e, err = Open(dir, Options{}, log)
			if err != nil {
				t.Fatalf("Open after repair: %v", err)
			}
			defer e.Close()
			res, err := e.Range(context.Background(), mvcc.RangeQuery{Key: []byte("k"), End: []byte{0}})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.KVs) != tc.wantKept {
				t.Errorf("after repair %d keys, want %d", len(res.KVs), tc.wantKept)
			}
			for i, kv := range res.KVs {
				if want := fmt.Sprintf("k%03d", i+1); string(kv.Key) != want {
					t.Fatalf("key %d after repair = %s, want %s", i, kv.Key, want)
				}
			}
			// Revisions never go back where the log shows how far they went.
			rev, err := put(e, "after")
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantDropped >= 0 && rev <= lastRev {
				t.Errorf("first write after repair got revision %d, not above the %d served before", rev, lastRev)
			}
		})
	}
}

func put(e *Engine, k string) (int64, error) {
	return e.Update(context.Background(), func(tx mvcc.Tx) error {
		return tx.Put(&mvccpb.KeyValue{Key: []byte(k), Value: []byte(k), CreateRevision: tx.Rev(), ModRevision: tx.Rev(), Version: 1}, nil)
	})
}

func recordOffset(t *testing.T, dir string, n int) int64 {
	t.Helper()
	r, _, err := wal.Salvage(WALPath(dir))
	if err != nil || len(r.Records) < n {
		t.Fatalf("salvage: %d records, %v", len(r.Records), err)
	}
	return r.Records[n-1].Offset
}

func flip(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x10
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cloudless-dev/cloudless/internal/datastore"
	"github.com/cloudless-dev/cloudless/internal/datastore/engine/pebble"
	"github.com/cloudless-dev/cloudless/internal/datastore/engine/wal"
)

// walWrites puts n keys, one acknowledged after the other, into a fresh
// embedded datastore, SIGKILLs it and returns its data dir, its arguments
// and the revision of the last put.
func walWrites(t *testing.T, n int) (dir, sock string, args []string, lastRev int64) {
	t.Helper()
	dir, sock, args = datastoreArgs(t, "pebble")
	p := start(t, args...)
	cli := connect(t, p, sock)
	defer cli.Close()
	for i := 1; i <= n; i++ {
		r, err := cli.Put(context.Background(), fmt.Sprintf("/wal/%04d", i), fmt.Sprintf("value-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		lastRev = r.Header.Revision
	}
	p.kill()
	return dir, sock, args, lastRev
}

func segmentPath(dir string) string {
	return pebble.WALPath(datastore.Config{DataDir: dir}.EngineDir())
}

// recordOffset returns where the log's record n (1-based, in this
// generation) starts.
func recordOffset(t *testing.T, dir string, n int) int64 {
	t.Helper()
	r, ce, err := wal.Salvage(segmentPath(dir))
	if err != nil || ce != nil || len(r.Records) < n {
		t.Fatalf("read log: %d records, damage %v, %v", len(r.Records), ce, err)
	}
	return r.Records[n-1].Offset
}

// runExit runs the binary to its end and returns its exit code, stdout
// and stderr.
func runExit(t *testing.T, timeout time.Duration, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, cloudlessBin, args...)
	cmd.Env = append(os.Environ(), "CLOUDLESS_CONFIG=")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%v still running after %v:\n%s%s", args, timeout, &stdout, &stderr)
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), stdout.String(), stderr.String()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, stdout.String(), stderr.String()
}

// TestLogDamage damages the embedded engine's write-ahead log after a
// crash in each way the issue found it lost acknowledged writes silently:
// the datastore must refuse to start, naming the problem; repair must drop
// exactly what it says; and revisions must never go back.
func TestLogDamage(t *testing.T) {
	const writes = 2000
	tests := []struct {
		name   string
		damage func(t *testing.T, dir string)
		want   string // in the refusal
		// kept is how many of the writes survive repair (the first ones);
		// dropped the log records repair reports (-1: unknown).
		kept, dropped int
	}{
		{name: "bit flip in record 1000", damage: func(t *testing.T, dir string) {
			off := recordOffset(t, dir, 1000) + 60
			f, err := os.OpenFile(segmentPath(dir), os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			b := make([]byte, 1)
			f.ReadAt(b, off)
			b[0] ^= 1
			if _, err := f.WriteAt(b, off); err != nil {
				t.Fatal(err)
			}
		}, want: "corrupt at offset", kept: 999, dropped: writes - 999},
		{name: "segment truncated in record 1000", damage: func(t *testing.T, dir string) {
			if err := os.Truncate(segmentPath(dir), recordOffset(t, dir, 1000)+30); err != nil {
				t.Fatal(err)
			}
		}, want: "truncated", kept: 999, dropped: -1},
		{name: "segment deleted", damage: func(t *testing.T, dir string) {
			if err := os.Remove(segmentPath(dir)); err != nil {
				t.Fatal(err)
			}
		}, want: "is missing", kept: 0, dropped: -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir, sock, args, lastRev := walWrites(t, writes)
			tc.damage(t, dir)

			code, _, out := runExit(t, time.Minute, args...)
			if code == 0 || !strings.Contains(out, tc.want) || !strings.Contains(out, segmentPath(dir)) || !strings.Contains(out, "cloudless datastore repair") {
				t.Fatalf("datastore on a damaged log exited %d, want a refusal naming %q, the segment and repair:\n%s", code, tc.want, out)
			}

			// The dry run says what repair drops; repair then drops it.
			code, out, errOut := runExit(t, time.Minute, "datastore", "repair", "--data-dir", dir, "-o", "json")
			var dry pebble.RepairReport
			if err := json.Unmarshal([]byte(out), &dry); code != 0 || err != nil {
				t.Fatalf("repair dry run exited %d (%v):\n%s%s", code, err, out, errOut)
			}
			if dry.Repaired || dry.DroppedRecords != int64(tc.dropped) {
				t.Fatalf("repair dry run = %+v, want %d records dropped and nothing done", dry, tc.dropped)
			}
			if _, err := os.Stat(segmentPath(dir) + ".damaged"); err == nil {
				t.Fatal("the dry run changed the data dir")
			}
			code, out, errOut = runExit(t, time.Minute, "datastore", "repair", "--data-dir", dir, "--yes")
			if code != 0 || !strings.Contains(out, "repaired") {
				t.Fatalf("repair --yes exited %d:\n%s%s", code, out, errOut)
			}

			p := start(t, args...)
			cli := connect(t, p, sock)
			defer cli.Close()
			ctx := context.Background()
			r, err := cli.Get(ctx, "/wal/", clientv3.WithPrefix())
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Kvs) != tc.kept {
				t.Fatalf("after repair %d keys, want the %d before the damage", len(r.Kvs), tc.kept)
			}
			for i, kv := range r.Kvs {
				if want := fmt.Sprintf("/wal/%04d", i+1); string(kv.Key) != want {
					t.Fatalf("key %d after repair is %s, want %s", i, kv.Key, want)
				}
			}
			put, err := cli.Put(ctx, "/wal/after", "x")
			if err != nil {
				t.Fatal(err)
			}
			if tc.dropped >= 0 && put.Header.Revision <= lastRev {
				t.Errorf("first write after repair is revision %d, not above the %d served before the crash", put.Header.Revision, lastRev)
			}
		})
	}
}

// TestTornLogTail writes a torn record after the last good one, as a sync
// cut short by a crash leaves it: the engine must start, keep every
// acknowledged write, and serve no garbage.
func TestTornLogTail(t *testing.T) {
	for _, tc := range []struct {
		name string
		tail func(gen, lsn uint64) []byte
	}{
		{"torn record", func(gen, lsn uint64) []byte {
			return wal.TornRecord(gen, lsn, []byte(strings.Repeat("torn record ", 200)))
		}},
		{"garbage", func(uint64, uint64) []byte { return []byte(strings.Repeat("\xde\xad\xbe\xef garbage ", 200)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, sock, args, lastRev := walWrites(t, 200)
			r, ce, err := wal.Salvage(segmentPath(dir))
			if err != nil || ce != nil {
				t.Fatal(ce, err)
			}
			last := r.Records[len(r.Records)-1]
			f, err := os.OpenFile(segmentPath(dir), os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt(tc.tail(r.Generation, last.LSN+1), last.End); err != nil {
				t.Fatal(err)
			}
			f.Close()

			p := start(t, args...)
			cli := connect(t, p, sock)
			defer cli.Close()
			ctx := context.Background()
			got, err := cli.Get(ctx, "/wal/", clientv3.WithPrefix())
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Kvs) != 200 || got.Header.Revision != lastRev {
				t.Fatalf("after a torn tail: %d keys at revision %d, want 200 at %d", len(got.Kvs), got.Header.Revision, lastRev)
			}
			for i, kv := range got.Kvs {
				if want := fmt.Sprintf("value-%d", i+1); string(kv.Value) != want {
					t.Fatalf("after a torn tail: %s = %q, want %q", kv.Key, kv.Value, want)
				}
			}
			if _, err := cli.Put(ctx, "/wal/after", "ok"); err != nil {
				t.Fatalf("write after recovery: %v", err)
			}
		})
	}
}

package integration

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func startPostgresDatastore(t *testing.T, dsn string) (*proc, *clientv3.Client) {
	t.Helper()
	dir, err := os.MkdirTemp("", "cl-ha-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := dir + "/etcd.sock"
	p := start(t, "datastore", "--data-dir", dir, "--listen-socket", sock, "--datastore-endpoint", dsn, "--log-level", "warn")
	cli := connect(t, p, sock)
	t.Cleanup(func() { cli.Close() })
	return p, cli
}

// TestTwoServersOnePostgres runs two datastore processes on one database:
// both serve reads and writes, a watcher on one sees the other's writes in
// order, and either can stop without the other losing anything.
func TestTwoServersOnePostgres(t *testing.T) {
	dsn, err := pg.NewDatabase(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	pa, a := startPostgresDatastore(t, dsn)
	_, b := startPostgresDatastore(t, dsn)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	w := b.Watch(ctx, "/ha/", clientv3.WithPrefix(), clientv3.WithPrevKV())
	// clientv3 returns from Watch before the server has created the watch;
	// a progress request answered on the stream proves it exists.
	if err := b.RequestProgress(ctx); err != nil {
		t.Fatal(err)
	}
	<-w

	var revs []int64
	for i := 0; i < 20; i++ {
		cli := a
		if i%2 == 1 {
			cli = b
		}
		r, err := cli.Put(ctx, fmt.Sprintf("/ha/%d", i), fmt.Sprint(i))
		if err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
		revs = append(revs, r.Header.Revision)
	}
	for i := 1; i < len(revs); i++ {
		if revs[i] != revs[i-1]+1 {
			t.Fatalf("revisions from two servers are not dense and ordered: %v", revs)
		}
	}
	got := 0
	for got < len(revs) {
		wr, ok := <-w
		if !ok || wr.Err() != nil {
			t.Fatalf("watch on server B ended after %d events: %v", got, wr.Err())
		}
		for _, ev := range wr.Events {
			if ev.Kv.ModRevision != revs[got] || string(ev.Kv.Key) != fmt.Sprintf("/ha/%d", got) {
				t.Fatalf("event %d = %s at %d, want /ha/%d at %d", got, ev.Kv.Key, ev.Kv.ModRevision, got, revs[got])
			}
			got++
		}
	}

	// Server A stops; B still has everything and keeps serving.
	pa.kill()
	r, err := b.Get(ctx, "/ha/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || r.Count != 20 {
		t.Fatalf("after A stopped, B counts %v keys (err %v), want 20", r, err)
	}
	if _, err := b.Put(ctx, "/ha/after", "x"); err != nil {
		t.Fatalf("put on B after A stopped: %v", err)
	}
}

// TestPostgresOutage stops PostgreSQL under a running datastore: requests
// fail with a clear Unavailable error, and after PostgreSQL returns the
// datastore serves again, with every acknowledged write and a watch that
// did not miss anything.
func TestPostgresOutage(t *testing.T) {
	dsn, err := pg.NewDatabase(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_, cli := startPostgresDatastore(t, dsn)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	first, err := cli.Put(ctx, "/out/before", "1")
	if err != nil {
		t.Fatal(err)
	}
	w := cli.Watch(ctx, "/out/", clientv3.WithPrefix(), clientv3.WithRev(first.Header.Revision+1))

	if err := pg.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			_ = pg.Restart(context.Background())
		}
	})
	pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
	_, err = cli.Put(pctx, "/out/during", "2")
	pcancel()
	if err == nil {
		t.Fatal("put succeeded while PostgreSQL was down")
	}
	t.Logf("error while PostgreSQL is down: %v", err)

	if err := pg.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	restarted = true
	var after *clientv3.PutResponse
	deadline := time.Now().Add(60 * time.Second)
	for {
		pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
		after, err = cli.Put(pctx, "/out/after", "3")
		pcancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("datastore did not recover after PostgreSQL returned: %v", err)
		}
		time.Sleep(100 * time.Millisecond) // polling for recovery
	}
	g, err := cli.Get(ctx, "/out/before")
	if err != nil || len(g.Kvs) != 1 {
		t.Fatalf("acknowledged write lost across the outage: %v %v", g, err)
	}
	for {
		wr, ok := <-w
		if !ok {
			t.Fatal("watch closed")
		}
		if err := wr.Err(); err != nil {
			t.Fatalf("watch across the outage: %v", err)
		}
		for _, ev := range wr.Events {
			if ev.Kv.ModRevision == after.Header.Revision && string(ev.Kv.Key) == "/out/after" {
				return
			}
			if string(ev.Kv.Key) != "/out/during" {
				t.Fatalf("unexpected event %s at %d", ev.Kv.Key, ev.Kv.ModRevision)
			}
		}
	}
}

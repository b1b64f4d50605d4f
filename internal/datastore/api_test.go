package datastore_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func client(t *testing.T, engine string) *clientv3.Client {
	t.Helper()
	sock := startDatastore(t, engine)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"unix://" + sock}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func forEngines(t *testing.T, fn func(t *testing.T, cli *clientv3.Client)) {
	for _, engine := range engines {
		t.Run(engine, func(t *testing.T) { fn(t, client(t, engine)) })
	}
}

func mustPut(t *testing.T, cli *clientv3.Client, k, v string, opts ...clientv3.OpOption) int64 {
	t.Helper()
	r, err := cli.Put(context.Background(), k, v, opts...)
	if err != nil {
		t.Fatalf("Put(%q): %v", k, err)
	}
	return r.Header.Revision
}

func TestRange(t *testing.T) {
	forEngines(t, func(t *testing.T, cli *clientv3.Client) {
		ctx := context.Background()
		var revs []int64
		for i := 0; i < 5; i++ {
			revs = append(revs, mustPut(t, cli, fmt.Sprintf("/r/%d", i), strconv.Itoa(i)))
		}
		mustPut(t, cli, "/r/0", "changed")
		if _, err := cli.Delete(ctx, "/r/4"); err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name      string
			key       string
			opts      []clientv3.OpOption
			wantKeys  []string
			wantCount int64
			wantMore  bool
			wantVal0  string
		}{
			{name: "prefix", key: "/r/", opts: []clientv3.OpOption{clientv3.WithPrefix()}, wantKeys: []string{"/r/0", "/r/1", "/r/2", "/r/3"}, wantCount: 4, wantVal0: "changed"},
			{name: "limit counts the whole range", key: "/r/", opts: []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithLimit(2)}, wantKeys: []string{"/r/0", "/r/1"}, wantCount: 4, wantMore: true, wantVal0: "changed"},
			{name: "from key", key: "/r/2", opts: []clientv3.OpOption{clientv3.WithFromKey()}, wantKeys: []string{"/r/2", "/r/3"}, wantCount: 2, wantVal0: "2"},
			{name: "count only", key: "/r/", opts: []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithCountOnly()}, wantCount: 4},
			{name: "keys only", key: "/r/1", opts: []clientv3.OpOption{clientv3.WithKeysOnly()}, wantKeys: []string{"/r/1"}, wantCount: 1},
			{name: "past revision", key: "/r/", opts: []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithRev(revs[4])}, wantKeys: []string{"/r/0", "/r/1", "/r/2", "/r/3", "/r/4"}, wantCount: 5, wantVal0: "0"},
			{name: "single missing key", key: "/r/9", wantCount: 0},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				r, err := cli.Get(ctx, tc.key, tc.opts...)
				if err != nil {
					t.Fatal(err)
				}
				var keys []string
				for _, kv := range r.Kvs {
					keys = append(keys, string(kv.Key))
				}
				if fmt.Sprint(keys) != fmt.Sprint(tc.wantKeys) || r.Count != tc.wantCount || r.More != tc.wantMore {
					t.Errorf("Get(%q) = keys %v count %d more %v, want %v %d %v", tc.key, keys, r.Count, r.More, tc.wantKeys, tc.wantCount, tc.wantMore)
				}
				if tc.wantVal0 != "" && (len(r.Kvs) == 0 || string(r.Kvs[0].Value) != tc.wantVal0) {
					t.Errorf("Get(%q) first value = %v, want %q", tc.key, r.Kvs, tc.wantVal0)
				}
			})
		}
		if _, err := cli.Get(ctx, "/r/", clientv3.WithRev(revs[4]+100)); !errors.Is(err, rpctypes.ErrFutureRev) {
			t.Errorf("Get at a future revision: err = %v, want %v", err, rpctypes.ErrFutureRev)
		}
	})
}

func TestTxnShapes(t *testing.T) {
	forEngines(t, func(t *testing.T, cli *clientv3.Client) {
		ctx := context.Background()
		key := "/registry/pods/ns/a"
		// Create: If(mod == 0) Then(Put).
		r, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", 0)).Then(clientv3.OpPut(key, "v1")).Commit()
		if err != nil || !r.Succeeded {
			t.Fatalf("create: %v succeeded=%v", err, r != nil && r.Succeeded)
		}
		created := r.Header.Revision
		// Second create fails and the Else branch reads the current value.
		r, err = cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", 0)).Then(clientv3.OpPut(key, "v2")).Else(clientv3.OpGet(key)).Commit()
		if err != nil || r.Succeeded {
			t.Fatalf("second create: err=%v succeeded=%v, want a failed compare", err, r.Succeeded)
		}
		if got := r.Responses[0].GetResponseRange().Kvs[0]; string(got.Value) != "v1" || got.ModRevision != created {
			t.Errorf("else branch read %q at %d, want v1 at %d", got.Value, got.ModRevision, created)
		}
		// Update: If(mod == rev) Then(Put) Else(Get).
		r, err = cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", created)).Then(clientv3.OpPut(key, "v2")).Else(clientv3.OpGet(key)).Commit()
		if err != nil || !r.Succeeded || r.Header.Revision != created+1 {
			t.Fatalf("update: err=%v succeeded=%v rev=%d, want success at %d", err, r.Succeeded, r.Header.Revision, created+1)
		}
		// Delete: If(mod == rev) Then(Delete).
		r, err = cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", created+1)).Then(clientv3.OpDelete(key, clientv3.WithPrevKV())).Commit()
		if err != nil || !r.Succeeded {
			t.Fatalf("delete: %v", err)
		}
		if d := r.Responses[0].GetResponseDeleteRange(); d.Deleted != 1 || string(d.PrevKvs[0].Value) != "v2" {
			t.Errorf("delete response = %v, want 1 deleted with previous value v2", d)
		}
		// Nested transactions are refused by name.
		_, err = cli.Txn(ctx).Then(clientv3.OpTxn(nil, nil, nil)).Commit()
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("nested txn: err = %v, want InvalidArgument", err)
		}
		// Writing one key twice in a txn is refused, as etcd does.
		_, err = cli.Txn(ctx).Then(clientv3.OpPut("/x", "1"), clientv3.OpPut("/x", "2")).Commit()
		if !errors.Is(err, rpctypes.ErrDuplicateKey) {
			t.Errorf("duplicate key in txn: err = %v, want %v", err, rpctypes.ErrDuplicateKey)
		}
	})
}

// TestCompactRevKey follows kube-apiserver's compactor: the Version of
// compact_rev_key counts compactions, and reads below the compacted
// revision fail with ErrCompacted.
func TestCompactRevKey(t *testing.T) {
	forEngines(t, func(t *testing.T, cli *clientv3.Client) {
		ctx := context.Background()
		for i := 1; i <= 3; i++ {
			r, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.Version("compact_rev_key"), "=", int64(i-1))).
				Then(clientv3.OpPut("compact_rev_key", strconv.Itoa(i))).Else(clientv3.OpGet("compact_rev_key")).Commit()
			if err != nil || !r.Succeeded {
				t.Fatalf("compaction %d: err=%v succeeded=%v", i, err, r != nil && r.Succeeded)
			}
			mustPut(t, cli, "/c/k", strconv.Itoa(i))
		}
		g, err := cli.Get(ctx, "compact_rev_key")
		if err != nil || g.Kvs[0].Version != 3 {
			t.Fatalf("compact_rev_key version = %v (err %v), want 3", g.Kvs, err)
		}
		if _, err := cli.Compact(ctx, g.Header.Revision); err != nil {
			t.Fatalf("Compact(%d): %v", g.Header.Revision, err)
		}
		if _, err := cli.Get(ctx, "/c/k", clientv3.WithRev(g.Header.Revision-1)); !errors.Is(err, rpctypes.ErrCompacted) {
			t.Errorf("Get below compacted revision: err = %v, want %v", err, rpctypes.ErrCompacted)
		}
		if r, err := cli.Get(ctx, "/c/k", clientv3.WithRev(g.Header.Revision)); err != nil || string(r.Kvs[0].Value) != "3" {
			t.Errorf("Get at compacted revision = %v, %v; want value 3", r, err)
		}
		if _, err := cli.Compact(ctx, g.Header.Revision); !errors.Is(err, rpctypes.ErrCompacted) {
			t.Errorf("Compact again: err = %v, want %v", err, rpctypes.ErrCompacted)
		}
		w := cli.Watch(ctx, "/c/k", clientv3.WithRev(2))
		wr := <-w
		if wr.CompactRevision != g.Header.Revision {
			t.Errorf("watch from a compacted revision: compact revision = %d, want %d", wr.CompactRevision, g.Header.Revision)
		}
	})
}

func TestLeaseExpiryDeletesKeys(t *testing.T) {
	forEngines(t, func(t *testing.T, cli *clientv3.Client) {
		ctx := context.Background()
		l, err := cli.Grant(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		mustPut(t, cli, "/lease/a", "x", clientv3.WithLease(l.ID))
		ttl, err := cli.TimeToLive(ctx, l.ID, clientv3.WithAttachedKeys())
		if err != nil || ttl.GrantedTTL != 1 || len(ttl.Keys) != 1 {
			t.Fatalf("TimeToLive = %+v, %v; want granted 1s with one key", ttl, err)
		}
		w := cli.Watch(ctx, "/lease/a")
		deadline := time.After(30 * time.Second)
		for done := false; !done; {
			select {
			case wr := <-w:
				for _, ev := range wr.Events {
					done = done || ev.Type == clientv3.EventTypeDelete
				}
			case <-deadline:
				t.Fatal("key with an expired lease was not deleted within 30s")
			}
		}
		if _, err := cli.Put(ctx, "/lease/b", "x", clientv3.WithLease(l.ID)); !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			t.Errorf("Put with an expired lease: err = %v, want %v", err, rpctypes.ErrLeaseNotFound)
		}
	})
}

func TestMaintenance(t *testing.T) {
	forEngines(t, func(t *testing.T, cli *clientv3.Client) {
		ctx := context.Background()
		st, err := cli.Status(ctx, cli.Endpoints()[0])
		if err != nil {
			t.Fatal(err)
		}
		if st.Version < "3.5.13" {
			t.Errorf("Status version = %q; kube-apiserver needs at least 3.5.13 for watch progress requests", st.Version)
		}
		ml, err := cli.MemberList(ctx)
		if err != nil || len(ml.Members) != 1 {
			t.Errorf("MemberList = %v, %v; want one member", ml, err)
		}
		// Unsupported range options are named in the error.
		_, err = pb.NewKVClient(cli.ActiveConnection()).Range(ctx, &pb.RangeRequest{Key: []byte("a"), MinModRevision: 3})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("Range with min_mod_revision: err = %v, want InvalidArgument", err)
		}
	})
}

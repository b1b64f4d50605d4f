package pebble

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/cloudless-dev/cloudless/internal/datastore/mvcc"
)

// BenchmarkRange10k lists 10,000 keys of 1 KB at the current revision.
func BenchmarkRange10k(b *testing.B) {
	e, err := Open(b.TempDir(), Options{WALSize: 64 << 20}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	val := []byte(strings.Repeat("p", 1000))
	ctx := context.Background()
	for i := 0; i < 10000; i++ {
		key := []byte(fmt.Sprintf("/registry/pods/ns/pod-%05d", i))
		if _, err := e.Update(ctx, func(tx mvcc.Tx) error {
			return tx.Put(&mvccpb.KeyValue{Key: key, Value: val, CreateRevision: tx.Rev(), ModRevision: tx.Rev(), Version: 1}, nil)
		}); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		res, err := e.Range(ctx, mvcc.RangeQuery{Key: []byte("/registry/pods/"), End: []byte("/registry/pods0")})
		if err != nil || len(res.KVs) != 10000 {
			b.Fatal(err, len(res.KVs))
		}
	}
}

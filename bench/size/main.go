// Command size runs the datastore workload of issue 2 against etcd v3 API
// endpoints for a long time and records how big each store's files grow:
// 100 nodes renewing a Lease every 10 s, 5 ConfigMap creates and 5 deletes
// a second, and kube-apiserver's compaction every 5 minutes. It writes a
// CSV of sizes over time and, with -plot, a PNG.
//
//	size -duration 30m -store pebble=unix:///mnt/a/etcd.sock:/mnt/a -store postgres=unix:///…:/pgdata
package main

import (
	"context"
	"encoding/csv"
	"flag"
	"fmt"
	"io/fs"
	"log"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

type store struct {
	name, endpoint, dir string
}

type storeFlags []store

func (s *storeFlags) String() string { return fmt.Sprint(*s) }
func (s *storeFlags) Set(v string) error {
	name, rest, ok := strings.Cut(v, "=")
	i := strings.LastIndex(rest, ":")
	if !ok || i < 0 {
		return fmt.Errorf("want name=endpoint:dir, got %q", v)
	}
	*s = append(*s, store{name, rest[:i], rest[i+1:]})
	return nil
}

func main() {
	var stores storeFlags
	flag.Var(&stores, "store", "name=endpoint:dir-to-measure (repeatable)")
	duration := flag.Duration("duration", 30*time.Minute, "how long to run")
	sample := flag.Duration("sample", time.Minute, "how often to record sizes")
	compactEvery := flag.Duration("compact-every", 5*time.Minute, "compaction interval (kube-apiserver's default is 5m)")
	out := flag.String("out", "size.csv", "CSV output")
	flag.Parse()
	if len(stores) == 0 {
		log.Fatal("give at least one -store name=endpoint:dir")
	}
	ctx, cancel := context.WithTimeout(context.Background(), *duration)
	defer cancel()
	f, err := os.Create(*out)
	if err != nil {
		log.Fatal(err)
	}
	w := csv.NewWriter(f)
	w.Write([]string{"store", "seconds", "bytes", "db_size", "revision", "writes"})
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, s := range stores {
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{s.endpoint}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			log.Fatalf("%s: %v", s.name, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := &load{cli: cli}
			go l.run(ctx, *compactEvery)
			start := time.Now()
			t := time.NewTicker(*sample)
			defer t.Stop()
			for {
				size := du(s.dir)
				rev := l.rev.Load()
				// The size the store reports for its data (etcd: the bolt
				// file; ours: the engine's files or tables).
				var dbSize int64
				sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
				if st, err := cli.Status(sctx, s.endpoint); err == nil {
					dbSize = st.DbSize
				}
				scancel()
				mu.Lock()
				w.Write([]string{s.name, strconv.Itoa(int(time.Since(start).Seconds())), strconv.FormatInt(size, 10), strconv.FormatInt(dbSize, 10), strconv.FormatInt(rev, 10), strconv.FormatInt(l.writes.Load(), 10)})
				w.Flush()
				mu.Unlock()
				log.Printf("%s: %ds files=%d MiB db=%d MiB rev=%d writes=%d errors=%d", s.name, int(time.Since(start).Seconds()), size>>20, dbSize>>20, rev, l.writes.Load(), l.errors.Load())
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
		}()
	}
	wg.Wait()
	f.Close()
}

func du(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

type load struct {
	cli    *clientv3.Client
	rev    atomicInt
	writes atomicInt
	errors atomicInt
}

type atomicInt struct {
	mu sync.Mutex
	v  int64
}

func (a *atomicInt) Load() int64 { a.mu.Lock(); defer a.mu.Unlock(); return a.v }
func (a *atomicInt) Max(v int64) {
	a.mu.Lock()
	a.v = max(a.v, v)
	a.mu.Unlock()
}
func (a *atomicInt) Add(v int64) { a.mu.Lock(); a.v += v; a.mu.Unlock() }

func (l *load) txn(ctx context.Context, cmp clientv3.Cmp, then clientv3.Op, key string) (int64, bool) {
	r, err := l.cli.Txn(ctx).If(cmp).Then(then).Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		l.errors.Add(1)
		return 0, false
	}
	l.rev.Max(r.Header.Revision)
	if r.Succeeded {
		l.writes.Add(1)
		return r.Header.Revision, true
	}
	if kvs := r.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		return kvs[0].ModRevision, false
	}
	return 0, false
}

func value(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + rand.IntN(26))
	}
	return string(b)
}

func (l *load) run(ctx context.Context, compactEvery time.Duration) {
	// 100 nodes, each renewing its Lease every 10 s, spread over the period.
	for n := 0; n < 100; n++ {
		go func() {
			key := fmt.Sprintf("/registry/leases/kube-node-lease/node-%03d", n)
			var rev int64
			time.Sleep(time.Duration(n) * 100 * time.Millisecond)
			t := time.NewTicker(10 * time.Second)
			defer t.Stop()
			for {
				r, _ := l.txn(ctx, clientv3.Compare(clientv3.ModRevision(key), "=", rev), clientv3.OpPut(key, value(400)), key)
				rev = r
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
		}()
	}
	// 5 ConfigMap creates and 5 deletes a second.
	go func() {
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		type cm struct {
			key string
			rev int64
		}
		var live []cm
		for i := 0; ; i++ {
			key := fmt.Sprintf("/registry/configmaps/bench/cm-%d", i)
			if rev, ok := l.txn(ctx, clientv3.Compare(clientv3.ModRevision(key), "=", 0), clientv3.OpPut(key, value(1000)), key); ok {
				live = append(live, cm{key, rev})
			}
			if len(live) > 50 {
				d := live[0]
				live = live[1:]
				l.txn(ctx, clientv3.Compare(clientv3.ModRevision(d.key), "=", d.rev), clientv3.OpDelete(d.key), d.key)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	// kube-apiserver's compactor.
	t := time.NewTicker(compactEvery)
	defer t.Stop()
	var version, prev int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r, err := l.cli.Txn(ctx).If(clientv3.Compare(clientv3.Version("compact_rev_key"), "=", version)).
			Then(clientv3.OpPut("compact_rev_key", strconv.FormatInt(l.rev.Load(), 10))).Else(clientv3.OpGet("compact_rev_key")).Commit()
		if err != nil {
			continue
		}
		cur := r.Header.Revision
		if !r.Succeeded {
			version = r.Responses[0].GetResponseRange().Kvs[0].Version
			continue
		}
		version++
		if prev > 0 {
			if _, err := l.cli.Compact(ctx, prev); err != nil {
				log.Printf("compact %d: %v", prev, err)
			}
		}
		prev = cur
	}
}

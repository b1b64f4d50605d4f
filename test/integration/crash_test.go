package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// TestCrashSafety kills the datastore with SIGKILL in the middle of a write
// load, many times. After every restart, every write the client saw
// acknowledged is present with its value and revision, the revision never
// goes backwards, and a watcher resuming from the last revision it saw
// gets every later revision, without gaps.
func TestCrashSafety(t *testing.T) {
	for _, engine := range []string{"pebble", "postgres"} {
		t.Run(engine, func(t *testing.T) {
			_, sock, args := datastoreArgs(t, engine)
			acked := map[string]ackedWrite{}
			// inFlight holds, per key, the write that was cut by the kill:
			// it may or may not have committed (with PostgreSQL the
			// database can commit it after the datastore died).
			inFlight := map[string]string{}
			var lastRev, watchedRev int64
			rounds := 12
			for round := 0; round <= rounds; round++ { // the last round only checks
				p := start(t, args...)
				cli := connect(t, p, sock)
				ctx := context.Background()

				// Everything acknowledged before is there, revision did not go back.
				resp, err := cli.Get(ctx, "w/", clientv3.WithPrefix())
				if err != nil {
					t.Fatalf("round %d: list after restart: %v", round, err)
				}
				if resp.Header.Revision < lastRev {
					t.Fatalf("round %d: revision went back from %d to %d", round, lastRev, resp.Header.Revision)
				}
				have := map[string]*mvccpb.KeyValue{}
				for _, kv := range resp.Kvs {
					have[string(kv.Key)] = kv
				}
				for k, w := range acked {
					kv := have[k]
					if kv == nil {
						t.Fatalf("round %d: acknowledged write %s at revision %d lost", round, k, w.rev)
					}
					if v, ok := inFlight[k]; ok && string(kv.Value) == v && kv.ModRevision > w.rev {
						acked[k] = ackedWrite{value: v, rev: kv.ModRevision} // it did commit
						continue
					}
					if string(kv.Value) != w.value || kv.ModRevision != w.rev {
						t.Fatalf("round %d: %s = %q at %d, want %q at %d", round, k, kv.Value, kv.ModRevision, w.value, w.rev)
					}
				}
				lastRev = resp.Header.Revision

				// A watcher resuming after the last revision it saw gets every
				// revision up to now, in order.
				if watchedRev > 0 {
					wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
					next := watchedRev + 1
					for wr := range cli.Watch(wctx, "w/", clientv3.WithPrefix(), clientv3.WithRev(next)) {
						if err := wr.Err(); err != nil {
							t.Fatalf("round %d: watch from %d: %v", round, next, err)
						}
						for _, ev := range wr.Events {
							if ev.Kv.ModRevision != next {
								t.Fatalf("round %d: watch gap: got revision %d, want %d", round, ev.Kv.ModRevision, next)
							}
							if w, ok := acked[string(ev.Kv.Key)]; ok && w.rev == next && string(ev.Kv.Value) != w.value {
								t.Fatalf("round %d: watch event %s = %q, want %q", round, ev.Kv.Key, ev.Kv.Value, w.value)
							}
							next++
						}
						if next > lastRev {
							break
						}
					}
					cancel()
					if next <= lastRev {
						t.Fatalf("round %d: watch from %d stopped at %d before current revision %d", round, watchedRev+1, next, lastRev)
					}
				}
				watchedRev = lastRev
				if round == rounds {
					p.kill()
					cli.Close()
					break
				}

				// Write from several clients until killed.
				var mu sync.Mutex
				var wg sync.WaitGroup
				stop := make(chan struct{})
				var count int
				for g := 0; g < 8; g++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := 0; ; i++ {
							select {
							case <-stop:
								return
							default:
							}
							key := fmt.Sprintf("w/%d/%d/%d", round, g, i%50)
							val := fmt.Sprintf("v-%d-%d-%d-%d", round, g, i, rand.Int())
							wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
							r, err := cli.Put(wctx, key, val)
							cancel()
							if err != nil {
								mu.Lock()
								inFlight[key] = val // the server is gone: unacknowledged
								mu.Unlock()
								return
							}
							mu.Lock()
							if w, ok := acked[key]; !ok || w.rev < r.Header.Revision {
								acked[key] = ackedWrite{value: val, rev: r.Header.Revision}
							}
							count++
							mu.Unlock()
						}
					}()
				}
				// Kill once a random number of writes has been acknowledged.
				target := 50 + rand.IntN(300)
				deadline := time.Now().Add(60 * time.Second)
				for {
					mu.Lock()
					n := count
					mu.Unlock()
					if n >= target {
						break
					}
					if time.Now().After(deadline) || p.exited() {
						t.Fatalf("round %d: only %d writes acknowledged; server output:\n%s", round, n, p.stderr)
					}
					time.Sleep(5 * time.Millisecond) // polling the counter
				}
				p.kill()
				close(stop)
				wg.Wait()
				cli.Close()
			}
			t.Logf("%d rounds, %d keys acknowledged, final revision %d", rounds, len(acked), lastRev)
		})
	}
}

type ackedWrite struct {
	value string
	rev   int64
}

func connect(t *testing.T, p *proc, sock string) *clientv3.Client {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if p.exited() {
			t.Fatalf("datastore exited:\n%s", p.stderr)
		}
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"unix://" + sock}, DialTimeout: time.Second, Logger: zap.NewNop()})
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err = cli.Status(ctx, "unix://"+sock)
			cancel()
			if err == nil {
				return cli
			}
			cli.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("datastore not ready on %s: %v\n%s", sock, err, p.stderr)
		}
		time.Sleep(20 * time.Millisecond) // polling for readiness
	}
}

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Keys as kube-apiserver lays them out under its default /registry prefix.
const (
	leasePrefix     = "/registry/leases/kube-node-lease/"
	configMapPrefix = "/registry/configmaps/bench/"
	podPrefix       = "/registry/pods/"
	compactRevKey   = "compact_rev_key"
)

type runConfig struct {
	store            string
	endpoint         string
	watchEndpoint    string
	duration         time.Duration
	compactInterval  time.Duration
	nodes            int
	leaseInterval    time.Duration
	cmRate           float64
	cmSize           int
	seedConfigMaps   int
	listObjects      int
	listRepeats      int
	pageSize         int64
	listLoadTimeout  time.Duration
	requestTimeout   time.Duration
	mount            string
	loopDevs         []string
	serverPids       []int
	pgPids           []int
	duInterval       time.Duration
	out              string
	listConcurrency  int
	watchCatchUpWait time.Duration
	flushCmd         string
}

func intList(s string) ([]int, error) {
	var out []int
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("pid %q: %w", f, err)
		}
		out = append(out, n)
	}
	return out, nil
}

func cmdRun(args []string) error {
	var c runConfig
	var loops, spids, ppids string
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	fs.StringVar(&c.store, "store", "", "store name for the report")
	fs.StringVar(&c.endpoint, "endpoint", "", "etcd API endpoint the writes go to (http://HOST:PORT or unix:///PATH)")
	fs.StringVar(&c.watchEndpoint, "watch-endpoint", "", "endpoint the watcher uses (default: --endpoint); another server on the same database measures cross-server delivery")
	fs.DurationVar(&c.duration, "duration", 300*time.Second, "length of the timed phase")
	fs.DurationVar(&c.compactInterval, "compact-interval", 60*time.Second, "apiserver compactor interval (kube-apiserver's default is 5m)")
	fs.IntVar(&c.nodes, "nodes", 100, "simulated nodes, each renewing its Lease")
	fs.DurationVar(&c.leaseInterval, "lease-interval", 10*time.Second, "Lease renew interval per node (kubelet: 10s)")
	fs.Float64Var(&c.cmRate, "configmap-rate", 5, "ConfigMap creates per second, and as many deletes")
	fs.IntVar(&c.cmSize, "configmap-size", 1024, "ConfigMap value size in bytes")
	fs.IntVar(&c.seedConfigMaps, "seed-configmaps", 100, "ConfigMaps created before the timed phase, so deletes always have a target")
	fs.IntVar(&c.listObjects, "list-objects", 10000, "objects created under /registry/pods/ for the list measurement")
	fs.IntVar(&c.listRepeats, "list-repeats", 20, "timed full lists (and as many paged lists)")
	fs.Int64Var(&c.pageSize, "page-size", 500, "page size of the paged list (kube-apiserver's default chunk size)")
	fs.DurationVar(&c.listLoadTimeout, "list-load-timeout", 10*time.Minute, "give up creating the list objects after this long")
	fs.IntVar(&c.listConcurrency, "list-load-concurrency", 16, "concurrent creates while loading the list objects")
	fs.DurationVar(&c.requestTimeout, "request-timeout", 10*time.Second, "timeout of one request")
	fs.StringVar(&c.mount, "mount", "", "mount point of the store's file system (syncfs before device reads; du for the size series)")
	fs.StringVar(&loops, "loop-devs", "", "comma-separated block devices whose written sectors are counted (e.g. loop3)")
	fs.StringVar(&spids, "server-pids", "", "comma-separated PIDs of the datastore server process(es): CPU and peak RSS")
	fs.StringVar(&ppids, "pg-pids", "", "comma-separated PIDs of PostgreSQL postmasters: CPU and PSS of them and their backends")
	fs.DurationVar(&c.duInterval, "du-interval", 10*time.Second, "database size sampling interval")
	fs.DurationVar(&c.watchCatchUpWait, "watch-catch-up", 15*time.Second, "after the timed phase, how long to wait for the watcher to receive every acknowledged write")
	fs.StringVar(&c.flushCmd, "flush-cmd", "", "shell command run before each device reading, after the workload paused (PostgreSQL: psql -c CHECKPOINT)")
	fs.StringVar(&c.out, "out", "", "result JSON file")
	_ = fs.Parse(args)
	if c.endpoint == "" || c.out == "" || c.store == "" {
		return errors.New("run: --store, --endpoint and --out are required")
	}
	if c.watchEndpoint == "" {
		c.watchEndpoint = c.endpoint
	}
	c.loopDevs = strings.FieldsFunc(loops, func(r rune) bool { return r == ',' })
	var err error
	if c.serverPids, err = intList(spids); err != nil {
		return err
	}
	if c.pgPids, err = intList(ppids); err != nil {
		return err
	}
	res := &Result{Store: c.store, Status: "ok"}
	runErr := run(c, res)
	if runErr != nil {
		res.Status = "failed: " + firstLine(runErr.Error())
		res.Detail = runErr.Error()
	}
	if err := writeResult(c.out, res); err != nil {
		return err
	}
	return runErr
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 120 {
		s = s[:120] + "…"
	}
	return s
}

func newClient(endpoint string) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:   []string{endpoint},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		// kube-apiserver's keepalive settings.
		DialKeepAliveTime:    30 * time.Second,
		DialKeepAliveTimeout: 10 * time.Second,
	})
}

// evKey identifies one committed write, as the watcher sees it.
type evKey struct {
	key string
	rev int64
}

// recorder collects per-request latencies and acknowledgement times.
type recorder struct {
	mu        sync.Mutex
	lat       map[string][]float64
	acked     map[evKey]time.Time
	writes    atomic.Int64
	errs      atomic.Int64
	conflicts atomic.Int64
	lastErr   atomic.Value
}

func newRecorder() *recorder {
	return &recorder{lat: map[string][]float64{}, acked: map[evKey]time.Time{}}
}

func (r *recorder) observe(kind string, d time.Duration, err error) {
	r.mu.Lock()
	r.lat[kind] = append(r.lat[kind], ms(d))
	r.mu.Unlock()
	if err != nil {
		r.errs.Add(1)
		r.lastErr.Store(err.Error())
	}
}

// ack records a successful write of key at rev, seen by the writer at t.
func (r *recorder) ack(key string, rev int64, t time.Time, watched bool) {
	r.writes.Add(1)
	if watched {
		r.mu.Lock()
		r.acked[evKey{key, rev}] = t
		r.mu.Unlock()
	}
}

// watcher records when each event arrives.
type watcher struct {
	mu     sync.Mutex
	seen   map[evKey]time.Time
	maxRev int64
	err    error
}

func (w *watcher) consume(ch clientv3.WatchChan) {
	for resp := range ch {
		now := time.Now()
		if err := resp.Err(); err != nil {
			w.mu.Lock()
			w.err = err
			w.mu.Unlock()
			return
		}
		w.mu.Lock()
		for _, ev := range resp.Events {
			rev := ev.Kv.ModRevision
			if ev.Type == mvccpb.DELETE && rev == 0 {
				rev = resp.Header.Revision
			}
			w.seen[evKey{string(ev.Kv.Key), rev}] = now
			w.maxRev = max(w.maxRev, rev)
		}
		w.mu.Unlock()
	}
}

// startWatch opens a watch on prefix from rev and returns once the server
// has confirmed that the watch exists.
func startWatch(ctx context.Context, cli *clientv3.Client, prefix string, rev int64, w *watcher) error {
	ch := cli.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(rev), clientv3.WithPrevKV(),
		clientv3.WithProgressNotify(), clientv3.WithCreatedNotify())
	timer := time.NewTimer(30 * time.Second)
	defer timer.Stop()
	select {
	case resp, ok := <-ch:
		if !ok {
			return fmt.Errorf("watch %s closed before it was created", prefix)
		}
		if err := resp.Err(); err != nil {
			return fmt.Errorf("watch %s: %w", prefix, err)
		}
		if !resp.Created {
			// An event came first: the watch exists. Keep it.
			w.mu.Lock()
			for _, ev := range resp.Events {
				w.seen[evKey{string(ev.Kv.Key), ev.Kv.ModRevision}] = time.Now()
			}
			w.mu.Unlock()
		}
	case <-timer.C:
		return fmt.Errorf("watch %s: not created within 30s", prefix)
	}
	go w.consume(ch)
	return nil
}

func run(c runConfig, res *Result) error {
	res.DurationS = c.duration.Seconds()
	res.CompactIntervalS = c.compactInterval.Seconds()
	res.WatchCrossServer = c.watchEndpoint != c.endpoint
	res.ListObjects = c.listObjects
	res.PageSize = c.pageSize
	for _, p := range c.serverPids {
		if !alive(p) {
			return fmt.Errorf("server process %d is not running", p)
		}
	}

	cli, err := newClient(c.endpoint)
	if err != nil {
		return fmt.Errorf("connect %s: %w", c.endpoint, err)
	}
	defer cli.Close()
	wcli, err := newClient(c.watchEndpoint)
	if err != nil {
		return fmt.Errorf("connect %s: %w", c.watchEndpoint, err)
	}
	defer wcli.Close()

	bg := context.Background()
	reqCtx := func() (context.Context, context.CancelFunc) { return context.WithTimeout(bg, c.requestTimeout) }

	// PSS of the PostgreSQL processes, sampled every second for the whole run.
	var pssPeak atomic.Int64
	stopPSS := make(chan struct{})
	var pssDone sync.WaitGroup
	if len(c.pgPids) > 0 {
		pssDone.Add(1)
		go func() {
			defer pssDone.Done()
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				if v := treePSS(c.pgPids); v > pssPeak.Load() {
					pssPeak.Store(v)
				}
				select {
				case <-stopPSS:
					return
				case <-t.C:
				}
			}
		}()
	}
	defer func() {
		close(stopPSS)
		pssDone.Wait()
		res.PGPeakPSS = pssPeak.Load()
		for _, p := range c.serverPids {
			res.ServerHWM += statusKB(p, "VmHWM")
		}
	}()

	// Setup, not measured: every node's Lease and the seed ConfigMaps.
	start := time.Now()
	leaseRev := make([]int64, c.nodes)
	created := make([]time.Time, c.nodes)
	for i := range c.nodes {
		node := fmt.Sprintf("node-%d", i)
		created[i] = start
		ctx, cancel := reqCtx()
		r, err := create(ctx, cli, leasePrefix+node, leaseObject(node, start, start))
		cancel()
		if err != nil {
			return fmt.Errorf("setup: create lease %s: %w", node, err)
		}
		leaseRev[i] = r
	}
	type cmRef struct {
		key string
		rev int64
	}
	var cmMu sync.Mutex
	var cmQueue []cmRef
	cmNext := 0
	for range c.seedConfigMaps {
		key := fmt.Sprintf("%scm-%d", configMapPrefix, cmNext)
		ctx, cancel := reqCtx()
		r, err := create(ctx, cli, key, configMapObject("bench", key, start, c.cmSize, uint64(cmNext)))
		cancel()
		if err != nil {
			return fmt.Errorf("setup: create %s: %w", key, err)
		}
		cmQueue = append(cmQueue, cmRef{key, r})
		cmNext++
	}
	ctx, cancel := reqCtx()
	gr, err := cli.Get(ctx, compactRevKey)
	cancel()
	if err != nil {
		return fmt.Errorf("setup: get %s: %w", compactRevKey, err)
	}
	startRev := gr.Header.Revision

	// Watchers like kube-apiserver's watch cache: one per resource prefix.
	w := &watcher{seen: map[evKey]time.Time{}}
	wctx, wcancel := context.WithCancel(bg)
	defer wcancel()
	for _, p := range []string{leasePrefix, configMapPrefix} {
		if err := startWatch(wctx, wcli, p, startRev+1, w); err != nil {
			return fmt.Errorf("setup: %w", err)
		}
	}

	// Baselines.
	if err := flush(c); err != nil {
		return err
	}
	dev0, err := deviceBytes(c.loopDevs)
	if err != nil {
		return err
	}
	cpu0 := treeCPUSeconds(c.serverPids)
	pgcpu0 := treeCPUSeconds(c.pgPids)

	// The timed phase.
	rec := newRecorder()
	t0 := time.Now()
	deadline := t0.Add(c.duration)
	runCtx, stopRun := context.WithDeadline(bg, deadline)
	defer stopRun()
	var wg sync.WaitGroup

	// Database size every duInterval.
	var sizeMu sync.Mutex
	sample := func() {
		if c.mount == "" {
			return
		}
		p := SizePoint{T: time.Since(t0).Seconds(), Bytes: diskUsage(c.mount)}
		sizeMu.Lock()
		res.DBSize = append(res.DBSize, p)
		sizeMu.Unlock()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		sample()
		every(runCtx, t0.Add(c.duInterval), c.duInterval, func() { sample() })
	}()

	// Nodes renew their Leases (kube-apiserver GuaranteedUpdate).
	for i := range c.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			node := fmt.Sprintf("node-%d", i)
			key := leasePrefix + node
			offset := time.Duration(i) * c.leaseInterval / time.Duration(c.nodes)
			every(runCtx, t0.Add(offset), c.leaseInterval, func() {
				leaseRev[i] = guaranteedUpdate(rec, reqCtx, cli, key, leaseRev[i], func() []byte {
					return leaseObject(node, created[i], time.Now())
				})
			})
		}()
	}

	// ConfigMaps: creates, and deletes of the oldest ones, at cmRate each.
	period := time.Duration(float64(time.Second) / c.cmRate)
	wg.Add(2)
	go func() {
		defer wg.Done()
		every(runCtx, t0, period, func() {
			cmMu.Lock()
			n := cmNext
			cmNext++
			cmMu.Unlock()
			key := fmt.Sprintf("%scm-%d", configMapPrefix, n)
			val := configMapObject("bench", key, time.Now(), c.cmSize, uint64(n))
			ctx, cancel := reqCtx()
			s := time.Now()
			r, err := create(ctx, cli, key, val)
			d := time.Since(s)
			cancel()
			rec.observe("configmap-create", d, ignoreConflict(err))
			if err == nil {
				rec.ack(key, r, s.Add(d), true)
				cmMu.Lock()
				cmQueue = append(cmQueue, cmRef{key, r})
				cmMu.Unlock()
			} else if errors.Is(err, errConflict) {
				rec.conflicts.Add(1)
			}
		})
	}()
	go func() {
		defer wg.Done()
		every(runCtx, t0.Add(period/2), period, func() {
			cmMu.Lock()
			if len(cmQueue) == 0 {
				cmMu.Unlock()
				return
			}
			ref := cmQueue[0]
			cmQueue = cmQueue[1:]
			cmMu.Unlock()
			guaranteedDelete(rec, reqCtx, cli, ref.key, ref.rev)
		})
	}()

	// The apiserver's compactor (k8s.io/apiserver/pkg/storage/etcd3/compact.go).
	var compactions atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		var version, rev int64
		every(runCtx, t0.Add(c.compactInterval), c.compactInterval, func() {
			ctx, cancel := reqCtx()
			defer cancel()
			s := time.Now()
			resp, err := cli.Txn(ctx).If(
				clientv3.Compare(clientv3.Version(compactRevKey), "=", version),
			).Then(
				clientv3.OpPut(compactRevKey, strconv.FormatInt(rev, 10)),
			).Else(
				clientv3.OpGet(compactRevKey),
			).Commit()
			d := time.Since(s)
			rec.observe("compact-txn", d, err)
			if err != nil {
				return
			}
			curRev := resp.Header.Revision
			if !resp.Succeeded {
				if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
					version = kvs[0].Version
				}
				rev = curRev
				return
			}
			rec.ack(compactRevKey, curRev, s.Add(d), false)
			version++
			prev := rev
			rev = curRev
			if prev == 0 {
				return // the apiserver does not compact on its first round
			}
			s = time.Now()
			_, err = cli.Compact(ctx, prev)
			rec.observe("compact", time.Since(s), err)
			if err == nil {
				compactions.Add(1)
			}
		})
	}()

	wg.Wait()
	elapsed := time.Since(t0)

	// Let the watcher receive every acknowledged write, then flush and count.
	rec.mu.Lock()
	acked := make(map[evKey]time.Time, len(rec.acked))
	var lastRev int64
	for k, v := range rec.acked {
		acked[k] = v
		lastRev = max(lastRev, k.rev)
	}
	rec.mu.Unlock()
	catchUp := time.Now().Add(c.watchCatchUpWait)
	for {
		w.mu.Lock()
		done := w.maxRev >= lastRev || w.err != nil
		w.mu.Unlock()
		if done || time.Now().After(catchUp) {
			break
		}
		time.Sleep(10 * time.Millisecond) // polling the watcher's progress
	}
	if err := flush(c); err != nil {
		return err
	}
	dev1, err := deviceBytes(c.loopDevs)
	if err != nil {
		return err
	}
	res.LoadAvg = loadAvg()
	res.CPUSeconds = treeCPUSeconds(c.serverPids) - cpu0
	res.PGCPUSeconds = treeCPUSeconds(c.pgPids) - pgcpu0
	if c.mount != "" {
		end := diskUsage(c.mount)
		res.DBSize = append(res.DBSize, SizePoint{T: elapsed.Seconds(), Bytes: end})
		res.DBSizeEnd = end
	}

	res.Writes = rec.writes.Load()
	res.WriteErrors = rec.errs.Load()
	res.Conflicts = rec.conflicts.Load()
	res.WritesPerS = float64(res.Writes) / elapsed.Seconds()
	res.DeviceBytes = dev1 - dev0
	res.BytesPerWrite = float64(res.DeviceBytes) / float64(res.Writes)
	res.Compactions = int(compactions.Load())
	res.ByKind = map[string]LatencySummary{}
	var all []float64
	rec.mu.Lock()
	for k, v := range rec.lat {
		res.ByKind[k] = summarize(v)
		if k != "compact" {
			all = append(all, v...)
		}
	}
	rec.mu.Unlock()
	ws := summarize(all)
	res.WriteP50Ms, res.WriteP99Ms, res.WriteMaxMs = ws.P50Ms, ws.P99Ms, ws.MaxMs
	res.WriteCDF = cdf(all)

	w.mu.Lock()
	var wl []float64
	for k, at := range acked {
		got, ok := w.seen[k]
		if !ok {
			res.WatchMissed++
			continue
		}
		// Delivery latency: from the writer's acknowledgement to the
		// watcher's receipt. An event that beat the acknowledgement counts 0.
		wl = append(wl, max(ms(got.Sub(at)), 0))
	}
	res.WatchEvents = int64(len(w.seen))
	werr := w.err
	w.mu.Unlock()
	wsum := summarize(wl)
	res.WatchP50Ms, res.WatchP99Ms = wsum.P50Ms, wsum.P99Ms
	if len(wl) == 0 {
		res.WatchP50Ms, res.WatchP99Ms = math.NaN(), math.NaN()
	}
	wcancel()

	for _, p := range c.serverPids {
		if !alive(p) {
			return fmt.Errorf("server process %d died during the timed phase", p)
		}
	}
	if res.Writes == 0 {
		msg, _ := rec.lastErr.Load().(string)
		return fmt.Errorf("no write succeeded in the timed phase (%d errors; last: %s)", res.WriteErrors, msg)
	}
	if werr != nil {
		res.Detail = "watch ended early: " + werr.Error()
	}

	// The list phase.
	if err := listPhase(c, cli, res); err != nil {
		res.ListError = err.Error()
	}
	if c.mount != "" {
		_ = syncFS(c.mount)
		res.DBSizeAfterList = diskUsage(c.mount)
	}
	return nil
}

// flush runs --flush-cmd, then syncfs on the mount, so that the device
// counter read next includes what the store has written so far.
func flush(c runConfig) error {
	if c.flushCmd != "" {
		if out, err := exec.Command("sh", "-c", c.flushCmd).CombinedOutput(); err != nil {
			return fmt.Errorf("flush command %q: %v: %s", c.flushCmd, err, out)
		}
	}
	if c.mount != "" {
		if err := syncFS(c.mount); err != nil {
			return fmt.Errorf("syncfs %s: %w", c.mount, err)
		}
	}
	return nil
}

// every calls f at first, first+interval, ... until ctx ends. Ticks missed
// while f ran long are skipped, as a kubelet's renew loop would.
func every(ctx context.Context, first time.Time, interval time.Duration, f func()) {
	next := first
	for {
		t := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		f()
		next = next.Add(interval)
		if now := time.Now(); next.Before(now) {
			next = next.Add(now.Sub(next).Truncate(interval) + interval)
		}
	}
}

var errConflict = errors.New("compare failed")

func ignoreConflict(err error) error {
	if errors.Is(err, errConflict) {
		return nil
	}
	return err
}

// create is kube-apiserver's Create: Txn If(ModRevision(key) == 0)
// Then(Put(key, value)), with no Else. It returns the new revision.
func create(ctx context.Context, cli *clientv3.Client, key string, val []byte) (int64, error) {
	resp, err := cli.Txn(ctx).If(
		clientv3.Compare(clientv3.ModRevision(key), "=", 0),
	).Then(
		clientv3.OpPut(key, string(val)),
	).Commit()
	if err != nil {
		return 0, err
	}
	if !resp.Succeeded {
		return 0, fmt.Errorf("create %s: %w", key, errConflict)
	}
	return resp.Header.Revision, nil
}

// guaranteedUpdate is kube-apiserver's GuaranteedUpdate from a cached
// object: Txn If(ModRevision(key) == rev) Then(Put) Else(Get), and on a
// conflict again from what the Else branch returned. It returns the
// object's new ModRevision.
func guaranteedUpdate(rec *recorder, reqCtx func() (context.Context, context.CancelFunc), cli *clientv3.Client, key string, rev int64, val func() []byte) int64 {
	for attempt := 0; attempt < 5; attempt++ {
		ctx, cancel := reqCtx()
		s := time.Now()
		resp, err := cli.Txn(ctx).If(
			clientv3.Compare(clientv3.ModRevision(key), "=", rev),
		).Then(
			clientv3.OpPut(key, string(val())),
		).Else(
			clientv3.OpGet(key),
		).Commit()
		d := time.Since(s)
		cancel()
		rec.observe("lease-update", d, err)
		if err != nil {
			return rev
		}
		if resp.Succeeded {
			rec.ack(key, resp.Header.Revision, s.Add(d), true)
			return resp.Header.Revision
		}
		rec.conflicts.Add(1)
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			return rev
		}
		rev = kvs[0].ModRevision
	}
	return rev
}

// guaranteedDelete is kube-apiserver's Delete with a cached object:
// Txn If(ModRevision(key) == rev) Then(DeleteRange(key)) Else(Get(key)).
func guaranteedDelete(rec *recorder, reqCtx func() (context.Context, context.CancelFunc), cli *clientv3.Client, key string, rev int64) {
	for attempt := 0; attempt < 5; attempt++ {
		ctx, cancel := reqCtx()
		s := time.Now()
		resp, err := cli.Txn(ctx).If(
			clientv3.Compare(clientv3.ModRevision(key), "=", rev),
		).Then(
			clientv3.OpDelete(key),
		).Else(
			clientv3.OpGet(key),
		).Commit()
		d := time.Since(s)
		cancel()
		rec.observe("configmap-delete", d, err)
		if err != nil {
			return
		}
		if resp.Succeeded {
			rec.ack(key, resp.Header.Revision, s.Add(d), true)
			return
		}
		rec.conflicts.Add(1)
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			return // already gone
		}
		rev = kvs[0].ModRevision
	}
}

// listPhase creates listObjects pods and times full and paged lists of them.
func listPhase(c runConfig, cli *clientv3.Client, res *Result) error {
	now := time.Now()
	loadCtx, cancel := context.WithTimeout(context.Background(), c.listLoadTimeout)
	defer cancel()
	var next atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range c.listConcurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= c.listObjects || loadCtx.Err() != nil {
					return
				}
				name := fmt.Sprintf("pod-%05d", i)
				ctx, cancel := context.WithTimeout(loadCtx, c.requestTimeout)
				_, err := create(ctx, cli, podPrefix+"bench/"+name, podObject("bench", name, now, 1024, uint64(i)))
				cancel()
				if err != nil && firstErr.Load() == nil {
					firstErr.Store(fmt.Errorf("create %s: %w", name, err))
				}
			}
		}()
	}
	wg.Wait()
	res.ListLoadS = time.Since(now).Seconds()
	if err, _ := firstErr.Load().(error); err != nil {
		return err
	}
	if loadCtx.Err() != nil {
		return fmt.Errorf("creating %d objects took longer than %v", c.listObjects, c.listLoadTimeout)
	}

	end := clientv3.GetPrefixRangeEnd(podPrefix)
	listTimeout := 2 * time.Minute
	for range c.listRepeats {
		// kube-apiserver's GetList with limit 0: the whole range at once.
		ctx, cancel := context.WithTimeout(context.Background(), listTimeout)
		s := time.Now()
		resp, err := cli.Get(ctx, podPrefix, clientv3.WithRange(end), clientv3.WithLimit(0))
		d := time.Since(s)
		cancel()
		if err != nil {
			return fmt.Errorf("full list: %w", err)
		}
		res.ListFullMs = append(res.ListFullMs, ms(d))
		res.ListCountSeen = int64(len(resp.Kvs))
	}
	for range c.listRepeats {
		// kube-apiserver's paging: limit pageSize, then from the last key
		// + "\x00" at the first page's revision until More is false.
		ctx, cancel := context.WithTimeout(context.Background(), listTimeout)
		s := time.Now()
		key := podPrefix
		var rev int64
		n := 0
		for {
			opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(c.pageSize)}
			if rev != 0 {
				opts = append(opts, clientv3.WithRev(rev))
			}
			resp, err := cli.Get(ctx, key, opts...)
			if err != nil {
				cancel()
				return fmt.Errorf("paged list: %w", err)
			}
			if rev == 0 {
				rev = resp.Header.Revision
			}
			n += len(resp.Kvs)
			if !resp.More || len(resp.Kvs) == 0 {
				break
			}
			key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
		}
		d := time.Since(s)
		cancel()
		if n != int(res.ListCountSeen) {
			return fmt.Errorf("paged list returned %d objects, full list %d", n, res.ListCountSeen)
		}
		res.ListPagedMs = append(res.ListPagedMs, ms(d))
	}
	res.ListFullMedMs = median(res.ListFullMs)
	res.ListPagedMedMs = median(res.ListPagedMs)
	if res.ListCountSeen != int64(c.listObjects) {
		return fmt.Errorf("list returned %d objects, want %d", res.ListCountSeen, c.listObjects)
	}
	return nil
}

// Package pebble is the embedded storage engine: an MVCC key layout over
// cockroachdb/pebble, a log-structured store whose write-ahead log is
// synced (with group commit) before a write is acknowledged.
//
// Only the mvcc package and the datastore wiring import it.
package pebble

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/vfs"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"golang.org/x/sys/unix"

	"github.com/cloudless-dev/cloudless/internal/datastore/engine/wal"
	"github.com/cloudless-dev/cloudless/internal/datastore/mvcc"
)

// Engine is an mvcc.Engine over a pebble database in one directory.
type Engine struct {
	db  *pebble.DB
	log *slog.Logger

	wmu     sync.Mutex // one writer at a time
	lastRev int64      // last revision applied (guarded by wmu)

	durable   atomic.Int64 // every revision up to it is synced
	compacted atomic.Int64
	notifyMu  sync.Mutex
	changes   chan int64

	leaseMu sync.Mutex
	leases  map[int64]*lease

	wal          *wal.Log
	lsn          uint64 // last log sequence number appended (guarded by wmu)
	dir          string
	minFreeBytes uint64
	// failed holds the first error that left the log in doubt; once set,
	// writes are refused and reads go on from the durable revision.
	failed atomic.Pointer[error]
}

// Options tune the engine.
type Options struct {
	// MinFreeBytes is the free space below which writes are refused with
	// a clear error, before the disk is truly full.
	MinFreeBytes uint64
	// WALSize is the size of the write-ahead log segment; 0 means
	// DefaultWALSize.
	WALSize int64
	// FS holds the pebble database; nil is the real filesystem. Crash
	// tests pass one that loses what was not synced.
	FS vfs.FS
	// WALDevice opens the log segment; nil opens the real file.
	WALDevice func(path string) (wal.Device, error)
}

// DefaultWALSize is the size of the write-ahead log segment, preallocated
// when the engine is created.
const DefaultWALSize = 64 << 20

type lease struct {
	ttl      int64
	deadline time.Time
	keys     map[string]struct{}
}

var _ mvcc.Engine = (*Engine)(nil)

// Open opens or creates the engine's files in dir: the pebble database in
// dir/db and the write-ahead log in dir/wal. Pebble's own WAL is off; ours
// (package wal) is replayed into pebble here, flushed, and restarted.
func Open(dir string, o Options, log *slog.Logger) (*Engine, error) {
	db, err := openDB(dir, o, log)
	if err != nil {
		return nil, err
	}
	e := &Engine{db: db, log: log, changes: make(chan int64, 1), leases: map[int64]*lease{}, dir: dir, minFreeBytes: o.MinFreeBytes}
	if err := e.recover(o); err != nil {
		db.Close()
		return nil, err
	}
	return e, nil
}

// WALPath returns the path of the log segment of the engine in dir.
func WALPath(dir string) string { return filepath.Join(dir, "wal", "segment") }

func openDB(dir string, o Options, log *slog.Logger) (*pebble.DB, error) {
	opts := &pebble.Options{
		DisableWAL:   true,
		Logger:       pebbleLogger{log},
		MemTableSize: 16 << 20,
		FS:           o.FS,
	}
	opts.EnsureDefaults()
	if err := createDir(opts.FS, dir, "db"); err != nil {
		return nil, err
	}
	db, err := pebble.Open(filepath.Join(dir, "db"), opts)
	if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK) {
		return nil, fmt.Errorf("%s is locked by another running cloudless process; stop it or choose another --data-dir: %w", dir, err)
	}
	if err != nil {
		return nil, fmt.Errorf("open pebble database in %s: %w", dir, err)
	}
	return db, nil
}

// Close flushes and closes the database and the log.
func (e *Engine) Close() error {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	err := e.db.Flush()
	if cerr := e.db.Close(); err == nil {
		err = cerr
	}
	if cerr := e.wal.Close(); err == nil {
		err = cerr
	}
	return err
}

// Revisions implements mvcc.Engine.
func (e *Engine) Revisions(context.Context) (int64, int64, error) {
	return e.durable.Load(), e.compacted.Load(), nil
}

// Changes implements mvcc.Engine.
func (e *Engine) Changes() <-chan int64 { return e.changes }

func (e *Engine) markDurable(rev int64) {
	for {
		cur := e.durable.Load()
		if rev <= cur || e.durable.CompareAndSwap(cur, rev) {
			break
		}
	}
	e.notifyMu.Lock()
	select {
	case <-e.changes:
	default:
	}
	e.changes <- e.durable.Load()
	e.notifyMu.Unlock()
}

// Range implements mvcc.Engine.
func (e *Engine) Range(_ context.Context, q mvcc.RangeQuery) (mvcc.RangeResult, error) {
	cur := e.durable.Load()
	rev := q.Rev
	if rev == 0 {
		rev = cur
	}
	if rev > cur {
		return mvcc.RangeResult{}, mvcc.ErrFutureRev
	}
	if rev < e.compacted.Load() {
		return mvcc.RangeResult{}, mvcc.ErrCompacted
	}
	lo, hi := bounds(q.Key, q.End)
	it, err := e.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return mvcc.RangeResult{}, err
	}
	defer it.Close()
	res := mvcc.RangeResult{Rev: rev}
	err = scanLive(it, rev, func(prefix []byte, r int64, rec *record) bool {
		res.Count++
		if !q.CountOnly && (q.Limit == 0 || int64(len(res.KVs)) < q.Limit) {
			res.KVs = append(res.KVs, rec.kv(userKey(prefix), r, q.KeysOnly))
		}
		return true
	})
	return res, err
}

// bounds turns an etcd range into iterator bounds over k-keys.
func bounds(key, end []byte) ([]byte, []byte) {
	switch {
	case len(end) == 0:
		p := userPrefix(key)
		return p, afterVersions(p)
	case len(end) == 1 && end[0] == 0:
		return appendEsc([]byte("k"), key), leasePrefix // 'l' is the byte after 'k'
	default:
		return appendEsc([]byte("k"), key), appendEsc([]byte("k"), end)
	}
}

// scanLive calls fn with the newest version at or below rev of every key
// under the iterator that is not deleted at rev.
func scanLive(it *pebble.Iterator, rev int64, fn func(prefix []byte, rev int64, rec *record) bool) error {
	ok := it.First()
	for ok {
		prefix, r, err := splitVersion(it.Key())
		if err != nil {
			return err
		}
		prefix = append([]byte(nil), prefix...)
		if r > rev {
			if ok = it.SeekGE(versionKey(prefix, rev)); !ok {
				break
			}
			p2, r2, err := splitVersion(it.Key())
			if err != nil {
				return err
			}
			if !bytes.Equal(p2, prefix) {
				continue // no version of this key at or below rev
			}
			r = r2
		}
		rec, err := decodeRecord(it.Value())
		if err != nil {
			return fmt.Errorf("key %q at revision %d: %w", userKey(prefix), r, err)
		}
		if !rec.tombstone && !fn(prefix, r, &rec) {
			return it.Error()
		}
		// Step to the next key: a few Next calls, then a seek.
		ok = it.Next()
		for i := 0; ok && i < 4 && bytes.HasPrefix(it.Key(), prefix) && len(it.Key()) == len(prefix)+8; i++ {
			ok = it.Next()
		}
		if ok && bytes.HasPrefix(it.Key(), prefix) && len(it.Key()) == len(prefix)+8 {
			ok = it.SeekGE(afterVersions(prefix))
		}
	}
	return it.Error()
}

// Update implements mvcc.Engine.
func (e *Engine) Update(ctx context.Context, fn func(mvcc.Tx) error) (rev int64, err error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if f := e.failed.Load(); f != nil {
		return 0, fmt.Errorf("%w: writes stopped after a storage error (%v); fix the disk and restart the datastore; reads go on", mvcc.ErrEngineDegraded, *f)
	}
	e.wmu.Lock()
	b := e.db.NewIndexedBatch()
	defer b.Close()
	t := &tx{e: e, b: b, rev: e.lastRev + 1}
	if err := fn(t); err != nil {
		e.wmu.Unlock()
		return 0, err
	}
	if b.Empty() {
		seen, lsn := e.lastRev, e.lsn
		e.wmu.Unlock()
		// A read-only transaction may have read writes that are applied
		// but not yet synced: answer only once they are durable.
		if seen > e.durable.Load() {
			if err := e.wal.Wait(lsn); err != nil {
				return 0, e.fail(err)
			}
			e.markDurable(seen)
		}
		return seen, nil
	}
	if err := e.checkSpace(uint64(b.Len())); err != nil {
		e.wmu.Unlock()
		return 0, err
	}
	rev = e.lastRev
	if t.wroteKV {
		rev = t.rev
		b.Set(metaRev, binary.BigEndian.AppendUint64(nil, uint64(rev)), nil)
	}
	lsn, err := e.commitLocked(b)
	if err != nil {
		e.wmu.Unlock()
		return 0, e.fail(fmt.Errorf("commit revision %d: %w", rev, err))
	}
	e.lastRev = rev
	t.applyLeases()
	e.wmu.Unlock()
	// Wait for the log outside the lock so that concurrent writers share
	// one sync (group commit).
	if err := e.wal.Wait(lsn); err != nil {
		return 0, e.fail(fmt.Errorf("sync log at revision %d: %w", rev, err))
	}
	e.markDurable(rev)
	return rev, nil
}

// commitLocked applies b to pebble's memtable and appends it to the log;
// the caller holds wmu and waits for the returned LSN to be durable. When
// the log segment is full, pebble is flushed and the log restarted.
func (e *Engine) commitLocked(b *pebble.Batch) (lsn uint64, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("pebble: %v", r)
		}
	}()
	lsn = e.lsn + 1
	if err := b.Set(metaLSN, binary.BigEndian.AppendUint64(nil, lsn), nil); err != nil {
		return 0, err
	}
	if err := e.db.Apply(b, pebble.NoSync); err != nil {
		return 0, err
	}
	e.lsn = lsn
	err = e.wal.Append(lsn, b.Repr())
	if errors.Is(err, wal.ErrFull) {
		// Everything up to lsn is in the memtable: flush it to SSTs,
		// after which the log can start over.
		if err := e.wal.Wait(lsn - 1); err != nil {
			return 0, err
		}
		if err := e.rotateLocked(); err != nil {
			return 0, err
		}
		// The flush made lsn durable too: the new generation starts
		// after it, and waiting for it returns at once.
		return lsn, nil
	}
	return lsn, err
}

// fail records a storage error that leaves the log in doubt: later writes
// might build on state that is not durable, so they are refused.
func (e *Engine) fail(err error) error {
	if e.failed.CompareAndSwap(nil, &err) {
		e.log.Error("storage error: refusing writes until restart; reads go on", "err", err)
	}
	return fmt.Errorf("%w: %v", mvcc.ErrEngineDegraded, err)
}

// checkSpace refuses a write that would leave less than the reserve free.
func (e *Engine) checkSpace(n uint64) error {
	if e.minFreeBytes == 0 {
		return nil
	}
	var st unix.Statfs_t
	if err := unix.Statfs(e.dir, &st); err != nil {
		return nil // cannot tell: let the write find out
	}
	free := st.Bavail * uint64(st.Bsize)
	if free < e.minFreeBytes+n {
		return fmt.Errorf("%w: %d MiB free on %s, below the %d MiB reserve: free disk space or grow the disk; reads keep working",
			mvcc.ErrNoSpace, free>>20, e.dir, e.minFreeBytes>>20)
	}
	return nil
}

// Events implements mvcc.Engine.
func (e *Engine) Events(_ context.Context, from int64, limit int) ([]mvcc.Event, error) {
	if from < e.compacted.Load() {
		return nil, mvcc.ErrCompacted
	}
	durable := e.durable.Load()
	it, err := e.db.NewIter(&pebble.IterOptions{LowerBound: logKey(from, 0), UpperBound: logKey(durable+1, 0)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []mvcc.Event
	for ok := it.First(); ok; ok = it.Next() {
		rev := int64(binary.BigEndian.Uint64(it.Key()[1:9]))
		if len(out) >= limit && out[len(out)-1].KV.ModRevision != rev {
			break
		}
		key := append([]byte(nil), it.Value()...)
		ev, err := e.event(key, rev)
		if err != nil {
			return nil, err
		}
		out = append(out, ev)
	}
	if err := it.Error(); err != nil {
		return nil, err
	}
	// Compaction may have removed what we read meanwhile.
	if from < e.compacted.Load() {
		return nil, mvcc.ErrCompacted
	}
	return out, nil
}

func (e *Engine) get(prefix []byte, rev int64) (*record, error) {
	v, closer, err := e.db.Get(versionKey(prefix, rev))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	rec, err := decodeRecord(v)
	if err != nil {
		return nil, err
	}
	rec.value = append([]byte(nil), rec.value...)
	return &rec, nil
}

func (e *Engine) event(key []byte, rev int64) (mvcc.Event, error) {
	prefix := userPrefix(key)
	rec, err := e.get(prefix, rev)
	if err != nil || rec == nil {
		return mvcc.Event{}, fmt.Errorf("read event for %q at revision %d: %v", key, rev, err)
	}
	ev := mvcc.Event{Type: mvccpb.PUT, KV: rec.kv(key, rev, false)}
	if rec.tombstone {
		ev.Type = mvccpb.DELETE
		ev.KV = &mvccpb.KeyValue{Key: key, ModRevision: rev}
	}
	if rec.prevRev != 0 {
		prev, err := e.get(prefix, rec.prevRev)
		if err != nil {
			return mvcc.Event{}, err
		}
		if prev != nil && !prev.tombstone {
			ev.PrevKV = prev.kv(key, rec.prevRev, false)
		}
	}
	return ev, nil
}

// Compact implements mvcc.Engine. Readers are cut off first, then old
// versions are deleted in batches while writers go on.
func (e *Engine) Compact(ctx context.Context, rev int64) error {
	b := e.db.NewBatch()
	if err := b.Set(metaCompact, binary.BigEndian.AppendUint64(nil, uint64(rev)), nil); err != nil {
		return err
	}
	if err := e.commit(b); err != nil {
		return fmt.Errorf("record compacted revision: %w", err)
	}
	e.compacted.Store(rev)
	it, err := e.db.NewIter(&pebble.IterOptions{LowerBound: []byte("k"), UpperBound: leasePrefix})
	if err != nil {
		return err
	}
	defer it.Close()
	b = e.db.NewBatch()
	var prefix []byte
	keptBelow := false
	for ok := it.First(); ok; ok = it.Next() {
		if err := ctx.Err(); err != nil {
			return err
		}
		p, r, err := splitVersion(it.Key())
		if err != nil {
			return err
		}
		if !bytes.Equal(p, prefix) {
			prefix, keptBelow = append(prefix[:0], p...), false
		}
		if r >= rev {
			keptBelow = keptBelow || r == rev
			continue
		}
		// As etcd does, keep the newest version at or below rev unless it
		// is a tombstone below rev: reads at rev see it. Older versions go,
		// even when one is the previous value of the change at rev.
		if !keptBelow {
			keptBelow = true
			rec, err := decodeRecord(it.Value())
			if err != nil {
				return err
			}
			if !rec.tombstone {
				continue
			}
		}
		if err := b.Delete(it.Key(), nil); err != nil {
			return err
		}
		if b.Len() > 1<<20 {
			if err := e.commit(b); err != nil {
				return fmt.Errorf("commit compaction: %w", err)
			}
			b = e.db.NewBatch()
		}
	}
	if err := b.DeleteRange(logKey(0, 0), logKey(rev, 0), nil); err != nil {
		return err
	}
	if err := e.commit(b); err != nil {
		return fmt.Errorf("commit compaction: %w", err)
	}
	return nil
}

// commit writes a batch that changes no revision, durably.
func (e *Engine) commit(b *pebble.Batch) error {
	defer b.Close()
	if f := e.failed.Load(); f != nil {
		return fmt.Errorf("%w: writes stopped after a storage error (%v)", mvcc.ErrEngineDegraded, *f)
	}
	e.wmu.Lock()
	lsn, err := e.commitLocked(b)
	e.wmu.Unlock()
	if err != nil {
		return e.fail(err)
	}
	if err := e.wal.Wait(lsn); err != nil {
		return e.fail(err)
	}
	return nil
}

// Size implements mvcc.Engine.
func (e *Engine) Size(context.Context) (int64, error) {
	return int64(e.db.Metrics().DiskSpaceUsage()), nil
}

// LeaseRenew implements mvcc.Engine.
func (e *Engine) LeaseRenew(_ context.Context, id int64) (int64, error) {
	e.leaseMu.Lock()
	defer e.leaseMu.Unlock()
	l := e.leases[id]
	if l == nil {
		return 0, mvcc.ErrLeaseNotFound
	}
	l.deadline = time.Now().Add(time.Duration(l.ttl) * time.Second)
	return l.ttl, nil
}

// LeaseTimeToLive implements mvcc.Engine.
func (e *Engine) LeaseTimeToLive(_ context.Context, id int64) (int64, int64, error) {
	e.leaseMu.Lock()
	defer e.leaseMu.Unlock()
	l := e.leases[id]
	if l == nil {
		return 0, 0, mvcc.ErrLeaseNotFound
	}
	left := int64(time.Until(l.deadline).Round(time.Second) / time.Second)
	return l.ttl, max(left, 0), nil
}

// Leases implements mvcc.Engine.
func (e *Engine) Leases(context.Context) ([]int64, error) {
	e.leaseMu.Lock()
	defer e.leaseMu.Unlock()
	ids := make([]int64, 0, len(e.leases))
	for id := range e.leases {
		ids = append(ids, id)
	}
	return ids, nil
}

// ExpiredLeases implements mvcc.Engine.
func (e *Engine) ExpiredLeases(context.Context) ([]int64, error) {
	e.leaseMu.Lock()
	defer e.leaseMu.Unlock()
	now := time.Now()
	var ids []int64
	for id, l := range e.leases {
		if now.After(l.deadline) {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

type pebbleLogger struct{ log *slog.Logger }

func (l pebbleLogger) Infof(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if strings.Contains(msg, "stopped reading at offset") {
		// Where log replay ended after a restart: the last good record
		// (a torn tail after a crash is dropped there, never served).
		l.log.Info(msg, "component", "pebble")
		return
	}
	l.log.Debug(msg, "component", "pebble")
}

func (l pebbleLogger) Errorf(format string, args ...any) {
	l.log.Error(fmt.Sprintf(format, args...), "component", "pebble")
}

func (l pebbleLogger) Fatalf(format string, args ...any) {
	l.log.Error(fmt.Sprintf(format, args...), "component", "pebble")
	panic(fmt.Sprintf(format, args...))
}

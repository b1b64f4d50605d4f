package pebble

// Recovery at open: replaying our write-ahead log into pebble, refusing a
// log that does not continue the database, and loading the metadata.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/vfs"

	"github.com/cloudless-dev/cloudless/internal/datastore/engine/wal"
)

// recover replays the log records pebble had not flushed, makes them
// durable in pebble, starts a new log generation and loads the metadata.
// It refuses a log that would replay to less than what was acknowledged.
func (e *Engine) recover(o Options) error {
	path := WALPath(e.dir)
	st, err := e.readState()
	if err != nil {
		return err
	}
	fresh := st.walGen == 0 && st.lsn == 0 && st.rev <= 1
	l, rep, err := wal.Open(path, wal.Options{Size: walSize(o), Create: fresh, Device: o.WALDevice}, e.log)
	var ce *wal.CorruptError
	switch {
	case errors.Is(err, wal.ErrMissing):
		return fmt.Errorf("%w: the write-ahead log %s is missing, but the database (revision %d) was written through it, and writes acknowledged since its last flush would be lost; "+
			"restore the file, or run `cloudless datastore repair` on this data dir to start a new log from what the database holds", ErrNeedsRepair, path, st.rev)
	case errors.As(err, &ce):
		return fmt.Errorf("%w: %w; refusing to start so that no acknowledged write is lost silently: restore the data dir from a backup, or run `cloudless datastore repair` on this data dir to truncate the log there (it says what it drops)",
			ErrNeedsRepair, ce)
	case err != nil:
		return err
	}
	e.wal, e.lsn = l, uint64(st.lsn)
	if err := checkLog(path, st, rep); err != nil {
		return fmt.Errorf("%w: %w; run `cloudless datastore repair` on this data dir to start a new log from what the database holds, or restore the data dir from a backup", ErrNeedsRepair, err)
	}
	if rep.TornRecords > 0 {
		e.log.Warn("dropped a torn log tail: records of a sync cut short by the crash, never acknowledged", "records", rep.TornRecords)
	}
	replayed := 0
	for _, r := range rep.Records {
		if r.LSN <= e.lsn {
			continue
		}
		if err := e.applyRecord(r); err != nil {
			return err
		}
		e.lsn = r.LSN
		replayed++
	}
	if replayed > 0 {
		e.log.Info("replayed write-ahead log", "records", replayed, "lsn", e.lsn)
	}
	if err := e.rotateLocked(); err != nil {
		return err
	}
	return e.loadMeta()
}

// createDir creates dir/name if missing and syncs dir, so that the new
// entry survives a power loss.
func createDir(fs vfs.FS, dir, name string) error {
	if _, err := fs.Stat(filepath.Join(dir, name)); err == nil {
		return nil
	}
	if err := fs.MkdirAll(filepath.Join(dir, name), 0o700); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Join(dir, name), err)
	}
	d, err := fs.OpenDir(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

func walSize(o Options) int64 {
	if o.WALSize == 0 {
		return DefaultWALSize
	}
	return o.WALSize
}

// ErrNeedsRepair marks a log that replays to less than was acknowledged:
// the engine refuses to open until the operator restores a backup or runs
// Repair.
var ErrNeedsRepair = errors.New("datastore log damaged")

// state is what the database holds of the log: the last LSN it has (its
// checkpoint: every record up to it is in pebble), the log generation it
// expects, and its revision.
type state struct {
	lsn, walGen, rev int64
}

func (e *Engine) readState() (state, error) {
	var st state
	var err error
	if st.lsn, err = e.readMeta(metaLSN); err != nil {
		return st, err
	}
	if st.walGen, err = e.readMeta(metaWALGen); err != nil {
		return st, err
	}
	st.rev, err = e.readMeta(metaRev)
	return st, err
}

// checkLog refuses a log that does not continue the database: a
// generation other than the one the database last started (or the one
// before, after a crash between the flush and the log's new header), a
// log that starts after the database's checkpoint (the database lost a
// flush), or a gap between the checkpoint and the records.
func checkLog(path string, st state, rep wal.Replay) error {
	gen, s := int64(rep.Generation), st.walGen
	if s != 0 && gen != s && !(gen+1 == s && lastLSN(rep) <= st.lsn) {
		return fmt.Errorf("the write-ahead log %s is generation %d but the database expects generation %d: the log is not the one this database was written through", path, gen, s)
	}
	if int64(rep.Base) > st.lsn {
		return fmt.Errorf("the database's checkpoint is log record %d but the write-ahead log %s starts after record %d: the database lost a flush, and records between are gone", st.lsn, path, rep.Base)
	}
	for _, r := range rep.Records {
		if int64(r.LSN) > st.lsn {
			if int64(r.LSN) != st.lsn+1 {
				return fmt.Errorf("the database's checkpoint is log record %d but the write-ahead log %s continues at record %d: records between are gone", st.lsn, path, r.LSN)
			}
			break
		}
	}
	return nil
}

func lastLSN(rep wal.Replay) int64 {
	if len(rep.Records) == 0 {
		return int64(rep.Base)
	}
	return int64(rep.Records[len(rep.Records)-1].LSN)
}

func (e *Engine) applyRecord(r wal.Record) error {
	b := e.db.NewBatch()
	if err := b.SetRepr(append([]byte(nil), r.Payload...)); err != nil {
		return fmt.Errorf("replay wal record %d: %w", r.LSN, err)
	}
	if err := e.db.Apply(b, pebble.NoSync); err != nil {
		return fmt.Errorf("replay wal record %d: %w", r.LSN, err)
	}
	return nil
}

// rotateLocked makes everything applied so far durable in pebble and
// starts the next log generation after it. The database records the
// generation before the flush, so a log from elsewhere is recognised.
func (e *Engine) rotateLocked() error {
	next := e.wal.Gen() + 1
	if err := e.db.Set(metaWALGen, binary.BigEndian.AppendUint64(nil, next), pebble.NoSync); err != nil {
		return fmt.Errorf("record log generation: %w", err)
	}
	if err := e.db.Flush(); err != nil {
		return fmt.Errorf("flush for log rotation: %w", err)
	}
	return e.wal.Reset(e.lsn)
}

// loadMeta loads revisions and leases from the database.
func (e *Engine) loadMeta() error {
	rev, err := e.readMeta(metaRev)
	if err != nil {
		return err
	}
	e.lastRev = max(rev, 1) // like etcd, an empty store is at revision 1
	e.durable.Store(e.lastRev)
	c, err := e.readMeta(metaCompact)
	if err != nil {
		return err
	}
	e.compacted.Store(c)
	return e.loadLeases()
}

func (e *Engine) readMeta(k []byte) (int64, error) {
	v, closer, err := e.db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", k, err)
	}
	defer closer.Close()
	if len(v) != 8 {
		return 0, fmt.Errorf("read %s: corrupt value of %d bytes", k, len(v))
	}
	return int64(binary.BigEndian.Uint64(v)), nil
}

// loadLeases restores leases and their keys. Lease clocks restart at open,
// as etcd's do when a new leader takes over.
func (e *Engine) loadLeases() error {
	it, err := e.db.NewIter(&pebble.IterOptions{LowerBound: leasePrefix, UpperBound: []byte("m")})
	if err != nil {
		return err
	}
	now := time.Now()
	for ok := it.First(); ok; ok = it.Next() {
		id := int64(binary.BigEndian.Uint64(it.Key()[1:]))
		ttl := int64(binary.BigEndian.Uint64(it.Value()))
		e.leases[id] = &lease{ttl: ttl, deadline: now.Add(time.Duration(ttl) * time.Second), keys: map[string]struct{}{}}
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("load leases: %w", err)
	}
	if len(e.leases) == 0 {
		return nil
	}
	// Attach live keys to their leases.
	it, err = e.db.NewIter(&pebble.IterOptions{LowerBound: []byte("k"), UpperBound: leasePrefix})
	if err != nil {
		return err
	}
	defer it.Close()
	for ok := it.First(); ok; {
		prefix, _, err := splitVersion(it.Key())
		if err != nil {
			return err
		}
		rec, err := decodeRecord(it.Value())
		if err != nil {
			return fmt.Errorf("load leases: key %q: %w", userKey(prefix), err)
		}
		if !rec.tombstone && rec.lease != 0 {
			if l := e.leases[rec.lease]; l != nil {
				l.keys[string(userKey(prefix))] = struct{}{}
			}
		}
		ok = it.SeekGE(afterVersions(prefix))
	}
	return nil
}

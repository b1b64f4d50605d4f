package pebble

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"

	"github.com/cockroachdb/pebble"

	"github.com/cloudless-dev/cloudless/internal/datastore/engine/wal"
)

// RepairReport says what Repair found and what it dropped.
type RepairReport struct {
	// Damage describes what was wrong; empty if nothing was.
	Damage string
	// KeptRevision is the last revision whose write survives.
	KeptRevision int64
	// DroppedRecords is how many log records after the damage are gone,
	// from the LSNs seen; -1 when unknown (a missing log, or a segment cut
	// short with nothing readable after the cut).
	DroppedRecords int64
	// DroppedAcked is how many of them had been acknowledged to clients,
	// as far as the intact records after the damage show.
	DroppedAcked int64
	// HighRevision is the highest revision seen in the dropped records;
	// the revision counter resumes above it so that clients' caches and
	// watchers never see revisions go back.
	HighRevision int64
	// Repaired is false when there was nothing to do or DryRun was set.
	Repaired bool
}

// Repair makes the engine in dir open again after its log was damaged:
// it replays the records before the damage, drops the rest, and starts a
// new log. With dryRun it only reports what it would drop. The engine
// must not be running.
func Repair(dir string, o Options, dryRun bool, log *slog.Logger) (RepairReport, error) {
	var rep RepairReport
	db, err := openDB(dir, o, log)
	if err != nil {
		return rep, err
	}
	e := &Engine{db: db, log: log, dir: dir}
	defer db.Close()
	st, err := e.readState()
	if err != nil {
		return rep, err
	}
	path := WALPath(dir)
	r, ce, err := wal.Salvage(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if st.walGen == 0 && st.lsn == 0 && st.rev <= 1 {
			return rep, nil // a new engine: Open creates the log
		}
		rep.Damage = fmt.Sprintf("the write-ahead log %s is missing", path)
		rep.DroppedRecords, rep.DroppedAcked = -1, -1
	case err != nil:
		// Not even the header can be read: nothing in the log is usable.
		rep.Damage = err.Error()
		rep.DroppedRecords, rep.DroppedAcked = -1, -1
	case ce != nil:
		rep.Damage = ce.Error()
	default:
		if cerr := checkLog(path, st, r); cerr != nil {
			rep.Damage = cerr.Error()
		}
	}
	// Keep the records that continue the database without a gap.
	var keep []wal.Record
	next := st.lsn + 1
	for _, rec := range r.Records {
		if int64(rec.LSN) < next {
			continue
		}
		if int64(rec.LSN) != next {
			break
		}
		keep = append(keep, rec)
		next++
	}
	last := next - 1
	rep.KeptRevision = st.rev
	for _, rec := range keep {
		if v, ok := batchRevision(rec.Payload); ok {
			rep.KeptRevision = v
		}
	}
	if rep.Damage == "" && len(keep) == countAbove(r.Records, st.lsn) {
		return rep, nil
	}
	if rep.Damage == "" {
		rep.Damage = fmt.Sprintf("the log continues past record %d with a gap", last)
	}
	rep.HighRevision = rep.KeptRevision
	high := last
	var dropped []wal.Record
	for _, rec := range r.Records {
		if int64(rec.LSN) > last {
			dropped = append(dropped, rec)
		}
	}
	if ce != nil {
		high = max(high, int64(ce.HighLSN))
		if int64(ce.Acked) > last {
			rep.DroppedAcked = int64(ce.Acked) - last
		}
		dropped = append(dropped, ce.Later...)
	}
	for _, rec := range dropped {
		high = max(high, int64(rec.LSN))
		if v, ok := batchRevision(rec.Payload); ok {
			rep.HighRevision = max(rep.HighRevision, v)
		}
	}
	if rep.DroppedRecords == 0 {
		rep.DroppedRecords = high - last
		if ce != nil && ce.Truncated && high == last {
			rep.DroppedRecords = -1 // what was past the cut is gone
		}
	}
	if dryRun {
		return rep, nil
	}
	for _, rec := range keep {
		if err := e.applyRecord(rec); err != nil {
			return rep, err
		}
	}
	if rep.HighRevision > rep.KeptRevision {
		if err := db.Set(metaRev, binary.BigEndian.AppendUint64(nil, uint64(rep.HighRevision)), pebble.NoSync); err != nil {
			return rep, err
		}
	}
	// A new log, generation 1, after everything kept.
	if err := db.Set(metaLSN, binary.BigEndian.AppendUint64(nil, uint64(last)), pebble.NoSync); err != nil {
		return rep, err
	}
	if err := db.Set(metaWALGen, binary.BigEndian.AppendUint64(nil, 1), pebble.NoSync); err != nil {
		return rep, err
	}
	if err := db.Flush(); err != nil {
		return rep, fmt.Errorf("flush repaired database: %w", err)
	}
	if _, err := os.Stat(path); err == nil {
		if err := os.Rename(path, path+".damaged"); err != nil {
			return rep, fmt.Errorf("keep the damaged log: %w", err)
		}
	}
	if err := wal.Create(path, walSize(o)); err != nil {
		return rep, err
	}
	l, _, err := wal.Open(path, wal.Options{Device: o.WALDevice}, log)
	if err != nil {
		return rep, err
	}
	defer l.Close()
	if err := l.Reset(uint64(last)); err != nil {
		return rep, err
	}
	rep.Repaired = true
	return rep, nil
}

func countAbove(recs []wal.Record, lsn int64) int {
	n := 0
	for _, r := range recs {
		if int64(r.LSN) > lsn {
			n++
		}
	}
	return n
}

// batchRevision returns the revision a log record's batch commits, if it
// commits one.
func batchRevision(repr []byte) (int64, bool) {
	r, _ := pebble.ReadBatch(repr)
	for {
		_, k, v, ok, err := r.Next()
		if err != nil || !ok {
			return 0, false
		}
		if bytes.Equal(k, metaRev) && len(v) == 8 {
			return int64(binary.BigEndian.Uint64(v)), true
		}
	}
}

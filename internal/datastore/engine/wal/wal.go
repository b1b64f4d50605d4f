package wal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"
)

const (
	magicV1 = "CLWAL001"
	magic   = "CLWAL002"
	// header: magic | generation | size | base LSN | crc
	headerLen   = 8 + 8 + 8 + 8 + 4
	recHeaderV1 = 4 + 4 + 8 + 8
	// recHeader: crc | length | generation | lsn | synced
	recHeader  = 4 + 4 + 8 + 8 + 8
	maxPayload = 256 << 20
	// headerBlock is where records start: one block for any alignment.
	headerBlock = 4096
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrFull is returned by Append when a record does not fit in what is left
// of the segment: the owner makes its state durable and calls Reset.
var ErrFull = errors.New("wal: segment full")

// ErrMissing is returned by Open when the segment does not exist and
// Options.Create is false: the owner knows a log was written before.
var ErrMissing = errors.New("wal: segment missing")

// CorruptError reports a segment that cannot be replayed without losing
// acknowledged records. Open refuses it; Salvage returns it with the
// records before the damage.
type CorruptError struct {
	Path   string
	Offset int64  // where the damage starts
	Reason string // what is wrong there
	// LastGood is the LSN of the last record that replays (0: none after
	// the generation's base).
	LastGood uint64
	// Acked is the highest LSN that later, intact records show was
	// acknowledged (0 if unknown); HighLSN the highest LSN seen at all.
	Acked, HighLSN uint64
	// Later are the intact records after the damage: they are dropped
	// because a record before them is lost.
	Later []Record
	// Truncated is set when the segment is shorter than it was created:
	// what was past the cut is unknown.
	Truncated bool
}

func (e *CorruptError) Error() string {
	s := fmt.Sprintf("wal %s is corrupt at offset %d (%s); the last good record is LSN %d", e.Path, e.Offset, e.Reason, e.LastGood)
	if e.Acked > e.LastGood {
		s += fmt.Sprintf(", but records up to LSN %d were acknowledged", e.Acked)
	}
	return s
}

// Options configure Open.
type Options struct {
	// Size of a new segment in bytes.
	Size int64
	// Create a zero-filled segment if none exists; otherwise a missing
	// segment is ErrMissing.
	Create bool
	// Device opens the segment file; nil opens it with O_DIRECT where the
	// filesystem allows it. Crash tests substitute one that loses writes
	// that were not synced.
	Device func(path string) (Device, error)
}

// Device is the segment file as the log uses it.
type Device interface {
	WriteAt(b []byte, off int64) (int, error)
	// Sync makes every completed WriteAt durable.
	Sync() error
	Close() error
}

// Log is an open write-ahead log.
type Log struct {
	path  string
	f     Device
	align int64
	size  int64
	log   *slog.Logger

	mu         sync.Mutex
	cond       *sync.Cond
	gen        uint64
	base       uint64 // LSN the owner had made durable when gen started
	pending    []byte // encoded records not yet written
	pendingLSN uint64 // LSN of the last pending record
	tail       []byte // bytes of the last, partial block already written
	tailOff    int64  // offset of that block
	written    int64  // end of written data
	durable    uint64 // every LSN up to it is on disk
	syncing    bool
	needReset  bool  // set by Open: replayed records must be made durable first
	err        error // sticky write error
}

// Record is a replayed record.
type Record struct {
	LSN     uint64
	Payload []byte
	// Synced is the highest LSN that was durable when this record was
	// appended: every record up to it had been acknowledged.
	Synced uint64
	// Offset and End are where the record starts and ends in the segment.
	Offset, End int64
}

// Replay is what Open read from the segment.
type Replay struct {
	Records []Record
	// Generation and Base of the segment's header: Base is the LSN the
	// owner had made durable elsewhere when the generation started.
	Generation, Base uint64
	// TornRecords counts the records dropped from a torn tail: written by
	// a sync that never completed, so never acknowledged.
	TornRecords int
}

// Open opens the log segment at path (creating and zero-filling one of
// o.Size bytes if allowed) and returns the records of its current
// generation in order. A damaged segment that would lose acknowledged
// records is refused with a *CorruptError; only a torn tail (records of
// the last, unfinished sync) is dropped, and counted. The log is then
// ready for Reset; Append is refused until the first Reset, since the
// caller must first make the replayed records durable elsewhere.
func Open(path string, o Options, log *slog.Logger) (*Log, Replay, error) {
	l, rep, err := open(path, o, log)
	if err != nil {
		return nil, Replay{}, err
	}
	if rep.corrupt != nil {
		l.f.Close()
		return nil, Replay{}, rep.corrupt
	}
	return l, rep.Replay, nil
}

// Salvage reads the segment at path as Open does, but returns the records
// before any damage instead of refusing, with the damage (nil if none).
// It does not open the segment for writing.
func Salvage(path string) (Replay, *CorruptError, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Replay{}, nil, fmt.Errorf("read wal %s: %w", path, err)
	}
	l := &Log{path: path, log: slog.New(slog.DiscardHandler)}
	rep, err := l.replay(data)
	if err != nil {
		return Replay{}, nil, err
	}
	return rep.Replay, rep.corrupt, nil
}

type replayResult struct {
	Replay
	corrupt *CorruptError
}

func open(path string, o Options, log *slog.Logger) (*Log, replayResult, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, replayResult{}, err
	}
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		if !o.Create {
			return nil, replayResult{}, fmt.Errorf("%w: %s", ErrMissing, path)
		}
		if err := Create(path, o.Size); err != nil {
			return nil, replayResult{}, err
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, replayResult{}, fmt.Errorf("read wal %s: %w", path, err)
	}
	l := &Log{path: path, size: int64(len(data)), log: log}
	l.cond = sync.NewCond(&l.mu)
	rep, err := l.replay(data)
	if err != nil {
		return nil, replayResult{}, err
	}
	device := o.Device
	if device == nil {
		device = openDirect
	}
	if l.f, err = device(path); err != nil {
		return nil, replayResult{}, err
	}
	l.align = 4096
	if f, ok := l.f.(*directFile); ok {
		l.align = f.align
	}
	l.needReset = true
	return l, rep, nil
}

// Create makes a zero-filled segment of size bytes, replacing any file at
// path. Zeros are written, not allocated, so later overwrites change no
// metadata.
func Create(path string, size int64) error {
	if size < headerBlock*2 {
		return fmt.Errorf("create wal %s: a segment of %d bytes is too small", path, size)
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("create wal: %w", err)
	}
	zeros := make([]byte, 1<<20)
	// The header records the size, so a shortened segment is detected.
	copy(zeros, encodeHeader(0, uint64(size), 0))
	for off := int64(0); off < size; off += int64(len(zeros)) {
		n := min(int64(len(zeros)), size-off)
		if _, err := f.Write(zeros[:n]); err != nil {
			f.Close()
			return fmt.Errorf("create wal %s: %w", path, err)
		}
		clear(zeros[:headerLen])
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("create wal %s: %w", path, err)
	}
	f.Close()
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("create wal: %w", err)
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func encodeHeader(gen, size, base uint64) []byte {
	h := make([]byte, headerLen)
	copy(h, magic)
	binary.LittleEndian.PutUint64(h[8:], gen)
	binary.LittleEndian.PutUint64(h[16:], size)
	binary.LittleEndian.PutUint64(h[24:], base)
	binary.LittleEndian.PutUint32(h[32:], crc32.Checksum(h[:32], castagnoli))
	return h
}

// directFile is the segment opened with O_DIRECT where the filesystem
// allows it, written in units of the device's logical block.
type directFile struct {
	*os.File
	align int64
}

func (f *directFile) Sync() error { return unix.Fdatasync(int(f.Fd())) }

func openDirect(path string) (Device, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err == nil {
		f := os.NewFile(uintptr(fd), path)
		return &directFile{File: f, align: dioAlign(f)}, nil
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open wal: %w", err)
	}
	return &directFile{File: f, align: 4096}, nil
}

// dioAlign returns the write unit: the direct-I/O offset alignment the
// kernel reports, else 4096.
func dioAlign(f *os.File) int64 {
	var st unix.Statx_t
	if err := unix.Statx(int(f.Fd()), "", unix.AT_EMPTY_PATH, unix.STATX_DIOALIGN, &st); err == nil &&
		st.Mask&unix.STATX_DIOALIGN != 0 && st.Dio_offset_align >= 512 && st.Dio_mem_align <= 4096 {
		return int64(st.Dio_offset_align)
	}
	return 4096
}

// replay reads the current generation's records and tells a torn tail
// from damage that would lose acknowledged records.
func (l *Log) replay(data []byte) (replayResult, error) {
	var res replayResult
	if len(data) < headerLen || bytes.Count(data[:min(len(data), headerBlock)], []byte{0}) == min(len(data), headerBlock) {
		if len(data) > 0 && bytes.Count(data, []byte{0}) != len(data) {
			return res, fmt.Errorf("wal %s: the header is zeroed but the segment holds data; the log is damaged: run `cloudless datastore repair`", l.path)
		}
		return res, nil // fresh segment from an earlier release, never written
	}
	hdr, v1 := recHeader, false
	switch string(data[:8]) {
	case magic:
		if crc32.Checksum(data[:32], castagnoli) != binary.LittleEndian.Uint32(data[32:36]) {
			return res, fmt.Errorf("wal %s: header checksum mismatch; the log is damaged: run `cloudless datastore repair`", l.path)
		}
		if want := binary.LittleEndian.Uint64(data[16:]); want != uint64(len(data)) {
			what := "truncated"
			if uint64(len(data)) > want {
				what = "extended"
			}
			res.corrupt = &CorruptError{Path: l.path, Offset: int64(min(uint64(len(data)), want)),
				Reason: fmt.Sprintf("the segment is %d bytes but was created with %d: %s", len(data), want, what), Truncated: what == "truncated"}
		}
		res.Base = binary.LittleEndian.Uint64(data[24:])
	case magicV1:
		// The format before the synced LSN and the size were recorded.
		if crc32.Checksum(data[:16], castagnoli) != binary.LittleEndian.Uint32(data[16:20]) {
			return res, fmt.Errorf("wal %s: header checksum mismatch; the log is damaged: run `cloudless datastore repair`", l.path)
		}
		hdr, v1 = recHeaderV1, true
	default:
		return res, fmt.Errorf("wal %s: not a Cloudless log segment (bad magic); the log is damaged: run `cloudless datastore repair`", l.path)
	}
	l.gen = binary.LittleEndian.Uint64(data[8:16])
	l.base = res.Base
	res.Generation = l.gen
	if res.Generation == 0 {
		return res, nil // created, never started
	}
	parse := func(off int64) (Record, string) {
		if off+int64(hdr) > int64(len(data)) {
			return Record{}, "record header past the end of the segment"
		}
		crc := binary.LittleEndian.Uint32(data[off:])
		n := int64(binary.LittleEndian.Uint32(data[off+4:]))
		end := off + int64(hdr) + n
		if n > maxPayload || end > int64(len(data)) {
			return Record{}, fmt.Sprintf("record length %d runs past the end of the segment", n)
		}
		if crc32.Checksum(data[off+4:end], castagnoli) != crc {
			return Record{}, "checksum mismatch"
		}
		r := Record{LSN: binary.LittleEndian.Uint64(data[off+16:]), Payload: data[off+int64(hdr) : end], Offset: off, End: end}
		if !v1 {
			r.Synced = binary.LittleEndian.Uint64(data[off+24:])
		}
		return r, ""
	}
	off := int64(headerBlock)
	var reason string
	for off+int64(hdr) <= int64(len(data)) {
		n := binary.LittleEndian.Uint32(data[off+4:])
		gen := binary.LittleEndian.Uint64(data[off+8:])
		if n == 0 || gen != l.gen {
			break // the clean end: zeros, or a record of an earlier generation
		}
		r, bad := parse(off)
		if bad == "" && len(res.Records) > 0 && r.LSN != res.Records[len(res.Records)-1].LSN+1 {
			bad = fmt.Sprintf("LSN %d follows LSN %d", r.LSN, res.Records[len(res.Records)-1].LSN)
		}
		if bad != "" {
			reason = bad
			break
		}
		res.Records = append(res.Records, r)
		off += int64(hdr) + int64(n)
	}
	lastGood := res.Base
	if len(res.Records) > 0 {
		lastGood = res.Records[len(res.Records)-1].LSN
	}
	// Look past the end for intact records of this generation: a sync
	// that never completed may leave some (a torn tail), but one that
	// shows a later record was acknowledged means the damage is not a
	// torn tail.
	var later []Record
	var acked, high uint64
	if !v1 {
		pat := binary.LittleEndian.AppendUint64(nil, l.gen)
		for o := off + 1; o+int64(hdr) <= int64(len(data)); {
			i := bytes.Index(data[o+8:], pat)
			if i < 0 {
				break
			}
			cand := o + int64(i)
			if r, bad := parse(cand); bad == "" && r.LSN > lastGood {
				later = append(later, r)
				acked, high = max(acked, r.Synced), max(high, r.LSN)
				o = cand + int64(hdr) + int64(len(r.Payload))
				continue
			}
			o = cand + 1
		}
	}
	if res.corrupt != nil {
		res.corrupt.LastGood, res.corrupt.Acked, res.corrupt.HighLSN, res.corrupt.Later = lastGood, acked, high, later
		return res, nil
	}
	if acked > lastGood {
		if reason == "" {
			reason = "a record is missing"
		}
		res.corrupt = &CorruptError{Path: l.path, Offset: off, Reason: reason, LastGood: lastGood, Acked: acked, HighLSN: high, Later: later}
		return res, nil
	}
	if reason != "" || len(later) > 0 {
		res.TornRecords = 1 + len(later)
		if reason == "" {
			res.TornRecords = len(later)
		}
		l.log.Warn("wal: torn tail after a crash: dropping the records of the last, unfinished sync (never acknowledged)",
			"path", l.path, "offset", off, "reason", reason, "dropped_records", res.TornRecords, "last_good_lsn", lastGood)
	}
	l.log.Info("wal: replayed", "path", l.path, "generation", l.gen, "records", len(res.Records), "end_offset", off)
	return res, nil
}

// TornRecord encodes a record of generation gen whose checksum does not
// match, as a write cut short leaves one: for tests that damage a log.
func TornRecord(gen, lsn uint64, payload []byte) []byte {
	h := make([]byte, recHeader, recHeader+len(payload))
	binary.LittleEndian.PutUint32(h[0:], 0xdeadbeef)
	binary.LittleEndian.PutUint32(h[4:], uint32(len(payload)))
	binary.LittleEndian.PutUint64(h[8:], gen)
	binary.LittleEndian.PutUint64(h[16:], lsn)
	return append(h, payload...)
}

// Gen returns the current generation.
func (l *Log) Gen() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.gen
}

// Reset starts generation Gen()+1 at the start of the segment. The caller
// must have made every record up to base durable elsewhere: the header
// records base, and records of the new generation follow it.
func (l *Log) Reset(base uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for l.syncing {
		l.cond.Wait()
	}
	if l.err != nil {
		return l.err
	}
	block := alignedBuf(headerBlock)
	copy(block, encodeHeader(l.gen+1, uint64(l.size), base))
	if err := l.writeAt(block, 0); err != nil {
		l.err = fmt.Errorf("wal: write header of %s: %w", l.path, err)
		return l.err
	}
	l.gen++
	l.base = base
	l.durable = max(l.durable, base)
	l.needReset = false
	l.pending = l.pending[:0]
	l.tail = l.tail[:0]
	l.tailOff = headerBlock
	l.written = headerBlock
	return nil
}

// Append queues a record and returns at once; Wait makes it durable.
// LSNs must increase by one. It returns ErrFull if the record does not
// fit.
func (l *Log) Append(lsn uint64, payload []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return l.err
	}
	if l.needReset {
		return errors.New("wal: append before Reset")
	}
	if len(payload) > maxPayload {
		return fmt.Errorf("wal: record of %d bytes is over the %d byte limit", len(payload), maxPayload)
	}
	need := int64(recHeader+len(payload)) + int64(len(l.pending))
	if l.written+need+l.align > l.size {
		return ErrFull
	}
	var h [recHeader]byte
	binary.LittleEndian.PutUint32(h[4:], uint32(len(payload)))
	binary.LittleEndian.PutUint64(h[8:], l.gen)
	binary.LittleEndian.PutUint64(h[16:], lsn)
	binary.LittleEndian.PutUint64(h[24:], l.durable)
	crc := crc32.Update(crc32.Checksum(h[4:], castagnoli), castagnoli, payload)
	binary.LittleEndian.PutUint32(h[0:], crc)
	l.pending = append(append(l.pending, h[:]...), payload...)
	l.pendingLSN = lsn
	return nil
}

// Wait returns once the record with lsn is on disk. Callers that arrive
// while a sync is running are served together by the next one.
func (l *Log) Wait(lsn uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for {
		if l.durable >= lsn {
			return nil
		}
		if l.err != nil {
			return l.err
		}
		if !l.syncing {
			break
		}
		l.cond.Wait()
	}
	// This caller writes everything pending, for itself and the others.
	l.syncing = true
	buf := append(append(make([]byte, 0, len(l.tail)+len(l.pending)), l.tail...), l.pending...)
	off, upto := l.tailOff, l.pendingLSN
	l.pending = l.pending[:0]
	l.mu.Unlock()

	end := off + int64(len(buf))
	padded := (int64(len(buf)) + l.align - 1) / l.align * l.align
	out := alignedBuf(padded)
	copy(out, buf)
	err := l.writeAt(out, off)

	l.mu.Lock()
	l.syncing = false
	if err != nil {
		l.err = fmt.Errorf("wal: write %s: %w", l.path, err)
		l.cond.Broadcast()
		return l.err
	}
	keep := end % l.align
	l.tailOff = end - keep
	l.tail = append(l.tail[:0], buf[int64(len(buf))-keep:]...)
	l.written = end
	if upto > l.durable {
		l.durable = upto
	}
	l.cond.Broadcast()
	return nil
}

// writeAt writes an aligned buffer and syncs it: O_DIRECT bypasses the
// page cache but not the device's cache, so both paths sync. The file's
// size and blocks do not change, so the sync writes no metadata.
func (l *Log) writeAt(b []byte, off int64) error {
	for len(b) > 0 {
		n, err := l.f.WriteAt(b, off)
		if err != nil {
			return err
		}
		b, off = b[n:], off+int64(n)
	}
	return l.f.Sync()
}

// alignedBuf returns a zeroed buffer of n bytes whose address is aligned
// for direct I/O.
func alignedBuf(n int64) []byte {
	raw := make([]byte, n+4096)
	off := (4096 - int(uintptr(unsafePointer(raw))%4096)) % 4096
	return raw[off : off+int(n) : off+int(n)]
}

// Close closes the segment file.
func (l *Log) Close() error { return l.f.Close() }

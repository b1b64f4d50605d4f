package wal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"
)

const (
	magic      = "CLWAL001"
	recHeader  = 4 + 4 + 8 + 8
	maxPayload = 256 << 20
	// headerBlock is where records start: one block for any alignment.
	headerBlock = 4096
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrFull is returned by Append when a record does not fit in what is left
// of the segment: the owner makes its state durable and calls Reset.
var ErrFull = errors.New("wal: segment full")

// Log is an open write-ahead log.
type Log struct {
	path   string
	f      *os.File
	direct bool
	align  int64
	size   int64
	log    *slog.Logger

	mu         sync.Mutex
	cond       *sync.Cond
	gen        uint64
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
}

// Open opens (creating and zero-filling if needed) the log segment at
// path, of size bytes, and returns the records of its current generation
// in order. The log is then ready for Reset; Append is refused until the
// first Reset, since the caller must first make the replayed records
// durable elsewhere.
func Open(path string, size int64, log *slog.Logger) (*Log, []Record, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, nil, err
	}
	if err := create(path, size); err != nil {
		return nil, nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read wal %s: %w", path, err)
	}
	if int64(len(data)) != size {
		// A segment from a run with another size: keep using its size.
		size = int64(len(data))
	}
	l := &Log{path: path, size: size, log: log}
	l.cond = sync.NewCond(&l.mu)
	l.f, l.direct, err = openFile(path)
	if err != nil {
		return nil, nil, err
	}
	l.align = dioAlign(l.f, l.direct)
	recs, err := l.replay(data)
	if err != nil {
		l.f.Close()
		return nil, nil, err
	}
	l.needReset = true
	return l, recs, nil
}

// create makes a zero-filled segment of size bytes if none exists. Zeros
// are written, not allocated, so later overwrites change no metadata.
func create(path string, size int64) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("create wal: %w", err)
	}
	zeros := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(zeros)) {
		n := min(int64(len(zeros)), size-off)
		if _, err := f.Write(zeros[:n]); err != nil {
			f.Close()
			return fmt.Errorf("create wal: %w", err)
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("create wal: %w", err)
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

// openFile opens the segment with O_DIRECT where the filesystem allows it.
func openFile(path string) (*os.File, bool, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err == nil {
		return os.NewFile(uintptr(fd), path), true, nil
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, false, fmt.Errorf("open wal: %w", err)
	}
	return f, false, nil
}

// dioAlign returns the write unit: the direct-I/O offset alignment the
// kernel reports, else 4096.
func dioAlign(f *os.File, direct bool) int64 {
	if !direct {
		return 4096
	}
	var st unix.Statx_t
	if err := unix.Statx(int(f.Fd()), "", unix.AT_EMPTY_PATH, unix.STATX_DIOALIGN, &st); err == nil &&
		st.Mask&unix.STATX_DIOALIGN != 0 && st.Dio_offset_align >= 512 && st.Dio_mem_align <= 4096 {
		return int64(st.Dio_offset_align)
	}
	return 4096
}

func (l *Log) replay(data []byte) ([]Record, error) {
	h := data[:min(len(data), 20)]
	if len(h) < 20 || string(h[:8]) != magic {
		if bytes.Count(data[:min(len(data), 4096)], []byte{0}) == min(len(data), 4096) {
			return nil, nil // fresh segment
		}
		return nil, fmt.Errorf("wal %s: not a Cloudless log segment (bad magic); move it away if the database is otherwise intact", l.path)
	}
	if crc32.Checksum(h[:16], castagnoli) != binary.LittleEndian.Uint32(h[16:20]) {
		return nil, fmt.Errorf("wal %s: header checksum mismatch; the log is damaged", l.path)
	}
	l.gen = binary.LittleEndian.Uint64(h[8:16])
	var recs []Record
	off := int64(headerBlock)
	for {
		if off+recHeader > int64(len(data)) {
			break
		}
		crc := binary.LittleEndian.Uint32(data[off:])
		n := int64(binary.LittleEndian.Uint32(data[off+4:]))
		gen := binary.LittleEndian.Uint64(data[off+8:])
		lsn := binary.LittleEndian.Uint64(data[off+16:])
		if n == 0 || gen != l.gen {
			break // the clean end
		}
		end := off + recHeader + n
		if n > maxPayload || end > int64(len(data)) || crc32.Checksum(data[off+4:end], castagnoli) != crc {
			l.log.Warn("wal: torn or corrupt record after a crash; replaying up to the last good record",
				"path", l.path, "offset", off, "good_records", len(recs))
			break
		}
		recs = append(recs, Record{LSN: lsn, Payload: data[off+recHeader : end]})
		off = end
	}
	l.log.Info("wal: replayed", "path", l.path, "generation", l.gen, "records", len(recs), "end_offset", off)
	return recs, nil
}

// Reset starts a new generation at the start of the segment. The caller
// must have made every record appended so far durable elsewhere.
func (l *Log) Reset() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for l.syncing {
		l.cond.Wait()
	}
	if l.err != nil {
		return l.err
	}
	l.gen++
	block := alignedBuf(headerBlock)
	copy(block, magic)
	binary.LittleEndian.PutUint64(block[8:], l.gen)
	binary.LittleEndian.PutUint32(block[16:], crc32.Checksum(block[:16], castagnoli))
	if err := l.writeAt(block, 0); err != nil {
		l.err = err
		return err
	}
	l.needReset = false
	l.pending = l.pending[:0]
	l.tail = l.tail[:0]
	l.tailOff = headerBlock
	l.written = headerBlock
	return nil
}

// Append queues a record and returns at once; Wait makes it durable.
// LSNs must increase. It returns ErrFull if the record does not fit.
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
	return unix.Fdatasync(int(l.f.Fd()))
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

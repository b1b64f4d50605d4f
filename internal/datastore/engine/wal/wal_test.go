package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func openReset(t *testing.T, path string, size int64) (*Log, []Record) {
	t.Helper()
	l, recs, err := Open(path, size, quiet)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	if err := l.Reset(); err != nil {
		t.Fatalf("Reset: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l, recs
}

func write(t *testing.T, l *Log, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		if err := l.Append(uint64(i), []byte(fmt.Sprintf("payload-%d", i))); err != nil {
			t.Fatalf("Append(%d): %v", i, err)
		}
	}
	if err := l.Wait(uint64(to - 1)); err != nil {
		t.Fatalf("Wait(%d): %v", to-1, err)
	}
}

// end returns the offset after the last record of the current generation.
func end(t *testing.T, path string) (int64, uint64) {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	gen := binary.LittleEndian.Uint64(data[8:])
	off := int64(headerBlock)
	for binary.LittleEndian.Uint32(data[off+4:]) != 0 && binary.LittleEndian.Uint64(data[off+8:]) == gen {
		off += recHeader + int64(binary.LittleEndian.Uint32(data[off+4:]))
	}
	return off, gen
}

func TestReplay(t *testing.T) {
	tests := []struct {
		name    string
		damage  func(t *testing.T, path string)
		wantLSN []uint64 // LSNs replayed after reopening
	}{
		{name: "clean", damage: func(*testing.T, string) {}, wantLSN: []uint64{1, 2, 3, 4, 5}},
		{name: "torn record after the last good one", damage: func(t *testing.T, path string) {
			off, gen := end(t, path)
			rec := make([]byte, recHeader+10)
			binary.LittleEndian.PutUint32(rec[0:], 12345)
			binary.LittleEndian.PutUint32(rec[4:], 10)
			binary.LittleEndian.PutUint64(rec[8:], gen)
			writeAt(t, path, rec, off)
		}, wantLSN: []uint64{1, 2, 3, 4, 5}},
		{name: "corrupt payload of the last record", damage: func(t *testing.T, path string) {
			off, _ := end(t, path)
			writeAt(t, path, []byte{0xff}, off-1)
		}, wantLSN: []uint64{1, 2, 3, 4}},
		{name: "stale record of an older generation", damage: func(t *testing.T, path string) {
			off, gen := end(t, path)
			rec := make([]byte, recHeader)
			binary.LittleEndian.PutUint32(rec[4:], 4)
			binary.LittleEndian.PutUint64(rec[8:], gen-1)
			writeAt(t, path, append(rec, "old!"...), off)
		}, wantLSN: []uint64{1, 2, 3, 4, 5}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "segment")
			l, recs := openReset(t, path, 1<<20)
			if len(recs) != 0 {
				t.Fatalf("new log replayed %d records", len(recs))
			}
			write(t, l, 1, 6)
			l.Close()
			tc.damage(t, path)
			l2, recs, err := Open(path, 1<<20, quiet)
			if err != nil {
				t.Fatal(err)
			}
			defer l2.Close()
			var got []uint64
			for _, r := range recs {
				if want := fmt.Sprintf("payload-%d", r.LSN); string(r.Payload) != want {
					t.Errorf("record %d payload = %q, want %q", r.LSN, r.Payload, want)
				}
				got = append(got, r.LSN)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.wantLSN) {
				t.Errorf("replayed LSNs = %v, want %v", got, tc.wantLSN)
			}
		})
	}
}

func writeAt(t *testing.T, path string, b []byte, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// TestResetStartsNewGeneration checks that records of a generation that
// ended are never replayed, and that a full segment says so.
func TestResetStartsNewGeneration(t *testing.T) {
	path := filepath.Join(t.TempDir(), "segment")
	l, _ := openReset(t, path, 64<<10)
	var lsn uint64
	for {
		lsn++
		err := l.Append(lsn, make([]byte, 1000))
		if errors.Is(err, ErrFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Wait(lsn); err != nil {
			t.Fatal(err)
		}
	}
	if lsn < 50 {
		t.Fatalf("segment of 64 KiB full after %d records of 1 KB", lsn)
	}
	if err := l.Reset(); err != nil {
		t.Fatal(err)
	}
	write(t, l, int(lsn), int(lsn)+2)
	l.Close()
	_, recs, err := Open(path, 64<<10, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || recs[0].LSN != lsn {
		t.Errorf("after Reset, replayed %d records starting at %v, want 2 starting at %d", len(recs), recs, lsn)
	}
}

func TestAppendBeforeReset(t *testing.T) {
	l, _, err := Open(filepath.Join(t.TempDir(), "segment"), 1<<20, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Append(1, []byte("x")); err == nil {
		t.Error("Append before Reset succeeded; replayed records could be overwritten")
	}
}

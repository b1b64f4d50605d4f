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

const testSize = 1 << 20

func openReset(t *testing.T, path string, size int64) (*Log, Replay) {
	t.Helper()
	l, rep, err := Open(path, Options{Size: size, Create: true}, quiet)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	if err := l.Reset(0); err != nil {
		t.Fatalf("Reset: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l, rep
}

// write appends records from..to-1, each acknowledged (waited for) before
// the next is appended, as a sequential writer does.
func write(t *testing.T, l *Log, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		if err := l.Append(uint64(i), []byte(fmt.Sprintf("payload-%d", i))); err != nil {
			t.Fatalf("Append(%d): %v", i, err)
		}
		if err := l.Wait(uint64(i)); err != nil {
			t.Fatalf("Wait(%d): %v", i, err)
		}
	}
}

// offsets returns the offset of every record of the current generation.
func offsets(t *testing.T, path string) []int64 {
	t.Helper()
	r, ce, err := Salvage(path)
	if err != nil || ce != nil {
		t.Fatalf("Salvage(%s) = %v, %v", path, ce, err)
	}
	var out []int64
	for _, rec := range r.Records {
		out = append(out, rec.Offset)
	}
	return out
}

func TestReplay(t *testing.T) {
	tests := []struct {
		name string
		// damage is applied to a log of records 1..10 written one by one
		// (each acknowledged before the next), then its writer crashed;
		// offs holds each record's offset.
		damage   func(t *testing.T, path string, offs []int64)
		wantLSN  []uint64 // LSNs replayed after reopening
		wantTorn int
		corrupt  bool // refused: acknowledged records would be lost
	}{
		{name: "clean", damage: func(*testing.T, string, []int64) {}, wantLSN: lsns(1, 10)},
		{name: "torn record after the last good one", damage: func(t *testing.T, path string, offs []int64) {
			end := offs[9] + recHeader + int64(len("payload-10"))
			rec := make([]byte, recHeader+10)
			binary.LittleEndian.PutUint32(rec[0:], 12345)
			binary.LittleEndian.PutUint32(rec[4:], 10)
			binary.LittleEndian.PutUint64(rec[8:], gen(t, path))
			writeAt(t, path, rec, end)
		}, wantLSN: lsns(1, 10), wantTorn: 1},
		{name: "corrupt payload of the last record", damage: func(t *testing.T, path string, offs []int64) {
			writeAt(t, path, []byte{0xff}, offs[9]+recHeader+2)
		}, wantLSN: lsns(1, 9), wantTorn: 1},
		{name: "stale record of an older generation", damage: func(t *testing.T, path string, offs []int64) {
			end := offs[9] + recHeader + int64(len("payload-10"))
			rec := make([]byte, recHeader)
			binary.LittleEndian.PutUint32(rec[4:], 4)
			binary.LittleEndian.PutUint64(rec[8:], gen(t, path)-1)
			writeAt(t, path, append(rec, "old!"...), end)
		}, wantLSN: lsns(1, 10)},
		{name: "bit flip in a middle record's payload", damage: func(t *testing.T, path string, offs []int64) {
			writeAt(t, path, []byte{'X'}, offs[4]+recHeader+1)
		}, corrupt: true},
		{name: "bit flip in a middle record's length", damage: func(t *testing.T, path string, offs []int64) {
			writeAt(t, path, []byte{0x7f}, offs[4]+5)
		}, corrupt: true},
		{name: "middle record's generation zeroed", damage: func(t *testing.T, path string, offs []int64) {
			writeAt(t, path, make([]byte, 8), offs[4]+8)
		}, corrupt: true},
		{name: "middle record's length zeroed", damage: func(t *testing.T, path string, offs []int64) {
			writeAt(t, path, make([]byte, 4), offs[4]+4)
		}, corrupt: true},
		{name: "segment truncated inside a record", damage: func(t *testing.T, path string, offs []int64) {
			if err := os.Truncate(path, offs[4]+10); err != nil {
				t.Fatal(err)
			}
		}, corrupt: true},
		{name: "segment truncated after the records", damage: func(t *testing.T, path string, offs []int64) {
			if err := os.Truncate(path, offs[9]+4096); err != nil {
				t.Fatal(err)
			}
		}, corrupt: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "segment")
			l, rep := openReset(t, path, testSize)
			if len(rep.Records) != 0 {
				t.Fatalf("new log replayed %d records", len(rep.Records))
			}
			write(t, l, 1, 11)
			l.Close()
			tc.damage(t, path, offsets(t, path))
			l2, rep, err := Open(path, Options{}, quiet)
			var ce *CorruptError
			if tc.corrupt {
				if !errors.As(err, &ce) {
					t.Fatalf("Open after damage = %v, want a *CorruptError", err)
				}
				if ce.Path != path {
					t.Errorf("CorruptError names %q, want %q", ce.Path, path)
				}
				// Salvage gives the records before the damage.
				r, ce2, err := Salvage(path)
				if err != nil || ce2 == nil {
					t.Fatalf("Salvage = %v, %v; want the damage", ce2, err)
				}
				if n := len(r.Records); uint64(n) != ce2.LastGood {
					t.Errorf("Salvage kept %d records, but LastGood = %d", n, ce2.LastGood)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer l2.Close()
			var got []uint64
			for _, r := range rep.Records {
				if want := fmt.Sprintf("payload-%d", r.LSN); string(r.Payload) != want {
					t.Errorf("record %d payload = %q, want %q", r.LSN, r.Payload, want)
				}
				got = append(got, r.LSN)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.wantLSN) {
				t.Errorf("replayed LSNs = %v, want %v", got, tc.wantLSN)
			}
			if rep.TornRecords != tc.wantTorn {
				t.Errorf("TornRecords = %d, want %d", rep.TornRecords, tc.wantTorn)
			}
		})
	}
}

// TestTornGroupCommit checks that the records of one unfinished sync are a
// torn tail even when a later record of it reached the disk and an earlier
// one did not: none of them was acknowledged.
func TestTornGroupCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "segment")
	l, _ := openReset(t, path, testSize)
	write(t, l, 1, 4)
	for i := 4; i <= 8; i++ { // one group: appended together, one sync
		if err := l.Append(uint64(i), []byte(fmt.Sprintf("payload-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Wait(8); err != nil {
		t.Fatal(err)
	}
	l.Close()
	offs := offsets(t, path)
	writeAt(t, path, []byte{'X'}, offs[4]+recHeader) // record 5 lost
	l2, rep, err := Open(path, Options{}, quiet)
	if err != nil {
		t.Fatalf("Open = %v; records 5-8 were never acknowledged, so this is a torn tail", err)
	}
	defer l2.Close()
	if len(rep.Records) != 4 || rep.TornRecords != 4 {
		t.Errorf("replayed %d records, torn %d; want 4 and 4", len(rep.Records), rep.TornRecords)
	}
}

func TestMissing(t *testing.T) {
	_, _, err := Open(filepath.Join(t.TempDir(), "segment"), Options{Size: testSize}, quiet)
	if !errors.Is(err, ErrMissing) {
		t.Errorf("Open of a missing segment without Create = %v, want ErrMissing", err)
	}
}

func lsns(from, to uint64) []uint64 {
	var out []uint64
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

func gen(t *testing.T, path string) uint64 {
	r, _, err := Salvage(path)
	if err != nil {
		t.Fatal(err)
	}
	return r.Generation
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
	if err := l.Reset(lsn - 1); err != nil {
		t.Fatal(err)
	}
	write(t, l, int(lsn), int(lsn)+2)
	l.Close()
	_, rep, err := Open(path, Options{}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Records) != 2 || rep.Records[0].LSN != lsn || rep.Base != lsn-1 {
		t.Errorf("after Reset, replayed %d records starting at %v with base %d, want 2 starting at %d after %d", len(rep.Records), rep.Records, rep.Base, lsn, lsn-1)
	}
}

func TestAppendBeforeReset(t *testing.T) {
	l, _, err := Open(filepath.Join(t.TempDir(), "segment"), Options{Size: testSize, Create: true}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Append(1, []byte("x")); err == nil {
		t.Error("Append before Reset succeeded; replayed records could be overwritten")
	}
}

package datastore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/cloudless-dev/cloudless/internal/datastore/engine/pebble"
)

// Disk space the embedded engine needs.
const (
	// DefaultReservedSpace is the most free disk the embedded engine keeps
	// in reserve when --datastore-reserved-space is 0 (automatic).
	DefaultReservedSpace = 256 << 20
	// ReservedSpacePercent caps the automatic reserve at this share of the
	// filesystem. Below the reserve, writes are refused so that what must
	// still write finds room: pebble's compactions (they write new files
	// before deleting old ones), the memtable flush on stop (16 MiB), and
	// the operator's own clean-up. 10% keeps the full 256 MiB from 2.5 GiB
	// up, and leaves a small disk (a homelab SD card, a test VM) 90% of
	// itself for data instead of losing a quarter of 1 GiB.
	ReservedSpacePercent = 10
	// minDatabaseRoom is the least room the database needs beyond the log
	// and the reserve: a fresh cluster writes a few MiB, pebble flushes
	// 16 MiB memtables and compacts them; 128 MiB leaves headroom for that
	// and the first objects.
	minDatabaseRoom = 128 << 20
)

// Reserve is the free disk space below which the embedded engine refuses
// writes on a filesystem of fsSize bytes: ReservedSpace if set, else
// DefaultReservedSpace capped at ReservedSpacePercent of fsSize.
func (c *Config) Reserve(fsSize uint64) uint64 {
	if c.ReservedSpace != 0 {
		return c.ReservedSpace
	}
	return min(DefaultReservedSpace, fsSize*ReservedSpacePercent/100)
}

// diskNeed is the smallest filesystem, in bytes, the embedded engine
// starts on, and its parts.
func (c *Config) diskNeed(fsSize uint64) (total, wal, reserve uint64) {
	wal, reserve = uint64(pebble.DefaultWALSize), c.Reserve(fsSize)
	return wal + reserve + minDatabaseRoom, wal, reserve
}

// CheckDisk refuses, in one line naming the size needed, a data dir on a
// filesystem too small for the embedded engine, or, before the engine's
// files exist, with too little free space to create them. A full disk
// under an existing engine is no reason to refuse: reads go on, and
// writes resume when space returns. PostgreSQL needs no local disk.
func (c *Config) CheckDisk() error {
	if c.Endpoint != "" {
		return nil
	}
	dir, st, err := statfsNearest(c.DataDir)
	if err != nil {
		return nil // cannot tell: creating the files will say what is wrong
	}
	size, free := st.Blocks*uint64(st.Bsize), st.Bavail*uint64(st.Bsize)
	need, wal, reserve := c.diskNeed(size)
	parts := fmt.Sprintf("%d MiB write-ahead log + %d MiB reserve (--datastore-reserved-space) + %d MiB for the database", wal>>20, reserve>>20, minDatabaseRoom>>20)
	if size < need {
		return fmt.Errorf("datastore: the filesystem of %s is %d MiB, too small for the embedded engine: it needs at least %d MiB (%s); give --data-dir a bigger disk",
			dir, size>>20, mib(need), parts)
	}
	if _, err := os.Stat(pebble.WALPath(c.EngineDir())); errors.Is(err, os.ErrNotExist) && free < need {
		return fmt.Errorf("datastore: %s has %d MiB free, too little to create the embedded engine: it needs %d MiB free (%s); free disk space or choose another --data-dir",
			dir, free>>20, mib(need), parts)
	}
	return nil
}

// mib rounds n up to whole MiB.
func mib(n uint64) uint64 { return (n + 1<<20 - 1) >> 20 }

// statfsNearest statfs's dir, or its nearest ancestor that exists (the
// data dir may not be created yet).
func statfsNearest(dir string) (string, unix.Statfs_t, error) {
	dir = filepath.Clean(dir)
	for {
		var st unix.Statfs_t
		err := unix.Statfs(dir, &st)
		if err == nil {
			return dir, st, nil
		}
		parent := filepath.Dir(dir)
		if !errors.Is(err, unix.ENOENT) || parent == dir {
			return dir, st, err
		}
		dir = parent
	}
}

// reserveFor is the reserve for the filesystem holding dir.
func (c *Config) reserveFor(dir string) uint64 {
	_, st, err := statfsNearest(dir)
	if err != nil && c.ReservedSpace == 0 {
		return DefaultReservedSpace // unknown size: the fixed amount
	}
	return c.Reserve(st.Blocks * uint64(st.Bsize))
}

// DiskSpace is the free space (for unprivileged writers, as the engine
// counts it) and the size of the filesystem holding the data dir.
func (c *Config) DiskSpace() (free, size uint64, err error) {
	_, st, err := statfsNearest(c.DataDir)
	if err != nil {
		return 0, 0, err
	}
	return st.Bavail * uint64(st.Bsize), st.Blocks * uint64(st.Bsize), nil
}

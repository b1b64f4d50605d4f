// Package wal is the embedded engine's write-ahead log: one preallocated,
// zero-filled segment file that is overwritten in place, so that syncing a
// record changes no file metadata, written with O_DIRECT in units of the
// device's logical block (512 bytes on most disks), so that a sync writes
// the few sectors that changed rather than a whole 4 KiB page plus a
// filesystem journal commit. Concurrent appends share one sync (group
// commit). The log knows nothing of MVCC: records are opaque payloads
// numbered by a log sequence number (LSN).
//
// Only the pebble engine imports it.
//
// # On-disk format
//
// The segment file is a fixed size (64 MiB by default). Its first 4096
// bytes are the header:
//
//	magic "CLWAL001" | generation u64 | crc32c(magic|generation) u32
//
// Records follow, back to back from offset 4096, little-endian:
//
//	crc u32 | length u32 | generation u64 | lsn u64 | payload [length]byte
//
// where crc is CRC-32C over everything after it. Reading stops at the
// first record whose length is zero or whose generation is not the
// header's (the clean end: zeros, or a record of an earlier generation),
// or whose checksum fails (a torn or corrupt tail, which is reported).
//
// A generation starts at every Open and whenever the segment is full, after
// the owner has made every record durable elsewhere (the engine flushes its
// memtable): the header is rewritten with the next generation and writing
// starts again at offset 4096. Older records left behind carry an older
// generation and are never replayed.
package wal

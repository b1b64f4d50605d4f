// Package wal is the embedded engine's write-ahead log: one preallocated,
// zero-filled segment file that is overwritten in place, so that syncing a
// record changes no file metadata, written with O_DIRECT in units of the
// device's logical block (512 bytes on most disks), so that a sync writes
// the few sectors that changed rather than a whole 4 KiB page plus a
// filesystem journal commit. Concurrent appends share one sync (group
// commit). The log knows nothing of MVCC: records are opaque payloads
// numbered by a log sequence number (LSN). docs/adr/0003-write-ahead-log.md
// says why it replaced pebble's own log.
//
// Only the pebble engine imports it.
//
// # On-disk format (version 2)
//
// The segment file is a fixed size (64 MiB by default). Its first 4096
// bytes are the header, little-endian:
//
//	magic "CLWAL002" | generation u64 | size u64 | base LSN u64 | crc32c(all before) u32
//
// size is the size the segment was created with; base is the LSN the owner
// had made durable elsewhere when the generation started. Records follow,
// back to back from offset 4096:
//
//	crc u32 | length u32 | generation u64 | lsn u64 | synced u64 | payload [length]byte
//
// where crc is CRC-32C over everything after it, LSNs of a generation are
// consecutive, and synced is the highest LSN that was durable, hence
// acknowledged, when the record was appended.
//
// # Replay: a torn tail or corruption
//
// Reading stops at the first record whose length is zero or whose
// generation is not the header's (the clean end), or that fails its
// checksum or breaks the LSN sequence. The rest of the segment is then
// searched for intact records of the current generation:
//
//   - if one of them has synced above the last good LSN, a record that was
//     acknowledged is unreadable: corruption, and Open refuses with a
//     *CorruptError naming the file, the offset and the last good LSN;
//   - otherwise the records after the stop all belong to the last sync,
//     which never completed and acknowledged nothing: a torn tail, dropped
//     and counted (Replay.TornRecords).
//
// A segment shorter or longer than its header's size is corruption. A
// missing segment is ErrMissing when the owner says one existed. Salvage
// reads a damaged segment for repair: the records before the damage, and
// what the intact records after it show.
//
// The one case no later record can witness is bit rot in the very last
// acknowledged record before a crash: it is dropped as a torn tail.
//
// A generation starts at every Open and whenever the segment is full, after
// the owner has made every record durable elsewhere (the engine flushes its
// memtable): the header is rewritten with the next generation and writing
// starts again at offset 4096. Older records left behind carry an older
// generation and are never replayed. Segments of version 1 ("CLWAL001",
// without size, base and synced) are replayed once, then rewritten.
package wal

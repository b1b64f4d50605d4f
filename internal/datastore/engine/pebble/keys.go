package pebble

import (
	"encoding/binary"
	"fmt"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// On-disk layout (all integers big-endian unless noted):
//
//	k <esc(key)> 0x00 0x01 <^rev:8>  → record: one version of key, newest first
//	r <rev:8> <sub:4>                → key: the revision log, for watchers
//	m rev                            → <rev:8>: last committed revision
//	m compact                        → <rev:8>: compacted revision
//	m lsn                            → <lsn:8>: last log record applied
//	m walgen                         → <gen:8>: the log generation started after the last flush
//	l <id:8>                         → <ttl:8>: a lease
//
// esc escapes 0x00 as 0x00 0xff, so the terminator 0x00 0x01 sorts every
// key's versions before any longer key that shares its prefix, and the
// order of encoded keys is the order of user keys.
//
// A record is uvarint create_rev, uvarint version, uvarint lease,
// uvarint prev_rev, one flags byte (1: tombstone), then the value.

var (
	metaRev     = []byte("mrev")
	metaCompact = []byte("mcompact")
	metaLSN     = []byte("mlsn")
	metaWALGen  = []byte("mwalgen")
	logPrefix   = []byte("r")
	leasePrefix = []byte("l")
)

const flagTombstone = 1

func appendEsc(dst, key []byte) []byte {
	for _, c := range key {
		if c == 0 {
			dst = append(dst, 0, 0xff)
		} else {
			dst = append(dst, c)
		}
	}
	return dst
}

func unesc(enc []byte) []byte {
	out := make([]byte, 0, len(enc))
	for i := 0; i < len(enc); i++ {
		out = append(out, enc[i])
		if enc[i] == 0 {
			i++
		}
	}
	return out
}

// userPrefix returns k + esc(key) + terminator: all versions of key share it.
func userPrefix(key []byte) []byte {
	p := append(make([]byte, 0, len(key)+11), 'k')
	p = appendEsc(p, key)
	return append(p, 0, 1)
}

func versionKey(prefix []byte, rev int64) []byte {
	return binary.BigEndian.AppendUint64(append(make([]byte, 0, len(prefix)+8), prefix...), ^uint64(rev))
}

// afterVersions sorts after every version sharing prefix and before the next key.
func afterVersions(prefix []byte) []byte {
	return append(append(make([]byte, 0, len(prefix)+9), prefix...), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
}

// splitVersion splits a k-key into its user prefix and revision.
func splitVersion(k []byte) ([]byte, int64, error) {
	if len(k) < 11 || k[0] != 'k' {
		return nil, 0, fmt.Errorf("malformed version key %q", k)
	}
	return k[:len(k)-8], int64(^binary.BigEndian.Uint64(k[len(k)-8:])), nil
}

// userKey decodes the user key from a user prefix.
func userKey(prefix []byte) []byte { return unesc(prefix[1 : len(prefix)-2]) }

func logKey(rev int64, sub uint32) []byte {
	k := binary.BigEndian.AppendUint64(append(make([]byte, 0, 13), 'r'), uint64(rev))
	return binary.BigEndian.AppendUint32(k, sub)
}

func leaseKey(id int64) []byte {
	return binary.BigEndian.AppendUint64([]byte{'l'}, uint64(id))
}

type record struct {
	createRev, version, lease, prevRev int64
	tombstone                          bool
	value                              []byte
}

func (r *record) encode() []byte {
	b := make([]byte, 0, 4*binary.MaxVarintLen64+1+len(r.value))
	b = binary.AppendUvarint(b, uint64(r.createRev))
	b = binary.AppendUvarint(b, uint64(r.version))
	b = binary.AppendUvarint(b, uint64(r.lease))
	b = binary.AppendUvarint(b, uint64(r.prevRev))
	var flags byte
	if r.tombstone {
		flags |= flagTombstone
	}
	return append(append(b, flags), r.value...)
}

func decodeRecord(b []byte) (record, error) {
	var r record
	var vals [4]uint64
	for i := range vals {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return r, fmt.Errorf("malformed record")
		}
		vals[i], b = v, b[n:]
	}
	if len(b) < 1 {
		return r, fmt.Errorf("malformed record: no flags")
	}
	r.createRev, r.version, r.lease, r.prevRev = int64(vals[0]), int64(vals[1]), int64(vals[2]), int64(vals[3])
	r.tombstone = b[0]&flagTombstone != 0
	r.value = b[1:]
	return r, nil
}

func (r *record) kv(key []byte, rev int64, keysOnly bool) *mvccpb.KeyValue {
	kv := &mvccpb.KeyValue{Key: key, CreateRevision: r.createRev, ModRevision: rev, Version: r.version, Lease: r.lease}
	if !keysOnly {
		kv.Value = append([]byte(nil), r.value...)
	}
	return kv
}

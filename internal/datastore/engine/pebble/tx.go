package pebble

import (
	"encoding/binary"
	"time"

	"github.com/cockroachdb/pebble"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/cloudless-dev/cloudless/internal/datastore/mvcc"
)

// tx is a write transaction over an indexed batch: its reads see the
// database plus its own writes.
type tx struct {
	e       *Engine
	b       *pebble.Batch
	rev     int64
	sub     uint32
	wroteKV bool

	// Lease changes to apply to the in-memory table after commit.
	granted  map[int64]int64
	revoked  map[int64]bool
	attach   map[string]int64 // key → lease it now carries (0: none)
	detached map[string]int64 // key → lease it carried before
}

func (t *tx) Rev() int64 { return t.rev }

func (t *tx) Get(key []byte) (*mvccpb.KeyValue, error) {
	it, err := t.b.NewIter(&pebble.IterOptions{LowerBound: userPrefix(key), UpperBound: afterVersions(userPrefix(key))})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	if !it.First() {
		return nil, it.Error()
	}
	_, r, err := splitVersion(it.Key())
	if err != nil {
		return nil, err
	}
	rec, err := decodeRecord(it.Value())
	if err != nil || rec.tombstone {
		return nil, err
	}
	return rec.kv(append([]byte(nil), key...), r, false), nil
}

func (t *tx) Range(key, end []byte) ([]*mvccpb.KeyValue, error) {
	lo, hi := bounds(key, end)
	it, err := t.b.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []*mvccpb.KeyValue
	err = scanLive(it, t.rev, func(prefix []byte, r int64, rec *record) bool {
		out = append(out, rec.kv(userKey(prefix), r, false))
		return true
	})
	return out, err
}

func (t *tx) write(key []byte, rec *record) error {
	if err := t.b.Set(versionKey(userPrefix(key), t.rev), rec.encode(), nil); err != nil {
		return err
	}
	if err := t.b.Set(logKey(t.rev, t.sub), key, nil); err != nil {
		return err
	}
	t.sub++
	t.wroteKV = true
	return nil
}

func (t *tx) Put(kv, prev *mvccpb.KeyValue) error {
	rec := &record{createRev: kv.CreateRevision, version: kv.Version, lease: kv.Lease, value: kv.Value}
	var prevLease int64
	if prev != nil {
		rec.prevRev, prevLease = prev.ModRevision, prev.Lease
	}
	if err := t.write(kv.Key, rec); err != nil {
		return err
	}
	t.moveLease(kv.Key, prevLease, kv.Lease)
	return nil
}

func (t *tx) Delete(prev *mvccpb.KeyValue) error {
	if err := t.write(prev.Key, &record{prevRev: prev.ModRevision, tombstone: true}); err != nil {
		return err
	}
	t.moveLease(prev.Key, prev.Lease, 0)
	return nil
}

func (t *tx) moveLease(key []byte, from, to int64) {
	if from == to {
		return
	}
	if t.attach == nil {
		t.attach, t.detached = map[string]int64{}, map[string]int64{}
	}
	if _, seen := t.detached[string(key)]; !seen {
		t.detached[string(key)] = from
	}
	t.attach[string(key)] = to
}

func (t *tx) KeysWithLease(id int64) ([][]byte, error) {
	t.e.leaseMu.Lock()
	defer t.e.leaseMu.Unlock()
	var keys [][]byte
	if l := t.e.leases[id]; l != nil {
		for k := range l.keys {
			if to, moved := t.attach[k]; !moved || to == id {
				keys = append(keys, []byte(k))
			}
		}
	}
	for k, to := range t.attach {
		if to == id && (t.e.leases[id] == nil || !hasKey(t.e.leases[id], k)) {
			keys = append(keys, []byte(k))
		}
	}
	return keys, nil
}

func hasKey(l *lease, k string) bool { _, ok := l.keys[k]; return ok }

func (t *tx) LeaseGrant(id, ttl int64) error {
	if ok, _ := t.LeaseExists(id); ok {
		return mvcc.ErrLeaseExists
	}
	if t.granted == nil {
		t.granted = map[int64]int64{}
	}
	t.granted[id] = ttl
	delete(t.revoked, id)
	return t.b.Set(leaseKey(id), binary.BigEndian.AppendUint64(nil, uint64(ttl)), nil)
}

func (t *tx) LeaseRevoke(id int64) error {
	if t.revoked == nil {
		t.revoked = map[int64]bool{}
	}
	t.revoked[id] = true
	delete(t.granted, id)
	return t.b.Delete(leaseKey(id), nil)
}

func (t *tx) LeaseExists(id int64) (bool, error) {
	if t.revoked[id] {
		return false, nil
	}
	if _, ok := t.granted[id]; ok {
		return true, nil
	}
	t.e.leaseMu.Lock()
	defer t.e.leaseMu.Unlock()
	return t.e.leases[id] != nil, nil
}

// applyLeases publishes the transaction's lease changes; called after the
// batch is applied, under the writer lock.
func (t *tx) applyLeases() {
	if t.granted == nil && t.revoked == nil && t.attach == nil {
		return
	}
	e := t.e
	e.leaseMu.Lock()
	defer e.leaseMu.Unlock()
	now := time.Now()
	for id, ttl := range t.granted {
		e.leases[id] = &lease{ttl: ttl, deadline: now.Add(time.Duration(ttl) * time.Second), keys: map[string]struct{}{}}
	}
	for k, from := range t.detached {
		if l := e.leases[from]; l != nil {
			delete(l.keys, k)
		}
	}
	for k, to := range t.attach {
		if l := e.leases[to]; l != nil && to != 0 {
			l.keys[k] = struct{}{}
		}
	}
	for id := range t.revoked {
		delete(e.leases, id)
	}
}

package postgres

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/cloudless-dev/cloudless/internal/datastore/mvcc"
)

// ptx is a write transaction holding the writers' lock.
type ptx struct {
	ctx       context.Context
	tx        pgx.Tx
	rev       int64
	sub       int
	leaseOnly bool // wrote lease rows but no keys
}

func (t *ptx) Rev() int64 { return t.rev }

func (t *ptx) Get(key []byte) (*mvccpb.KeyValue, error) {
	kv := &mvccpb.KeyValue{Key: key}
	err := t.tx.QueryRow(t.ctx, `SELECT value, create_rev, mod_rev, version, lease FROM cloudless_kv WHERE key = $1`, key).
		Scan(&kv.Value, &kv.CreateRevision, &kv.ModRevision, &kv.Version, &kv.Lease)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, unavailable("read key", err)
	}
	return kv, nil
}

func (t *ptx) Range(key, end []byte) ([]*mvccpb.KeyValue, error) {
	where, args := rangeSQL(key, end, nil)
	rows, err := t.tx.Query(t.ctx, `SELECT key, value, create_rev, mod_rev, version, lease FROM cloudless_kv WHERE `+where+` ORDER BY key`, args...)
	if err != nil {
		return nil, unavailable("range", err)
	}
	defer rows.Close()
	var out []*mvccpb.KeyValue
	for rows.Next() {
		kv := &mvccpb.KeyValue{}
		if err := rows.Scan(&kv.Key, &kv.Value, &kv.CreateRevision, &kv.ModRevision, &kv.Version, &kv.Lease); err != nil {
			return nil, unavailable("range", err)
		}
		out = append(out, kv)
	}
	return out, rows.Err()
}

func (t *ptx) logRow(kv *mvccpb.KeyValue, prevRev int64, deleted bool) error {
	_, err := t.tx.Exec(t.ctx, `INSERT INTO cloudless_log (rev, sub, key, value, create_rev, version, lease, prev_rev, deleted)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		t.rev, t.sub, kv.Key, kv.Value, kv.CreateRevision, kv.Version, kv.Lease, prevRev, deleted)
	if err != nil {
		return unavailable("append to log", err)
	}
	t.sub++
	return nil
}

func (t *ptx) Put(kv, prev *mvccpb.KeyValue) error {
	var prevRev int64
	if prev != nil {
		prevRev = prev.ModRevision
	}
	value := kv.Value
	if value == nil {
		value = []byte{}
	}
	kv2 := *kv
	kv2.Value = value
	if err := t.logRow(&kv2, prevRev, false); err != nil {
		return err
	}
	_, err := t.tx.Exec(t.ctx, `INSERT INTO cloudless_kv (key, value, create_rev, mod_rev, version, lease)
		VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (key) DO UPDATE SET value = $2, create_rev = $3, mod_rev = $4, version = $5, lease = $6`,
		kv.Key, value, kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease)
	if err != nil {
		return unavailable("write key", err)
	}
	return nil
}

func (t *ptx) Delete(prev *mvccpb.KeyValue) error {
	if err := t.logRow(&mvccpb.KeyValue{Key: prev.Key}, prev.ModRevision, true); err != nil {
		return err
	}
	if _, err := t.tx.Exec(t.ctx, `DELETE FROM cloudless_kv WHERE key = $1`, prev.Key); err != nil {
		return unavailable("delete key", err)
	}
	return nil
}

func (t *ptx) KeysWithLease(id int64) ([][]byte, error) {
	rows, err := t.tx.Query(t.ctx, `SELECT key FROM cloudless_kv WHERE lease = $1`, id)
	if err != nil {
		return nil, unavailable("keys of lease", err)
	}
	keys, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		return nil, unavailable("keys of lease", err)
	}
	return keys, nil
}

func (t *ptx) LeaseGrant(id, ttl int64) error {
	tag, err := t.tx.Exec(t.ctx, `INSERT INTO cloudless_lease (id, ttl, expires_at) VALUES ($1, $2::bigint, now() + $2::bigint * interval '1 second') ON CONFLICT (id) DO NOTHING`, id, ttl)
	if err != nil {
		return unavailable("grant lease", err)
	}
	if tag.RowsAffected() == 0 {
		return mvcc.ErrLeaseExists
	}
	t.leaseOnly = true
	return nil
}

func (t *ptx) LeaseRevoke(id int64) error {
	if _, err := t.tx.Exec(t.ctx, `DELETE FROM cloudless_lease WHERE id = $1`, id); err != nil {
		return unavailable("revoke lease", err)
	}
	t.leaseOnly = true
	return nil
}

func (t *ptx) LeaseExists(id int64) (bool, error) {
	var ok bool
	if err := t.tx.QueryRow(t.ctx, `SELECT EXISTS (SELECT 1 FROM cloudless_lease WHERE id = $1)`, id).Scan(&ok); err != nil {
		return false, unavailable("read lease", err)
	}
	return ok, nil
}

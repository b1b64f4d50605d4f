package mvcc

import (
	"context"
	"errors"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// Errors returned by engines and by the Store. The gRPC layer maps them to
// etcd's status codes once, with errors.Is.
var (
	ErrCompacted      = errors.New("mvcc: required revision has been compacted")
	ErrFutureRev      = errors.New("mvcc: required revision is a future revision")
	ErrLeaseNotFound  = errors.New("mvcc: requested lease not found")
	ErrLeaseExists    = errors.New("mvcc: lease already exists")
	ErrDuplicateKey   = errors.New("mvcc: duplicate key given in txn request")
	ErrUnsupported    = errors.New("mvcc: unsupported request")
	ErrEngineDegraded = errors.New("mvcc: storage engine unavailable")
	ErrNoSpace        = errors.New("mvcc: disk space low")
)

// RangeQuery selects live keys in [Key, End) as of Rev.
//
// End empty means the single key Key; End "\x00" means every key >= Key.
// Rev 0 means the engine's current (durable) revision. Limit 0 means no limit.
type RangeQuery struct {
	Key, End  []byte
	Rev       int64
	Limit     int64
	KeysOnly  bool
	CountOnly bool
}

// RangeResult is the answer to a RangeQuery.
//
// Count is the number of live keys in the whole range at Rev, regardless of
// Limit; Rev is the revision the read was served at.
type RangeResult struct {
	KVs   []*mvccpb.KeyValue
	Count int64
	Rev   int64
}

// Event is one change in the revision log. For a delete, KV holds the key and
// ModRevision only. PrevKV is the version the change replaced, nil on create.
type Event struct {
	Type   mvccpb.Event_EventType
	KV     *mvccpb.KeyValue
	PrevKV *mvccpb.KeyValue
}

// Engine is what the MVCC store needs from a storage engine. Every engine
// passes the shared suite in package enginetest.
//
// Revisions are global and strictly increasing. One call to Update that
// writes anything produces exactly one new revision; its changes appear in
// Events in the order they were made.
type Engine interface {
	// Revisions returns the current durable revision and the compacted revision.
	Revisions(ctx context.Context) (current, compacted int64, err error)
	// Range reads live keys. It returns ErrCompacted if q.Rev is below the
	// compacted revision and ErrFutureRev if it is above the current one.
	Range(ctx context.Context, q RangeQuery) (RangeResult, error)
	// Update runs fn serialised with every other writer of the same
	// database (across processes for shared engines). If fn returns nil and
	// wrote something, the changes are durable when Update returns, at the
	// returned revision. If nothing was written, the returned revision is
	// the current one.
	Update(ctx context.Context, fn func(tx Tx) error) (rev int64, err error)
	// Events returns events with revision >= from, in revision order,
	// always whole revisions: it stops after the revision at which the
	// count reaches limit. It returns ErrCompacted if from is
	// below the compacted revision.
	Events(ctx context.Context, from int64, limit int) ([]Event, error)
	// Compact drops history below rev: afterwards reads below rev fail with
	// ErrCompacted, and reads at rev or later still see every key.
	Compact(ctx context.Context, rev int64) error
	// Changes delivers, without blocking the engine, the newest durable
	// revision each time it moves, including moves made by other processes
	// sharing the database. The channel has capacity 1 and may coalesce.
	Changes() <-chan int64
	// LeaseRenew restarts a lease's clock and returns its TTL in seconds.
	LeaseRenew(ctx context.Context, id int64) (ttl int64, err error)
	// LeaseTimeToLive returns a lease's granted TTL and the seconds left.
	LeaseTimeToLive(ctx context.Context, id int64) (ttl, remaining int64, err error)
	// Leases lists every lease ID.
	Leases(ctx context.Context) ([]int64, error)
	// ExpiredLeases lists leases whose time is up.
	ExpiredLeases(ctx context.Context) ([]int64, error)
	// Size reports the bytes the engine uses on disk (or in the database).
	Size(ctx context.Context) (int64, error)
	Close() error
}

// Tx is a write transaction. Reads see the latest state, including writes
// made earlier in the same transaction.
type Tx interface {
	// Rev is the revision the transaction's writes will get.
	Rev() int64
	Get(key []byte) (*mvccpb.KeyValue, error)
	// Range returns live keys in [key, end), end as in RangeQuery.
	Range(key, end []byte) ([]*mvccpb.KeyValue, error)
	// Put stores kv (its revisions already set by the caller); prev is the
	// version it replaces, nil on create.
	Put(kv, prev *mvccpb.KeyValue) error
	// Delete removes prev.Key, whose live version is prev.
	Delete(prev *mvccpb.KeyValue) error
	// KeysWithLease lists the live keys attached to a lease.
	KeysWithLease(id int64) ([][]byte, error)
	LeaseGrant(id, ttl int64) error
	LeaseRevoke(id int64) error
	LeaseExists(id int64) (bool, error)
}

// InRange reports whether key falls in [start, end) with etcd's conventions
// for an empty end (single key) and "\x00" (no upper bound).
func InRange(key, start, end []byte) bool {
	switch {
	case len(end) == 0:
		return string(key) == string(start)
	case len(end) == 1 && end[0] == 0:
		return string(key) >= string(start)
	default:
		return string(key) >= string(start) && string(key) < string(end)
	}
}

package mvcc

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// Store implements etcd's KV, lease and watch semantics over an Engine.
// It holds no data of its own beyond a cache of recent events for watchers.
type Store struct {
	eng Engine
	log *slog.Logger
	hub *hub

	// compactMu serialises Compact calls made through this process.
	compactMu sync.Mutex
}

// New returns a Store over eng. It starts nothing: call Run.
func New(eng Engine, log *slog.Logger) *Store {
	return &Store{eng: eng, log: log, hub: newHub(eng, log)}
}

// Engine returns the engine the store runs on.
func (s *Store) Engine() Engine { return s.eng }

// Run follows the engine's revisions for watchers and expires leases until
// ctx is cancelled.
func (s *Store) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.hub.run(ctx) }()
	s.expireLeases(ctx)
	return <-errc
}

// Ready is closed once the store follows the engine's revision.
func (s *Store) Ready() <-chan struct{} { return s.hub.ready }

func (s *Store) expireLeases(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ids, err := s.eng.ExpiredLeases(ctx)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("list expired leases", "err", err)
			}
			continue
		}
		for _, id := range ids {
			if _, err := s.LeaseRevoke(ctx, id); err != nil && ctx.Err() == nil {
				s.log.Warn("revoke expired lease", "lease", id, "err", err)
			}
		}
	}
}

// Range serves a RangeRequest outside a transaction.
func (s *Store) Range(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error) {
	if err := checkRange(r); err != nil {
		return nil, err
	}
	res, err := s.eng.Range(ctx, RangeQuery{
		Key: r.Key, End: r.RangeEnd, Rev: r.Revision, Limit: r.Limit,
		KeysOnly: r.KeysOnly, CountOnly: r.CountOnly,
	})
	if err != nil {
		return nil, err
	}
	return &pb.RangeResponse{
		Header: header(res.Rev),
		Kvs:    res.KVs,
		Count:  res.Count,
		More:   r.Limit > 0 && res.Count > int64(len(res.KVs)) && !r.CountOnly,
	}, nil
}

func checkRange(r *pb.RangeRequest) error {
	if len(r.Key) == 0 {
		return fmt.Errorf("%w: empty key", ErrUnsupported)
	}
	if r.SortOrder != pb.RangeRequest_NONE && !(r.SortOrder == pb.RangeRequest_ASCEND && r.SortTarget == pb.RangeRequest_KEY) {
		return fmt.Errorf("%w: range sort %s by %s (only ascending by key)", ErrUnsupported, r.SortOrder, r.SortTarget)
	}
	if r.MinModRevision != 0 || r.MaxModRevision != 0 || r.MinCreateRevision != 0 || r.MaxCreateRevision != 0 {
		return fmt.Errorf("%w: range filters on min/max mod or create revision", ErrUnsupported)
	}
	if r.Limit < 0 || r.Revision < 0 {
		return fmt.Errorf("%w: negative limit or revision", ErrUnsupported)
	}
	return nil
}

// Put stores one key.
func (s *Store) Put(ctx context.Context, r *pb.PutRequest) (*pb.PutResponse, error) {
	resp, err := s.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: r}}}})
	if err != nil {
		return nil, err
	}
	out := resp.Responses[0].GetResponsePut()
	out.Header = resp.Header
	return out, nil
}

// DeleteRange deletes a key or a range of keys at one revision.
func (s *Store) DeleteRange(ctx context.Context, r *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	resp, err := s.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: r}}}})
	if err != nil {
		return nil, err
	}
	out := resp.Responses[0].GetResponseDeleteRange()
	out.Header = resp.Header
	return out, nil
}

// Txn evaluates the compares and runs one branch, atomically, at one revision.
func (s *Store) Txn(ctx context.Context, r *pb.TxnRequest) (*pb.TxnResponse, error) {
	if err := checkTxn(r); err != nil {
		return nil, err
	}
	var resp *pb.TxnResponse
	rev, err := s.eng.Update(ctx, func(tx Tx) error {
		resp = &pb.TxnResponse{Succeeded: true}
		for _, c := range r.Compare {
			ok, err := compare(tx, c)
			if err != nil {
				return err
			}
			if !ok {
				resp.Succeeded = false
				break
			}
		}
		ops := r.Success
		if !resp.Succeeded {
			ops = r.Failure
		}
		written := map[string]bool{}
		for _, op := range ops {
			out, err := apply(tx, op, written)
			if err != nil {
				return err
			}
			resp.Responses = append(resp.Responses, out)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	resp.Header = header(rev)
	for _, op := range resp.Responses {
		switch o := op.Response.(type) {
		case *pb.ResponseOp_ResponseRange:
			o.ResponseRange.Header = resp.Header
		case *pb.ResponseOp_ResponsePut:
			o.ResponsePut.Header = resp.Header
		case *pb.ResponseOp_ResponseDeleteRange:
			o.ResponseDeleteRange.Header = resp.Header
		}
	}
	return resp, nil
}

func checkTxn(r *pb.TxnRequest) error {
	for _, c := range r.Compare {
		if len(c.Key) == 0 {
			return fmt.Errorf("%w: compare with an empty key", ErrUnsupported)
		}
	}
	for _, ops := range [][]*pb.RequestOp{r.Success, r.Failure} {
		for _, op := range ops {
			switch o := op.Request.(type) {
			case *pb.RequestOp_RequestRange:
				if err := checkRange(o.RequestRange); err != nil {
					return err
				}
				if o.RequestRange.Revision != 0 {
					return fmt.Errorf("%w: range at a past revision inside a txn", ErrUnsupported)
				}
			case *pb.RequestOp_RequestPut:
				if len(o.RequestPut.Key) == 0 {
					return fmt.Errorf("%w: put with an empty key", ErrUnsupported)
				}
			case *pb.RequestOp_RequestDeleteRange:
				if len(o.RequestDeleteRange.Key) == 0 {
					return fmt.Errorf("%w: delete with an empty key", ErrUnsupported)
				}
			case *pb.RequestOp_RequestTxn:
				return fmt.Errorf("%w: nested txn", ErrUnsupported)
			default:
				return fmt.Errorf("%w: empty request op", ErrUnsupported)
			}
		}
	}
	return nil
}

func compare(tx Tx, c *pb.Compare) (bool, error) {
	var kvs []*mvccpb.KeyValue
	if len(c.RangeEnd) == 0 {
		kv, err := tx.Get(c.Key)
		if err != nil {
			return false, err
		}
		if kv != nil {
			kvs = []*mvccpb.KeyValue{kv}
		}
	} else {
		var err error
		if kvs, err = tx.Range(c.Key, c.RangeEnd); err != nil {
			return false, err
		}
	}
	if len(kvs) == 0 {
		// A missing key compares as zero revisions and version; a value
		// or lease compare against a missing key fails, as in etcd.
		switch c.Target {
		case pb.Compare_VALUE, pb.Compare_LEASE:
			return false, nil
		}
		return cmpInt(0, target(c), c.Result), nil
	}
	for _, kv := range kvs {
		var ok bool
		switch c.Target {
		case pb.Compare_VERSION:
			ok = cmpInt(kv.Version, c.GetVersion(), c.Result)
		case pb.Compare_CREATE:
			ok = cmpInt(kv.CreateRevision, c.GetCreateRevision(), c.Result)
		case pb.Compare_MOD:
			ok = cmpInt(kv.ModRevision, c.GetModRevision(), c.Result)
		case pb.Compare_LEASE:
			ok = cmpInt(kv.Lease, c.GetLease(), c.Result)
		case pb.Compare_VALUE:
			ok = cmpInt(int64(bytes.Compare(kv.Value, c.GetValue())), 0, c.Result)
		}
		if !ok {
			return false, nil
		}
	}
	return true, nil
}

func target(c *pb.Compare) int64 {
	switch c.Target {
	case pb.Compare_VERSION:
		return c.GetVersion()
	case pb.Compare_CREATE:
		return c.GetCreateRevision()
	case pb.Compare_MOD:
		return c.GetModRevision()
	}
	return 0
}

func cmpInt(a, b int64, r pb.Compare_CompareResult) bool {
	switch r {
	case pb.Compare_EQUAL:
		return a == b
	case pb.Compare_NOT_EQUAL:
		return a != b
	case pb.Compare_GREATER:
		return a > b
	case pb.Compare_LESS:
		return a < b
	}
	return false
}

func apply(tx Tx, op *pb.RequestOp, written map[string]bool) (*pb.ResponseOp, error) {
	switch o := op.Request.(type) {
	case *pb.RequestOp_RequestRange:
		r := o.RequestRange
		kvs, err := tx.Range(r.Key, r.RangeEnd)
		if err != nil {
			return nil, err
		}
		out := &pb.RangeResponse{Count: int64(len(kvs))}
		if r.Limit > 0 && int64(len(kvs)) > r.Limit {
			kvs, out.More = kvs[:r.Limit], true
		}
		if !r.CountOnly {
			for _, kv := range kvs {
				if r.KeysOnly {
					kv = &mvccpb.KeyValue{Key: kv.Key, CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision, Version: kv.Version, Lease: kv.Lease}
				}
				out.Kvs = append(out.Kvs, kv)
			}
		}
		return &pb.ResponseOp{Response: &pb.ResponseOp_ResponseRange{ResponseRange: out}}, nil
	case *pb.RequestOp_RequestPut:
		r := o.RequestPut
		if written[string(r.Key)] {
			return nil, ErrDuplicateKey
		}
		written[string(r.Key)] = true
		prev, err := tx.Get(r.Key)
		if err != nil {
			return nil, err
		}
		kv := &mvccpb.KeyValue{Key: r.Key, Value: r.Value, Lease: r.Lease, ModRevision: tx.Rev(), CreateRevision: tx.Rev(), Version: 1}
		if prev != nil {
			kv.CreateRevision, kv.Version = prev.CreateRevision, prev.Version+1
		}
		if r.IgnoreValue || r.IgnoreLease {
			if prev == nil {
				return nil, fmt.Errorf("%w: ignore_value or ignore_lease on a key that does not exist", ErrKeyNotFound)
			}
			if r.IgnoreValue {
				kv.Value = prev.Value
			}
			if r.IgnoreLease {
				kv.Lease = prev.Lease
			}
		}
		if kv.Lease != 0 {
			ok, err := tx.LeaseExists(kv.Lease)
			if err != nil {
				return nil, err
			}
			if !ok {
				return nil, ErrLeaseNotFound
			}
		}
		if err := tx.Put(kv, prev); err != nil {
			return nil, err
		}
		out := &pb.PutResponse{}
		if r.PrevKv {
			out.PrevKv = prev
		}
		return &pb.ResponseOp{Response: &pb.ResponseOp_ResponsePut{ResponsePut: out}}, nil
	case *pb.RequestOp_RequestDeleteRange:
		r := o.RequestDeleteRange
		var kvs []*mvccpb.KeyValue
		if len(r.RangeEnd) == 0 {
			kv, err := tx.Get(r.Key)
			if err != nil {
				return nil, err
			}
			if kv != nil {
				kvs = append(kvs, kv)
			}
		} else {
			var err error
			if kvs, err = tx.Range(r.Key, r.RangeEnd); err != nil {
				return nil, err
			}
		}
		out := &pb.DeleteRangeResponse{Deleted: int64(len(kvs))}
		for _, kv := range kvs {
			if written[string(kv.Key)] {
				return nil, ErrDuplicateKey
			}
			written[string(kv.Key)] = true
			if err := tx.Delete(kv); err != nil {
				return nil, err
			}
		}
		if r.PrevKv {
			out.PrevKvs = kvs
		}
		return &pb.ResponseOp{Response: &pb.ResponseOp_ResponseDeleteRange{ResponseDeleteRange: out}}, nil
	}
	return nil, fmt.Errorf("%w: request op %T", ErrUnsupported, op.Request)
}

// Compact drops history below rev.
func (s *Store) Compact(ctx context.Context, rev int64) (*pb.CompactionResponse, error) {
	s.compactMu.Lock()
	defer s.compactMu.Unlock()
	cur, compacted, err := s.eng.Revisions(ctx)
	if err != nil {
		return nil, err
	}
	if rev > cur {
		return nil, ErrFutureRev
	}
	if rev <= compacted {
		return nil, ErrCompacted
	}
	if err := s.eng.Compact(ctx, rev); err != nil {
		return nil, fmt.Errorf("compact to revision %d: %w", rev, err)
	}
	s.hub.setCompacted(rev)
	return &pb.CompactionResponse{Header: header(cur)}, nil
}

// LeaseGrant creates a lease; id 0 picks one.
func (s *Store) LeaseGrant(ctx context.Context, id, ttl int64) (int64, int64, error) {
	if ttl <= 0 {
		return 0, 0, fmt.Errorf("%w: lease TTL %d must be positive", ErrUnsupported, ttl)
	}
	if id == 0 {
		id = newLeaseID()
	}
	rev, err := s.eng.Update(ctx, func(tx Tx) error { return tx.LeaseGrant(id, ttl) })
	if err != nil {
		return 0, 0, err
	}
	return id, rev, nil
}

// LeaseRevoke deletes a lease and every key attached to it, at one revision.
func (s *Store) LeaseRevoke(ctx context.Context, id int64) (int64, error) {
	return s.eng.Update(ctx, func(tx Tx) error {
		ok, err := tx.LeaseExists(id)
		if err != nil {
			return err
		}
		if !ok {
			return ErrLeaseNotFound
		}
		keys, err := tx.KeysWithLease(id)
		if err != nil {
			return err
		}
		for _, k := range keys {
			kv, err := tx.Get(k)
			if err != nil {
				return err
			}
			if kv != nil && kv.Lease == id {
				if err := tx.Delete(kv); err != nil {
					return err
				}
			}
		}
		return tx.LeaseRevoke(id)
	})
}

// Current returns the current revision.
func (s *Store) Current(ctx context.Context) (int64, error) {
	cur, _, err := s.eng.Revisions(ctx)
	return cur, err
}

// ErrKeyNotFound is returned for ignore_value/ignore_lease puts on a missing key.
var ErrKeyNotFound = fmt.Errorf("mvcc: key not found")

// Identity of the single logical member every Cloudless datastore reports.
const (
	ClusterID = 0x636c6f7564 // "cloud"
	MemberID  = 0x6c657373   // "less"
)

func header(rev int64) *pb.ResponseHeader {
	return &pb.ResponseHeader{ClusterId: ClusterID, MemberId: MemberID, Revision: rev, RaftTerm: 1}
}

// Header returns a response header at rev.
func Header(rev int64) *pb.ResponseHeader { return header(rev) }

// Package server is the gRPC edge of the datastore: it serves etcd's v3 API
// (KV, Watch, Lease, Maintenance, Cluster) from an mvcc.Store and maps store
// errors to etcd's status codes, once, here.
package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cloudless-dev/cloudless/internal/datastore/mvcc"
)

// Version is the etcd version the datastore reports. kube-apiserver turns
// on watch progress requests for 3.5.13 and later; we implement 3.6's API.
const Version = "3.6.5"

// Options tune the server.
type Options struct {
	// ProgressNotifyInterval is how often idle watchers that asked for
	// progress notifications get one (etcd's default is 10 minutes).
	ProgressNotifyInterval time.Duration
	// ClientURLs are advertised in MemberList.
	ClientURLs []string
	// Name is the member name advertised in MemberList and Status.
	Name string
}

// Register adds the etcd v3 services for store to g.
func Register(g *grpc.Server, store *mvcc.Store, opts Options) {
	if opts.ProgressNotifyInterval <= 0 {
		opts.ProgressNotifyInterval = 10 * time.Minute
	}
	if opts.Name == "" {
		opts.Name = "cloudless"
	}
	pb.RegisterKVServer(g, &kvServer{store: store})
	pb.RegisterWatchServer(g, &watchServer{store: store, opts: opts})
	pb.RegisterLeaseServer(g, &leaseServer{store: store})
	pb.RegisterMaintenanceServer(g, &maintenanceServer{store: store, opts: opts})
	pb.RegisterClusterServer(g, &clusterServer{opts: opts})
}

// toGRPC maps store errors to the status errors etcd clients recognise.
func toGRPC(err error) error {
	var ce *mvcc.CompactedError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ce), errors.Is(err, mvcc.ErrCompacted):
		return rpctypes.ErrGRPCCompacted
	case errors.Is(err, mvcc.ErrFutureRev):
		return rpctypes.ErrGRPCFutureRev
	case errors.Is(err, mvcc.ErrLeaseNotFound):
		return rpctypes.ErrGRPCLeaseNotFound
	case errors.Is(err, mvcc.ErrLeaseExists):
		return rpctypes.ErrGRPCLeaseExist
	case errors.Is(err, mvcc.ErrDuplicateKey):
		return rpctypes.ErrGRPCDuplicateKey
	case errors.Is(err, mvcc.ErrKeyNotFound):
		return rpctypes.ErrGRPCKeyNotFound
	case errors.Is(err, mvcc.ErrUnsupported):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, mvcc.ErrNoSpace):
		return status.Error(codes.ResourceExhausted, err.Error())
	case errors.Is(err, mvcc.ErrEngineDegraded):
		return status.Error(codes.Unavailable, err.Error())
	}
	return status.Error(codes.Unavailable, fmt.Sprintf("datastore: %v", err))
}

type kvServer struct {
	pb.UnimplementedKVServer
	store *mvcc.Store
}

func (s *kvServer) Range(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error) {
	resp, err := s.store.Range(ctx, r)
	return resp, toGRPC(err)
}

func (s *kvServer) Put(ctx context.Context, r *pb.PutRequest) (*pb.PutResponse, error) {
	resp, err := s.store.Put(ctx, r)
	return resp, toGRPC(err)
}

func (s *kvServer) DeleteRange(ctx context.Context, r *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	resp, err := s.store.DeleteRange(ctx, r)
	return resp, toGRPC(err)
}

func (s *kvServer) Txn(ctx context.Context, r *pb.TxnRequest) (*pb.TxnResponse, error) {
	resp, err := s.store.Txn(ctx, r)
	return resp, toGRPC(err)
}

func (s *kvServer) Compact(ctx context.Context, r *pb.CompactionRequest) (*pb.CompactionResponse, error) {
	resp, err := s.store.Compact(ctx, r.Revision)
	return resp, toGRPC(err)
}

type leaseServer struct {
	pb.UnimplementedLeaseServer
	store *mvcc.Store
}

func (s *leaseServer) LeaseGrant(ctx context.Context, r *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	id, rev, err := s.store.LeaseGrant(ctx, r.ID, r.TTL)
	if err != nil {
		return nil, toGRPC(err)
	}
	return &pb.LeaseGrantResponse{Header: mvcc.Header(rev), ID: id, TTL: r.TTL}, nil
}

func (s *leaseServer) LeaseRevoke(ctx context.Context, r *pb.LeaseRevokeRequest) (*pb.LeaseRevokeResponse, error) {
	rev, err := s.store.LeaseRevoke(ctx, r.ID)
	if err != nil {
		return nil, toGRPC(err)
	}
	return &pb.LeaseRevokeResponse{Header: mvcc.Header(rev)}, nil
}

func (s *leaseServer) LeaseKeepAlive(stream pb.Lease_LeaseKeepAliveServer) error {
	ctx := stream.Context()
	for {
		r, err := stream.Recv()
		if err != nil {
			return err
		}
		ttl, err := s.store.Engine().LeaseRenew(ctx, r.ID)
		if err != nil && !errors.Is(err, mvcc.ErrLeaseNotFound) {
			return toGRPC(err)
		}
		rev, _ := s.store.Current(ctx)
		// A TTL of 0 tells the client the lease is gone, as etcd does.
		if err := stream.Send(&pb.LeaseKeepAliveResponse{Header: mvcc.Header(rev), ID: r.ID, TTL: ttl}); err != nil {
			return err
		}
	}
}

func (s *leaseServer) LeaseTimeToLive(ctx context.Context, r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	rev, err := s.store.Current(ctx)
	if err != nil {
		return nil, toGRPC(err)
	}
	ttl, left, err := s.store.Engine().LeaseTimeToLive(ctx, r.ID)
	if errors.Is(err, mvcc.ErrLeaseNotFound) {
		return &pb.LeaseTimeToLiveResponse{Header: mvcc.Header(rev), ID: r.ID, TTL: -1}, nil
	}
	if err != nil {
		return nil, toGRPC(err)
	}
	out := &pb.LeaseTimeToLiveResponse{Header: mvcc.Header(rev), ID: r.ID, TTL: left, GrantedTTL: ttl}
	if r.Keys {
		var keys [][]byte
		_, err := s.store.Engine().Update(ctx, func(tx mvcc.Tx) (err error) {
			keys, err = tx.KeysWithLease(r.ID)
			return err
		})
		if err != nil {
			return nil, toGRPC(err)
		}
		out.Keys = keys
	}
	return out, nil
}

func (s *leaseServer) LeaseLeases(ctx context.Context, _ *pb.LeaseLeasesRequest) (*pb.LeaseLeasesResponse, error) {
	rev, err := s.store.Current(ctx)
	if err != nil {
		return nil, toGRPC(err)
	}
	ids, err := s.store.Engine().Leases(ctx)
	if err != nil {
		return nil, toGRPC(err)
	}
	out := &pb.LeaseLeasesResponse{Header: mvcc.Header(rev)}
	for _, id := range ids {
		out.Leases = append(out.Leases, &pb.LeaseStatus{ID: id})
	}
	return out, nil
}

type maintenanceServer struct {
	pb.UnimplementedMaintenanceServer
	store *mvcc.Store
	opts  Options
}

func (s *maintenanceServer) Status(ctx context.Context, _ *pb.StatusRequest) (*pb.StatusResponse, error) {
	rev, err := s.store.Current(ctx)
	if err != nil {
		return nil, toGRPC(err)
	}
	size, err := s.store.Engine().Size(ctx)
	if err != nil {
		return nil, toGRPC(err)
	}
	return &pb.StatusResponse{
		Header: mvcc.Header(rev), Version: Version, StorageVersion: "3.6.0",
		DbSize: size, DbSizeInUse: size, Leader: mvcc.MemberID,
		RaftIndex: uint64(rev), RaftTerm: 1, RaftAppliedIndex: uint64(rev),
	}, nil
}

func (s *maintenanceServer) Alarm(ctx context.Context, r *pb.AlarmRequest) (*pb.AlarmResponse, error) {
	if r.Action != pb.AlarmRequest_GET {
		return nil, status.Error(codes.InvalidArgument, "datastore: only listing alarms is supported; there are none to activate or clear")
	}
	rev, err := s.store.Current(ctx)
	return &pb.AlarmResponse{Header: mvcc.Header(rev)}, toGRPC(err)
}

type clusterServer struct {
	pb.UnimplementedClusterServer
	opts Options
}

func (s *clusterServer) MemberList(context.Context, *pb.MemberListRequest) (*pb.MemberListResponse, error) {
	return &pb.MemberListResponse{
		Header:  mvcc.Header(0),
		Members: []*pb.Member{{ID: mvcc.MemberID, Name: s.opts.Name, ClientURLs: s.opts.ClientURLs}},
	}, nil
}

package server

import (
	"context"
	"errors"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/cloudless-dev/cloudless/internal/datastore/mvcc"
)

type watchServer struct {
	pb.UnimplementedWatchServer
	store *mvcc.Store
	opts  Options
}

// wstream is one Watch stream. All sends go through send, under mu, which
// also guards every watcher's lastSent: a progress notification can then
// be checked against what each watcher has sent.
type wstream struct {
	srv    *watchServer
	stream pb.Watch_WatchServer

	mu       sync.Mutex
	watchers map[int64]*watcher
	nextID   int64
	moved    chan struct{} // signalled when a watcher becomes synced
}

type watcher struct {
	id       int64
	progress bool
	cancel   context.CancelFunc
	done     chan struct{}
	lastSent int64 // guarded by wstream.mu
}

func (s *watchServer) Watch(stream pb.Watch_WatchServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	ws := &wstream{srv: s, stream: stream, watchers: map[int64]*watcher{}, moved: make(chan struct{}, 1)}
	defer ws.stopAll()
	for {
		req, err := stream.Recv()
		if err != nil {
			return err
		}
		switch r := req.RequestUnion.(type) {
		case *pb.WatchRequest_CreateRequest:
			if err := ws.create(ctx, r.CreateRequest); err != nil {
				return err
			}
		case *pb.WatchRequest_CancelRequest:
			ws.cancelWatch(r.CancelRequest.WatchId)
		case *pb.WatchRequest_ProgressRequest:
			go ws.requestProgress(ctx, s.store.CurrentWatchRev())
		}
	}
}

func (ws *wstream) send(resp *pb.WatchResponse) error {
	// Callers hold ws.mu.
	return ws.stream.Send(resp)
}

func (ws *wstream) create(ctx context.Context, r *pb.WatchCreateRequest) error {
	cur := ws.srv.store.CurrentWatchRev()
	start := r.StartRevision
	if start == 0 {
		start = cur + 1
	}
	f := mvcc.Filter{Key: r.Key, End: r.RangeEnd, PrevKV: r.PrevKv, StartRev: start}
	for _, ft := range r.Filters {
		switch ft {
		case pb.WatchCreateRequest_NOPUT:
			f.NoPut = true
		case pb.WatchCreateRequest_NODELETE:
			f.NoDelete = true
		}
	}
	ws.mu.Lock()
	defer ws.mu.Unlock()
	id := r.WatchId
	if id == 0 || ws.watchers[id] != nil { // clientv3 asks for automatic IDs with 0
		for ws.watchers[ws.nextID] != nil {
			ws.nextID++
		}
		id = ws.nextID
		ws.nextID++
	}
	if len(r.Key) == 0 {
		return ws.send(&pb.WatchResponse{Header: mvcc.Header(cur), WatchId: id, Created: true, Canceled: true,
			CancelReason: "datastore: watch with an empty key; give a key or a range"})
	}
	wctx, cancel := context.WithCancel(ctx)
	w := &watcher{id: id, progress: r.ProgressNotify, cancel: cancel, done: make(chan struct{}), lastSent: start - 1}
	if err := ws.send(&pb.WatchResponse{Header: mvcc.Header(cur), WatchId: id, Created: true}); err != nil {
		cancel()
		return err
	}
	// Registered only once its loop runs: stopAll waits for every
	// registered watcher's loop to end.
	ws.watchers[id] = w
	go ws.run(wctx, w, f)
	return nil
}

func (ws *wstream) run(ctx context.Context, w *watcher, f mvcc.Filter) {
	defer close(w.done)
	var ticker *time.Ticker
	var tick <-chan time.Time
	if w.progress {
		ticker = time.NewTicker(ws.srv.opts.ProgressNotifyInterval)
		defer ticker.Stop()
		tick = ticker.C
	}
	send := func(evs []*mvccpb.Event, rev int64) error {
		ws.mu.Lock()
		defer ws.mu.Unlock()
		w.lastSent = rev
		return ws.send(&pb.WatchResponse{Header: mvcc.Header(rev), WatchId: w.id, Events: evs})
	}
	idle := func(rev int64, wake <-chan struct{}) error {
		ws.mu.Lock()
		w.lastSent = rev
		ws.mu.Unlock()
		select {
		case ws.moved <- struct{}{}:
		default:
		}
		for {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-wake:
				return nil
			case <-tick:
				// Only a synced watcher gets a progress notification.
				ws.mu.Lock()
				var err error
				if ws.srv.store.CurrentWatchRev() == rev {
					err = ws.send(&pb.WatchResponse{Header: mvcc.Header(rev), WatchId: w.id})
				}
				ws.mu.Unlock()
				if err != nil {
					return err
				}
			}
		}
	}
	err := ws.srv.store.Watch(ctx, f, send, idle)
	var ce *mvcc.CompactedError
	resp := &pb.WatchResponse{WatchId: w.id, Canceled: true}
	switch {
	case errors.As(err, &ce):
		resp.Header, resp.CompactRevision = mvcc.Header(ws.srv.store.CurrentWatchRev()), ce.Rev
		resp.CancelReason = ce.Error()
	case ctx.Err() != nil:
		return // cancelled: cancelWatch or the stream answers
	default:
		resp.Header = mvcc.Header(ws.srv.store.CurrentWatchRev())
		resp.CancelReason = "datastore: " + err.Error()
	}
	ws.mu.Lock()
	delete(ws.watchers, w.id)
	_ = ws.send(resp)
	ws.mu.Unlock()
}

func (ws *wstream) cancelWatch(id int64) {
	ws.mu.Lock()
	w := ws.watchers[id]
	ws.mu.Unlock()
	if w == nil {
		return
	}
	w.cancel()
	<-w.done
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.watchers[id] == w {
		delete(ws.watchers, id)
		_ = ws.send(&pb.WatchResponse{Header: mvcc.Header(ws.srv.store.CurrentWatchRev()), WatchId: id, Canceled: true})
	}
}

func (ws *wstream) stopAll() {
	ws.mu.Lock()
	ws.nextID = -1
	ws.mu.Unlock()
	for {
		ws.mu.Lock()
		var w *watcher
		for _, x := range ws.watchers {
			w = x
			break
		}
		if w != nil {
			delete(ws.watchers, w.id)
		}
		ws.mu.Unlock()
		if w == nil {
			return
		}
		w.cancel()
		<-w.done
	}
}

// requestProgress answers a progress request once every watcher on the
// stream has sent everything up to a revision at least target, with that
// revision and watch ID -1, as etcd 3.5.13 and later do.
func (ws *wstream) requestProgress(ctx context.Context, target int64) {
	for {
		ws.mu.Lock()
		cur := ws.srv.store.CurrentWatchRev()
		synced := true
		for _, w := range ws.watchers {
			if w.lastSent < cur {
				synced = false
				break
			}
		}
		if synced && cur >= target {
			_ = ws.send(&pb.WatchResponse{Header: mvcc.Header(cur), WatchId: -1})
			ws.mu.Unlock()
			return
		}
		ws.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-ws.moved:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

package mvcc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sort"
	"sync"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// ringSize is how many recent events the hub keeps in memory. Watchers that
// fall further behind read from the engine instead.
const ringSize = 16384

// eventPage is how many events one read from the engine returns at most.
const eventPage = 2048

// hub follows the engine's revision and keeps recent events for watchers.
// Every watcher runs its own loop and reads from the hub at its own pace,
// so a slow watcher never holds up the others.
type hub struct {
	eng Engine
	log *slog.Logger

	ready     chan struct{}
	mu        sync.Mutex
	rev       int64   // every event up to rev is known
	ring      []Event // events with revision > ringFrom, in order
	ringFrom  int64
	compacted int64
	wake      chan struct{} // closed when rev moves
}

func newHub(eng Engine, log *slog.Logger) *hub {
	return &hub{eng: eng, log: log, ready: make(chan struct{}), wake: make(chan struct{})}
}

func (h *hub) run(ctx context.Context) error {
	cur, compacted, err := h.eng.Revisions(ctx)
	if err != nil {
		return fmt.Errorf("read revisions: %w", err)
	}
	h.mu.Lock()
	h.rev, h.ringFrom, h.compacted = cur, cur, compacted
	h.mu.Unlock()
	close(h.ready)
	changes := h.eng.Changes()
	for {
		select {
		case <-ctx.Done():
			return nil
		case rev := <-changes:
			h.follow(ctx, rev)
		}
	}
}

// follow reads the events between the hub's revision and rev into the ring.
func (h *hub) follow(ctx context.Context, rev int64) {
	h.mu.Lock()
	from := h.rev + 1
	h.mu.Unlock()
	for from <= rev {
		evs, err := h.eng.Events(ctx, from, eventPage)
		if errors.Is(err, ErrCompacted) {
			// History we had not seen yet is gone: start the ring afresh.
			// Watchers behind it will read from the engine and be told.
			h.mu.Lock()
			h.ring, h.ringFrom, h.rev = nil, rev, rev
			h.broadcast()
			h.mu.Unlock()
			return
		}
		if err != nil {
			if ctx.Err() == nil {
				h.log.Warn("read events for watchers", "from", from, "err", err)
			}
			return // the next change retries
		}
		if len(evs) == 0 {
			break
		}
		last := evs[len(evs)-1].KV.ModRevision
		h.mu.Lock()
		h.ring = append(h.ring, evs...)
		if n := len(h.ring); n > ringSize {
			drop := n - ringSize
			// Keep whole revisions in the ring.
			for drop < n && h.ring[drop].KV.ModRevision == h.ring[drop-1].KV.ModRevision {
				drop++
			}
			h.ringFrom = h.ring[drop-1].KV.ModRevision
			h.ring = append([]Event(nil), h.ring[drop:]...)
		}
		h.rev = last
		h.broadcast()
		h.mu.Unlock()
		from = last + 1
	}
	h.mu.Lock()
	if rev > h.rev {
		h.rev = rev
		h.broadcast()
	}
	h.mu.Unlock()
}

func (h *hub) broadcast() {
	close(h.wake)
	h.wake = make(chan struct{})
}

func (h *hub) setCompacted(rev int64) {
	h.mu.Lock()
	if rev > h.compacted {
		h.compacted = rev
	}
	h.mu.Unlock()
}

func (h *hub) current() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.rev
}

// read returns the events from revision from on, the revision up to which
// the answer is complete, and a channel closed when more may be available.
func (h *hub) read(ctx context.Context, from int64) ([]Event, int64, <-chan struct{}, error) {
	h.mu.Lock()
	rev, wake := h.rev, h.wake
	if from < h.compacted {
		h.mu.Unlock()
		return nil, 0, nil, ErrCompacted
	}
	if from > rev {
		h.mu.Unlock()
		return nil, rev, wake, nil
	}
	if from > h.ringFrom {
		i := sort.Search(len(h.ring), func(i int) bool { return h.ring[i].KV.ModRevision >= from })
		evs := append([]Event(nil), h.ring[i:]...)
		compacted := h.compacted
		h.mu.Unlock()
		// The ring outlives compaction: hide previous values that the
		// engine no longer has, so watchers see what etcd would send.
		for j := range evs {
			if p := evs[j].PrevKV; p != nil && p.ModRevision < compacted && evs[j].KV.ModRevision <= compacted {
				evs[j].PrevKV = nil
			}
		}
		return evs, rev, wake, nil
	}
	h.mu.Unlock()
	evs, err := h.eng.Events(ctx, from, eventPage)
	if err != nil {
		return nil, 0, nil, err
	}
	upto := rev
	if len(evs) >= eventPage {
		// A full page (engines never cut a revision): more may follow.
		upto = evs[len(evs)-1].KV.ModRevision
	}
	i := sort.Search(len(evs), func(i int) bool { return evs[i].KV.ModRevision > upto })
	evs = evs[:i]
	if upto < rev {
		wake = nil // more is ready now
	}
	return evs, upto, wake, nil
}

// Filter selects the events a watcher wants.
type Filter struct {
	Key, End []byte
	NoPut    bool
	NoDelete bool
	PrevKV   bool
	StartRev int64
}

func (f *Filter) match(ev *Event) bool {
	if f.NoPut && ev.Type == mvccpb.PUT || f.NoDelete && ev.Type == mvccpb.DELETE {
		return false
	}
	return InRange(ev.KV.Key, f.Key, f.End)
}

// Watch follows events matching f from f.StartRev (must be > 0) and calls
// send with each batch and the revision it is complete up to. Once caught
// up, it calls idle with the revision it is synced to and a channel closed
// when more may be available; idle returns when it is time to look again.
// Watch returns a *CompactedError if the start revision is gone, or ctx's
// error when cancelled.
func (s *Store) Watch(ctx context.Context, f Filter, send func(evs []*mvccpb.Event, rev int64) error, idle func(rev int64, wake <-chan struct{}) error) error {
	<-s.hub.ready
	next := f.StartRev
	for {
		evs, upto, wake, err := s.hub.read(ctx, next)
		if errors.Is(err, ErrCompacted) {
			_, compacted, rerr := s.eng.Revisions(ctx)
			if rerr != nil {
				return rerr
			}
			s.hub.setCompacted(compacted)
			return &CompactedError{Rev: compacted}
		}
		if err != nil {
			return err
		}
		var out []*mvccpb.Event
		for i := range evs {
			ev := &evs[i]
			if ev.KV.ModRevision < next || !f.match(ev) {
				continue
			}
			e := &mvccpb.Event{Type: ev.Type, Kv: ev.KV}
			if f.PrevKV {
				e.PrevKv = ev.PrevKV
			}
			out = append(out, e)
		}
		if len(out) > 0 {
			if err := send(out, upto); err != nil {
				return err
			}
		}
		if upto >= next {
			next = upto + 1
		}
		if wake == nil {
			continue // read from the engine: more is ready now
		}
		if err := idle(next-1, wake); err != nil {
			return err
		}
	}
}

// CompactedError says a watch started below the compacted revision.
type CompactedError struct{ Rev int64 }

func (e *CompactedError) Error() string {
	return fmt.Sprintf("mvcc: watch start revision compacted (compacted revision %d)", e.Rev)
}

func (e *CompactedError) Unwrap() error { return ErrCompacted }

// CurrentWatchRev is the revision up to which watchers can be synced now.
func (s *Store) CurrentWatchRev() int64 { return s.hub.current() }

func newLeaseID() int64 {
	for {
		if id := rand.Int64() >> 1; id > 0 {
			return id
		}
	}
}

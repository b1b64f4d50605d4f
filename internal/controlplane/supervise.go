package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	componentbaseconfig "k8s.io/component-base/config"
	"k8s.io/klog/v2"
)

// errLeaseLost is how a leader-elected component ends when this process
// stops holding its lease (renewal failed, e.g. the datastore refused
// writes on a full disk, or another server took it over).
var errLeaseLost = errors.New("lost its leader lease")

// restarter runs a component again whenever it stops, with exponential
// backoff, until the server's ctx ends: one fault costs that component a
// restart, never the whole server.
type restarter struct {
	log *slog.Logger
	// first and most are the shortest and longest waits before a restart.
	first, most time.Duration
	// healthy is how long a run must last for the next failure to be
	// treated as a new one (backoff back to first).
	healthy time.Duration
	// after waits d or until ctx ends; nil is the real clock.
	after func(ctx context.Context, d time.Duration) bool
}

func newRestarter(log *slog.Logger) *restarter {
	return &restarter{log: log, first: time.Second, most: 30 * time.Second, healthy: 2 * time.Minute}
}

// run calls component until ctx ends, restarting it each time it returns
// and logging the component and why it stopped. It returns when ctx ends.
func (r *restarter) run(ctx context.Context, name string, component func(context.Context) error) {
	log := r.log.With("component", name)
	wait := r.first
	for {
		started := time.Now()
		err := contain(ctx, component)
		if ctx.Err() != nil {
			return
		}
		if time.Since(started) >= r.healthy {
			wait = r.first
		}
		reason := "returned without an error"
		if err != nil {
			reason = err.Error()
		}
		log.Warn("component stopped; restarting it, the rest of the server runs on", "reason", reason, "restart_in", wait)
		if !r.sleep(ctx, wait) {
			return
		}
		wait = min(2*wait, r.most)
	}
}

func (r *restarter) sleep(ctx context.Context, d time.Duration) bool {
	if r.after != nil {
		return r.after(ctx, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Upstream components end their process on faults they think fatal to
// it: kube-controller-manager calls klog.FlushAndExit when its
// controllers take longer than --controller-shutdown-timeout to stop
// after a lost lease, or when the API is not healthy within 10 s of a
// term's start. Here they share the process with the datastore, the API
// server and the kubelet, so such an exit is contained: a component runs
// in a goroutine of its own (runContained), and klog's exit, called from
// such a goroutine, ends that goroutine instead of the process.

// errExited is how a component ends when it called klog's exit.
var errExited = errors.New("called exit (klog.FlushAndExit or a klog fatal; its reason is the log line before); contained to this component, whose stopping goroutines may still finish")

// containedFunc is runContained's name as it appears in stacks.
var containedFunc = runtime.FuncForPC(reflect.ValueOf(runContained).Pointer()).Name()

var containExitsOnce sync.Once

// containExits makes klog's exit end the calling component's goroutine
// when that is a contained one (see contain), and the process otherwise.
// Called once per process, before components start.
func containExits(log *slog.Logger) {
	containExitsOnce.Do(func() {
		klog.OsExit = func(code int) {
			if inContained() {
				log.Error("a component called exit; ending that component only, the supervisor restarts it", "code", code)
				runtime.Goexit()
			}
			log.Error("exiting the process", "code", code)
			os.Exit(code)
		}
	})
}

// contain runs component in a goroutine of its own and returns what it
// returns, or errExited if it called klog's exit.
func contain(ctx context.Context, component func(context.Context) error) error {
	done := make(chan error, 1)
	go runContained(ctx, component, done)
	return <-done
}

func runContained(ctx context.Context, component func(context.Context) error, done chan<- error) {
	returned := false
	defer func() {
		if !returned { // runtime.Goexit from the exit hook
			done <- errExited
		}
	}()
	err := component(ctx)
	returned = true
	done <- err
}

// inContained reports whether the calling goroutine was started by
// contain: the bottom of its stack is runContained.
func inContained() bool {
	pcs := make([]uintptr, 4096)
	n := runtime.Callers(1, pcs)
	frames := runtime.CallersFrames(pcs[:n])
	for {
		f, more := frames.Next()
		if f.Function == containedFunc {
			return true
		}
		if !more {
			return false
		}
	}
}

// whileLeading runs component while this process holds the lease le
// names, and returns when ctx ends (nil) or the lease is lost
// (errLeaseLost, once component has returned). Upstream components run
// their own election and exit the process when they lose the lease; ours
// run with --leader-elect=false inside this one, which cancels them
// instead. Without le.LeaderElect, component simply runs.
//
// The holder's identity is host plus a uniquifier, as upstream's, so that
// two processes on one host never both lead; host "" is the machine's
// hostname. Cloudless's own groups pass the server's node name, so a
// Lease says which server holds it.
func whileLeading(ctx context.Context, name, host string, le componentbaseconfig.LeaderElectionConfiguration, kubeconfig string, component func(context.Context) error) error {
	if !le.LeaderElect {
		return component(ctx)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	if host == "" {
		if host, err = os.Hostname(); err != nil {
			return fmt.Errorf("leader election: %w", err)
		}
	}
	id := host + "_" + string(uuid.NewUUID())
	lock, err := resourcelock.NewFromKubeconfig(le.ResourceLock, le.ResourceNamespace, le.ResourceName,
		resourcelock.ResourceLockConfig{Identity: id}, cfg, le.RenewDeadline.Duration)
	if err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	wl := &writtenLock{Interface: lock}
	type result struct {
		err     error
		leading bool // component returned by itself, still holding the lease
	}
	done := make(chan result, 1)
	ectx, stop := context.WithCancel(ctx)
	defer stop()
	elector, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            wl,
		LeaseDuration:   le.LeaseDuration.Duration,
		RenewDeadline:   le.RenewDeadline.Duration,
		RetryPeriod:     le.RetryPeriod.Duration,
		ReleaseOnCancel: true,
		Name:            name,
		Callbacks: leaderelection.LeaderCallbacks{
			// Run in its own goroutine, with a ctx cancelled when the
			// lease is lost or ctx ends.
			OnStartedLeading: func(lctx context.Context) {
				err := contain(lctx, component)
				done <- result{err, lctx.Err() == nil}
				stop() // a component that failed gives the lease up
			},
			OnStoppedLeading: func() {},
		},
	})
	if err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	elector.Run(ectx) // returns once ctx ends, the lease is lost or component failed
	if !wl.written.Load() {
		return nil // never led: ctx ended while waiting for the lease
	}
	// We led, so component was started; its ctx is cancelled now. Wait
	// for it, so that a restart never runs beside a stopping instance.
	r := <-done
	switch {
	case ctx.Err() != nil:
		return nil
	case r.leading && r.err == nil:
		return errors.New("stopped while leading")
	case r.leading:
		return r.err
	case r.err != nil:
		return fmt.Errorf("%w (then stopped with: %v)", errLeaseLost, r.err)
	}
	return errLeaseLost
}

// writtenLock notes, synchronously, that this process wrote the lease:
// the elector only writes a lease it acquires or holds, and it starts the
// component in a goroutine it does not wait for.
type writtenLock struct {
	resourcelock.Interface
	written atomic.Bool
}

func (l *writtenLock) Create(ctx context.Context, r resourcelock.LeaderElectionRecord) error {
	err := l.Interface.Create(ctx, r)
	if err == nil {
		l.written.Store(true)
	}
	return err
}

func (l *writtenLock) Update(ctx context.Context, r resourcelock.LeaderElectionRecord) error {
	err := l.Interface.Update(ctx, r)
	if err == nil {
		l.written.Store(true)
	}
	return err
}

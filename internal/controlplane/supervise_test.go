package controlplane

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/klog/v2"
)

func TestRestarter(t *testing.T) {
	for _, tc := range []struct {
		name string
		// fails is how many runs fail before one runs until ctx ends.
		fails     int
		wantWaits []time.Duration
	}{
		{name: "runs until ctx ends", fails: 0, wantWaits: nil},
		{name: "one failure", fails: 1, wantWaits: []time.Duration{time.Second}},
		{name: "backoff doubles up to the most", fails: 4, wantWaits: []time.Duration{time.Second, 2 * time.Second, 3 * time.Second, 3 * time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			r := newRestarter(slog.New(slog.NewTextHandler(&logs, nil)))
			r.most = 3 * time.Second
			var waits []time.Duration
			r.after = func(ctx context.Context, d time.Duration) bool {
				waits = append(waits, d)
				return ctx.Err() == nil
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			runs := 0
			done := make(chan struct{})
			go func() {
				defer close(done)
				r.run(ctx, "kube-scheduler", func(ctx context.Context) error {
					runs++
					if runs <= tc.fails {
						return errLeaseLost
					}
					cancel()
					<-ctx.Done()
					return errors.New("stopped")
				})
			}()
			select {
			case <-done:
			case <-time.After(time.Minute):
				t.Fatal("run did not return after ctx ended")
			}
			if runs != tc.fails+1 {
				t.Errorf("runs = %d, want %d", runs, tc.fails+1)
			}
			if !slices.Equal(waits, tc.wantWaits) {
				t.Errorf("waits = %v, want %v", waits, tc.wantWaits)
			}
			if got := strings.Count(logs.String(), "component=kube-scheduler reason=\"lost its leader lease\""); got != tc.fails {
				t.Errorf("%d restarts logged with component and reason, want %d:\n%s", got, tc.fails, logs.String())
			}
		})
	}
}

func TestRestarterResetsBackoffAfterAHealthyRun(t *testing.T) {
	r := newRestarter(slog.New(slog.DiscardHandler))
	r.healthy = 0 // every run counts as healthy
	var waits []time.Duration
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r.after = func(ctx context.Context, d time.Duration) bool {
		waits = append(waits, d)
		if len(waits) == 3 {
			cancel()
		}
		return ctx.Err() == nil
	}
	r.run(ctx, "kube-controller-manager", func(context.Context) error { return errors.New("boom") })
	if want := []time.Duration{time.Second, time.Second, time.Second}; !slices.Equal(waits, want) {
		t.Errorf("waits = %v, want %v", waits, want)
	}
}

// TestContainedExit: a component that calls klog's exit, as
// kube-controller-manager does when its controllers stop too slowly,
// ends as errExited and is restarted; the process (this test) goes on.
func TestContainedExit(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	containExits(log)
	r := newRestarter(log)
	r.after = func(ctx context.Context, d time.Duration) bool { return ctx.Err() == nil }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runs := 0
	deferred := false
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.run(ctx, "kube-controller-manager", func(ctx context.Context) error {
			runs++
			if runs == 1 {
				defer func() { deferred = true }()
				klog.FlushAndExit(0, 1)
				t.Error("FlushAndExit returned")
			}
			cancel()
			return nil
		})
	}()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("run did not return")
	}
	if runs != 2 {
		t.Errorf("runs = %d, want 2 (the exit contained, then a restart)", runs)
	}
	if !deferred {
		t.Error("the exiting component's deferred calls did not run")
	}
	if !strings.Contains(logs.String(), "ending that component only") || !strings.Contains(logs.String(), errExited.Error()) {
		t.Errorf("log does not say the exit was contained:\n%s", logs.String())
	}
}

// TestInContained: only the goroutine contain starts counts as
// contained, so an exit elsewhere still ends the process.
func TestInContained(t *testing.T) {
	if inContained() {
		t.Error("a test goroutine is reported contained")
	}
	var got bool
	if err := contain(context.Background(), func(context.Context) error {
		ch := make(chan bool)
		go func() { ch <- inContained() }() // a goroutine it starts is not
		got = inContained() && !<-ch
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !got {
		t.Error("inContained inside contain: want true, and false in a goroutine it starts")
	}
}

// Package controllers holds the cluster-side logic the servers run
// against the Kubernetes API, written the way upstream writes
// controllers: shared informers feed a workqueue, a worker reconciles one
// key at a time from the informers' caches, failures are retried with
// backoff, and nothing polls the API.
//
// Controllers come in Groups. A group shares one informer factory and,
// when it names a Lease, one leader election: with several servers,
// exactly one runs the group's controllers at a time (the server package
// runs each elected group under its Lease, in kube-system, and restarts
// it when the lease is lost). A group without a Lease runs on every
// server, for what concerns that server alone (its own node's label).
//
// To add a controller:
//  1. write New<Thing>(env Env) (Controller, error): get the informers it
//     reads from env.Informers (before the group starts them), add event
//     handlers that put keys on a queue (newQueue), and read only from
//     listers in its reconcile function, which must be idempotent; events
//     go through env.Recorder(component);
//  2. add it to a group in the server (internal/controlplane,
//     controllers.go), or make a new group with a Lease of its own if it
//     must fail over independently;
//  3. grant its API access: the server runs controllers as cluster
//     admin today, so nothing to do there, but say what it touches in
//     README.md;
//  4. test the decision logic with table tests and fake clientsets
//     (csr_test.go), and the whole with an integration test.
package controllers

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
)

// Env is what a controller is built from.
type Env struct {
	Client    kubernetes.Interface
	Informers informers.SharedInformerFactory
	// Dynamic and DynamicInformers serve custom resources (metallb.io).
	Dynamic          dynamic.Interface
	DynamicInformers dynamicinformer.DynamicSharedInformerFactory
	Log              *slog.Logger
	// Host names the server running the controllers (its node name), in
	// the source of their events.
	Host string
}

// Recorder returns an event recorder that signs events with component.
func (env Env) Recorder(component string) record.EventRecorder {
	b := record.NewBroadcaster()
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: env.Client.CoreV1().Events("")})
	return b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: component, Host: env.Host})
}

// Controller is a built controller; Run works its queue until ctx ends.
type Controller interface {
	Run(ctx context.Context)
}

// Group is controllers that share informers and, with a Lease, a leader.
type Group struct {
	Name string
	// Lease names the group's Lease in kube-system; "" runs the group on
	// every server, unelected.
	Lease string
	// Options narrow what the group's informers list and watch.
	Options []informers.SharedInformerOption
	// Host names the server that runs the group (Env.Host).
	Host string
	New  []func(Env) (Controller, error)
}

// Run builds the group's controllers, starts its informers, and runs the
// controllers until ctx ends. It returns an error only if a controller
// cannot be built or the caches never sync.
func (g Group) Run(ctx context.Context, cs kubernetes.Interface, dyn dynamic.Interface, log *slog.Logger) error {
	f := informers.NewSharedInformerFactoryWithOptions(cs, 0, g.Options...)
	defer f.Shutdown()
	df := dynamicinformer.NewDynamicSharedInformerFactory(dyn, 0)
	defer df.Shutdown()
	env := Env{Client: cs, Informers: f, Dynamic: dyn, DynamicInformers: df, Log: log.With("controllers", g.Name), Host: g.Host}
	var ctrls []Controller
	for _, build := range g.New {
		c, err := build(env)
		if err != nil {
			return fmt.Errorf("controllers %s: %w", g.Name, err)
		}
		ctrls = append(ctrls, c)
	}
	f.Start(ctx.Done())
	df.Start(ctx.Done())
	for typ, ok := range f.WaitForCacheSync(ctx.Done()) {
		if !ok && ctx.Err() == nil {
			return fmt.Errorf("controllers %s: the %v cache did not sync", g.Name, typ)
		}
	}
	for gvr, ok := range df.WaitForCacheSync(ctx.Done()) {
		if !ok && ctx.Err() == nil {
			return fmt.Errorf("controllers %s: the %v cache did not sync", g.Name, gvr)
		}
	}
	var wg sync.WaitGroup
	for _, c := range ctrls {
		wg.Go(func() { c.Run(ctx) })
	}
	wg.Wait()
	return nil
}

// queue is one controller's workqueue: keys added by event handlers,
// reconciled one at a time, failures retried with per-key backoff
// (5 ms doubling to 5 min, upstream's default) and logged.
type queue struct {
	name      string
	q         workqueue.TypedRateLimitingInterface[string]
	reconcile func(ctx context.Context, key string) error
	log       *slog.Logger
}

func newQueue(name string, log *slog.Logger, reconcile func(ctx context.Context, key string) error) *queue {
	return &queue{
		name: name,
		q: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: name}),
		reconcile: reconcile,
		log:       log.With("controller", name),
	}
}

func (q *queue) add(key string) { q.q.Add(key) }

// handler enqueues keyOf(obj) for every add, update and delete for
// which keyOf returns a key ("" skips the object).
func (q *queue) handler(keyOf func(obj any) string) cache.ResourceEventHandler {
	enqueue := func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if k := keyOf(obj); k != "" {
			q.add(k)
		}
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: enqueue,
	}
}

// Run works the queue until ctx ends.
func (q *queue) Run(ctx context.Context) {
	go func() {
		<-ctx.Done()
		q.q.ShutDown()
	}()
	for {
		key, quit := q.q.Get()
		if quit {
			return
		}
		start := time.Now()
		err := q.reconcile(ctx, key)
		switch {
		case err == nil:
			q.q.Forget(key)
		case ctx.Err() != nil:
		default:
			q.log.Warn("reconcile failed; retrying with backoff", "key", key, "err", err, "retries", q.q.NumRequeues(key), "took", time.Since(start))
			q.q.AddRateLimited(key)
		}
		q.q.Done(key)
	}
}

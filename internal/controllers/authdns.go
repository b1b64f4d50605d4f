package controllers

// The authoritative DNS controllers (internal/dns): every server builds
// the zones from the same informers; the elected writer gives each
// zone's content a serial, recorded with the content's hash in
// kube-system/cloudless-dns-serials; every server serves a zone under
// that serial once its own build has the same hash, and until then the
// version it served before. So replicas answer alike, and a serial only
// grows: across changes, restarts, replicas and leader changes.

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/cloudless-dev/cloudless/internal/dns"
	"github.com/cloudless-dev/cloudless/internal/dns/zone"
)

// dnsSources are the listers both controllers build from.
type dnsSources struct {
	zones    corelisters.ConfigMapLister // kube-system, labelled dns.ZoneLabel (the serials too)
	services corelisters.ServiceLister
	builder  *dns.Builder
}

const dnsKey = "zones"

func newDNSSources(env Env, q *queue) (*dnsSources, error) {
	cmInf := env.Informers.InformerFor(&corev1.ConfigMap{}, func(c kubernetes.Interface, resync time.Duration) cache.SharedIndexInformer {
		return coreinformers.NewFilteredConfigMapInformer(c, metav1.NamespaceSystem, resync, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc},
			func(o *metav1.ListOptions) { o.LabelSelector = dns.ZoneLabel })
	})
	svcInf := env.Informers.Core().V1().Services()
	all := q.handler(func(any) string { return dnsKey })
	if _, err := cmInf.AddEventHandler(all); err != nil {
		return nil, err
	}
	// Every Service change: one that stops being a LoadBalancer, or loses
	// its annotation, must take its records away. The one key coalesces
	// bursts into one build.
	if _, err := svcInf.Informer().AddEventHandler(all); err != nil {
		return nil, err
	}
	return &dnsSources{zones: corelisters.NewConfigMapLister(cmInf.GetIndexer()), services: svcInf.Lister(), builder: dns.NewBuilder()}, nil
}

func (s *dnsSources) build() (map[string]*zone.Zone, []zone.Problem, map[string]dns.Record, *corev1.ConfigMap, error) {
	cms, err := s.zones.ConfigMaps(metav1.NamespaceSystem).List(labels.Everything())
	if err != nil {
		return nil, nil, nil, nil, err
	}
	svcs, err := s.services.List(labels.Everything())
	if err != nil {
		return nil, nil, nil, nil, err
	}
	zones, problems := s.builder.Build(cms, svcs)
	serials, err := s.zones.ConfigMaps(metav1.NamespaceSystem).Get(dns.SerialsConfigMap)
	if apierrors.IsNotFound(err) {
		serials, err = nil, nil
	}
	return zones, problems, dns.Recorded(serials), serials, err
}

type dnsServe struct {
	*queue
	src    *dnsSources
	server *dns.Server
}

// NewDNSServe builds the controller that hands srv the zones to serve,
// each under its recorded serial. It runs on every server.
func NewDNSServe(srv *dns.Server) func(Env) (Controller, error) {
	return func(env Env) (Controller, error) {
		c := &dnsServe{server: srv}
		c.queue = newQueue("dns-serve", env.Log, c.reconcile)
		src, err := newDNSSources(env, c.queue)
		if err != nil {
			return nil, err
		}
		c.src = src
		return c, nil
	}
}

func (c *dnsServe) reconcile(ctx context.Context, _ string) error {
	zones, _, rec, _, err := c.src.build()
	if err != nil {
		return err
	}
	prev := c.server.Zones()
	served := map[string]dns.Served{}
	for origin, z := range zones {
		if r, ok := rec[origin]; ok && r.Hash == z.Hash {
			served[origin] = dns.Served{Zone: z, Serial: r.Serial}
		} else if p, ok := prev[origin]; ok {
			served[origin] = p // the writer has not recorded this content yet
		}
	}
	if !maps.EqualFunc(served, prev, func(a, b dns.Served) bool { return a.Serial == b.Serial && a.Zone.Hash == b.Zone.Hash }) {
		c.log.Info("authoritative DNS zones", "zones", describe(served))
	}
	c.server.Set(served)
	for origin, sv := range served {
		if p, ok := prev[origin]; !ok || p.Serial != sv.Serial {
			c.server.Notified(sv)
		}
	}
	return nil
}

func describe(zones map[string]dns.Served) string {
	var parts []string
	for _, o := range dns.Origins(zones) {
		parts = append(parts, fmt.Sprintf("%s serial %d (%d records)", o, zones[o].Serial, len(zones[o].Zone.Records)))
	}
	return strings.Join(parts, ", ")
}

type dnsSerials struct {
	*queue
	src      *dnsSources
	client   kubernetes.Interface
	recorder record.EventRecorder
	reported map[string]bool // events already sent this term
}

// NewDNSSerials builds the elected writer: it records a new serial for
// each zone whose content changed, and reports problems as events on the
// objects that caused them.
func NewDNSSerials(env Env) (Controller, error) {
	c := &dnsSerials{client: env.Client, recorder: env.Recorder(dns.Component), reported: map[string]bool{}}
	c.queue = newQueue("dns-serials", env.Log, c.reconcile)
	src, err := newDNSSources(env, c.queue)
	if err != nil {
		return nil, err
	}
	c.src = src
	return c, nil
}

func (c *dnsSerials) reconcile(ctx context.Context, _ string) error {
	zones, problems, rec, cur, err := c.src.build()
	if err != nil {
		return err
	}
	c.report(problems)
	data := map[string]string{}
	if cur != nil {
		maps.Copy(data, cur.Data)
	}
	changed := false
	for origin, z := range zones {
		r := rec[origin]
		if r.Hash == z.Hash {
			continue
		}
		next := dns.Record{Serial: zone.NextSerial(r.Serial, z.SOA.Serial), Hash: z.Hash}
		data[dns.OriginKey(origin)] = next.String()
		changed = true
		c.log.Info("zone changed", "zone", origin, "serial", next.Serial)
	}
	if !changed {
		return nil
	}
	// Records of deleted zones stay, so that a zone declared again
	// continues above its old serial.
	if cur == nil {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: dns.SerialsConfigMap, Namespace: metav1.NamespaceSystem,
			Labels: map[string]string{dns.ZoneLabel: "serials"}}, Data: data}
		_, err = c.client.CoreV1().ConfigMaps(metav1.NamespaceSystem).Create(ctx, cm, metav1.CreateOptions{})
	} else {
		cm := cur.DeepCopy()
		cm.Data = data
		// Update with the cached resourceVersion: a conflict means
		// another writer moved first; retry from the fresh cache.
		_, err = c.client.CoreV1().ConfigMaps(metav1.NamespaceSystem).Update(ctx, cm, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("record zone serials: %w", err)
	}
	return nil
}

// report sends an event for each problem not reported yet this term.
func (c *dnsSerials) report(problems []zone.Problem) {
	for _, p := range problems {
		key := p.Ref + "\x00" + p.Reason + "\x00" + p.Message
		if c.reported[key] {
			continue
		}
		obj := c.object(p.Ref)
		if obj == nil {
			continue
		}
		if len(c.reported) > 10000 {
			c.reported = map[string]bool{}
		}
		c.reported[key] = true
		c.recorder.Event(obj, corev1.EventTypeWarning, p.Reason, p.Message)
	}
}

func (c *dnsSerials) object(ref string) runtime.Object {
	kind, nsName, _ := strings.Cut(ref, " ")
	ns, name, _ := strings.Cut(nsName, "/")
	switch kind {
	case "Service":
		if s, err := c.src.services.Services(ns).Get(name); err == nil {
			return s
		}
	case "ConfigMap":
		if cm, err := c.src.zones.ConfigMaps(ns).Get(name); err == nil {
			return cm
		}
	}
	return nil
}

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

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/record"

	"github.com/cloudless-dev/cloudless/internal/dns"
	"github.com/cloudless-dev/cloudless/internal/dns/zone"
	corev1apply "k8s.io/client-go/applyconfigurations/core/v1"
	coreinformers "k8s.io/client-go/informers/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"time"
)

type dnsServe struct {
	*queue
	src     *dnsSources
	server  *dns.Server
	secrets corelisters.SecretLister // kube-system/cloudless-dns-tsig only
	keyErr  string                   // the TSIG Secret's problem last logged
	client  kubernetes.Interface
	replica dns.Replica
	listed  bool // replica is in the replicas ConfigMap
}

// NewDNSServe builds the controller that hands srv the zones to serve,
// each under its recorded serial, and lists this server, replica, in
// the replicas ConfigMap. It runs on every server.
func NewDNSServe(srv *dns.Server, replica dns.Replica) func(Env) (Controller, error) {
	return func(env Env) (Controller, error) {
		c := &dnsServe{server: srv, client: env.Client, replica: replica}
		c.queue = newQueue("dns-serve", env.Log, c.reconcile)
		src, err := newDNSSources(env, c.queue)
		if err != nil {
			return nil, err
		}
		c.src = src
		inf := env.Informers.InformerFor(&corev1.Secret{}, func(cs kubernetes.Interface, resync time.Duration) cache.SharedIndexInformer {
			return coreinformers.NewFilteredSecretInformer(cs, metav1.NamespaceSystem, resync, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc},
				func(o *metav1.ListOptions) { o.FieldSelector = "metadata.name=" + dns.TSIGSecret })
		})
		if _, err := inf.AddEventHandler(c.handler(func(any) string { return dnsKey })); err != nil {
			return nil, err
		}
		c.secrets = corelisters.NewSecretLister(inf.GetIndexer())
		return c, nil
	}
}

// tsig hands the server the TSIG key; without a valid one, transfers
// are refused (and said so once per problem).
func (c *dnsServe) tsig() {
	var key *dns.TSIGKey
	sec, err := c.secrets.Secrets(metav1.NamespaceSystem).Get(dns.TSIGSecret)
	if err == nil {
		var k dns.TSIGKey
		if k, err = dns.TSIGKeyOf(sec); err == nil {
			key = &k
		}
	}
	c.server.SetTSIG(key)
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	if msg != c.keyErr && msg != "" {
		c.log.Warn("no valid TSIG key: zone transfers are refused until kube-system/"+dns.TSIGSecret+" holds one", "err", msg)
	}
	c.keyErr = msg
}

func (c *dnsServe) reconcile(ctx context.Context, _ string) error {
	c.tsig()
	if !c.listed {
		// This server's key only (its own field manager), so servers
		// never overwrite each other's.
		cm := corev1apply.ConfigMap(dns.ReplicasConfigMap, metav1.NamespaceSystem).WithData(map[string]string{c.replica.Name: c.replica.Addr})
		if _, err := c.client.CoreV1().ConfigMaps(metav1.NamespaceSystem).Apply(ctx, cm, metav1.ApplyOptions{FieldManager: dns.Component + "/" + c.replica.Name, Force: true}); err != nil {
			return fmt.Errorf("list this server in %s: %w", dns.ReplicasConfigMap, err)
		}
		c.listed = true
	}
	zones, _, rec, _, err := c.src.build(ctx)
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
	zones, problems, rec, cur, err := c.src.build(ctx)
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
	case "Ingress":
		if ing, err := c.src.ingresses.Ingresses(ns).Get(name); err == nil {
			return ing
		}
	default:
		return c.src.customObject(kind, ns, name)
	}
	return nil
}

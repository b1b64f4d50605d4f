// Package l2 announces LoadBalancer addresses on the LAN from each node:
// it answers ARP for the addresses this node was chosen for
// (lb.Announcer, from the same facts on every node), on the interfaces
// the L2Advertisements allow, and sends gratuitous ARP when it takes an
// address over and periodically after. The address is never added to an
// interface: kube-proxy carries the traffic that arrives for it.
//
// It reads through informers, so it keeps announcing from its cache
// while the API server is unreachable.
package speaker

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/cloudless-dev/cloudless/internal/lb"
	"github.com/cloudless-dev/cloudless/internal/lb/bgp"
)

// DefaultRefresh is how often announced addresses are re-sent as
// gratuitous ARP, so that switches whose MAC tables age out keep
// forwarding to this node.
const DefaultRefresh = 30 * time.Second

// MemberlistSecret (in kube-system, key MemberlistKey) holds the key
// that encrypts the speakers' gossip; the server creates it and lets
// nodes read it.
const (
	MemberlistSecret = "cloudless-memberlist"
	MemberlistKey    = "key"
)

// Speaker is one node's announcer.
type Speaker struct {
	Node    string
	NodeIP  string // where its memberlist listens
	Refresh time.Duration
	// Detection is Fast (default) or Tolerant.
	Detection string
	Log       *slog.Logger
}

// memberlistKey reads the gossip key, waiting up to a minute for the
// server to create it.
func memberlistKey(ctx context.Context, cs kubernetes.Interface) ([]byte, error) {
	var key []byte
	err := wait.PollUntilContextTimeout(ctx, time.Second, time.Minute, true, func(ctx context.Context) (bool, error) {
		s, err := cs.CoreV1().Secrets(metav1.NamespaceSystem).Get(ctx, MemberlistSecret, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		key = s.Data[MemberlistKey]
		return len(key) == 32, nil
	})
	if err != nil {
		return nil, fmt.Errorf("read Secret %s/%s: %w", metav1.NamespaceSystem, MemberlistSecret, err)
	}
	return key, nil
}

// Run announces until ctx ends.
func (s *Speaker) Run(ctx context.Context, rc *rest.Config) error {
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return err
	}
	f := informers.NewSharedInformerFactory(cs, 0)
	df := dynamicinformer.NewFilteredDynamicSharedInformerFactory(dyn, 0, lb.Namespace, nil)
	svcs := f.Core().V1().Services()
	nodes := f.Core().V1().Nodes()
	slicesInf := f.Discovery().V1().EndpointSlices()
	ads := df.ForResource(lb.GVR("L2Advertisement"))
	pools := df.ForResource(lb.GVR("IPAddressPool"))
	bgpPeers := df.ForResource(lb.GVR("BGPPeer"))
	bgpAds := df.ForResource(lb.GVR("BGPAdvertisement"))
	communities := df.ForResource(lb.GVR("Community"))
	// BGP passwords, from Secrets in metallb-system only.
	sf := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(lb.Namespace))
	secrets := sf.Core().V1().Secrets()
	kick := make(chan struct{}, 1)
	poke := func(any) {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	h := cache.ResourceEventHandlerFuncs{AddFunc: poke, UpdateFunc: func(_, o any) { poke(o) }, DeleteFunc: poke}
	for _, inf := range []cache.SharedIndexInformer{svcs.Informer(), nodes.Informer(), slicesInf.Informer(), ads.Informer(), pools.Informer(),
		bgpPeers.Informer(), bgpAds.Informer(), communities.Informer(), secrets.Informer()} {
		if _, err := inf.AddEventHandler(h); err != nil {
			return err
		}
	}
	b := record.NewBroadcaster()
	defer b.Shutdown()
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events("")})
	events := b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: lb.SpeakerComponent, Host: s.Node})
	f.Start(ctx.Done())
	df.Start(ctx.Done())
	sf.Start(ctx.Done())
	defer f.Shutdown()
	defer df.Shutdown()
	defer sf.Shutdown()
	f.WaitForCacheSync(ctx.Done())
	df.WaitForCacheSync(ctx.Done())
	sf.WaitForCacheSync(ctx.Done())
	refresh := s.Refresh
	if refresh == 0 {
		refresh = DefaultRefresh
	}
	resp := newResponder(s.Log, refresh)
	defer resp.close()
	st := state{node: s.Node, svcs: svcs.Lister(), nodes: nodes.Lister(), slices: slicesInf.Lister(), ads: ads.Lister(), pools: pools.Lister(),
		bgpPeers: bgpPeers.Lister(), bgpAds: bgpAds.Lister(), communities: communities.Lister(), secrets: secrets.Lister().Secrets(lb.Namespace)}
	// Close ends the BGP sessions with a Cease, so routers withdraw this
	// node's routes at once when the agent stops.
	routes := &bgp.Speaker{NodeIP: s.NodeIP, Log: s.Log.With("part", "bgp")}
	defer routes.Close()
	// Gossip with the other speakers for fast failure detection; without
	// it (no key, port taken), the Nodes' Ready condition alone decides.
	if key, err := memberlistKey(ctx, cs); err != nil {
		s.Log.Warn("no fast failure detection: a dead node's addresses move only when its Node is NotReady", "err", err)
	} else if m, err := startMembers(s.Node, s.NodeIP, MemberlistPort, key, s.Detection, func() { poke(nil) }, s.Log.With("part", "memberlist")); err != nil {
		s.Log.Warn("no fast failure detection: a dead node's addresses move only when its Node is NotReady", "err", err)
	} else {
		st.members = m
		defer m.stop()
	}
	rejoin := time.NewTicker(5 * time.Second)
	defer rejoin.Stop()
	// Events expire (an hour by default): say again, now and then, who
	// announces, so that lb status never goes blank while nothing changes.
	resay := time.NewTicker(ResayInterval)
	defer resay.Stop()
	was := map[string]string{}             // Service key and reason -> what this node said it announces
	wasObj := map[string]*corev1.Service{} // the same keys -> the Service
	reported := map[string]string{}        // kind/name -> the problem last reported
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-kick:
		case <-rejoin.C:
			st.join()
			continue
		case <-resay.C:
			clear(was)
			clear(wasObj)
		}
		st.join()
		pools := st.poolLabels() // one read for L2 and BGP
		want, bySvc := st.desired(s.Log, pools)
		on := resp.set(ctx, want)
		plan := st.bgpPlan(s.Log, pools)
		routes.Set(ctx, plan.peers, plan.routes)
		// An event when this node starts announcing a Service's addresses.
		now := map[string]bool{}
		say := func(key, reason string, obj *corev1.Service, msg string) {
			now[key+"/"+reason] = true
			if was[key+"/"+reason] != msg {
				events.Event(obj, corev1.EventTypeNormal, reason, msg)
			}
			was[key+"/"+reason] = msg
			wasObj[key+"/"+reason] = obj
		}
		for key, svc := range bySvc {
			var parts []string
			for _, ip := range svc.ips {
				parts = append(parts, ip.String()+" on "+orNone(on[ip]))
			}
			say(key, lb.ReasonAnnouncingL2, svc.obj, fmt.Sprintf("%s announces %s by ARP", s.Node, strings.Join(parts, ", ")))
		}
		for key, a := range plan.bySvc {
			say(key, lb.ReasonAnnouncingBGP, a.obj, fmt.Sprintf("%s advertises %s to BGP peers %s", s.Node, strings.Join(a.prefixes, ", "), strings.Join(a.peers, ", ")))
		}
		for key := range was {
			if now[key] {
				continue
			}
			// BGP is advertised by several nodes at once; saying when one
			// stops lets lb status list the current ones.
			if strings.HasSuffix(key, "/"+lb.ReasonAnnouncingBGP) {
				events.Eventf(wasObj[key], corev1.EventTypeNormal, lb.ReasonWithdrawnBGP, "%s withdrew its BGP routes", s.Node)
			}
			delete(was, key)
			delete(wasObj, key)
		}
		st.report(events, plan.problems, reported)
	}
}

// ResayInterval is how often a speaker repeats who announces what (the
// event is aggregated: its count and last time change), well within the
// API server's default event TTL of an hour.
const ResayInterval = 20 * time.Minute

// orNone lists interfaces, or says there is none.
func orNone(ifaces []string) string {
	if len(ifaces) == 0 {
		return "no usable interface"
	}
	return strings.Join(ifaces, ", ")
}

// ReasonInvalid is the Warning event's reason on a BGPPeer or
// BGPAdvertisement this node cannot use.
const ReasonInvalid = "InvalidConfiguration"

// report sends a Warning event for each new problem, once per node.
func (st *state) report(events record.EventRecorder, problems []problem, reported map[string]string) {
	for _, p := range problems {
		k := p.kind + "/" + p.name
		if reported[k] == p.msg {
			continue
		}
		reported[k] = p.msg
		var lister cache.GenericLister = st.bgpPeers
		if p.kind == "BGPAdvertisement" {
			lister = st.bgpAds
		}
		if obj, err := lister.Get(lb.Namespace + "/" + p.name); err == nil {
			events.Eventf(obj, corev1.EventTypeWarning, ReasonInvalid, "%s %s is not used by node %s: %s", p.kind, p.name, st.node, p.msg)
		}
	}
}

// decodeAll decodes every object of a metallb.io lister; a malformed one
// is logged and skipped, never stopping the others.
func decodeAll[T any](l cache.GenericLister, log *slog.Logger) []T {
	objs, _ := l.List(labels.Everything())
	out := make([]T, 0, len(objs))
	for _, o := range objs {
		u, ok := o.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		var v T
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &v); err != nil {
			log.Warn("ignored: malformed", "kind", u.GetKind(), "name", u.GetName(), "err", err)
			continue
		}
		out = append(out, v)
	}
	return out
}

// poolLabels are the IPAddressPools' labels, by name, for the
// advertisements' pool selectors (L2 and BGP alike).
func (st *state) poolLabels() map[string]map[string]string {
	out := map[string]map[string]string{}
	objs, _ := st.pools.List(labels.Everything())
	for _, o := range objs {
		if u, ok := o.(*unstructured.Unstructured); ok {
			out[u.GetName()] = u.GetLabels()
		}
	}
	return out
}

// bgpPlan reads the BGP inputs from the caches and plans.
func (st *state) bgpPlan(log *slog.Logger, poolLabels map[string]map[string]string) bgpPlan {
	in := bgpInput{communities: map[string]string{}, poolLabels: poolLabels, endpointNodes: st.readyEndpointNodes}
	in.node, _ = st.nodes.Get(st.node)
	in.peers = decodeAll[lb.BGPPeer](st.bgpPeers, log)
	in.ads = decodeAll[lb.BGPAdvertisement](st.bgpAds, log)
	for _, c := range decodeAll[lb.Community](st.communities, log) {
		for _, a := range c.Spec.Communities {
			in.communities[a.Name] = a.Value
		}
	}
	in.svcs, _ = st.svcs.List(labels.Everything())
	in.secret = func(name string) (string, error) {
		sec, err := st.secrets.Get(name)
		if err != nil {
			return "", fmt.Errorf("spec.passwordSecret %s/%s: %w", lb.Namespace, name, err)
		}
		pw, ok := sec.Data[PasswordKey]
		if !ok {
			return "", fmt.Errorf("spec.passwordSecret %s/%s has no key %q (want a Secret of type kubernetes.io/basic-auth)", lb.Namespace, name, PasswordKey)
		}
		return string(pw), nil
	}
	return planBGP(in)
}

type state struct {
	node             string
	svcs             corelisters.ServiceLister
	nodes            corelisters.NodeLister
	slices           discoverylisters.EndpointSliceLister
	ads, pools       cache.GenericLister
	bgpPeers, bgpAds cache.GenericLister
	communities      cache.GenericLister
	secrets          corelisters.SecretNamespaceLister
	members          *members // nil: no gossip
	lastJoin         time.Time
}

// join asks memberlist to contact the nodes it does not see alive, at
// most every 2 s.
func (st *state) join() {
	if st.members == nil || time.Since(st.lastJoin) < 2*time.Second {
		return
	}
	nodes, _ := st.nodes.List(labels.Everything())
	if st.members.count() >= len(nodes) {
		return
	}
	var addrs []string
	for _, n := range nodes {
		if alive, _ := st.members.known(n.Name); alive || n.Name == st.node {
			continue
		}
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				addrs = append(addrs, net.JoinHostPort(a.Address, strconv.Itoa(MemberlistPort)))
				break
			}
		}
	}
	st.lastJoin = time.Now()
	st.members.join(addrs)
}

// candidate: the node may announce. Its speaker's liveness, when the
// gossip has judged it, wins over its Ready condition: a node cut off
// from the API server only (NotReady after the grace period, but
// alive) keeps its addresses, so that it, announcing from its cache,
// and the others, seeing it NotReady, never both announce one address.
func (st *state) candidate(n *corev1.Node) bool {
	if lb.NodeExcluded(n) {
		return false
	}
	if st.members != nil {
		if alive, judged := st.members.known(n.Name); judged {
			return alive
		}
	}
	return lb.NodeReady(n)
}

type announced struct {
	obj *corev1.Service
	ips []netip.Addr
}

// desired computes what this node announces: address -> interfaces.
func (st *state) desired(log *slog.Logger, poolLabels map[string]map[string]string) (map[netip.Addr][]string, map[string]announced) {
	want := map[netip.Addr][]string{}
	bySvc := map[string]announced{}
	var ads []lb.L2AdvertisementSpec
	for _, a := range decodeAll[lb.L2Advertisement](st.ads, log) {
		ads = append(ads, a.Spec)
	}
	nodes, _ := st.nodes.List(labels.Everything())
	svcs, _ := st.svcs.List(labels.Everything())
	for _, svc := range svcs {
		pool := svc.Annotations[lb.AnnotationPrefix+lb.AllocatedFromPool]
		if svc.Spec.Type != corev1.ServiceTypeLoadBalancer || pool == "" || len(svc.Status.LoadBalancer.Ingress) == 0 {
			continue
		}
		var mine []lb.L2AdvertisementSpec
		for _, a := range ads {
			if a.AdvertisesPool(pool, poolLabels[pool]) {
				mine = append(mine, a)
			}
		}
		if len(mine) == 0 {
			continue // no L2Advertisement covers its pool
		}
		local := svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal
		var withEndpoints map[string]bool
		if local {
			withEndpoints = st.readyEndpointNodes(svc)
		}
		var candidates []string
		var ifaces []string
		for _, n := range nodes {
			if !st.candidate(n) || local && !withEndpoints[n.Name] {
				continue
			}
			allowed := false
			for _, a := range mine {
				if lb.SelectedBy(a.NodeSelectors, n.Labels) {
					allowed = true
					if n.Name == st.node {
						ifaces = append(ifaces, a.Interfaces...)
					}
				}
			}
			if allowed {
				candidates = append(candidates, n.Name)
			}
		}
		slices.Sort(ifaces)
		ifaces = slices.Compact(ifaces)
		key := svc.Namespace + "/" + svc.Name
		for _, in := range svc.Status.LoadBalancer.Ingress {
			ip, err := netip.ParseAddr(in.IP)
			if err != nil || lb.Announcer(ip, candidates) != st.node {
				continue
			}
			want[ip] = append(want[ip], ifaces...)
			a := bySvc[key]
			a.obj, a.ips = svc, append(a.ips, ip)
			bySvc[key] = a
		}
	}
	return want, bySvc
}

// readyEndpointNodes are the nodes with a ready endpoint of svc.
func (st *state) readyEndpointNodes(svc *corev1.Service) map[string]bool {
	out := map[string]bool{}
	sel := labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: svc.Name})
	all, _ := st.slices.EndpointSlices(svc.Namespace).List(sel)
	for _, es := range all {
		for _, ep := range es.Endpoints {
			if ep.NodeName != nil && (ep.Conditions.Ready == nil || *ep.Conditions.Ready) {
				out[*ep.NodeName] = true
			}
		}
	}
	return out
}

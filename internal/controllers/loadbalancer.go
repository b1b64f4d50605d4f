package controllers

// The load-balancer allocator gives LoadBalancer Services an address from
// the IPAddressPools in metallb-system (internal/lb decides; this file
// reads the API and writes the result): status.loadBalancer.ingress, the
// annotation metallb.io/ip-allocated-from-pool, a condition saying
// whether and why not, and events. One allocator per cluster: it runs in
// an elected group, and rebuilds its state from the Services' status when
// it starts leading, so no address is handed out twice across a takeover.

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"

	"github.com/cloudless-dev/cloudless/internal/lb"
)

// LBComponent is the source of the allocator's events.
const LBComponent = "cloudless-lb"

// PoolGVR is the IPAddressPool resource.
var PoolGVR = lb.GVR("IPAddressPool")

type lbAllocator struct {
	*queue
	client     kubernetes.Interface
	services   corelisters.ServiceLister
	namespaces corelisters.NamespaceLister
	nodes      corelisters.NodeLister
	pools      cache.GenericLister
	reserved   []lb.Reserved
	events     record.EventRecorder

	ads        []cache.GenericLister // L2Advertisements, BGPAdvertisements
	alloc      *lb.Allocator
	restored   bool
	poolErrors map[string]string // pool name -> last refusal reported (one worker: no lock)
	adErrors   map[string]string // kind/name of an advertisement -> last problem reported
}

// advertisementKinds are checked for the pools they name.
var advertisementKinds = []string{"L2Advertisement", "BGPAdvertisement"}

// ReasonUnknownPool is the event on an advertisement naming a pool that
// does not exist.
const ReasonUnknownPool = "UnknownPool"

// NewLBAllocator returns the constructor of the allocator; reserved are
// the ranges no pool may overlap besides node addresses (the cluster and
// Service CIDRs).
func NewLBAllocator(reserved []lb.Reserved) func(Env) (Controller, error) {
	return func(env Env) (Controller, error) {
		svcInf := env.Informers.Core().V1().Services()
		nsInf := env.Informers.Core().V1().Namespaces()
		nodeInf := env.Informers.Core().V1().Nodes()
		poolInf := env.DynamicInformers.ForResource(PoolGVR)
		c := &lbAllocator{
			client: env.Client, services: svcInf.Lister(), namespaces: nsInf.Lister(), nodes: nodeInf.Lister(),
			pools: poolInf.Lister(), reserved: reserved, alloc: lb.NewAllocator(), poolErrors: map[string]string{}, adErrors: map[string]string{},
		}
		c.queue = newQueue("lb-allocator", env.Log, c.reconcile)
		c.events = env.Recorder(LBComponent)
		svcKey := func(obj any) string {
			s, ok := obj.(*corev1.Service)
			if !ok {
				return ""
			}
			k, _ := cache.MetaNamespaceKeyFunc(s)
			return k
		}
		// A pool change: check the pools (reporting bad ones even with
		// no LoadBalancer Service yet), and revisit every LB Service.
		everyLB := func(any) string { c.enqueueAll(""); return poolsKey }
		inNamespace := func(obj any) string {
			if ns, ok := obj.(*corev1.Namespace); ok {
				c.enqueueAll(ns.Name)
			}
			return ""
		}
		for _, h := range []struct {
			inf cache.SharedIndexInformer
			key func(any) string
		}{{svcInf.Informer(), svcKey}, {nsInf.Informer(), inNamespace}, {poolInf.Informer(), everyLB}} {
			if _, err := h.inf.AddEventHandler(c.handler(h.key)); err != nil {
				return nil, err
			}
		}
		// Advertisements are only checked for the pools they name.
		for _, kind := range advertisementKinds {
			inf := env.DynamicInformers.ForResource(lb.GVR(kind))
			c.ads = append(c.ads, inf.Lister())
			if _, err := inf.Informer().AddEventHandler(c.handler(func(any) string { return poolsKey })); err != nil {
				return nil, err
			}
		}
		// Nodes only matter for their addresses (no pool may hold one):
		// heartbeats do not enqueue anything.
		if _, err := nodeInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { c.enqueueAll("") },
			DeleteFunc: func(any) { c.enqueueAll("") },
			UpdateFunc: func(old, cur any) {
				if o, n := old.(*corev1.Node), cur.(*corev1.Node); !equality.Semantic.DeepEqual(o.Status.Addresses, n.Status.Addresses) {
					c.enqueueAll("")
				}
			},
		}); err != nil {
			return nil, err
		}
		return c, nil
	}
}

// enqueueAll enqueues every LoadBalancer Service (in ns, or all if "").
func (c *lbAllocator) enqueueAll(ns string) {
	svcs, _ := c.services.Services(ns).List(labels.Everything())
	for _, s := range svcs {
		if s.Spec.Type == corev1.ServiceTypeLoadBalancer {
			k, _ := cache.MetaNamespaceKeyFunc(s)
			c.add(k)
		}
	}
}

// poolsKey is the queue key that re-checks the pools alone (a Service
// key always has a namespace).
const poolsKey = "/pools"

func (c *lbAllocator) reconcile(ctx context.Context, key string) error {
	if key == poolsKey {
		c.alloc.SetPools(c.validPools())
		c.checkAdvertisements()
		return nil
	}
	if !c.restored {
		c.restore()
		c.restored = true
	}
	ns, name, _ := cache.SplitMetaNamespaceKey(key)
	svc, err := c.services.Services(ns).Get(name)
	if apierrors.IsNotFound(err) {
		c.release(key)
		return nil
	}
	if err != nil {
		return err
	}
	if !wantsLB(svc) {
		c.release(key)
		return c.clear(ctx, svc)
	}
	// Pools are parsed for LoadBalancer Services only: every other
	// Service's event ends above.
	c.alloc.SetPools(c.validPools())
	req, deprecated, refusal := c.request(svc)
	var as lb.Assignment
	if refusal == nil {
		as, refusal = c.alloc.Allocate(req)
	}
	for _, d := range deprecated {
		c.events.Eventf(svc, corev1.EventTypeWarning, lb.ReasonDeprecated, "annotation %s%s is deprecated: rename it %s%s", lb.DeprecatedPrefix, d, lb.AnnotationPrefix, d)
	}
	return c.write(ctx, svc, as, refusal)
}

// release frees key's addresses; Services waiting for one try again.
func (c *lbAllocator) release(key string) {
	if c.alloc.Release(key) {
		c.enqueueAll("")
	}
}

// wantsLB: a LoadBalancer Service of no other load-balancer class.
func wantsLB(s *corev1.Service) bool {
	return s.Spec.Type == corev1.ServiceTypeLoadBalancer && s.Spec.LoadBalancerClass == nil
}

// request reads what the Service asks for.
func (c *lbAllocator) request(s *corev1.Service) (lb.Service, []string, *lb.Refusal) {
	key, _ := cache.MetaNamespaceKeyFunc(s)
	r := lb.Service{Key: key, Namespace: s.Namespace, Labels: s.Labels, Local: s.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal, Selector: s.Spec.Selector}
	if ns, err := c.namespaces.Get(s.Namespace); err == nil {
		r.NSLabels = ns.Labels
	}
	for _, f := range s.Spec.IPFamilies {
		r.IPv6 = append(r.IPv6, f == corev1.IPv6Protocol)
	}
	if len(r.IPv6) == 0 {
		r.IPv6 = []bool{false}
	}
	for _, p := range s.Spec.Ports {
		r.Ports = append(r.Ports, lb.Port{Protocol: string(p.Protocol), Port: p.Port})
	}
	var deprecated []string
	get := func(name string) string {
		v, key := lb.Annotation(s.Annotations, name)
		if key == lb.DeprecatedPrefix+name {
			deprecated = append(deprecated, name)
		}
		return strings.TrimSpace(v)
	}
	r.Pool = get(lb.AddressPool)
	r.SharingKey = get(lb.AllowSharedIP)
	want := get(lb.LoadBalancerIPs)
	if want == "" {
		want = s.Spec.LoadBalancerIP
	}
	if want != "" {
		r.IPv6 = nil
		for _, w := range strings.Split(want, ",") {
			ip, err := netip.ParseAddr(strings.TrimSpace(w))
			if err != nil {
				return r, deprecated, &lb.Refusal{Reason: lb.ReasonInvalid, Message: fmt.Sprintf("%q asked for in %s%s or spec.loadBalancerIP is not an IP address: give addresses separated by commas", w, lb.AnnotationPrefix, lb.LoadBalancerIPs)}
			}
			if fam := family(ip); len(s.Spec.IPFamilies) > 0 && !slices.Contains(s.Spec.IPFamilies, fam) {
				return r, deprecated, &lb.Refusal{Reason: lb.ReasonInvalid, Message: fmt.Sprintf("%s is an %s address but the Service's spec.ipFamilies is %v: ask for an address of its family, or set spec.ipFamilies (and ipFamilyPolicy) to include %s", ip, fam, s.Spec.IPFamilies, fam)}
			}
			r.Want = append(r.Want, ip)
			r.IPv6 = append(r.IPv6, ip.Is6())
		}
	}
	return r, deprecated, nil
}

func family(ip netip.Addr) corev1.IPFamily {
	if ip.Is4() {
		return corev1.IPv4Protocol
	}
	return corev1.IPv6Protocol
}

// validPools parses and checks the pools; each refused one gets a
// Warning event once per distinct reason.
func (c *lbAllocator) validPools() []*lb.Pool {
	objs, _ := c.pools.ByNamespace(lb.Namespace).List(labels.Everything())
	var pools []*lb.Pool
	refused := map[string]error{}
	byName := map[string]runtime.Object{}
	for _, o := range objs {
		u, ok := o.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		byName[u.GetName()] = u
		var p lb.IPAddressPool
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &p); err != nil {
			refused[u.GetName()] = fmt.Errorf("IPAddressPool %s: %w", u.GetName(), err)
			continue
		}
		pp, err := lb.ParsePool(&p)
		if err != nil {
			refused[u.GetName()] = err
			continue
		}
		pools = append(pools, pp)
	}
	ok, more := lb.Validate(pools, c.reservedRanges())
	for n, err := range more {
		refused[n] = err
	}
	for n, err := range refused {
		if c.poolErrors[n] != err.Error() {
			c.poolErrors[n] = err.Error()
			c.events.Eventf(byName[n], corev1.EventTypeWarning, "InvalidPool", "%v; this pool is not used until fixed", err)
			c.log.Warn("IPAddressPool refused", "pool", n, "err", err)
		}
	}
	for n := range c.poolErrors {
		if _, still := refused[n]; !still {
			delete(c.poolErrors, n)
		}
	}
	return ok
}

// checkAdvertisements reports, once per distinct problem, each
// advertisement naming a pool that does not exist: MetalLB's speaker
// silently announces nothing for such a name.
func (c *lbAllocator) checkAdvertisements() {
	exists := map[string]bool{}
	objs, _ := c.pools.ByNamespace(lb.Namespace).List(labels.Everything())
	for _, o := range objs {
		if u, ok := o.(*unstructured.Unstructured); ok {
			exists[u.GetName()] = true
		}
	}
	seen := map[string]bool{}
	for _, lister := range c.ads {
		objs, _ := lister.ByNamespace(lb.Namespace).List(labels.Everything())
		for _, o := range objs {
			u, ok := o.(*unstructured.Unstructured)
			if !ok {
				continue
			}
			key := u.GetKind() + "/" + u.GetName()
			seen[key] = true
			names, _, _ := unstructured.NestedStringSlice(u.Object, "spec", "ipAddressPools")
			var missing []string
			for _, n := range names {
				if !exists[n] {
					missing = append(missing, n)
				}
			}
			if len(missing) == 0 {
				delete(c.adErrors, key)
				continue
			}
			msg := fmt.Sprintf("%s %s names IPAddressPool %s, which does not exist in %s: nothing is announced for it; create the pool or correct spec.ipAddressPools", u.GetKind(), u.GetName(), strings.Join(missing, ", "), lb.Namespace)
			if c.adErrors[key] != msg {
				c.adErrors[key] = msg
				c.events.Event(u, corev1.EventTypeWarning, ReasonUnknownPool, msg)
				c.log.Warn("advertisement names a missing pool", "advertisement", key, "pools", missing)
			}
		}
	}
	for k := range c.adErrors {
		if !seen[k] {
			delete(c.adErrors, k)
		}
	}
}

func (c *lbAllocator) reservedRanges() []lb.Reserved {
	nodes, _ := c.nodes.List(labels.Everything())
	return append(slices.Clone(c.reserved), lb.ReservedNodes(nodes)...)
}

// restore reads back what was allocated before this term, oldest
// Service first, so that a takeover never hands an address out twice.
func (c *lbAllocator) restore() {
	svcs, _ := c.services.List(labels.Everything())
	slices.SortFunc(svcs, func(a, b *corev1.Service) int { return a.CreationTimestamp.Compare(b.CreationTimestamp.Time) })
	for _, s := range svcs {
		pool, ours := s.Annotations[lb.AnnotationPrefix+lb.AllocatedFromPool]
		if !wantsLB(s) || !ours {
			continue
		}
		req, _, bad := c.request(s)
		if bad != nil {
			continue
		}
		as := lb.Assignment{Pool: pool}
		for _, in := range s.Status.LoadBalancer.Ingress {
			if ip, err := netip.ParseAddr(in.IP); err == nil {
				as.Addrs = append(as.Addrs, ip)
			}
		}
		if len(as.Addrs) == 0 {
			continue
		}
		if r := c.alloc.Restore(req, as); r != nil {
			c.log.Warn("an address recorded on a Service clashes with another's; it is allocated again", "service", req.Key, "err", r.Message)
		}
	}
}

// write records the outcome on the Service: the pool annotation first,
// so that a Service whose condition says Allocated already names its
// pool, then status and condition and, when something changed, an event.
func (c *lbAllocator) write(ctx context.Context, svc *corev1.Service, as lb.Assignment, refusal *lb.Refusal) error {
	wantPool := ""
	if refusal == nil {
		wantPool = as.Pool
	}
	svc, err := c.setPoolAnnotation(ctx, svc, wantPool)
	if err != nil {
		return err
	}
	s := svc.DeepCopy()
	cond := metav1.Condition{Type: lb.ConditionAllocated, Status: metav1.ConditionTrue, Reason: lb.ReasonAllocated, ObservedGeneration: s.Generation}
	var ingress []corev1.LoadBalancerIngress
	if refusal != nil {
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, refusal.Reason, refusal.Message
	} else {
		var ips []string
		for _, ip := range as.Addrs {
			ingress = append(ingress, corev1.LoadBalancerIngress{IP: ip.String(), IPMode: ptr.To(corev1.LoadBalancerIPModeVIP)})
			ips = append(ips, ip.String())
		}
		cond.Message = fmt.Sprintf("%s from IPAddressPool %s", strings.Join(ips, ", "), as.Pool)
		if c.alloc.Pool(as.Pool) == nil {
			cond.Message += " (the pool is gone or refused: the address is kept while the Service uses it)"
		}
	}
	old := meta.FindStatusCondition(s.Status.Conditions, lb.ConditionAllocated)
	changed := old == nil || old.Status != cond.Status || old.Reason != cond.Reason || old.Message != cond.Message
	s.Status.LoadBalancer.Ingress = ingress
	meta.SetStatusCondition(&s.Status.Conditions, cond)
	if !equality.Semantic.DeepEqual(s.Status, svc.Status) {
		if s, err = c.client.CoreV1().Services(s.Namespace).UpdateStatus(ctx, s, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("update status of Service %s/%s: %w", svc.Namespace, svc.Name, err)
		}
	}
	if changed {
		if refusal != nil {
			c.events.Event(s, corev1.EventTypeWarning, refusal.Reason, refusal.Message)
		} else {
			c.events.Event(s, corev1.EventTypeNormal, "IPAllocated", "Assigned "+cond.Message)
		}
	}
	return nil
}

// setPoolAnnotation writes (or with "" removes) the pool annotation and
// returns the Service as it is then.
func (c *lbAllocator) setPoolAnnotation(ctx context.Context, s *corev1.Service, pool string) (*corev1.Service, error) {
	k := lb.AnnotationPrefix + lb.AllocatedFromPool
	cur, has := s.Annotations[k]
	if cur == pool && (has || pool == "") {
		return s, nil
	}
	value := "null"
	if pool != "" {
		value = fmt.Sprintf("%q", pool)
	}
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%s}}}`, k, value)
	out, err := c.client.CoreV1().Services(s.Namespace).Patch(ctx, s.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	if err != nil {
		return nil, fmt.Errorf("annotate Service %s/%s: %w", s.Namespace, s.Name, err)
	}
	return out, nil
}

// clear removes what the allocator wrote on a Service that no longer
// wants an address from it.
func (c *lbAllocator) clear(ctx context.Context, svc *corev1.Service) error {
	if _, ours := svc.Annotations[lb.AnnotationPrefix+lb.AllocatedFromPool]; !ours && meta.FindStatusCondition(svc.Status.Conditions, lb.ConditionAllocated) == nil {
		return nil
	}
	s := svc.DeepCopy()
	if _, ours := svc.Annotations[lb.AnnotationPrefix+lb.AllocatedFromPool]; ours {
		s.Status.LoadBalancer.Ingress = nil
	}
	meta.RemoveStatusCondition(&s.Status.Conditions, lb.ConditionAllocated)
	if !equality.Semantic.DeepEqual(s.Status, svc.Status) {
		var err error
		if s, err = c.client.CoreV1().Services(s.Namespace).UpdateStatus(ctx, s, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("update status of Service %s/%s: %w", svc.Namespace, svc.Name, err)
		}
	}
	_, err := c.setPoolAnnotation(ctx, s, "")
	return err
}

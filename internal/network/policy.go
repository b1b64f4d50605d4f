package network

// NetworkPolicy enforcement for this node's pods, in one nftables table
// rebuilt atomically whenever a pod, namespace, policy or node changes.
//
// Semantics are upstream's: a pod selected by any policy of a direction
// (ingress, egress) is isolated for it, and then only what some rule of
// some selecting policy allows gets through; pods selected by none are
// open. Ingress is enforced on the destination's node, egress on the
// source's, both in the forward hook (bridged traffic passes there
// through br_netfilter), after kube-proxy's DNAT so Service traffic is
// judged by its real destination. Replies of allowed connections pass
// (conntrack). Traffic between a pod and its own node is not filtered;
// cluster DNS (every node's pod gateway, port 10053) is always allowed.

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listersv1 "k8s.io/client-go/listers/core/v1"
	netlisters "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/knftables"
)

// PolicyTable is the nftables table (family ip) holding the policy rules.
const PolicyTable = "cloudless-policy"

type policyController struct {
	log      *slog.Logger
	node     string
	pods     listersv1.PodLister
	nss      listersv1.NamespaceLister
	nodes    listersv1.NodeLister
	policies netlisters.NetworkPolicyLister
}

// runPolicy enforces NetworkPolicy on this node's pods until ctx ends.
func (n *Network) runPolicy(ctx context.Context, cs kubernetes.Interface, enforced func()) error {
	nft, err := knftables.New(knftables.IPv4Family, PolicyTable)
	if err != nil {
		return fmt.Errorf("NetworkPolicy needs nftables: %w", err)
	}
	if err := n.cfg.Footprint.AddNFTable("ip", PolicyTable); err != nil {
		return err
	}
	factory := informers.NewSharedInformerFactory(cs, 10*time.Minute)
	pc := &policyController{log: n.log, node: n.cfg.NodeName,
		pods: factory.Core().V1().Pods().Lister(), nss: factory.Core().V1().Namespaces().Lister(),
		nodes: factory.Core().V1().Nodes().Lister(), policies: factory.Networking().V1().NetworkPolicies().Lister()}
	kick := make(chan struct{}, 1)
	notify := func(any) {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	h := cache.ResourceEventHandlerFuncs{AddFunc: notify, DeleteFunc: notify, UpdateFunc: func(_, o any) { notify(o) }}
	for _, inf := range []cache.SharedIndexInformer{factory.Core().V1().Pods().Informer(), factory.Core().V1().Namespaces().Informer(),
		factory.Core().V1().Nodes().Informer(), factory.Networking().V1().NetworkPolicies().Informer()} {
		if _, err := inf.AddEventHandler(h); err != nil {
			return err
		}
	}
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	var last string
	for {
		rules, err := pc.rules()
		if err == nil && rules.String() != last {
			start := time.Now()
			if err = pc.apply(ctx, nft, rules); err == nil {
				if last == "" && enforced != nil {
					enforced()
					enforced = nil
				}
				last = rules.String()
				n.log.Debug("NetworkPolicy rules applied", "isolated-pods", len(rules.ingress)+len(rules.egress), "took", time.Since(start))
			}
		}
		if err != nil && ctx.Err() == nil {
			n.log.Warn("NetworkPolicy rules", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-kick:
			// Coalesce a burst of changes (a rollout) into one rebuild.
			time.Sleep(100 * time.Millisecond)
			select {
			case <-kick:
			default:
			}
		case <-time.After(time.Minute): // repairs a flushed ruleset
			last = ""
		}
	}
}

// podRules are the allow rules of one isolated pod, in nft syntax; an
// empty list isolates the pod completely for that direction.
type podRules struct {
	ip    string
	allow []string
}

type ruleSet struct {
	ingress, egress []podRules
	dns             []string // every node's cluster DNS address
}

func (r ruleSet) String() string { return fmt.Sprint(r.ingress, r.egress, r.dns) }

func (pc *policyController) rules() (ruleSet, error) {
	var rs ruleSet
	pods, err := pc.pods.List(labels.Everything())
	if err != nil {
		return rs, err
	}
	policies, err := pc.policies.List(labels.Everything())
	if err != nil {
		return rs, err
	}
	slices.SortFunc(policies, func(a, b *networkingv1.NetworkPolicy) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	slices.SortFunc(pods, func(a, b *corev1.Pod) int { return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name) })
	nodes, _ := pc.nodes.List(labels.Everything())
	for _, n := range nodes {
		if ap, err := netip.ParseAddrPort(n.Annotations[AnnotationDNS]); err == nil {
			rs.dns = append(rs.dns, ap.Addr().String())
		}
	}
	slices.Sort(rs.dns)
	for _, pod := range pods {
		if pod.Spec.NodeName != pc.node || !hasPodIP(pod) {
			continue
		}
		var in, eg *podRules
		for _, pol := range policies {
			if pol.Namespace != pod.Namespace || !selects(&pol.Spec.PodSelector, pod.Labels) {
				continue
			}
			ingress, egress := policyTypes(pol)
			if ingress {
				if in == nil {
					in = &podRules{ip: pod.Status.PodIP}
				}
				for _, r := range pol.Spec.Ingress {
					in.allow = append(in.allow, pc.ruleFor("saddr", pol.Namespace, r.From, r.Ports, []*corev1.Pod{pod})...)
				}
			}
			if egress {
				if eg == nil {
					eg = &podRules{ip: pod.Status.PodIP}
				}
				for _, r := range pol.Spec.Egress {
					eg.allow = append(eg.allow, pc.ruleFor("daddr", pol.Namespace, r.To, r.Ports, nil)...)
				}
			}
		}
		if in != nil {
			rs.ingress = append(rs.ingress, *in)
		}
		if eg != nil {
			rs.egress = append(rs.egress, *eg)
		}
	}
	return rs, nil
}

func hasPodIP(p *corev1.Pod) bool {
	return p.Status.PodIP != "" && !p.Spec.HostNetwork && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed
}

func selects(sel *metav1.LabelSelector, l map[string]string) bool {
	s, err := metav1.LabelSelectorAsSelector(sel)
	return err == nil && s.Matches(labels.Set(l))
}

// policyTypes: without policyTypes, a policy is for ingress, and for
// egress too if it has egress rules.
func policyTypes(p *networkingv1.NetworkPolicy) (ingress, egress bool) {
	if len(p.Spec.PolicyTypes) == 0 {
		return true, len(p.Spec.Egress) > 0
	}
	for _, t := range p.Spec.PolicyTypes {
		ingress = ingress || t == networkingv1.PolicyTypeIngress
		egress = egress || t == networkingv1.PolicyTypeEgress
	}
	return ingress, egress
}

// ruleFor turns one ingress or egress rule into nft rules ending in
// return (allowed). dir is "saddr" (ingress: peers are sources) or
// "daddr" (egress: peers are destinations). Named ports resolve on the
// destination: the isolated pod for ingress, each peer pod for egress.
func (pc *policyController) ruleFor(dir, ns string, peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort, dst []*corev1.Pod) []string {
	var matches []string // peer matches; "" is any peer
	var peerPods []*corev1.Pod
	if len(peers) == 0 {
		matches = []string{""}
	}
	for _, p := range peers {
		if p.IPBlock != nil {
			m := fmt.Sprintf("ip %s %s", dir, p.IPBlock.CIDR)
			if len(p.IPBlock.Except) > 0 {
				m += fmt.Sprintf(" ip %s != { %s }", dir, strings.Join(p.IPBlock.Except, ", "))
			}
			matches = append(matches, m)
			continue
		}
		pods := pc.peerPods(ns, p)
		peerPods = append(peerPods, pods...)
		var ips []string
		for _, pod := range pods {
			ips = append(ips, pod.Status.PodIP)
		}
		if len(ips) > 0 {
			matches = append(matches, fmt.Sprintf("ip %s { %s }", dir, strings.Join(ips, ", ")))
		}
	}
	if len(matches) == 0 {
		return nil // peers that match nothing allow nothing
	}
	portMatches := []string{""}
	if len(ports) > 0 {
		portMatches = nil
		targets := dst
		if dir == "daddr" {
			targets = peerPods
		}
		for _, p := range ports {
			proto := strings.ToLower(string(ptrOr(p.Protocol, corev1.ProtocolTCP)))
			switch {
			case p.Port == nil:
				portMatches = append(portMatches, "meta l4proto "+proto)
			case p.Port.Type == 0: // a number
				if p.EndPort != nil {
					portMatches = append(portMatches, fmt.Sprintf("%s dport %d-%d", proto, p.Port.IntVal, *p.EndPort))
				} else {
					portMatches = append(portMatches, fmt.Sprintf("%s dport %d", proto, p.Port.IntVal))
				}
			default: // a name: the port it names on each destination pod
				for _, t := range targets {
					if num := namedPort(t, p.Port.StrVal, ptrOr(p.Protocol, corev1.ProtocolTCP)); num > 0 {
						m := fmt.Sprintf("%s dport %d", proto, num)
						if dir == "daddr" {
							m = fmt.Sprintf("ip daddr %s %s", t.Status.PodIP, m)
						}
						portMatches = append(portMatches, m)
					}
				}
			}
		}
	}
	var out []string
	for _, m := range matches {
		for _, pm := range portMatches {
			out = append(out, strings.Join(slices.DeleteFunc([]string{m, pm, "return"}, func(s string) bool { return s == "" }), " "))
		}
	}
	return out
}

func ptrOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

func namedPort(pod *corev1.Pod, name string, proto corev1.Protocol) int32 {
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == name && (p.Protocol == proto || p.Protocol == "" && proto == corev1.ProtocolTCP) {
				return p.ContainerPort
			}
		}
	}
	return 0
}

// peerPods are the pods a podSelector/namespaceSelector peer selects.
func (pc *policyController) peerPods(ns string, peer networkingv1.NetworkPolicyPeer) []*corev1.Pod {
	var namespaces []string
	if peer.NamespaceSelector == nil {
		namespaces = []string{ns}
	} else {
		all, _ := pc.nss.List(labels.Everything())
		for _, n := range all {
			if selects(peer.NamespaceSelector, n.Labels) {
				namespaces = append(namespaces, n.Name)
			}
		}
	}
	var out []*corev1.Pod
	for _, n := range namespaces {
		pods, _ := pc.pods.Pods(n).List(labels.Everything())
		for _, p := range pods {
			if hasPodIP(p) && (peer.PodSelector == nil || selects(peer.PodSelector, p.Labels)) {
				out = append(out, p)
			}
		}
	}
	slices.SortFunc(out, func(a, b *corev1.Pod) int { return strings.Compare(a.Status.PodIP, b.Status.PodIP) })
	return out
}

// apply replaces the table in one transaction: connections already
// allowed keep flowing (conntrack), nothing is open in between.
func (pc *policyController) apply(ctx context.Context, nft knftables.Interface, rs ruleSet) error {
	tx := nft.NewTransaction()
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("cloudless: NetworkPolicy")})
	tx.Delete(&knftables.Table{})
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("cloudless: NetworkPolicy")})
	tx.Add(&knftables.Chain{Name: "forward", Type: knftables.PtrTo(knftables.FilterType),
		Hook: knftables.PtrTo(knftables.ForwardHook), Priority: knftables.PtrTo(knftables.FilterPriority)})
	tx.Add(&knftables.Rule{Chain: "forward", Rule: "ct state established,related accept"})
	dnsAllow := ""
	if len(rs.dns) > 0 {
		dnsAllow = fmt.Sprintf("ip daddr { %s } th dport %d return", strings.Join(rs.dns, ", "), DNSPort)
	}
	// Egress first: each check returns when allowed, so a packet must
	// pass both its source's egress and its destination's ingress.
	for _, d := range []struct {
		prefix, match string
		pods          []podRules
	}{{"egress", "saddr", rs.egress}, {"ingress", "daddr", rs.ingress}} {
		if len(d.pods) == 0 {
			continue
		}
		var vmap []string
		for i, p := range d.pods {
			chain := fmt.Sprintf("%s-%d", d.prefix, i)
			tx.Add(&knftables.Chain{Name: chain, Comment: knftables.PtrTo(p.ip)})
			if d.prefix == "egress" && dnsAllow != "" {
				tx.Add(&knftables.Rule{Chain: chain, Rule: dnsAllow})
			}
			for _, r := range p.allow {
				tx.Add(&knftables.Rule{Chain: chain, Rule: r})
			}
			tx.Add(&knftables.Rule{Chain: chain, Rule: "counter drop"})
			vmap = append(vmap, fmt.Sprintf("%s : jump %s", p.ip, chain))
		}
		tx.Add(&knftables.Rule{Chain: "forward", Rule: fmt.Sprintf("ip %s vmap { %s }", d.match, strings.Join(vmap, ", "))})
	}
	return nft.Run(ctx, tx)
}

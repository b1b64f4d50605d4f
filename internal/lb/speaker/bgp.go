package speaker

// What this node advertises by BGP, decided from the metallb.io
// resources: unlike L2, every eligible node advertises (the routers
// spread traffic over them, ECMP), so there is no election and no
// failure detector but the BGP session's own.

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/cloudless-dev/cloudless/internal/lb"
	"github.com/cloudless-dev/cloudless/internal/lb/bgp"
)

// PasswordKey is the key of a BGPPeer's passwordSecret
// (kubernetes.io/basic-auth) that holds the TCP MD5 password.
const PasswordKey = corev1.BasicAuthPasswordKey

// bgpInput is what planBGP decides from.
type bgpInput struct {
	node        *corev1.Node
	peers       []lb.BGPPeer
	ads         []lb.BGPAdvertisement
	communities map[string]string            // alias -> value, from Community objects
	poolLabels  map[string]map[string]string // pool -> labels
	svcs        []*corev1.Service
	// endpointNodes are the nodes with a ready endpoint of svc.
	endpointNodes func(svc *corev1.Service) map[string]bool
	// secret returns the password in metallb-system's Secret name.
	secret func(name string) (string, error)
}

// problem is a resource Cloudless cannot use as written.
type problem struct {
	kind, name, msg string
}

// bgpPlan is this node's BGP sessions and what each advertises.
type bgpPlan struct {
	peers  map[string]bgp.Peer
	routes map[string][]bgp.Route
	// bySvc: Service key -> its prefixes and the peers they go to, for
	// the event.
	bySvc    map[string]bgpAnnounced
	problems []problem
}

type bgpAnnounced struct {
	obj      *corev1.Service
	prefixes []string
	peers    []string
}

// peerOf turns a BGPPeer into session settings, or says why it cannot.
func peerOf(p lb.BGPPeer, secret func(string) (string, error)) (bgp.Peer, error) {
	s := p.Spec
	out := bgp.Peer{MyASN: s.MyASN, PeerASN: s.PeerASN, Port: s.PeerPort, RouterID: s.RouterID, EBGPMultiHop: s.EBGPMultiHop, Password: s.Password}
	if s.MyASN == 0 {
		return out, fmt.Errorf("spec.myASN is missing: set this cluster's AS number (1-4294967295)")
	}
	switch s.DynamicASN {
	case "":
		if s.PeerASN == 0 {
			return out, fmt.Errorf("spec.peerASN is missing: set the router's AS number (1-4294967295)")
		}
	case "internal":
		out.PeerASN = s.MyASN
	default:
		return out, fmt.Errorf("spec.dynamicASN %q is not supported: set spec.peerASN to the router's AS number", s.DynamicASN)
	}
	if s.Interface != "" || s.VRFName != "" {
		return out, fmt.Errorf("spec.interface and spec.vrf (unnumbered BGP, VRFs) are not supported: set spec.peerAddress")
	}
	var err error
	if out.Address, err = netip.ParseAddr(s.PeerAddress); err != nil {
		return out, fmt.Errorf("spec.peerAddress %q is not an IP address", s.PeerAddress)
	}
	if s.SourceAddress != "" {
		if out.Source, err = netip.ParseAddr(s.SourceAddress); err != nil || out.Source.Is4() != out.Address.Is4() {
			return out, fmt.Errorf("spec.sourceAddress %q is not an IP address of the peer's family", s.SourceAddress)
		}
	}
	if s.RouterID != "" {
		if a, err := netip.ParseAddr(s.RouterID); err != nil || !a.Is4() {
			return out, fmt.Errorf("spec.routerID %q is not an IPv4 address", s.RouterID)
		}
	}
	if s.HoldTime != nil {
		out.Hold = s.HoldTime.Duration
		if out.Hold != 0 && out.Hold < 3e9 {
			return out, fmt.Errorf("spec.holdTime %s: want 0 (no keepalives) or at least 3s (RFC 4271)", out.Hold)
		}
	}
	if s.KeepaliveTime != nil {
		out.Keepalive = s.KeepaliveTime.Duration
		if out.Hold != 0 && out.Keepalive >= out.Hold {
			return out, fmt.Errorf("spec.keepaliveTime %s must be shorter than spec.holdTime %s", out.Keepalive, out.Hold)
		}
	}
	if s.ConnectTime != nil {
		out.ConnectRetry = s.ConnectTime.Duration
	}
	if ref := s.PasswordSecret; ref.Name != "" {
		if s.Password != "" {
			return out, fmt.Errorf("spec.password and spec.passwordSecret are both set: keep one")
		}
		if ref.Namespace != "" && ref.Namespace != lb.Namespace {
			return out, fmt.Errorf("spec.passwordSecret is in namespace %s: it must be in %s", ref.Namespace, lb.Namespace)
		}
		if out.Password, err = secret(ref.Name); err != nil {
			return out, err
		}
	}
	return out, nil
}

// planBGP decides this node's sessions and routes.
func planBGP(in bgpInput) bgpPlan {
	plan := bgpPlan{peers: map[string]bgp.Peer{}, routes: map[string][]bgp.Route{}, bySvc: map[string]bgpAnnounced{}}
	if in.node == nil {
		return plan
	}
	for _, p := range in.peers {
		if !lb.SelectedBy(p.Spec.NodeSelectors, in.node.Labels) {
			continue
		}
		peer, err := peerOf(p, in.secret)
		if err != nil {
			plan.problems = append(plan.problems, problem{"BGPPeer", p.Name, err.Error()})
			continue
		}
		plan.peers[p.Name] = peer
	}
	if len(plan.peers) == 0 {
		return plan
	}
	// A drained (cordoned) node withdraws, as do excluded and unready
	// ones.
	if !lb.NodeCanAnnounce(in.node) || in.node.Spec.Unschedulable {
		return plan
	}
	type adv struct {
		spec        lb.BGPAdvertisementSpec
		communities []string
	}
	var ads []adv
	for _, a := range in.ads {
		if !lb.SelectedBy(a.Spec.NodeSelectors, in.node.Labels) {
			continue
		}
		cs, err := resolveCommunities(a.Spec.Communities, in.communities)
		if err == nil {
			err = checkAggregation(a.Spec)
		}
		if err != nil {
			plan.problems = append(plan.problems, problem{"BGPAdvertisement", a.Name, err.Error()})
			continue
		}
		ads = append(ads, adv{a.Spec, cs})
	}
	// routes, merged by peer and prefix.
	merged := map[string]map[netip.Prefix]*bgp.Route{}
	for _, svc := range in.svcs {
		pool := svc.Annotations[lb.AnnotationPrefix+lb.AllocatedFromPool]
		if svc.Spec.Type != corev1.ServiceTypeLoadBalancer || pool == "" || len(svc.Status.LoadBalancer.Ingress) == 0 {
			continue
		}
		if svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal && !in.endpointNodes(svc)[in.node.Name] {
			continue
		}
		key := svc.Namespace + "/" + svc.Name
		for _, a := range ads {
			if !lb.AdvertisesPool(a.spec.IPAddressPools, a.spec.IPAddressPoolSelectors, pool, in.poolLabels[pool]) {
				continue
			}
			for _, ing := range svc.Status.LoadBalancer.Ingress {
				ip, err := netip.ParseAddr(ing.IP)
				if err != nil {
					continue
				}
				bits := ip.BitLen()
				if ip.Is4() && a.spec.AggregationLength != nil {
					bits = int(*a.spec.AggregationLength)
				} else if ip.Is6() && a.spec.AggregationLengthV6 != nil {
					bits = int(*a.spec.AggregationLengthV6)
				}
				prefix := netip.PrefixFrom(ip, bits).Masked()
				for name := range plan.peers {
					if len(a.spec.Peers) > 0 && !slices.Contains(a.spec.Peers, name) {
						continue
					}
					if merged[name] == nil {
						merged[name] = map[netip.Prefix]*bgp.Route{}
					}
					r := merged[name][prefix]
					if r == nil {
						r = &bgp.Route{Prefix: prefix}
						merged[name][prefix] = r
					}
					r.LocalPref = max(r.LocalPref, a.spec.LocalPref)
					r.Communities = append(r.Communities, a.communities...)
					an := plan.bySvc[key]
					an.obj = svc
					an.prefixes = append(an.prefixes, prefix.String())
					an.peers = append(an.peers, name)
					plan.bySvc[key] = an
				}
			}
		}
	}
	for name, byPrefix := range merged {
		for _, r := range byPrefix {
			slices.Sort(r.Communities)
			r.Communities = slices.Compact(r.Communities)
			plan.routes[name] = append(plan.routes[name], *r)
		}
		slices.SortFunc(plan.routes[name], func(a, b bgp.Route) int { return a.Prefix.Addr().Compare(b.Prefix.Addr()) })
	}
	for k, an := range plan.bySvc {
		slices.Sort(an.prefixes)
		slices.Sort(an.peers)
		an.prefixes, an.peers = slices.Compact(an.prefixes), slices.Compact(an.peers)
		plan.bySvc[k] = an
	}
	return plan
}

// resolveCommunities turns aliases (from Community objects) into values
// and checks each value.
func resolveCommunities(in []string, aliases map[string]string) ([]string, error) {
	var out []string
	for _, c := range in {
		v := c
		if a, ok := aliases[c]; ok {
			v = a
		}
		if _, _, err := bgp.ParseCommunity(v); err != nil {
			if !strings.Contains(c, ":") {
				return nil, fmt.Errorf("community %q is neither a value nor an alias defined in a Community object", c)
			}
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

func checkAggregation(a lb.BGPAdvertisementSpec) error {
	if l := a.AggregationLength; l != nil && (*l < 0 || *l > 32) {
		return fmt.Errorf("spec.aggregationLength %d: want 0-32", *l)
	}
	if l := a.AggregationLengthV6; l != nil && (*l < 0 || *l > 128) {
		return fmt.Errorf("spec.aggregationLengthV6 %d: want 0-128", *l)
	}
	return nil
}

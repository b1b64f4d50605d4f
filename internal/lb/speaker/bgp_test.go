package speaker

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cloudless-dev/cloudless/internal/lb"
)

func TestPlanBGP(t *testing.T) {
	node := func(mod func(*corev1.Node)) *corev1.Node {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: map[string]string{"rack": "a"}},
			Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}}}
		if mod != nil {
			mod(n)
		}
		return n
	}
	peer := func(name string, mod func(*lb.BGPPeerSpec)) lb.BGPPeer {
		p := lb.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: lb.BGPPeerSpec{MyASN: 64512, PeerASN: 64500, PeerAddress: "192.168.77.254"}}
		if mod != nil {
			mod(&p.Spec)
		}
		return p
	}
	ad := func(mod func(*lb.BGPAdvertisementSpec)) lb.BGPAdvertisement {
		a := lb.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: "ad"}}
		if mod != nil {
			mod(&a.Spec)
		}
		return a
	}
	svc := func(ip string, local bool) *corev1.Service {
		s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web", Annotations: map[string]string{lb.AnnotationPrefix + lb.AllocatedFromPool: "pool"}},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer}}
		s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip}}
		if local {
			s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		}
		return s
	}
	i32 := func(v int32) *int32 { return &v }
	secrets := map[string]string{"bgp-pw": "s3cret"}
	for _, tc := range []struct {
		name      string
		node      *corev1.Node
		peers     []lb.BGPPeer
		ads       []lb.BGPAdvertisement
		svcs      []*corev1.Service
		endpoints []string
		// want: "peer prefix localpref communities" per route, and the
		// problems' messages (substrings).
		want     []string
		problems []string
	}{
		{name: "every pool to every peer", node: node(nil), peers: []lb.BGPPeer{peer("r1", nil), peer("r2", nil)}, ads: []lb.BGPAdvertisement{ad(nil)},
			svcs: []*corev1.Service{svc("192.168.78.10", false)}, want: []string{"r1 192.168.78.10/32 0 []", "r2 192.168.78.10/32 0 []"}},
		{name: "peer for other nodes", node: node(nil), peers: []lb.BGPPeer{peer("r1", func(s *lb.BGPPeerSpec) {
			s.NodeSelectors = []metav1.LabelSelector{{MatchLabels: map[string]string{"rack": "b"}}}
		})}, ads: []lb.BGPAdvertisement{ad(nil)}, svcs: []*corev1.Service{svc("192.168.78.10", false)}},
		{name: "advertisement for other nodes", node: node(nil), peers: []lb.BGPPeer{peer("r1", nil)}, ads: []lb.BGPAdvertisement{ad(func(s *lb.BGPAdvertisementSpec) {
			s.NodeSelectors = []metav1.LabelSelector{{MatchLabels: map[string]string{"rack": "b"}}}
		})}, svcs: []*corev1.Service{svc("192.168.78.10", false)}},
		{name: "advertisement names a peer", node: node(nil), peers: []lb.BGPPeer{peer("r1", nil), peer("r2", nil)}, ads: []lb.BGPAdvertisement{ad(func(s *lb.BGPAdvertisementSpec) { s.Peers = []string{"r2"} })},
			svcs: []*corev1.Service{svc("192.168.78.10", false)}, want: []string{"r2 192.168.78.10/32 0 []"}},
		{name: "aggregation, local preference, communities by alias", node: node(nil), peers: []lb.BGPPeer{peer("r1", nil)}, ads: []lb.BGPAdvertisement{ad(func(s *lb.BGPAdvertisementSpec) {
			s.AggregationLength, s.LocalPref, s.Communities = i32(24), 200, []string{"no-advertise", "64512:7", "large:64512:1:2"}
		})}, svcs: []*corev1.Service{svc("192.168.78.10", false)}, want: []string{"r1 192.168.78.0/24 200 [64512:7 65535:65282 large:64512:1:2]"}},
		{name: "Local without an endpoint here", node: node(nil), peers: []lb.BGPPeer{peer("r1", nil)}, ads: []lb.BGPAdvertisement{ad(nil)},
			svcs: []*corev1.Service{svc("192.168.78.10", true)}, endpoints: []string{"n2"}},
		{name: "Local with an endpoint here", node: node(nil), peers: []lb.BGPPeer{peer("r1", nil)}, ads: []lb.BGPAdvertisement{ad(nil)},
			svcs: []*corev1.Service{svc("192.168.78.10", true)}, endpoints: []string{"n1"}, want: []string{"r1 192.168.78.10/32 0 []"}},
		{name: "drained node withdraws", node: node(func(n *corev1.Node) { n.Spec.Unschedulable = true }), peers: []lb.BGPPeer{peer("r1", nil)}, ads: []lb.BGPAdvertisement{ad(nil)},
			svcs: []*corev1.Service{svc("192.168.78.10", false)}},
		{name: "excluded node withdraws", node: node(func(n *corev1.Node) { n.Labels[lb.ExcludeLabel] = "" }), peers: []lb.BGPPeer{peer("r1", nil)}, ads: []lb.BGPAdvertisement{ad(nil)},
			svcs: []*corev1.Service{svc("192.168.78.10", false)}},
		{name: "password from a Secret", node: node(nil), peers: []lb.BGPPeer{peer("r1", func(s *lb.BGPPeerSpec) { s.PasswordSecret.Name = "bgp-pw" })}, ads: []lb.BGPAdvertisement{ad(nil)},
			svcs: []*corev1.Service{svc("192.168.78.10", false)}, want: []string{"r1 192.168.78.10/32 0 []"}},
		{name: "bad peers", node: node(nil), peers: []lb.BGPPeer{
			peer("no-asn", func(s *lb.BGPPeerSpec) { s.MyASN = 0 }),
			peer("bad-address", func(s *lb.BGPPeerSpec) { s.PeerAddress = "router.lan" }),
			peer("short-hold", func(s *lb.BGPPeerSpec) { s.HoldTime = &metav1.Duration{Duration: 1e9} }),
			peer("missing-secret", func(s *lb.BGPPeerSpec) { s.PasswordSecret.Name = "nope" }),
		}, ads: []lb.BGPAdvertisement{ad(nil)}, svcs: []*corev1.Service{svc("192.168.78.10", false)},
			problems: []string{"spec.myASN is missing", `spec.peerAddress "router.lan" is not an IP address`, "spec.holdTime 1s", "nope: not found"}},
		{name: "bad advertisement", node: node(nil), peers: []lb.BGPPeer{peer("r1", nil)}, ads: []lb.BGPAdvertisement{ad(func(s *lb.BGPAdvertisementSpec) {
			s.Communities = []string{"gold"}
		})}, svcs: []*corev1.Service{svc("192.168.78.10", false)}, problems: []string{`community "gold" is neither a value nor an alias`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plan := planBGP(bgpInput{
				node: tc.node, peers: tc.peers, ads: tc.ads, svcs: tc.svcs,
				communities: map[string]string{"no-advertise": "65535:65282"},
				endpointNodes: func(*corev1.Service) map[string]bool {
					m := map[string]bool{}
					for _, n := range tc.endpoints {
						m[n] = true
					}
					return m
				},
				secret: func(name string) (string, error) {
					if pw, ok := secrets[name]; ok {
						return pw, nil
					}
					return "", errors.New(name + ": not found")
				},
			})
			var got []string
			for name, rs := range plan.routes {
				for _, r := range rs {
					got = append(got, fmt.Sprintf("%s %s %d %v", name, r.Prefix, r.LocalPref, r.Communities))
				}
			}
			slices.Sort(got)
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("routes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			if len(plan.problems) != len(tc.problems) {
				t.Fatalf("problems %v, want %d", plan.problems, len(tc.problems))
			}
			for i, p := range plan.problems {
				if !strings.Contains(p.msg, tc.problems[i]) {
					t.Errorf("problem %d: %q, want it to say %q", i, p.msg, tc.problems[i])
				}
			}
			if p, ok := plan.peers["r1"]; ok && tc.peers[0].Spec.PasswordSecret.Name == "bgp-pw" && p.Password != "s3cret" {
				t.Errorf("password %q, want the Secret's", p.Password)
			}
			if p, ok := plan.peers["r1"]; ok && p.Address != netip.MustParseAddr("192.168.77.254") {
				t.Errorf("peer address %s", p.Address)
			}
		})
	}
}

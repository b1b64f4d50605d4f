package lb

// Who announces an address: exactly one node, chosen the same way by
// every node from the same facts, so that they agree without talking.

import (
	"bytes"
	"crypto/sha256"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// ExcludeLabel keeps a node from announcing any address (upstream's
// label for external load balancers).
const ExcludeLabel = corev1.LabelNodeExcludeBalancers

// Announcer returns the node of nodes that announces ip: the one whose
// hash of name and address sorts first. A node joining or leaving moves
// only the addresses it wins or held, not the others.
func Announcer(ip netip.Addr, nodes []string) string {
	var best string
	var bestSum []byte
	for _, n := range nodes {
		h := sha256.Sum256([]byte(n + "#" + ip.String()))
		if bestSum == nil || bytes.Compare(h[:], bestSum) < 0 {
			best, bestSum = n, h[:]
		}
	}
	return best
}

// NodeCanAnnounce: Ready and not excluded.
func NodeCanAnnounce(n *corev1.Node) bool {
	return !NodeExcluded(n) && NodeReady(n)
}

// NodeExcluded: labelled out of load balancers, or its network
// unavailable.
func NodeExcluded(n *corev1.Node) bool {
	if _, excluded := n.Labels[ExcludeLabel]; excluded {
		return true
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeNetworkUnavailable && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// NodeReady: the Node's Ready condition is True.
func NodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// SelectedBy reports whether set matches any of sels (none: all).
func SelectedBy(sels []metav1.LabelSelector, set map[string]string) bool {
	if len(sels) == 0 {
		return true
	}
	for _, s := range sels {
		sel, err := metav1.LabelSelectorAsSelector(&s)
		if err == nil && sel.Matches(labels.Set(set)) {
			return true
		}
	}
	return false
}

// AdvertisesPool reports whether an advertisement with these pools and
// pool selectors covers the pool name (named, selected by its labels,
// or every pool when it names none). L2 and BGP advertisements alike.
func AdvertisesPool(pools []string, selectors []metav1.LabelSelector, name string, poolLabels map[string]string) bool {
	if len(pools) == 0 && len(selectors) == 0 {
		return true
	}
	for _, p := range pools {
		if p == name {
			return true
		}
	}
	return len(selectors) > 0 && SelectedBy(selectors, poolLabels)
}

// AdvertisesPool: see the function of that name.
func (a *L2AdvertisementSpec) AdvertisesPool(name string, poolLabels map[string]string) bool {
	return AdvertisesPool(a.IPAddressPools, a.IPAddressPoolSelectors, name, poolLabels)
}

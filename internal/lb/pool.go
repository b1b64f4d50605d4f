package lb

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Pool is a parsed, valid IPAddressPool.
type Pool struct {
	Name       string
	Ranges     []Range
	AutoAssign bool
	AvoidBuggy bool
	Labels     map[string]string
	// Allocation is nil for a pool open to every Service.
	Allocation *Allocation
}

// Allocation is a pool's serviceAllocation, parsed.
type Allocation struct {
	Priority   int
	Namespaces []string
	NSSel      []labels.Selector
	SvcSel     []labels.Selector
}

// ParsePool parses and checks one pool on its own (Validate checks it
// against the others and the cluster).
func ParsePool(p *IPAddressPool) (*Pool, error) {
	out := &Pool{Name: p.Name, AutoAssign: p.Spec.AutoAssign == nil || *p.Spec.AutoAssign, AvoidBuggy: p.Spec.AvoidBuggyIPs, Labels: p.Labels}
	if len(p.Spec.Addresses) == 0 {
		return nil, fmt.Errorf("IPAddressPool %s/%s: spec.addresses is empty: give CIDRs (192.168.10.0/24) or ranges (192.168.10.10-192.168.10.20)", p.Namespace, p.Name)
	}
	for _, a := range p.Spec.Addresses {
		r, err := ParseRange(a)
		if err != nil {
			return nil, fmt.Errorf("IPAddressPool %s/%s: %w", p.Namespace, p.Name, err)
		}
		out.Ranges = append(out.Ranges, r)
	}
	if sa := p.Spec.ServiceAllocation; sa != nil {
		a := &Allocation{Priority: sa.Priority, Namespaces: sa.Namespaces}
		for _, s := range sa.NamespaceSelectors {
			sel, err := metav1.LabelSelectorAsSelector(&s)
			if err != nil {
				return nil, fmt.Errorf("IPAddressPool %s/%s: serviceAllocation.namespaceSelectors: %w", p.Namespace, p.Name, err)
			}
			a.NSSel = append(a.NSSel, sel)
		}
		for _, s := range sa.ServiceSelectors {
			sel, err := metav1.LabelSelectorAsSelector(&s)
			if err != nil {
				return nil, fmt.Errorf("IPAddressPool %s/%s: serviceAllocation.serviceSelectors: %w", p.Namespace, p.Name, err)
			}
			a.SvcSel = append(a.SvcSel, sel)
		}
		out.Allocation = a
	}
	return out, nil
}

// ParseRange parses a CIDR or a first-last range of one family.
func ParseRange(s string) (Range, error) {
	s = strings.TrimSpace(s)
	if first, last, ok := strings.Cut(s, "-"); ok {
		a, err1 := netip.ParseAddr(strings.TrimSpace(first))
		b, err2 := netip.ParseAddr(strings.TrimSpace(last))
		if err1 != nil || err2 != nil {
			return Range{}, fmt.Errorf("address range %q: want first-last, e.g. 192.168.10.10-192.168.10.20", s)
		}
		if a.Is4() != b.Is4() {
			return Range{}, fmt.Errorf("address range %q mixes IPv4 and IPv6: give one range per family", s)
		}
		r := Range{a, b}
		if b.Less(a) {
			return Range{}, fmt.Errorf("address range %q: the first address is after the last", s)
		}
		return r, nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return Range{}, fmt.Errorf("address %q: want a CIDR (192.168.10.0/24) or a range (192.168.10.10-192.168.10.20)", s)
	}
	if p.Masked() != p {
		return Range{}, fmt.Errorf("address %q has host bits set: did you mean %s?", s, p.Masked())
	}
	return rangeOf(p), nil
}

// Contains reports whether a is in the pool.
func (p *Pool) Contains(a netip.Addr) bool {
	return slices.ContainsFunc(p.Ranges, func(r Range) bool { return r.Contains(a) })
}

// usable reports whether a may be handed out from p (avoidBuggyIPs).
func (p *Pool) usable(a netip.Addr) bool {
	if p.AvoidBuggy && a.Is4() {
		b := a.As4()
		return b[3] != 0 && b[3] != 255
	}
	return true
}

// Matches reports whether the pool's serviceAllocation admits a Service
// in namespace ns (with labels nsLabels) with labels svcLabels.
func (p *Pool) Matches(ns string, nsLabels, svcLabels map[string]string) bool {
	a := p.Allocation
	if a == nil {
		return true
	}
	if len(a.Namespaces) > 0 && !slices.Contains(a.Namespaces, ns) {
		return false
	}
	if len(a.NSSel) > 0 && !slices.ContainsFunc(a.NSSel, func(s labels.Selector) bool { return s.Matches(labels.Set(nsLabels)) }) {
		return false
	}
	if len(a.SvcSel) > 0 && !slices.ContainsFunc(a.SvcSel, func(s labels.Selector) bool { return s.Matches(labels.Set(svcLabels)) }) {
		return false
	}
	return true
}

// Reserved is a range no pool may overlap, and what it is (shown in
// the refusal): the cluster and Service CIDRs, node addresses.
type Reserved struct {
	What  string
	Range Range
}

// ReservedCIDRs are the cluster and Service CIDRs as reserved ranges
// (unparseable ones are skipped: the server refuses them at start).
func ReservedCIDRs(clusterCIDR, serviceCIDR string) []Reserved {
	var out []Reserved
	for _, r := range []struct{ what, cidr string }{{"the cluster CIDR (--cluster-cidr)", clusterCIDR}, {"the Service CIDR (--service-cidr)", serviceCIDR}} {
		if p, err := netip.ParsePrefix(r.cidr); err == nil {
			out = append(out, Reserved{What: r.what, Range: RangeOfPrefix(p)})
		}
	}
	return out
}

// ReservedNodes are the nodes' internal and external addresses, which no
// pool may hold.
func ReservedNodes(nodes []*corev1.Node) []Reserved {
	var out []Reserved
	for _, n := range nodes {
		for _, a := range n.Status.Addresses {
			if ip, err := netip.ParseAddr(a.Address); err == nil && (a.Type == corev1.NodeInternalIP || a.Type == corev1.NodeExternalIP) {
				out = append(out, Reserved{What: "node " + n.Name + "'s address", Range: RangeOfPrefix(netip.PrefixFrom(ip, ip.BitLen()))})
			}
		}
	}
	return out
}

// Validate checks pools against each other and reserved ranges, and
// returns the valid ones, in name order, and an error per refused pool.
// Of two overlapping pools, the one created first... is unknown here, so
// the one whose name sorts first is kept and the other refused.
func Validate(pools []*Pool, reserved []Reserved) (ok []*Pool, refused map[string]error) {
	refused = map[string]error{}
	slices.SortFunc(pools, func(a, b *Pool) int { return strings.Compare(a.Name, b.Name) })
	for _, p := range pools {
		var err error
	check:
		for _, r := range p.Ranges {
			for _, res := range reserved {
				if r.Overlaps(res.Range) {
					err = fmt.Errorf("IPAddressPool %s: %s overlaps %s (%s): take addresses from the LAN that nothing else uses", p.Name, r, res.What, res.Range)
					break check
				}
			}
			for _, q := range ok {
				for _, qr := range q.Ranges {
					if r.Overlaps(qr) {
						err = fmt.Errorf("IPAddressPool %s: %s overlaps IPAddressPool %s (%s): one address belongs to one pool", p.Name, r, q.Name, qr)
						break check
					}
				}
			}
		}
		if err != nil {
			refused[p.Name] = err
			continue
		}
		ok = append(ok, p)
	}
	return ok, refused
}

// Range is the addresses from First to Last, of one family.
type Range struct{ First, Last netip.Addr }

func rangeOf(p netip.Prefix) Range {
	first := p.Addr()
	b := first.AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 1 << (7 - i%8)
	}
	last, _ := netip.AddrFromSlice(b)
	return Range{first, last}
}

// Contains reports whether a is in r.
func (r Range) Contains(a netip.Addr) bool {
	return a.BitLen() == r.First.BitLen() && r.First.Compare(a) <= 0 && a.Compare(r.Last) <= 0
}

// Overlaps reports whether r and o share an address.
func (r Range) Overlaps(o Range) bool {
	return r.First.BitLen() == o.First.BitLen() && r.First.Compare(o.Last) <= 0 && o.First.Compare(r.Last) <= 0
}

func (r Range) String() string {
	if r.First == r.Last {
		return r.First.String()
	}
	return r.First.String() + "-" + r.Last.String()
}

// RangeOfPrefix is the addresses of p.
func RangeOfPrefix(p netip.Prefix) Range { return rangeOf(p.Masked()) }

package lb

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
)

// Port is a protocol and a number: TCP/53 and UDP/53 are different ports.
type Port struct {
	Protocol string
	Port     int32
}

func (p Port) String() string { return fmt.Sprintf("%s/%d", p.Protocol, p.Port) }

// Service is what the allocator needs of a LoadBalancer Service.
type Service struct {
	Key              string // namespace/name
	Namespace        string
	NSLabels, Labels map[string]string
	// IPv6 lists the families wanted, in order: false IPv4, true IPv6.
	IPv6       []bool
	Want       []netip.Addr // addresses asked for (annotation or spec.loadBalancerIP)
	Pool       string       // pool asked for
	SharingKey string
	Ports      []Port
	Local      bool // externalTrafficPolicy: Local
	Selector   map[string]string
}

// Refusal is why a Service gets no address; Reason is one of Reason*.
type Refusal struct{ Reason, Message string }

func (r *Refusal) Error() string { return r.Message }

// Assignment is a Service's addresses and the pool they came from.
type Assignment struct {
	Addrs []netip.Addr
	Pool  string
}

// Allocator hands out pool addresses under MetalLB's sharing rules. It
// is not safe for concurrent use: one controller worker owns it.
type Allocator struct {
	pools []*Pool
	svcs  map[string]*holder
	users map[netip.Addr][]*holder
}

type holder struct {
	svc Service
	as  Assignment
}

// NewAllocator returns an allocator with no pools and no assignments.
func NewAllocator() *Allocator {
	return &Allocator{svcs: map[string]*holder{}, users: map[netip.Addr][]*holder{}}
}

// SetPools replaces the pools, valid ones only (see Validate). Existing
// assignments stay, even from a pool that is gone (PoolOf says so).
func (a *Allocator) SetPools(pools []*Pool) {
	a.pools = slices.Clone(pools)
	slices.SortStableFunc(a.pools, func(x, y *Pool) int {
		// Pools with a serviceAllocation first, by priority; then the rest.
		switch {
		case x.Allocation != nil && y.Allocation != nil:
			return cmp.Or(cmp.Compare(x.Allocation.Priority, y.Allocation.Priority), strings.Compare(x.Name, y.Name))
		case x.Allocation != nil:
			return -1
		case y.Allocation != nil:
			return 1
		}
		return strings.Compare(x.Name, y.Name)
	})
}

// Pool returns the named pool, or nil.
func (a *Allocator) Pool(name string) *Pool {
	for _, p := range a.pools {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// PoolOf returns the pool that holds addr, or nil.
func (a *Allocator) PoolOf(addr netip.Addr) *Pool {
	for _, p := range a.pools {
		if p.Contains(addr) {
			return p
		}
	}
	return nil
}

// Assigned returns key's assignment.
func (a *Allocator) Assigned(key string) (Assignment, bool) {
	h, ok := a.svcs[key]
	if !ok {
		return Assignment{}, false
	}
	return h.as, true
}

// Release forgets key's assignment, and reports whether it had one.
func (a *Allocator) Release(key string) bool {
	h, ok := a.svcs[key]
	if !ok {
		return false
	}
	delete(a.svcs, key)
	for _, ip := range h.as.Addrs {
		a.users[ip] = slices.DeleteFunc(a.users[ip], func(x *holder) bool { return x == h })
		if len(a.users[ip]) == 0 {
			delete(a.users, ip)
		}
	}
	return true
}

// Restore records an assignment made before (read back from a Service's
// status when the controller starts), without checking pools: what was
// handed out stays handed out. It refuses only a clash with sharing.
func (a *Allocator) Restore(s Service, as Assignment) *Refusal {
	for _, ip := range as.Addrs {
		if r := a.shareable(s, ip); r != nil {
			return r
		}
	}
	a.record(s, as)
	return nil
}

// Allocate returns s's addresses: its current ones if they still fit its
// request, else new ones.
func (a *Allocator) Allocate(s Service) (Assignment, *Refusal) {
	if h, ok := a.svcs[s.Key]; ok {
		if a.stillFits(h, s) {
			h.svc = s
			return h.as, nil
		}
		a.Release(s.Key)
	}
	as, r := a.choose(s)
	if r != nil {
		return Assignment{}, r
	}
	a.record(s, as)
	return as, nil
}

func (a *Allocator) record(s Service, as Assignment) {
	a.Release(s.Key)
	h := &holder{svc: s, as: as}
	a.svcs[s.Key] = h
	for _, ip := range as.Addrs {
		a.users[ip] = append(a.users[ip], h)
	}
}

// stillFits: the request did not change in a way that moves the address.
func (a *Allocator) stillFits(h *holder, s Service) bool {
	if len(s.Want) > 0 && !slices.Equal(s.Want, h.as.Addrs) {
		return false
	}
	if s.Pool != "" && s.Pool != h.as.Pool {
		return false
	}
	if len(s.IPv6) != len(h.as.Addrs) {
		return false
	}
	for i, ip := range h.as.Addrs {
		if ip.Is6() != s.IPv6[i] {
			return false
		}
		if r := a.shareableExcept(s, ip, h); r != nil {
			return false
		}
	}
	return true
}

func (a *Allocator) choose(s Service) (Assignment, *Refusal) {
	if len(s.Want) > 0 {
		return a.chooseWanted(s)
	}
	var pools []*Pool
	if s.Pool != "" {
		p := a.Pool(s.Pool)
		if p == nil {
			return Assignment{}, &Refusal{ReasonNoPool, fmt.Sprintf("no valid IPAddressPool named %q (annotation %s%s): create it, or fix the name", s.Pool, AnnotationPrefix, AddressPool)}
		}
		pools = []*Pool{p}
	} else {
		for _, p := range a.pools {
			if p.AutoAssign && p.Matches(s.Namespace, s.NSLabels, s.Labels) {
				pools = append(pools, p)
			}
		}
		if len(pools) == 0 {
			return Assignment{}, &Refusal{ReasonNoPool, "no IPAddressPool matches this Service (none with autoAssign whose serviceAllocation admits it): create one, e.g. an IPAddressPool in the cluster's LAN with addresses: [192.168.1.240-192.168.1.250]"}
		}
	}
	var tried []string
	for _, p := range pools {
		as := Assignment{Pool: p.Name}
		for _, v6 := range s.IPv6 {
			ip, ok := a.free(p, s, v6)
			if !ok {
				break
			}
			as.Addrs = append(as.Addrs, ip)
		}
		if len(as.Addrs) == len(s.IPv6) {
			return as, nil
		}
		tried = append(tried, p.Name)
	}
	return Assignment{}, &Refusal{ReasonExhausted, fmt.Sprintf("IPAddressPool %s has no free %s address for this Service: add addresses to a pool, delete unused LoadBalancer Services, or share an address (%s%s)", strings.Join(tried, ", "), families(s.IPv6), AnnotationPrefix, AllowSharedIP)}
}

func families(v6 []bool) string {
	var f []string
	for _, b := range v6 {
		f = append(f, map[bool]string{false: "IPv4", true: "IPv6"}[b])
	}
	return strings.Join(f, "+")
}

// free finds an address of the family in p for s: one it may share
// first (same sharing key), else the first unused one.
func (a *Allocator) free(p *Pool, s Service, v6 bool) (netip.Addr, bool) {
	if s.SharingKey != "" {
		var shared []netip.Addr
		for ip := range a.users {
			if ip.Is6() == v6 && p.Contains(ip) && a.shareable(s, ip) == nil {
				shared = append(shared, ip)
			}
		}
		if len(shared) > 0 {
			return slices.MinFunc(shared, netip.Addr.Compare), true
		}
	}
	for _, r := range p.Ranges {
		if r.First.Is6() != v6 {
			continue
		}
		for ip := r.First; ip.IsValid() && ip.Compare(r.Last) <= 0; ip = ip.Next() {
			if _, used := a.users[ip]; !used && p.usable(ip) {
				return ip, true
			}
		}
	}
	return netip.Addr{}, false
}

func (a *Allocator) chooseWanted(s Service) (Assignment, *Refusal) {
	var as Assignment
	for _, ip := range s.Want {
		p := a.PoolOf(ip)
		if p == nil {
			return Assignment{}, &Refusal{ReasonUnavailable, fmt.Sprintf("%s is in no IPAddressPool: ask for an address of a pool, or add it to one", ip)}
		}
		if s.Pool != "" && p.Name != s.Pool {
			return Assignment{}, &Refusal{ReasonUnavailable, fmt.Sprintf("%s is in IPAddressPool %s, not in %s asked for by %s%s", ip, p.Name, s.Pool, AnnotationPrefix, AddressPool)}
		}
		if as.Pool != "" && as.Pool != p.Name {
			return Assignment{}, &Refusal{ReasonInvalid, fmt.Sprintf("the addresses asked for are in two pools (%s, %s): ask for addresses of one pool", as.Pool, p.Name)}
		}
		if r := a.shareable(s, ip); r != nil {
			return Assignment{}, r
		}
		as.Pool = p.Name
		as.Addrs = append(as.Addrs, ip)
	}
	return as, nil
}

func (a *Allocator) shareable(s Service, ip netip.Addr) *Refusal {
	return a.shareableExcept(s, ip, nil)
}

// shareableExcept: may s use ip beside its current holders (but skip)?
// MetalLB's rules: the same sharing key, no port used by both, and the
// same traffic policy, with the same pod selector when it is Local.
func (a *Allocator) shareableExcept(s Service, ip netip.Addr, skip *holder) *Refusal {
	for _, h := range a.users[ip] {
		if h == skip || h.svc.Key == s.Key {
			continue
		}
		switch {
		case s.SharingKey == "" || h.svc.SharingKey == "":
			return &Refusal{ReasonUnavailable, fmt.Sprintf("%s is in use by Service %s: to share it, give both Services the same %s%s annotation and different ports", ip, h.svc.Key, AnnotationPrefix, AllowSharedIP)}
		case s.SharingKey != h.svc.SharingKey:
			return &Refusal{ReasonSharing, fmt.Sprintf("%s is shared by Service %s under key %q, not %q: use the same %s%s value", ip, h.svc.Key, h.svc.SharingKey, s.SharingKey, AnnotationPrefix, AllowSharedIP)}
		}
		for _, p := range s.Ports {
			if slices.Contains(h.svc.Ports, p) {
				return &Refusal{ReasonSharing, fmt.Sprintf("%s: port %s is already used there by Service %s: use another port (TCP and UDP of one number may share)", ip, p, h.svc.Key)}
			}
		}
		if s.Local != h.svc.Local {
			return &Refusal{ReasonSharing, fmt.Sprintf("%s: Service %s has externalTrafficPolicy %s: Services sharing an address need the same policy", ip, h.svc.Key, policy(h.svc.Local))}
		}
		if s.Local && !maps.Equal(s.Selector, h.svc.Selector) {
			return &Refusal{ReasonSharing, fmt.Sprintf("%s: Service %s selects other pods: with externalTrafficPolicy Local, Services sharing an address must select the same pods", ip, h.svc.Key)}
		}
	}
	return nil
}

func policy(local bool) string {
	if local {
		return "Local"
	}
	return "Cluster"
}

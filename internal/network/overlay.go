package network

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

const (
	// VXLANDevice carries pod traffic between nodes (backend vxlan).
	VXLANDevice = "cl-vxlan"
	// VXLANPort is the UDP port of the encapsulation (flannel's, so
	// firewall rules written for flannel apply).
	VXLANPort = 8472
	vxlanID   = 1
	// vxlanOverhead is outer IPv4 + UDP + VXLAN + inner Ethernet headers.
	vxlanOverhead = 50
	// routeProtocol marks the routes this package owns (rtnetlink
	// protocol numbers above 4 are free for routing daemons).
	routeProtocol = 0xc1

	// Annotations a node publishes for its peers.
	AnnotationBackend  = "cloudless.dev/network-backend"
	AnnotationVTEPMAC  = "cloudless.dev/vtep-mac"
	AnnotationPublicIP = "cloudless.dev/node-ip"
)

// overlay programs the routes to the other nodes' pod CIDRs: through the
// VXLAN device (backend vxlan), or directly via the node's address when
// every node shares one L2 network (backend host-gw).
type overlay struct {
	log     *slog.Logger
	backend string
	nodeIP  net.IP
	self    string
	mac     net.HardwareAddr
	link    netlink.Link // the VXLAN device, for backend vxlan
}

// vtepMAC is stable for a node address, so that restarting the agent does
// not invalidate the peers' neighbour entries (and the connections that
// use them).
func vtepMAC(nodeIP net.IP) net.HardwareAddr {
	sum := sha256.Sum256(nodeIP.To16())
	mac := net.HardwareAddr(sum[:6])
	mac[0] = mac[0]&0xfe | 0x02 // unicast, locally administered
	return mac
}

// parentLink is the interface that holds nodeIP.
func parentLink(nodeIP net.IP) (netlink.Link, error) {
	addrs, err := netlink.AddrList(nil, unix.AF_INET)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if a.IP.Equal(nodeIP) {
			return netlink.LinkByIndex(a.LinkIndex)
		}
	}
	return nil, fmt.Errorf("no interface holds the node address %s: give --node-ip an address of this machine", nodeIP)
}

// setupVXLAN creates the VXLAN device (or keeps the one a previous run
// left, if it matches) with the pod CIDR's network address on it.
func (o *overlay) setupVXLAN(podCIDR netip.Prefix) (mtu int, err error) {
	parent, err := parentLink(o.nodeIP)
	if err != nil {
		return 0, err
	}
	mtu = parent.Attrs().MTU - vxlanOverhead
	want := &netlink.Vxlan{
		LinkAttrs:    netlink.LinkAttrs{Name: VXLANDevice, MTU: mtu, HardwareAddr: o.mac},
		VxlanId:      vxlanID,
		VtepDevIndex: parent.Attrs().Index,
		SrcAddr:      o.nodeIP,
		Port:         VXLANPort,
		Learning:     false,
	}
	if l, err := netlink.LinkByName(VXLANDevice); err == nil {
		have, ok := l.(*netlink.Vxlan)
		if !ok || have.VxlanId != vxlanID || !have.SrcAddr.Equal(o.nodeIP) || have.Port != VXLANPort ||
			have.VtepDevIndex != parent.Attrs().Index || have.Attrs().MTU != mtu || have.Attrs().HardwareAddr.String() != o.mac.String() {
			if err := netlink.LinkDel(l); err != nil {
				return 0, fmt.Errorf("replace stale %s: %w", VXLANDevice, err)
			}
		}
	}
	l, err := netlink.LinkByName(VXLANDevice)
	if err != nil {
		if err := netlink.LinkAdd(want); err != nil {
			if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTSUP) {
				return 0, errNoVXLAN
			}
			return 0, fmt.Errorf("create %s: %w", VXLANDevice, err)
		}
		if l, err = netlink.LinkByName(VXLANDevice); err != nil {
			return 0, err
		}
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: podCIDR.Addr().AsSlice(), Mask: net.CIDRMask(32, 32)}}
	if err := netlink.AddrReplace(l, addr); err != nil {
		return 0, fmt.Errorf("address %s on %s: %w", addr, VXLANDevice, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return 0, fmt.Errorf("set %s up: %w", VXLANDevice, err)
	}
	o.link = l
	return mtu, nil
}

var errNoVXLAN = errors.New("the kernel has no vxlan support (module vxlan)")

// peer is what this node needs to know of another.
type peer struct {
	podCIDR netip.Prefix
	nodeIP  net.IP
	mac     net.HardwareAddr // backend vxlan
}

func peersOf(nodes []*corev1.Node, self string) []peer {
	var ps []peer
	for _, n := range nodes {
		if n.Name == self || n.Spec.PodCIDR == "" {
			continue
		}
		cidr, err := netip.ParsePrefix(n.Spec.PodCIDR)
		ip := net.ParseIP(n.Annotations[AnnotationPublicIP])
		if err != nil || ip == nil {
			continue
		}
		p := peer{podCIDR: cidr.Masked(), nodeIP: ip}
		if m, err := net.ParseMAC(n.Annotations[AnnotationVTEPMAC]); err == nil {
			p.mac = m
		}
		ps = append(ps, p)
	}
	return ps
}

// sync makes the kernel's routes, neighbours and forwarding entries
// match peers, touching only what this package owns.
func (o *overlay) sync(peers []peer) error {
	var errs []error
	want := map[string]bool{}
	for _, p := range peers {
		gw := net.IP(p.podCIDR.Addr().AsSlice())
		route := &netlink.Route{Dst: prefixNet(p.podCIDR), Protocol: routeProtocol}
		switch o.backend {
		case BackendVXLAN:
			if p.mac == nil {
				continue // the peer has not published its VTEP yet
			}
			idx := o.link.Attrs().Index
			if err := netlink.NeighSet(&netlink.Neigh{LinkIndex: idx, Family: unix.AF_INET, State: netlink.NUD_PERMANENT, IP: gw, HardwareAddr: p.mac}); err != nil {
				errs = append(errs, fmt.Errorf("neighbour %s: %w", gw, err))
			}
			if err := netlink.NeighSet(&netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT, Flags: netlink.NTF_SELF, IP: p.nodeIP, HardwareAddr: p.mac}); err != nil {
				errs = append(errs, fmt.Errorf("forwarding entry %s: %w", p.mac, err))
			}
			route.LinkIndex, route.Gw, route.Flags = idx, gw, int(netlink.FLAG_ONLINK)
		default:
			route.Gw = p.nodeIP
		}
		if err := netlink.RouteReplace(route); err != nil {
			errs = append(errs, fmt.Errorf("route to %s: %w", p.podCIDR, err))
		}
		want[p.podCIDR.String()] = true
	}
	// Remove the routes (and their neighbours) of nodes that are gone.
	routes, err := netlink.RouteListFiltered(unix.AF_INET, &netlink.Route{Protocol: routeProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, r := range routes {
		if r.Dst == nil || want[r.Dst.String()] {
			continue
		}
		if err := netlink.RouteDel(&r); err != nil {
			errs = append(errs, fmt.Errorf("remove route to %s: %w", r.Dst, err))
		}
		if o.link != nil && r.LinkIndex == o.link.Attrs().Index && r.Gw != nil {
			neighs, _ := netlink.NeighList(r.LinkIndex, unix.AF_INET)
			for _, n := range neighs {
				if n.IP.Equal(r.Gw) {
					_ = netlink.NeighDel(&n)
					fdb, _ := netlink.NeighList(r.LinkIndex, unix.AF_BRIDGE)
					for _, f := range fdb {
						if f.HardwareAddr.String() == n.HardwareAddr.String() {
							_ = netlink.NeighDel(&f)
						}
					}
				}
			}
		}
	}
	return errors.Join(errs...)
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// publish annotates this node with what its peers need.
func (o *overlay) publish(ctx context.Context, cs kubernetes.Interface) error {
	ann := map[string]string{AnnotationBackend: o.backend, AnnotationPublicIP: o.nodeIP.String()}
	if o.backend == BackendVXLAN {
		ann[AnnotationVTEPMAC] = o.mac.String()
	}
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q,%q:%q,%q:%q}}}`,
		AnnotationBackend, ann[AnnotationBackend], AnnotationPublicIP, ann[AnnotationPublicIP], AnnotationVTEPMAC, ann[AnnotationVTEPMAC])
	_, err := cs.CoreV1().Nodes().Patch(ctx, o.self, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{})
	return err
}

// run keeps the routes in step with the nodes until ctx ends.
func (o *overlay) run(ctx context.Context, cs kubernetes.Interface) {
	factory := informers.NewSharedInformerFactory(cs, 5*time.Minute)
	inf := factory.Core().V1().Nodes()
	kick := make(chan struct{}, 1)
	notify := func(any) {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	_, _ = inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: notify, DeleteFunc: notify, UpdateFunc: func(_, n any) { notify(n) },
	})
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	tick := time.NewTicker(30 * time.Second) // repairs what someone else removed
	defer tick.Stop()
	var last error
	for {
		nodes, _ := inf.Lister().List(everything)
		slices.SortFunc(nodes, func(a, b *corev1.Node) int { return cmpString(a.Name, b.Name) })
		err := o.sync(peersOf(nodes, o.self))
		if err != nil && (last == nil || err.Error() != last.Error()) {
			o.log.Warn("program routes to other nodes' pods", "err", err)
		}
		last = err
		select {
		case <-ctx.Done():
			return
		case <-kick:
		case <-tick.C:
		}
	}
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

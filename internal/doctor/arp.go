package doctor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"

	"github.com/cloudless-dev/cloudless/internal/lb"
	"github.com/cloudless-dev/cloudless/internal/lint"
	"github.com/cloudless-dev/cloudless/internal/network"
)

// ARPListen is how long doctor listens for answers to one ARP request.
const ARPListen = time.Second

// arpTarget is a LoadBalancer address and what it belongs to.
type arpTarget struct {
	ip     netip.Addr
	object string // "Service ns/name"
	// local: this machine's speaker announces it. A packet socket does
	// not hear requests this machine sends, so the local speaker never
	// answers doctor's; its MAC counts as one answer.
	local bool
}

// localAnnouncer marks the targets this machine's node announces by L2,
// by the newest AnnouncingL2 event of each Service (its source's host is
// the node); this machine's node is the one whose address is local.
func localAnnouncer(ctx context.Context, cs kubernetes.Interface, nodes []corev1.Node, targets []arpTarget) {
	local := map[string]bool{}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				local[n.IP.String()] = true
			}
		}
	}
	self := ""
	for _, n := range nodes {
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP && local[a.Address] {
				self = n.Name
			}
		}
	}
	if self == "" {
		return
	}
	evs, err := cs.CoreV1().Events("").List(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("reason", lb.ReasonAnnouncingL2).String()})
	if err != nil {
		return
	}
	newest := map[string]*corev1.Event{}
	for i := range evs.Items {
		e := &evs.Items[i]
		k := "Service " + e.InvolvedObject.Namespace + "/" + e.InvolvedObject.Name
		if e.Source.Component == lb.SpeakerComponent && (newest[k] == nil || lb.EventTime(e).After(lb.EventTime(newest[k]))) {
			newest[k] = e
		}
	}
	for i := range targets {
		if e := newest[targets[i].object]; e != nil && e.Source.Host == self {
			targets[i].local = true
		}
	}
}

// arpChecks asks, on each LAN interface connected to its network, who
// has each LoadBalancer address, and reports an address answered from
// more than one hardware address (CL-LB-009): two nodes announce it (a
// split brain), or something else on the LAN holds it. Addresses on no
// connected network (routed by BGP) are not asked about. Without the
// rights to open a packet socket, it says so once.
func arpChecks(ctx context.Context, targets []arpTarget, r *reporter) {
	type probe struct {
		iface  string
		target arpTarget
	}
	var probes []probe
	for _, t := range targets {
		if !t.ip.Is4() {
			continue
		}
		for _, ifname := range network.ConnectedLANInterfaces(t.ip) {
			probes = append(probes, probe{ifname, t})
		}
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	var denied error
	for _, p := range probes {
		wg.Go(func() {
			macs, err := whoHas(ctx, p.iface, p.target.ip)
			if p.target.local && err == nil {
				if ifi, ierr := net.InterfaceByName(p.iface); ierr == nil && !slices.Contains(macs, ifi.HardwareAddr.String()) {
					macs = append(macs, ifi.HardwareAddr.String())
					slices.Sort(macs)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if errors.Is(err, os.ErrPermission) {
					denied = err
				}
				return
			}
			if len(macs) > 1 {
				r.add("CL-LB-009", lint.Error, p.target.object,
					fmt.Sprintf("%s is answered on %s by %d hardware addresses (%s): two nodes announce it, or another host on the LAN holds it, and clients reach whichever answered last", p.target.ip, p.iface, len(macs), strings.Join(macs, ", ")),
					"find the hosts by these MAC addresses (the switch's table, or `ip neigh` on a neighbour); take the address off any host that is not a Cloudless node, or out of the IPAddressPool; `cloudless lb status` names the node that should answer")
			}
		})
	}
	wg.Wait()
	if denied != nil {
		r.add("CL-LB-009", lint.Info, "doctor", "LoadBalancer addresses were not checked for duplicate ARP answers: "+denied.Error(), "run doctor as root")
	}
}

// whoHas sends an ARP request for ip on ifname and returns the distinct
// hardware addresses that answer within ARPListen, sorted. It listens to
// every frame on the interface, outgoing ones included (ETH_P_ALL): a
// protocol-bound socket would miss the reply of a speaker on this very
// machine.
func whoHas(ctx context.Context, ifname string, ip netip.Addr) ([]string, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, err
	}
	src, ok := sourceFor(ifi, ip)
	if !ok {
		return nil, fmt.Errorf("%s has no IPv4 address on %s's network", ifname, ip)
	}
	c, err := packet.Listen(ifi, packet.Raw, unix.ETH_P_ALL, nil)
	if err != nil {
		return nil, fmt.Errorf("open a packet socket on %s: %w", ifname, err)
	}
	defer c.Close()
	deadline := time.Now().Add(ARPListen)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := c.SetReadDeadline(deadline); err != nil {
		return nil, err
	}
	req, err := arp.NewPacket(arp.OperationRequest, ifi.HardwareAddr, src, ethernet.Broadcast, ip)
	if err != nil {
		return nil, err
	}
	pb, err := req.MarshalBinary()
	if err != nil {
		return nil, err
	}
	fb, err := (&ethernet.Frame{Destination: ethernet.Broadcast, Source: ifi.HardwareAddr, EtherType: ethernet.EtherTypeARP, Payload: pb}).MarshalBinary()
	if err != nil {
		return nil, err
	}
	if _, err := c.WriteTo(fb, &packet.Addr{HardwareAddr: ethernet.Broadcast}); err != nil {
		return nil, fmt.Errorf("ARP request on %s: %w", ifname, err)
	}
	var macs []string
	buf := make([]byte, ifi.MTU+64)
	for {
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, net.ErrClosed) {
				break
			}
			return nil, fmt.Errorf("read from %s: %w", ifname, err)
		}
		var f ethernet.Frame
		if f.UnmarshalBinary(buf[:n]) != nil || f.EtherType != ethernet.EtherTypeARP {
			continue
		}
		var p arp.Packet
		if p.UnmarshalBinary(f.Payload) != nil {
			continue
		}
		if p.Operation == arp.OperationReply && p.SenderIP == ip {
			if m := p.SenderHardwareAddr.String(); !slices.Contains(macs, m) {
				macs = append(macs, m)
			}
		}
	}
	slices.Sort(macs)
	return macs, nil
}

// sourceFor is ifi's IPv4 address on ip's network.
func sourceFor(ifi *net.Interface, ip netip.Addr) (netip.Addr, bool) {
	addrs, _ := ifi.Addrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if p, err := netip.ParsePrefix(n.String()); err == nil && p.Addr().Is4() && p.Masked().Contains(ip) {
				return p.Addr(), true
			}
		}
	}
	return netip.Addr{}, false
}

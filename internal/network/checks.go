package network

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"sigs.k8s.io/knftables"

	"github.com/cloudless-dev/cloudless/internal/footprint"
	"strconv"
)

// features are the kernel and userspace parts the proxy modes need.
type features struct {
	nftables bool // nf_tables in the kernel and the nft command
	iptables bool // the iptables command (nf_tables or legacy backend)
	ipvs     bool // ip_vs in the kernel and the ipset command
	missing  map[string]string
}

func probeKernel() features {
	f := features{missing: map[string]string{}}
	if _, err := exec.LookPath("nft"); err != nil {
		f.missing[ProxyNFTables] = "the nft command (apt-get install nftables)"
	} else if _, err := knftables.New(knftables.IPv4Family, "cloudless-probe"); err != nil {
		f.missing[ProxyNFTables] = "kernel module nf_tables (" + err.Error() + ")"
	} else {
		f.nftables = true
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		f.missing[ProxyIPTables] = "the iptables command (apt-get install iptables)"
	} else {
		f.iptables = true
	}
	if _, err := os.Stat("/proc/net/ip_vs"); err != nil {
		f.missing[ProxyIPVS] = "kernel module ip_vs (modprobe ip_vs ip_vs_rr)"
	} else if _, err := exec.LookPath("ipset"); err != nil {
		f.missing[ProxyIPVS] = "the ipset command (apt-get install ipset)"
	} else {
		f.ipvs = f.iptables
	}
	return f
}

// pickProxyMode returns want if this machine can run it, else the next
// one down (ipvs, nftables, iptables), logging what is missing; "" if none.
func pickProxyMode(want string, f features, log *slog.Logger) string {
	order := []string{ProxyIPVS, ProxyNFTables, ProxyIPTables}
	can := map[string]bool{ProxyIPVS: f.ipvs, ProxyNFTables: f.nftables, ProxyIPTables: f.iptables}
	start := 0
	for i, m := range order {
		if m == want {
			start = i
		}
	}
	for _, m := range order[start:] {
		if can[m] {
			return m
		}
		if i := indexOf(order, m); i+1 < len(order) {
			log.Warn(fmt.Sprintf("proxy mode %s needs %s, which is missing: falling back to %s", m, f.missing[m], order[i+1]))
		}
	}
	return ""
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

// ownDevices carry the routes that this package and the CNI bridge make.
var ownDevices = map[string]bool{BridgeName: true, VXLANDevice: true, kubeIPVSDevice: true}

// podVethPrefix starts the host end of each pod's veth (the CNI bridge
// plugin's naming).
const podVethPrefix = "veth"

// OwnDevice reports whether the link name is one this node's pod network
// made (the bridge, the overlay, kube-proxy's, a pod's veth): not a LAN
// interface.
func OwnDevice(name string) bool {
	return ownDevices[name] || strings.HasPrefix(name, podVethPrefix)
}

// ConnectedLANInterfaces are the LAN interfaces (LANInterface) with a
// connected IPv4 network holding ip: where ARP for ip is heard.
func ConnectedLANInterfaces(ip netip.Addr) []string {
	connected, _ := lanInterfaces(ip)
	return connected
}

// DefaultLANInterfaces are where an address is announced when nothing
// names the interfaces: the connected LAN interfaces, or else every LAN
// interface.
func DefaultLANInterfaces(ip netip.Addr) []string {
	connected, lan := lanInterfaces(ip)
	if len(connected) > 0 {
		return connected
	}
	return lan
}

func lanInterfaces(ip netip.Addr) (connected, lan []string) {
	ifis, _ := net.Interfaces()
	for _, ifi := range ifis {
		if !LANInterface(ifi) {
			continue
		}
		lan = append(lan, ifi.Name)
		addrs, _ := ifi.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if p, err := netip.ParsePrefix(n.String()); err == nil && p.Addr().Is4() && p.Masked().Contains(ip) {
					connected = append(connected, ifi.Name)
					break
				}
			}
		}
	}
	return connected, lan
}

// iffNoARP is IFF_NOARP in /sys/class/net/<if>/flags.
const iffNoARP = 0x80

// LANInterface: up, Ethernet, answers ARP, not a bond's member, not one
// of the pod network's own devices.
func LANInterface(ifi net.Interface) bool {
	if ifi.Flags&net.FlagUp == 0 || ifi.Flags&net.FlagLoopback != 0 || len(ifi.HardwareAddr) != 6 || OwnDevice(ifi.Name) {
		return false
	}
	if b, err := os.ReadFile("/sys/class/net/" + ifi.Name + "/flags"); err == nil {
		if f, err := strconv.ParseUint(strings.TrimSpace(strings.TrimPrefix(string(b), "0x")), 16, 32); err == nil && f&iffNoARP != 0 {
			return false
		}
	}
	if _, err := os.Stat("/sys/class/net/" + ifi.Name + "/bonding_slave"); err == nil {
		return false // a bond's member: the bond answers
	}
	return true
}

// Gateways are the next hops of this machine's routes in the main
// table (the default route's first): the LAN's routers.
func Gateways() ([]netip.Addr, error) {
	routes, err := netlink.RouteListFiltered(unix.AF_UNSPEC, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	var out []netip.Addr
	for _, r := range routes {
		hops := []net.IP{r.Gw}
		for _, h := range r.MultiPath {
			hops = append(hops, h.Gw)
		}
		for _, gw := range hops {
			if a, ok := netip.AddrFromSlice(gw); ok && gw != nil {
				out = append(out, a.Unmap())
			}
		}
	}
	return out, nil
}

// CheckOverlap refuses prefix (named what) if it overlaps a network this
// machine already routes: a connected network, or a route at least as
// specific. A wider route via a gateway (a summary like 10.0.0.0/8 or
// the default route) is not a conflict: pods are more specific.
func CheckOverlap(prefix netip.Prefix, what, fix string) error {
	routes, err := netlink.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst == nil || r.Protocol == routeProtocol {
			continue
		}
		name := ""
		if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
			name = l.Attrs().Name
		}
		if ownDevices[name] {
			continue
		}
		ones, _ := r.Dst.Mask.Size()
		addr, _ := netip.AddrFromSlice(r.Dst.IP.To4())
		dst := netip.PrefixFrom(addr, ones)
		if !dst.Overlaps(prefix) {
			continue
		}
		if r.Gw != nil && dst.Bits() < prefix.Bits() {
			continue
		}
		desc := dst.String()
		if r.Gw != nil {
			desc += " via " + r.Gw.String()
		}
		if name != "" {
			desc += " dev " + name
		}
		return fmt.Errorf("%s overlaps this machine's route %s: pods would be unreachable from that network; %s", what, desc, fix)
	}
	return nil
}

// Remove deletes, in the caller's network namespace, the network objects
// rec lists: devices, the routes of its protocol, nftables tables,
// iptables chains and, for kube-proxy's iptables and ipvs modes, the
// rules kube-proxy's own cleanup removes. What is already gone is
// skipped. Used by `cloudless reset`, which checks first that this is
// the namespace the node ran in.
func Remove(ctx context.Context, rec footprint.Record) error {
	var errs []error
	for _, name := range rec.Links {
		l, err := netlink.LinkByName(name)
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			continue
		}
		if err == nil {
			err = netlink.LinkDel(l)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("delete link %s: %w", name, err))
		}
	}
	if rec.RouteProtocol != 0 {
		routes, err := netlink.RouteListFiltered(unix.AF_INET, &netlink.Route{Protocol: netlink.RouteProtocol(rec.RouteProtocol)}, netlink.RT_FILTER_PROTOCOL)
		if err != nil {
			errs = append(errs, fmt.Errorf("list routes: %w", err))
		}
		for _, r := range routes {
			if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("delete route to %s: %w", r.Dst, err))
			}
		}
	}
	if rec.KubeProxy == ProxyIPTables || rec.KubeProxy == ProxyIPVS {
		if err := cleanupKubeProxy(ctx); err != nil {
			errs = append(errs, fmt.Errorf("kube-proxy rules: %w", err))
		}
	}
	for _, t := range rec.NFTables {
		out, err := exec.CommandContext(ctx, "nft", "delete", "table", t.Family, t.Name).CombinedOutput()
		if err != nil && !strings.Contains(string(out), "No such file or directory") {
			errs = append(errs, fmt.Errorf("nft delete table %s %s: %v: %s", t.Family, t.Name, err, strings.TrimSpace(string(out))))
		}
	}
	// Jumps first, then every chain's rules, then the chains: a chain
	// can be deleted only once nothing refers to it.
	ipt := func(c footprint.IPTChain, args ...string) error {
		return exec.CommandContext(ctx, "iptables", append([]string{"-w", "-t", c.Table}, args...)...).Run()
	}
	for _, c := range rec.IPTables {
		if c.From != "" {
			for ipt(c, "-D", c.From, "-j", c.Chain) == nil {
			}
		}
	}
	for _, c := range rec.IPTables {
		if ipt(c, "-L", c.Chain, "-n") == nil {
			if err := ipt(c, "-F", c.Chain); err != nil {
				errs = append(errs, fmt.Errorf("iptables -t %s -F %s: %w", c.Table, c.Chain, err))
			}
		}
	}
	for _, c := range rec.IPTables {
		if ipt(c, "-L", c.Chain, "-n") == nil {
			if err := ipt(c, "-X", c.Chain); err != nil {
				errs = append(errs, fmt.Errorf("iptables -t %s -X %s: %w", c.Table, c.Chain, err))
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("network: remove: %w", errors.Join(errs...))
	}
	return nil
}

// Package network is a node's part of the cluster network: the routes to
// other nodes' pods (VXLAN, or host-gw on one flat L2 network), masquerade
// of pod traffic leaving the cluster, the Service proxy (upstream
// kube-proxy, in this process), NetworkPolicy enforcement and the node's
// share of cluster DNS.
//
// Files: overlay.go (VXLAN device, routes, neighbours), policy.go
// (NetworkPolicy in nftables), dns.go (cluster DNS), kubeproxy.go (the
// only importer of kube-proxy), masq.go (the nftables/iptables rules this
// package owns), checks.go (kernel features, CIDR overlaps).
//
// The agent starts it once the node has its pod CIDR.
package network

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"

	"github.com/cloudless-dev/cloudless/internal/footprint"
)

// Backends carry pod traffic between nodes.
const (
	BackendVXLAN  = "vxlan"
	BackendHostGW = "host-gw"
)

// Proxy modes of kube-proxy.
const (
	ProxyNFTables = "nftables"
	ProxyIPTables = "iptables"
	ProxyIPVS     = "ipvs"
)

var everything = labels.Everything()

// Config configures a node's network.
type Config struct {
	NodeName    string
	NodeIP      string
	ClusterCIDR string
	ServiceCIDR string
	Backend     string // vxlan (default) or host-gw
	ProxyMode   string // nftables (default), iptables or ipvs
	// Kubeconfig authenticates kube-proxy and the controllers here (the
	// node's credential; the server grants nodes what they need).
	Kubeconfig string
	StateDir   string
	// ClusterDomain is served by cluster DNS; ResolvConf names its
	// upstream resolvers (no loopback addresses).
	ClusterDomain string
	ResolvConf    string
	// Footprint records each device, table and chain before it is made,
	// for `cloudless reset`; nil records nothing.
	Footprint *footprint.Recorder
}

// BridgeName is the pod bridge on each node (the CNI bridge plugin's).
const BridgeName = "cl0"

// Network is a node's network; New checks the kernel, Setup programs
// this node, Run keeps it in step with the cluster.
type Network struct {
	cfg       Config
	log       *slog.Logger
	proxyMode string
	backend   string
	nodeIP    net.IP
	cluster   netip.Prefix
	overlay   *overlay
	masq      masquerader
	gw        netip.Addr // this node's pod gateway: the bridge's address
}

// New validates cfg and picks the proxy mode and backend this kernel can
// run, logging by name any missing feature and the fallback used.
func New(cfg Config, log *slog.Logger) (*Network, error) {
	if cfg.Backend == "" {
		cfg.Backend = BackendVXLAN
	}
	if cfg.ProxyMode == "" {
		cfg.ProxyMode = ProxyNFTables
	}
	if err := ValidateModes(cfg.Backend, cfg.ProxyMode); err != nil {
		return nil, err
	}
	ip := net.ParseIP(cfg.NodeIP).To4()
	if ip == nil {
		return nil, fmt.Errorf("network: node address %q is not IPv4: IPv4 only for now (no IPv6, no dual-stack); give --node-ip an IPv4 address of this host", cfg.NodeIP)
	}
	cluster, err := netip.ParsePrefix(cfg.ClusterCIDR)
	if err != nil {
		return nil, fmt.Errorf("network: cluster CIDR: %w", err)
	}
	if !cluster.Addr().Is4() {
		return nil, fmt.Errorf("network: cluster CIDR %s is IPv6: IPv4 only for now (no IPv6, no dual-stack); restart the server with an IPv4 --cluster-cidr", cluster)
	}
	n := &Network{cfg: cfg, log: log, backend: cfg.Backend, nodeIP: ip, cluster: cluster.Masked()}
	feats := probeKernel()
	n.proxyMode = pickProxyMode(cfg.ProxyMode, feats, log)
	if n.proxyMode == "" {
		return nil, errors.New("network: the kernel has neither nf_tables nor iptables (modules nf_tables, ip_tables) and the nft and iptables commands must be installed: no Service proxy can run; install nftables (apt-get install nftables)")
	}
	if feats.nftables {
		n.masq = &nftMasq{cluster: n.cluster, rec: cfg.Footprint}
	} else {
		n.masq = &iptMasq{cluster: n.cluster, rec: cfg.Footprint}
	}
	n.overlay = &overlay{log: log, backend: cfg.Backend, nodeIP: ip, self: cfg.NodeName, mac: vtepMAC(ip)}
	return n, nil
}

// ValidateModes checks a backend and a proxy mode given on the command line.
func ValidateModes(backend, proxyMode string) error {
	switch backend {
	case BackendVXLAN, BackendHostGW:
	default:
		return fmt.Errorf("network backend %q: use vxlan (works across routed networks) or host-gw (every node on one L2 network)", backend)
	}
	switch proxyMode {
	case ProxyNFTables, ProxyIPTables, ProxyIPVS:
	default:
		return fmt.Errorf("proxy mode %q: use nftables (the default), iptables or ipvs", proxyMode)
	}
	return nil
}

// ProxyMode is the mode kube-proxy runs in after fallbacks.
func (n *Network) ProxyMode() string { return n.proxyMode }

// Setup prepares this node for pods on podCIDR: kernel settings, the
// VXLAN device (falling back to host-gw without one), masquerade, and its
// annotations for the other nodes. It returns the pods' MTU.
func (n *Network) Setup(ctx context.Context, cs kubernetes.Interface, node *corev1.Node) (mtu int, err error) {
	podCIDR, err := netip.ParsePrefix(node.Spec.PodCIDR)
	if err != nil {
		return 0, fmt.Errorf("network: node pod CIDR %q: %w", node.Spec.PodCIDR, err)
	}
	if err := CheckOverlap(podCIDR.Masked(), "the node's pod CIDR "+podCIDR.String(), "on the server, choose a --cluster-cidr that no network of this machine uses"); err != nil {
		return 0, err
	}
	if err := n.sysctls(); err != nil {
		return 0, err
	}
	rec := n.cfg.Footprint
	if err := rec.Add(func(r *footprint.Record) { r.RouteProtocol = routeProtocol }); err != nil {
		return 0, fmt.Errorf("network: %w", err)
	}
	if n.backend == BackendVXLAN {
		if err := rec.AddLink(VXLANDevice); err != nil {
			return 0, fmt.Errorf("network: %w", err)
		}
		mtu, err = n.overlay.setupVXLAN(podCIDR.Masked())
		if errors.Is(err, errNoVXLAN) {
			n.log.Warn("the kernel has no vxlan support (module vxlan): falling back to backend host-gw, which needs every node on one L2 network")
			n.backend, n.overlay.backend = BackendHostGW, BackendHostGW
		} else if err != nil {
			return 0, fmt.Errorf("network: %w", err)
		}
	}
	if n.backend == BackendHostGW {
		parent, err := parentLink(n.nodeIP)
		if err != nil {
			return 0, fmt.Errorf("network: %w", err)
		}
		mtu = parent.Attrs().MTU
	}
	n.gw = podCIDR.Masked().Addr().Next()
	if err := rec.AddLink(BridgeName); err != nil {
		return 0, fmt.Errorf("network: %w", err)
	}
	if err := ensureBridge(netip.PrefixFrom(n.gw, podCIDR.Bits()), mtu); err != nil {
		return 0, fmt.Errorf("network: %w", err)
	}
	if err := n.masq.ensure(ctx); err != nil {
		return 0, fmt.Errorf("network: masquerade rules: %w", err)
	}
	if err := n.overlay.publish(ctx, cs); err != nil {
		return 0, fmt.Errorf("network: annotate node %s: %w", n.cfg.NodeName, err)
	}
	return mtu, nil
}

// Run keeps routes and the Service proxy running until ctx ends; it
// returns when one of them fails for good.
func (n *Network) Run(ctx context.Context, cs kubernetes.Interface) error {
	go n.overlay.run(ctx, cs)
	go n.masq.keep(ctx, n.log)
	go n.keepPolicy(ctx, cs)
	go func() {
		if err := n.runDNS(ctx, cs, n.gw); err != nil && ctx.Err() == nil {
			n.log.Error("cluster DNS on this node stopped", "err", err)
		}
	}()
	if err := n.runKubeProxy(ctx); err != nil && ctx.Err() == nil {
		return fmt.Errorf("kube-proxy: %w", err)
	}
	return nil
}

// ensureBridge creates the pod bridge with the gateway address before the
// first pod (the CNI plugin adopts it), so that cluster DNS can listen
// there from the start.
func ensureBridge(gw netip.Prefix, mtu int) error {
	l, err := netlink.LinkByName(BridgeName)
	if err != nil {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: BridgeName, MTU: mtu}}
		if err := netlink.LinkAdd(br); err != nil {
			return fmt.Errorf("create bridge %s: %w", BridgeName, err)
		}
		if l, err = netlink.LinkByName(BridgeName); err != nil {
			return err
		}
	}
	if err := netlink.AddrReplace(l, &netlink.Addr{IPNet: prefixNet(gw)}); err != nil {
		return fmt.Errorf("address %s on %s: %w", gw, BridgeName, err)
	}
	return netlink.LinkSetUp(l)
}

// sysctls turns on forwarding and makes bridged pod traffic pass through
// netfilter (Service replies on one bridge, NetworkPolicy between pods on
// one node).
func (n *Network) sysctls() error {
	for path, v := range map[string]string{
		"/proc/sys/net/ipv4/ip_forward":                 "1",
		"/proc/sys/net/bridge/bridge-nf-call-iptables":  "1",
		"/proc/sys/net/bridge/bridge-nf-call-ip6tables": "1",
	} {
		if err := os.WriteFile(path, []byte(v), 0o644); err != nil {
			if os.IsNotExist(err) {
				return fmt.Errorf("network: %s is missing: load the kernel module br_netfilter (modprobe br_netfilter, and list it in /etc/modules-load.d/)", path)
			}
			return fmt.Errorf("network: set %s: %w", path, err)
		}
	}
	return nil
}

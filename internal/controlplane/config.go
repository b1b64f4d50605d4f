package controlplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/cloudless-dev/cloudless/internal/agent"
	"github.com/cloudless-dev/cloudless/internal/datadir"
	"github.com/cloudless-dev/cloudless/internal/datastore"
	authdns "github.com/cloudless-dev/cloudless/internal/dns"
	"github.com/cloudless-dev/cloudless/internal/network"
	"github.com/cloudless-dev/cloudless/internal/volumes"
)

// Config configures the control plane.
type Config struct {
	DataDir string
	// Datastore: empty for the embedded engine, postgres://, or an
	// external etcd cluster (https://…, with the three TLS files).
	DatastoreEndpoint string
	DatastoreCAFile   string
	DatastoreCertFile string
	DatastoreKeyFile  string
	// DatastoreReservedSpace is the embedded engine's reserve of free
	// disk (datastore.Config.ReservedSpace; 0 is automatic).
	DatastoreReservedSpace uint64
	// Token is the cluster secret: servers sharing a datastore derive from
	// it the key that seals the CA they share there.
	Token string

	BindAddress      string // where the apiserver listens
	AdvertiseAddress string // the address other nodes and Services use
	HTTPSPort        int
	ClusterCIDR      string
	ServiceCIDR      string
	ClusterDNS       string
	ClusterDomain    string
	TLSSANs          []string
	// NetworkBackend carries pod traffic between nodes: vxlan or host-gw.
	// ProxyMode is kube-proxy's: nftables, iptables or ipvs. Both apply
	// to every node; joining agents read them from cluster-info.
	NetworkBackend string
	ProxyMode      string
	// PodDNSNdots is the ndots given to pods that use cluster DNS and set
	// none themselves (0: leave the kubelet's 5).
	PodDNSNdots int
	// LBNodePorts keeps upstream's default for new LoadBalancer Services
	// (a NodePort each); false gives them allocateLoadBalancerNodePorts:
	// false unless they set it.
	LBNodePorts bool

	// CertValidity is the lifetime of leaf certificates; they are renewed
	// while running when less than RenewBefore (at most a third of the
	// validity) remains.
	CertValidity time.Duration
	RenewBefore  time.Duration

	// Pod Security Admission levels for namespaces without their own
	// labels: privileged, baseline or restricted. Audit follows Warn.
	PodSecurityEnforce string
	PodSecurityWarn    string

	// The node agent on this machine (kubelet, containerd), unless
	// DisableAgent, configured as a joined agent is (its NodeIP is
	// AdvertiseAddress).
	DisableAgent bool
	agent.NodeConfig
	// DNSListen is where the authoritative DNS for the cluster's public
	// names listens, UDP and TCP (internal/dns); "" runs none.
	// DNSTransferAllow are the addresses and CIDRs that may transfer
	// zones (AXFR); none by default.
	DNSListen        string
	DNSTransferAllow []string
	// DNSNotify are the secondaries told by NOTIFY of every new serial.
	DNSNotify []string
	// DNSZones are zones from files, ORIGIN=FILE, applied as zone
	// ConfigMaps at every start.
	DNSZones []string
	// ManifestsDir is mirrored into the stored manifests (default
	// <data-dir>/server/manifests).
	ManifestsDir string
	// Disable names built-in components not to run or install
	// (Components).
	Disable []string

	// Extra upstream flags, applied last.
	APIServerArgs         []string
	ControllerManagerArgs []string
	SchedulerArgs         []string
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		DataDir:        datadir.Default,
		BindAddress:    "0.0.0.0",
		HTTPSPort:      6443,
		ClusterCIDR:    "10.42.0.0/16",
		ServiceCIDR:    "10.43.0.0/16",
		ClusterDNS:     "10.43.0.10",
		ClusterDomain:  "cluster.local",
		NetworkBackend: network.BackendVXLAN,
		ProxyMode:      network.ProxyNFTables,
		PodDNSNdots:    2,
		NodeConfig:     agent.DefaultNodeConfig(),
		CertValidity:   365 * 24 * time.Hour,
		RenewBefore:    120 * 24 * time.Hour,

		PodSecurityEnforce: "baseline",
		PodSecurityWarn:    "restricted",
	}
}

// Validate checks the configuration without side effects.
// Built-in components that --disable may turn off, for an operator who
// runs their own instead.
const (
	// ComponentMetrics is the metrics.k8s.io API (internal/metrics).
	ComponentMetrics = "metrics"
	// ComponentLocalStorage is the local-path StorageClass and what lets
	// nodes provision it (internal/volumes).
	ComponentLocalStorage = volumes.DisableName
)

// Components describes what --disable accepts.
var Components = map[string]string{
	ComponentMetrics:      "the metrics API for kubectl top and HPAs (metrics.k8s.io); run metrics-server yourself instead",
	ComponentLocalStorage: "the local-path StorageClass; bring your own provisioner and default class",
}

func componentNames() string {
	names := make([]string, 0, len(Components))
	for n := range Components {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// Disabled reports whether --disable names component.
func (c *Config) Disabled(component string) bool { return slices.Contains(c.Disable, component) }

func (c *Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("--data-dir is empty")
	}
	for _, d := range c.Disable {
		if _, ok := Components[d]; !ok {
			return fmt.Errorf("--disable %q: no such component; known: %s", d, componentNames())
		}
	}
	cluster, err := ipv4Prefix("--cluster-cidr", c.ClusterCIDR, "10.42.0.0/16")
	if err != nil {
		return err
	}
	service, err := ipv4Prefix("--service-cidr", c.ServiceCIDR, "10.43.0.0/16")
	if err != nil {
		return err
	}
	if cluster.Overlaps(service) {
		return fmt.Errorf("--cluster-cidr %s overlaps --service-cidr %s; choose ranges that do not overlap", cluster, service)
	}
	nodeMask, err := c.nodeCIDRMaskSize()
	if err != nil {
		return err
	}
	if cluster.Bits() > nodeMask {
		return fmt.Errorf("--cluster-cidr %s is smaller than one node's pod range (/%d): give a range of /%d or larger, e.g. 10.42.0.0/16, or a longer --kube-controller-manager-arg=--node-cidr-mask-size", cluster, nodeMask, nodeMask)
	}
	if nodeMask > maxNodeCIDRMaskSize {
		return fmt.Errorf("--node-cidr-mask-size %d leaves no room for pods (the pod gateway takes one address): use at most %d", nodeMask, maxNodeCIDRMaskSize)
	}
	dns, err := netip.ParseAddr(c.ClusterDNS)
	if err != nil || !service.Contains(dns) {
		return fmt.Errorf("--cluster-dns %q must be an address inside --service-cidr %s", c.ClusterDNS, service)
	}
	if first := service.Masked().Addr().Next(); dns == service.Masked().Addr() || dns == first || dns == lastAddr(service) {
		return fmt.Errorf("--cluster-dns %s is reserved in --service-cidr %s (the network address, %s for the kubernetes Service, or the broadcast address): pick another, e.g. the tenth address", dns, service, first)
	}
	if err := network.ValidateModes(c.NetworkBackend, c.ProxyMode); err != nil {
		return fmt.Errorf("--network-backend/--proxy-mode: %w", err)
	}
	if err := c.NodeConfig.Validate(); err != nil {
		return err
	}
	if c.DNSListen != "" {
		if _, port, err := net.SplitHostPort(c.DNSListen); err != nil || port == "" {
			return fmt.Errorf("--dns-listen %q: want host:port, e.g. :53 or 192.0.2.1:53", c.DNSListen)
		}
	}
	if _, err := authdns.ParsePrefixes(strings.Join(c.DNSTransferAllow, ",")); err != nil {
		return fmt.Errorf("--dns-transfer-allow: %w: give addresses or CIDRs of your secondaries", err)
	}
	for _, n := range c.DNSNotify {
		host := n
		if h, _, err := net.SplitHostPort(n); err == nil {
			host = h
		}
		if _, err := netip.ParseAddr(host); err != nil {
			return fmt.Errorf("--dns-notify %q: want a secondary's IP address, optionally with :port", n)
		}
	}
	if c.DNSListen == "" && (len(c.DNSNotify) > 0 || len(c.DNSTransferAllow) > 0 || len(c.DNSZones) > 0) {
		return errors.New("--dns-notify, --dns-transfer-allow and --dns-zone need --dns-listen: the authoritative DNS is off without it")
	}
	for _, z := range c.DNSZones {
		if _, err := authdns.ConfigZone(z); err != nil {
			return err
		}
	}
	if c.PodDNSNdots < 0 || c.PodDNSNdots > 15 {
		return fmt.Errorf("--pod-dns-ndots %d: want 0 (keep the kubelet's 5) to 15", c.PodDNSNdots)
	}
	if c.HTTPSPort <= 0 || c.HTTPSPort > 65535 {
		return fmt.Errorf("--https-listen-port %d is not a port", c.HTTPSPort)
	}
	if net.ParseIP(c.BindAddress) == nil {
		return fmt.Errorf("--bind-address %q is not an IP address", c.BindAddress)
	}
	if c.AdvertiseAddress != "" {
		a, err := netip.ParseAddr(c.AdvertiseAddress)
		if err != nil {
			return fmt.Errorf("--advertise-address %q is not an IP address", c.AdvertiseAddress)
		}
		if !a.Unmap().Is4() {
			return fmt.Errorf("--advertise-address %s is IPv6: %s; give this host's IPv4 address", a, ipv4Only)
		}
	}
	if errs := validation.IsDNS1123Subdomain(c.ClusterDomain); len(errs) > 0 {
		return fmt.Errorf("--cluster-domain %q: %s (the default is cluster.local)", c.ClusterDomain, strings.Join(errs, "; "))
	}
	if c.CertValidity < time.Minute {
		return fmt.Errorf("--cert-validity %s is too short", c.CertValidity)
	}
	for flag, v := range map[string]string{"--pod-security-enforce": c.PodSecurityEnforce, "--pod-security-warn": c.PodSecurityWarn} {
		if v != "privileged" && v != "baseline" && v != "restricted" {
			return fmt.Errorf("%s %q: want privileged, baseline or restricted", flag, v)
		}
	}
	if c.DatastoreEndpoint != "" && c.Token == "" {
		return fmt.Errorf("--datastore-endpoint needs --token: servers sharing a datastore use it to protect the cluster CA stored there; give every server the same random one, e.g. --token %s", GenerateToken())
	}
	if c.externalEtcd() {
		return c.validateEtcd()
	}
	ds := datastore.DefaultConfig()
	ds.DataDir, ds.Endpoint = c.DataDir, c.DatastoreEndpoint
	return ds.Validate()
}

// ipv4Only says what address families are supported.
const ipv4Only = "Cloudless supports IPv4 only for now (no IPv6, no dual-stack)"

// defaultNodeCIDRMaskSize is the size of each node's pod range:
// kube-controller-manager's default for IPv4 (--node-cidr-mask-size).
const defaultNodeCIDRMaskSize = 24

// maxNodeCIDRMaskSize leaves a node's pod range room for its gateway
// and one pod.
const maxNodeCIDRMaskSize = 30

// ipv4Prefix parses the IPv4 CIDR given to flag, or says what is wrong and
// what to give instead.
func ipv4Prefix(flag, v, example string) (netip.Prefix, error) {
	if strings.Contains(v, ",") {
		return netip.Prefix{}, fmt.Errorf("%s %q is a list: %s; give one IPv4 range, e.g. %s", flag, v, ipv4Only, example)
	}
	p, err := netip.ParsePrefix(v)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%s %q is not a CIDR (for example %s): %v", flag, v, example, err)
	}
	if !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("%s %s is IPv6: %s; give an IPv4 range, e.g. %s", flag, p, ipv4Only, example)
	}
	return p, nil
}

// lastAddr is the last address of p (its broadcast address for IPv4).
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	n := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3]) | host
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}

// nodeCIDRMaskSize is the size of each node's pod range: the last
// --node-cidr-mask-size[-ipv4] among the controller-manager's extra
// flags, else upstream's default.
func (c *Config) nodeCIDRMaskSize() (int, error) {
	size := defaultNodeCIDRMaskSize
	for _, a := range c.ControllerManagerArgs {
		k, v, ok := strings.Cut(a, "=")
		if !ok || k != "--node-cidr-mask-size" && k != "--node-cidr-mask-size-ipv4" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 32 {
			return 0, fmt.Errorf("--kube-controller-manager-arg=%s: want a mask size from 1 to 32, e.g. %s=%d", a, k, defaultNodeCIDRMaskSize)
		}
		size = n
	}
	return size, nil
}

// firstServiceIP is the kubernetes Service's ClusterIP.
func (c *Config) firstServiceIP() net.IP {
	p := netip.MustParsePrefix(c.ServiceCIDR)
	return net.IP(p.Masked().Addr().Next().AsSlice())
}

func (c *Config) renewBefore() time.Duration {
	return min(c.RenewBefore, c.CertValidity/3)
}

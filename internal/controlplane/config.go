package controlplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/cloudless-dev/cloudless/internal/datastore"
	"github.com/cloudless-dev/cloudless/internal/network"
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
	// ResolvConf is where this node's upstream resolvers are read from
	// (default: /etc/resolv.conf, or systemd-resolved's real one).
	ResolvConf string

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
	// DisableAgent. NodeName defaults to the lowercased hostname.
	DisableAgent bool
	NodeName     string
	NodeTaints   []string // key=value:Effect, registered with the node
	KubeletArgs  []string

	// Extra upstream flags, applied last.
	APIServerArgs         []string
	ControllerManagerArgs []string
	SchedulerArgs         []string
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		DataDir:        "/var/lib/cloudless",
		BindAddress:    "0.0.0.0",
		HTTPSPort:      6443,
		ClusterCIDR:    "10.42.0.0/16",
		ServiceCIDR:    "10.43.0.0/16",
		ClusterDNS:     "10.43.0.10",
		ClusterDomain:  "cluster.local",
		NetworkBackend: network.BackendVXLAN,
		ProxyMode:      network.ProxyNFTables,
		PodDNSNdots:    2,
		CertValidity:   365 * 24 * time.Hour,
		RenewBefore:    120 * 24 * time.Hour,

		PodSecurityEnforce: "baseline",
		PodSecurityWarn:    "restricted",
	}
}

// Validate checks the configuration without side effects.
func (c *Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("--data-dir is empty")
	}
	cluster, err := netip.ParsePrefix(c.ClusterCIDR)
	if err != nil {
		return fmt.Errorf("--cluster-cidr %q is not a CIDR (for example 10.42.0.0/16): %v", c.ClusterCIDR, err)
	}
	service, err := netip.ParsePrefix(c.ServiceCIDR)
	if err != nil {
		return fmt.Errorf("--service-cidr %q is not a CIDR (for example 10.43.0.0/16): %v", c.ServiceCIDR, err)
	}
	if cluster.Overlaps(service) {
		return fmt.Errorf("--cluster-cidr %s overlaps --service-cidr %s; choose ranges that do not overlap", cluster, service)
	}
	dns, err := netip.ParseAddr(c.ClusterDNS)
	if err != nil || !service.Contains(dns) {
		return fmt.Errorf("--cluster-dns %q must be an address inside --service-cidr %s", c.ClusterDNS, service)
	}
	if err := network.ValidateModes(c.NetworkBackend, c.ProxyMode); err != nil {
		return fmt.Errorf("--network-backend/--proxy-mode: %w", err)
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
	if c.AdvertiseAddress != "" && net.ParseIP(c.AdvertiseAddress) == nil {
		return fmt.Errorf("--advertise-address %q is not an IP address", c.AdvertiseAddress)
	}
	if c.CertValidity < time.Minute {
		return fmt.Errorf("--cert-validity %s is too short", c.CertValidity)
	}
	for flag, v := range map[string]string{"--pod-security-enforce": c.PodSecurityEnforce, "--pod-security-warn": c.PodSecurityWarn} {
		if v != "privileged" && v != "baseline" && v != "restricted" {
			return fmt.Errorf("%s %q: want privileged, baseline or restricted", flag, v)
		}
	}
	for _, t := range c.NodeTaints {
		if _, err := parseTaint(t); err != nil {
			return err
		}
	}
	if c.DatastoreEndpoint != "" && c.Token == "" {
		return errors.New("--datastore-endpoint needs --token: servers sharing a datastore use it to protect the cluster CA stored there; give every server the same --token")
	}
	if c.externalEtcd() {
		return c.validateEtcd()
	}
	ds := datastore.DefaultConfig()
	ds.DataDir, ds.Endpoint = c.DataDir, c.DatastoreEndpoint
	return ds.Validate()
}

// firstServiceIP is the kubernetes Service's ClusterIP.
func (c *Config) firstServiceIP() net.IP {
	p := netip.MustParsePrefix(c.ServiceCIDR)
	return net.IP(p.Masked().Addr().Next().AsSlice())
}

func (c *Config) renewBefore() time.Duration {
	return min(c.RenewBefore, c.CertValidity/3)
}

// parseTaint checks a key[=value]:Effect taint.
func parseTaint(s string) (corev1.Taint, error) {
	kv, effect, ok := strings.Cut(s, ":")
	key, value, _ := strings.Cut(kv, "=")
	t := corev1.Taint{Key: key, Value: value, Effect: corev1.TaintEffect(effect)}
	switch {
	case !ok || key == "":
		return t, fmt.Errorf("--node-taint %q: want key[=value]:Effect, e.g. node-role.kubernetes.io/control-plane:NoSchedule", s)
	case t.Effect != corev1.TaintEffectNoSchedule && t.Effect != corev1.TaintEffectPreferNoSchedule && t.Effect != corev1.TaintEffectNoExecute:
		return t, fmt.Errorf("--node-taint %q: effect must be NoSchedule, PreferNoSchedule or NoExecute", s)
	}
	return t, nil
}

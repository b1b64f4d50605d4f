package agent

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/cloudless-dev/cloudless/internal/lb/speaker"
	"github.com/cloudless-dev/cloudless/internal/volumes"
)

// NodeConfig is what configures a node, the same for a server's own node
// and a joined agent: embedded in both Configs, registered as flags by
// AddFlags and checked by Complete, once.
type NodeConfig struct {
	// NodeName defaults to the lowercased hostname.
	NodeName string
	// NodeIP is the address the cluster reaches the node on (a server's
	// own node: its --advertise-address).
	NodeIP string
	// NodeLabels (key=value) and NodeTaints (key[=value]:Effect) are
	// registered with the node.
	NodeLabels, NodeTaints []string
	// RegistriesFile configures mirrors (default DefaultRegistriesFile;
	// absent is fine).
	RegistriesFile string
	// KubeletArgs are extra kubelet flags, applied last.
	KubeletArgs []string
	// VolumeRoots are --volume-root values, DIR or NAME=DIR (default
	// root: datadir.Dir.Volumes).
	VolumeRoots []string
	// ResolvConf names the upstream resolvers (default: the host's).
	ResolvConf string
	// LBARPRefresh is how often announced load-balancer addresses are
	// re-sent as gratuitous ARP (0: speaker.DefaultRefresh).
	LBARPRefresh time.Duration
	// LBFailureDetection is speaker.Fast or speaker.Tolerant ("": Fast).
	LBFailureDetection string
}

// DefaultNodeConfig is a node's defaults.
func DefaultNodeConfig() NodeConfig {
	return NodeConfig{RegistriesFile: DefaultRegistriesFile, LBARPRefresh: speaker.DefaultRefresh, LBFailureDetection: speaker.Fast}
}

// AddFlags registers the node's flags; ipFlag names the flag for NodeIP
// ("node-ip" on an agent; "" on a server, whose --advertise-address it is).
func (n *NodeConfig) AddFlags(f *pflag.FlagSet, ipFlag string) {
	f.StringVar(&n.NodeName, "node-name", n.NodeName, "this node's name (default: the hostname, lowercased)")
	if ipFlag != "" {
		f.StringVar(&n.NodeIP, ipFlag, n.NodeIP, "address the cluster reaches this node on (default: the default route's interface)")
	}
	f.StringSliceVar(&n.NodeLabels, "node-label", n.NodeLabels, "label to register the node with, key=value (repeatable; not kubernetes.io/ labels)")
	f.StringSliceVar(&n.NodeTaints, "node-taint", n.NodeTaints, "taint to register the node with, key[=value]:Effect, e.g. node-role.kubernetes.io/control-plane:NoSchedule (repeatable)")
	f.StringVar(&n.RegistriesFile, "registries", n.RegistriesFile, "registry mirrors file (mirrors.<registry>.endpoint, configs.<host>.tls); may be absent")
	f.StringArrayVar(&n.KubeletArgs, "kubelet-arg", n.KubeletArgs, "extra kubelet flag (repeatable, applied last)")
	f.StringArrayVar(&n.VolumeRoots, "volume-root", n.VolumeRoots, volumes.RootHelp)
	f.StringVar(&n.ResolvConf, "resolv-conf", n.ResolvConf, "file naming this node's upstream DNS resolvers (default: /etc/resolv.conf, or systemd-resolved's when that holds only its stub)")
	f.DurationVar(&n.LBARPRefresh, "lb-arp-refresh", n.LBARPRefresh, speaker.RefreshHelp)
	f.StringVar(&n.LBFailureDetection, "lb-failure-detection", n.LBFailureDetection, speaker.DetectionHelp)
}

// Complete defaults the node's name from the hostname, then validates.
func (n *NodeConfig) Complete() error {
	if n.NodeName == "" {
		host, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("node name: %w (give --node-name)", err)
		}
		n.NodeName = strings.ToLower(host)
	}
	return n.Validate()
}

// Validate checks every field, naming the flag to fix; it changes
// nothing (an empty name is Complete's to default).
func (n *NodeConfig) Validate() error {
	if errs := validation.IsDNS1123Subdomain(n.NodeName); n.NodeName != "" && len(errs) > 0 {
		return fmt.Errorf("node name %q: %s (give --node-name)", n.NodeName, strings.Join(errs, "; "))
	}
	if n.NodeIP != "" {
		if _, err := netip.ParseAddr(n.NodeIP); err != nil {
			return fmt.Errorf("--node-ip %q is not an IP address", n.NodeIP)
		}
	}
	for _, l := range n.NodeLabels {
		k, v, ok := strings.Cut(l, "=")
		if !ok || len(validation.IsQualifiedName(k)) > 0 || len(validation.IsValidLabelValue(v)) > 0 {
			return fmt.Errorf("--node-label %q: want key=value with a valid label key and value", l)
		}
	}
	for _, t := range n.NodeTaints {
		if _, err := ParseTaint(t); err != nil {
			return err
		}
	}
	if err := speaker.CheckDetection(n.LBFailureDetection); err != nil {
		return err
	}
	if n.LBARPRefresh < time.Second {
		return fmt.Errorf("--lb-arp-refresh %s: want 1s or more (default %s); switches age MAC entries out after minutes", n.LBARPRefresh, speaker.DefaultRefresh)
	}
	return nil
}

// ParseTaint checks a key[=value]:Effect taint.
func ParseTaint(s string) (corev1.Taint, error) {
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

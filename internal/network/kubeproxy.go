package network

// The only file that imports kube-proxy. It runs in this process, from
// upstream's options, with a configuration file written here.

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/spf13/pflag"
	proxyapp "k8s.io/kubernetes/cmd/kube-proxy/app"

	"github.com/cloudless-dev/cloudless/internal/footprint"
	"github.com/cloudless-dev/cloudless/internal/klogslog"
)

// kubeProxyTable is the nftables table kube-proxy's nftables mode keeps,
// in families ip and ip6 (upstream pkg/proxy/nftables).
const kubeProxyTable = "kube-proxy"

// kubeIPVSDevice is the dummy device kube-proxy's ipvs mode holds Service
// addresses on (upstream pkg/proxy/ipvs).
const kubeIPVSDevice = "kube-ipvs0"

// kubeProxyConfig is the KubeProxyConfiguration for this node.
func (n *Network) kubeProxyConfig() string {
	return fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: %s
hostnameOverride: %s
mode: %s
clusterCIDR: %s
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 0.0.0.0:10256
# Leave nf_conntrack_max alone: it cannot be set outside the host's
# network namespace, and cloudless doctor reports a table near full.
conntrack:
  maxPerCore: 0
  min: 0
`, n.cfg.Kubeconfig, n.cfg.NodeName, n.proxyMode, n.cfg.ClusterCIDR)
}

// runKubeProxy runs kube-proxy until ctx ends.
func (n *Network) runKubeProxy(ctx context.Context) error {
	path := filepath.Join(n.cfg.StateDir, "kube-proxy.yaml")
	if err := n.cfg.Footprint.Add(func(r *footprint.Record) {
		r.KubeProxy = n.proxyMode
		switch n.proxyMode {
		case ProxyNFTables:
			r.NFTables = append(r.NFTables, footprint.NFTable{Family: "ip", Name: kubeProxyTable}, footprint.NFTable{Family: "ip6", Name: kubeProxyTable})
		case ProxyIPVS:
			r.Links = append(r.Links, kubeIPVSDevice)
		}
	}); err != nil {
		return err
	}
	if err := writeFile(path, []byte(n.kubeProxyConfig()), 0o600); err != nil {
		return err
	}
	opts := proxyapp.NewOptions()
	fs := pflag.NewFlagSet("kube-proxy", pflag.ContinueOnError)
	opts.AddFlags(fs)
	if err := fs.Parse([]string{"--config=" + path}); err != nil {
		return err
	}
	if err := opts.Complete(fs); err != nil {
		return fmt.Errorf("kube-proxy: %w", err)
	}
	if err := opts.Validate(); err != nil {
		return fmt.Errorf("kube-proxy: %w", err)
	}
	return opts.Run(klogslog.NewContext(ctx, "kube-proxy"))
}

// cleanupKubeProxy removes the rules of every proxy mode, as
// `kube-proxy --cleanup` does.
func cleanupKubeProxy(ctx context.Context) error {
	opts := proxyapp.NewOptions()
	fs := pflag.NewFlagSet("kube-proxy", pflag.ContinueOnError)
	opts.AddFlags(fs)
	if err := fs.Parse([]string{"--cleanup"}); err != nil {
		return err
	}
	if err := opts.Complete(fs); err != nil {
		return err
	}
	return opts.Run(ctx)
}

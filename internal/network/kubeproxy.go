package network

// The only file that imports kube-proxy. It runs in this process, from
// upstream's options, with a configuration file written here.

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/spf13/pflag"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	componentbaseconfigv1alpha1 "k8s.io/component-base/config/v1alpha1"
	kubeproxyv1alpha1 "k8s.io/kube-proxy/config/v1alpha1"
	proxyapp "k8s.io/kubernetes/cmd/kube-proxy/app"
	proxyscheme "k8s.io/kubernetes/pkg/proxy/apis/config/scheme"
	"k8s.io/utils/ptr"

	"github.com/cloudless-dev/cloudless/internal/atomicfile"
	"github.com/cloudless-dev/cloudless/internal/footprint"
	"github.com/cloudless-dev/cloudless/internal/klogslog"
	"k8s.io/kubernetes/pkg/cluster/ports"
)

// kubeProxyTable is the nftables table kube-proxy's nftables mode keeps,
// in families ip and ip6 (upstream pkg/proxy/nftables).
const kubeProxyTable = "kube-proxy"

// kubeIPVSDevice is the dummy device kube-proxy's ipvs mode holds Service
// addresses on (upstream pkg/proxy/ipvs).
const kubeIPVSDevice = "kube-ipvs0"

// KubeProxyMetricsAddr is where kube-proxy serves its metrics (loopback
// only); its health check listens on every address at upstream's port.
var KubeProxyMetricsAddr = fmt.Sprintf("127.0.0.1:%d", ports.ProxyStatusPort)

// kubeProxyConfig is the KubeProxyConfiguration for this node:
// upstream's v1alpha1 type, written by kube-proxy's own (strict) codec.
func (n *Network) kubeProxyConfig() ([]byte, error) {
	c := &kubeproxyv1alpha1.KubeProxyConfiguration{
		TypeMeta:           metav1.TypeMeta{APIVersion: kubeproxyv1alpha1.SchemeGroupVersion.String(), Kind: "KubeProxyConfiguration"},
		ClientConnection:   componentbaseconfigv1alpha1.ClientConnectionConfiguration{Kubeconfig: n.cfg.Kubeconfig},
		HostnameOverride:   n.cfg.NodeName,
		Mode:               kubeproxyv1alpha1.ProxyMode(n.proxyMode),
		ClusterCIDR:        n.cfg.ClusterCIDR,
		MetricsBindAddress: KubeProxyMetricsAddr,
		HealthzBindAddress: fmt.Sprintf("0.0.0.0:%d", ports.ProxyHealthzPort),
		// Leave nf_conntrack_max alone: it cannot be set outside the
		// host's network namespace, and cloudless doctor reports a table
		// near full.
		Conntrack: kubeproxyv1alpha1.KubeProxyConntrackConfiguration{MaxPerCore: ptr.To[int32](0), Min: ptr.To[int32](0)},
	}
	info, ok := runtime.SerializerInfoForMediaType(proxyscheme.Codecs.SupportedMediaTypes(), runtime.ContentTypeYAML)
	if !ok {
		return nil, fmt.Errorf("kube-proxy config: no YAML serializer")
	}
	b, err := runtime.Encode(proxyscheme.Codecs.EncoderForVersion(info.Serializer, kubeproxyv1alpha1.SchemeGroupVersion), c)
	if err != nil {
		return nil, fmt.Errorf("encode the kube-proxy config: %w", err)
	}
	return b, nil
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
	cfg, err := n.kubeProxyConfig()
	if err != nil {
		return err
	}
	if err := atomicfile.Write(path, cfg, 0o600); err != nil {
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

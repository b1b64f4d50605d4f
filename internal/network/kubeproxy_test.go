package network

import (
	"testing"

	proxyconfig "k8s.io/kubernetes/pkg/proxy/apis/config"
	proxyscheme "k8s.io/kubernetes/pkg/proxy/apis/config/scheme"
)

// TestKubeProxyConfig: the written KubeProxyConfiguration decodes with
// kube-proxy's strict codec (no unknown or duplicate field) into what this
// node needs, in each proxy mode.
func TestKubeProxyConfig(t *testing.T) {
	for _, mode := range []string{ProxyNFTables, ProxyIPTables, ProxyIPVS} {
		t.Run(mode, func(t *testing.T) {
			n := &Network{cfg: Config{Kubeconfig: "/d/kubelet.kubeconfig", NodeName: "node-a", ClusterCIDR: "10.42.0.0/16"}, proxyMode: mode}
			b, err := n.kubeProxyConfig()
			if err != nil {
				t.Fatal(err)
			}
			var c proxyconfig.KubeProxyConfiguration
			if _, _, err := proxyscheme.Codecs.UniversalDecoder().Decode(b, nil, &c); err != nil {
				t.Fatalf("strict decode: %v\n%s", err, b)
			}
			if c.ClientConnection.Kubeconfig != "/d/kubelet.kubeconfig" || c.HostnameOverride != "node-a" || string(c.Mode) != mode ||
				len(c.DetectLocal.ClusterCIDRs) != 1 || c.DetectLocal.ClusterCIDRs[0] != "10.42.0.0/16" ||
				c.MetricsBindAddress != "127.0.0.1:10249" || c.HealthzBindAddress != "0.0.0.0:10256" ||
				*c.Linux.Conntrack.MaxPerCore != 0 || *c.Linux.Conntrack.Min != 0 {
				t.Errorf("decoded config differs: %+v", c)
			}
		})
	}
}

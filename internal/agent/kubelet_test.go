package agent

import (
	"context"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime/serializer"
	kubeletscheme "k8s.io/kubernetes/pkg/kubelet/apis/config/scheme"
	kubeletcodec "k8s.io/kubernetes/pkg/kubelet/kubeletconfig/util/codec"
)

// TestKubeletConfig: the written KubeletConfiguration decodes strictly
// with the kubelet's own codec (no unknown or duplicate field), and holds
// the sizing and the lessons.
func TestKubeletConfig(t *testing.T) {
	_, codecs, err := kubeletscheme.NewSchemeAndCodecs(serializer.EnableStrict)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name                    string
		mem                     uint64
		bootstrap               bool
		wantReserved, wantEvict string
	}{
		{"floors", 2 << 30, false, "256Mi", "100Mi"},
		{"5 % and 2 %, joined", 24 << 30, true, "1228Mi", "491Mi"},
		{"caps", 512 << 30, false, "2048Mi", "1024Mi"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := &Agent{cfg: Config{NodeConfig: NodeConfig{NodeIP: "192.0.2.10"}, ClusterDNS: "10.43.0.10", ClusterDomain: "cluster.local", CAFile: "/d/ca.crt",
				ServingCertFile: "/d/s.crt", ServingKeyFile: "/d/s.key"}, paths: paths{"/d/agent", "/run/x"}, cgroupDriver: "cgroupfs"}
			if tt.bootstrap {
				a.cfg.BootstrapKubeconfig = "/d/bootstrap.kubeconfig"
			}
			b, err := a.kubeletConfig(tt.mem)
			if err != nil {
				t.Fatal(err)
			}
			c, err := kubeletcodec.DecodeKubeletConfiguration(context.Background(), codecs, b)
			if err != nil {
				t.Fatalf("strict decode: %v\n%s", err, b)
			}
			if c.KubeReserved["memory"] != tt.wantReserved || c.SystemReserved["memory"] != tt.wantReserved || c.EvictionHard["memory.available"] != tt.wantEvict {
				t.Errorf("reserved %v/%v, eviction %v; want %s and %s", c.KubeReserved, c.SystemReserved, c.EvictionHard, tt.wantReserved, tt.wantEvict)
			}
			if c.Authentication.Anonymous.Enabled || !c.Authentication.Webhook.Enabled || c.ReadOnlyPort != 0 || !c.FailSwapOn || c.FailCgroupV1 ||
				c.ShutdownGracePeriod.Duration != 40*time.Second || c.ShutdownGracePeriodCriticalPods.Duration != 20*time.Second ||
				c.ResolverConfig != "/d/agent/resolv.conf" || c.Address != "192.0.2.10" || c.ClusterDNS[0] != "10.43.0.10" {
				t.Errorf("decoded config misses a setting: %+v", c)
			}
			if tt.bootstrap != (c.ServerTLSBootstrap && c.RotateCertificates) || tt.bootstrap == (c.TLSCertFile == "/d/s.crt") {
				t.Errorf("bootstrap %v: serverTLSBootstrap %v, rotate %v, tlsCertFile %q", tt.bootstrap, c.ServerTLSBootstrap, c.RotateCertificates, c.TLSCertFile)
			}
		})
	}
}

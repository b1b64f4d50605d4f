package agent

import (
	"os"
	"slices"
	"strings"
	"testing"
)

func TestUpstreamNameservers(t *testing.T) {
	tests := []struct {
		file string
		want []string
	}{
		{"testdata/resolv-stub.conf", nil}, // systemd-resolved's stub only
		{"testdata/resolv-upstream.conf", []string{"192.0.2.53", "2001:db8::53", "198.51.100.53"}}, // no loopback, at most 3
		{"testdata/resolv-bad.conf", nil},
	}
	for _, tt := range tests {
		b, err := os.ReadFile(tt.file)
		if err != nil {
			t.Fatal(err)
		}
		if got := upstreamNameservers(b); !slices.Equal(got, tt.want) {
			t.Errorf("%s: %v, want %v", tt.file, got, tt.want)
		}
	}
}

func TestKubeletConfigSizing(t *testing.T) {
	a := &Agent{cfg: Config{NodeIP: "192.0.2.10", ClusterDNS: "10.43.0.10", ClusterDomain: "cluster.local"}, paths: paths{"/d/agent", "/run/x"}, cgroupDriver: "cgroupfs"}
	tests := []struct {
		mem                     uint64
		wantReserved, wantEvict string
	}{
		{2 << 30, "memory: 256Mi", "memory.available: 100Mi"},     // floors
		{24 << 30, "memory: 1228Mi", "memory.available: 491Mi"},   // 5 % and 2 %
		{512 << 30, "memory: 2048Mi", "memory.available: 1024Mi"}, // caps
	}
	for _, tt := range tests {
		cfg := a.kubeletConfig(tt.mem)
		for _, want := range []string{tt.wantReserved, tt.wantEvict, "shutdownGracePeriod: 40s", "shutdownGracePeriodCriticalPods: 20s", "failCgroupV1: false", "resolvConf: /d/agent/resolv.conf", "anonymous:\n    enabled: false"} {
			if !strings.Contains(cfg, want) {
				t.Errorf("memory %d GiB: config lacks %q:\n%s", tt.mem>>30, want, cfg)
			}
		}
	}
}

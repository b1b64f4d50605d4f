package agent

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
)

// TestRegistryHostsReadByContainerd: the hosts.toml files, written where
// containerd's config_path points, are read by containerd's own loader
// into the mirrors in the configured order (each pull and resolve only,
// TLS as configured), then the upstream registry.
func TestRegistryHostsReadByContainerd(t *testing.T) {
	dir := t.TempDir()
	yaml := filepath.Join(dir, "registries.yaml")
	if err := os.WriteFile(yaml, []byte(`mirrors:
  docker.io:
    endpoint: ["https://m1.example:5000", "http://10.0.0.5:5000"]
configs:
  m1.example:5000:
    tls:
      insecure_skip_verify: true
`), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := loadRegistries(yaml)
	if err != nil {
		t.Fatal(err)
	}
	hostsDir := filepath.Join(dir, "registries.d")
	if err := writeRegistryHosts(hostsDir, r); err != nil {
		t.Fatal(err)
	}
	hosts, err := config.ConfigureHosts(context.Background(), config.HostOptions{HostDir: config.HostDirFromRoot(hostsDir)})("docker.io")
	if err != nil {
		t.Fatalf("containerd reading the hosts.toml: %v", err)
	}
	want := []struct {
		host, scheme string
		caps         docker.HostCapabilities
	}{
		{"m1.example:5000", "https", docker.HostCapabilityPull | docker.HostCapabilityResolve},
		{"10.0.0.5:5000", "http", docker.HostCapabilityPull | docker.HostCapabilityResolve},
		{"registry-1.docker.io", "https", 0}, // the server: whatever containerd grants it
	}
	if len(hosts) != len(want) {
		t.Fatalf("containerd sees %d hosts, want %d: %+v", len(hosts), len(want), hosts)
	}
	for i, w := range want {
		h := hosts[i]
		if h.Host != w.host || h.Scheme != w.scheme || w.caps != 0 && h.Capabilities != w.caps {
			t.Errorf("host %d: %s://%s caps %b, want %s://%s caps %b", i, h.Scheme, h.Host, h.Capabilities, w.scheme, w.host, w.caps)
		}
	}
	tr, ok := hosts[0].Client.Transport.(*http.Transport)
	if !ok || tr.TLSClientConfig == nil || !tr.TLSClientConfig.InsecureSkipVerify {
		t.Errorf("the first mirror's TLS: %+v, want skip_verify from insecure_skip_verify", hosts[0].Client.Transport)
	}
}

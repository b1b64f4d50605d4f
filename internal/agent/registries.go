package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/cloudless-dev/cloudless/internal/atomicfile"
	"sigs.k8s.io/yaml"
)

// DefaultRegistriesFile configures registry mirrors for sites that run a
// registry; it may be absent.
const DefaultRegistriesFile = "/etc/cloudless/registries.yaml"

// Registries is the registries file:
//
//	mirrors:
//	  docker.io:
//	    endpoint: ["https://mirror.example.net:5000"]
//	configs:
//	  mirror.example.net:5000:
//	    tls: {ca_file: /etc/ssl/mirror-ca.crt}
type Registries struct {
	Mirrors map[string]Mirror         `json:"mirrors"`
	Configs map[string]RegistryConfig `json:"configs"`
}

// Mirror lists the endpoints tried, in order, before the registry itself.
type Mirror struct {
	Endpoint []string `json:"endpoint"`
}

// RegistryConfig is how to reach one endpoint host.
type RegistryConfig struct {
	TLS *struct {
		CAFile             string `json:"ca_file"`
		CertFile           string `json:"cert_file"`
		KeyFile            string `json:"key_file"`
		InsecureSkipVerify bool   `json:"insecure_skip_verify"`
	} `json:"tls"`
}

// loadRegistries reads path; a missing file is no mirrors.
func loadRegistries(path string) (*Registries, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &Registries{}, nil
	}
	if err != nil {
		return nil, err
	}
	var r Registries
	if err := yaml.UnmarshalStrict(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w (keys: mirrors.<registry>.endpoint, configs.<host>.tls.{ca_file,cert_file,key_file,insecure_skip_verify})", path, err)
	}
	for reg, m := range r.Mirrors {
		for _, ep := range m.Endpoint {
			if u, err := url.Parse(ep); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
				return nil, fmt.Errorf("%s: mirrors.%s: endpoint %q is not an http(s) URL", path, reg, ep)
			}
		}
	}
	return &r, nil
}

// hostsFiles renders containerd's hosts.toml, one per mirrored registry,
// keyed by the registry name (containerd's config_path layout).
func (r *Registries) hostsFiles() map[string]string {
	out := map[string]string{}
	regs := make([]string, 0, len(r.Mirrors))
	for reg := range r.Mirrors {
		regs = append(regs, reg)
	}
	sort.Strings(regs)
	for _, reg := range regs {
		var b strings.Builder
		upstream := "https://" + reg
		if reg == "docker.io" {
			upstream = "https://registry-1.docker.io"
		}
		fmt.Fprintf(&b, "server = %q\n", upstream)
		for _, ep := range r.Mirrors[reg].Endpoint {
			fmt.Fprintf(&b, "\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", ep)
			u, _ := url.Parse(ep)
			if c, ok := r.Configs[u.Host]; ok && c.TLS != nil {
				if c.TLS.CAFile != "" {
					fmt.Fprintf(&b, "  ca = %q\n", c.TLS.CAFile)
				}
				if c.TLS.CertFile != "" {
					fmt.Fprintf(&b, "  client = [[%q, %q]]\n", c.TLS.CertFile, c.TLS.KeyFile)
				}
				if c.TLS.InsecureSkipVerify {
					b.WriteString("  skip_verify = true\n")
				}
			}
		}
		out[reg] = b.String()
	}
	return out
}

// writeRegistryHosts writes the hosts.toml files under dir, replacing any
// from an earlier start.
func writeRegistryHosts(dir string, r *Registries) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	for reg, toml := range r.hostsFiles() {
		if err := atomicfile.Write(filepath.Join(dir, reg, "hosts.toml"), []byte(toml), 0o644); err != nil {
			return err
		}
	}
	return nil
}

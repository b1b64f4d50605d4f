package controlplane

import (
	"strings"
	"testing"
)

// TestValidate: every input that would fail after "ready" (or never let
// a node become Ready) is refused by Validate, in one line that says what
// is supported and what to give.
func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Config)
		want   string // substring of the error; "" for valid
	}{
		{name: "defaults", change: func(*Config) {}},
		{name: "disable metrics and local storage", change: func(c *Config) { c.Disable = []string{ComponentMetrics, ComponentLocalStorage} }},
		{name: "authoritative DNS", change: func(c *Config) {
			c.DNSListen, c.DNSTransferAllow, c.DNSNotify = ":53", []string{"192.0.2.0/24", "198.51.100.7"}, []string{"192.0.2.2", "192.0.2.3:5353"}
		}},
		{name: "DNS listen without a port", change: func(c *Config) { c.DNSListen = "192.0.2.1" }, want: `--dns-listen "192.0.2.1": want host:port`},
		{name: "DNS transfer to a name", change: func(c *Config) { c.DNSListen, c.DNSTransferAllow = ":53", []string{"ns2.example.com"} },
			want: `--dns-transfer-allow: "ns2.example.com" is not an address or CIDR`},
		{name: "DNS notify a name", change: func(c *Config) { c.DNSListen, c.DNSNotify = ":53", []string{"ns2.example.com"} },
			want: `--dns-notify "ns2.example.com": want a secondary's IP address`},
		{name: "DNS notify without DNS", change: func(c *Config) { c.DNSNotify = []string{"192.0.2.2"} }, want: "need --dns-listen"},
		{name: "DNS zone file missing", change: func(c *Config) { c.DNSListen, c.DNSZones = ":53", []string{"example.com=/nonexistent.zone"} },
			want: "--dns-zone example.com: open /nonexistent.zone"},
		{name: "DNS zone without origin", change: func(c *Config) { c.DNSListen, c.DNSZones = ":53", []string{"/etc/example.zone"} }, want: "want ORIGIN=FILE"},
		{name: "disable what does not exist", change: func(c *Config) { c.Disable = []string{"traefik"} },
			want: `--disable "traefik": no such component; known: local-storage, metrics`},
		{name: "IPv6 cluster CIDR", change: func(c *Config) { c.ClusterCIDR = "fd00::/64" },
			want: "--cluster-cidr fd00::/64 is IPv6: Cloudless supports IPv4 only for now (no IPv6, no dual-stack); give an IPv4 range, e.g. 10.42.0.0/16"},
		{name: "IPv6 service CIDR", change: func(c *Config) { c.ServiceCIDR = "fd00:43::/112"; c.ClusterDNS = "fd00:43::a" },
			want: "--service-cidr fd00:43::/112 is IPv6: Cloudless supports IPv4 only for now"},
		{name: "IPv4-mapped IPv6 cluster CIDR", change: func(c *Config) { c.ClusterCIDR = "::ffff:10.42.0.0/112" },
			want: "is IPv6"},
		{name: "dual-stack cluster CIDR", change: func(c *Config) { c.ClusterCIDR = "10.42.0.0/16,fd00::/56" },
			want: `--cluster-cidr "10.42.0.0/16,fd00::/56" is a list: Cloudless supports IPv4 only for now (no IPv6, no dual-stack)`},
		{name: "dual-stack service CIDR", change: func(c *Config) { c.ServiceCIDR = "10.43.0.0/16,fd00:43::/112" },
			want: `--service-cidr "10.43.0.0/16,fd00:43::/112" is a list`},
		{name: "not a CIDR", change: func(c *Config) { c.ServiceCIDR = "10.43.0.0/33" },
			want: `--service-cidr "10.43.0.0/33" is not a CIDR (for example 10.43.0.0/16)`},
		{name: "IPv6 advertise address", change: func(c *Config) { c.AdvertiseAddress = "fd00::10" },
			want: "--advertise-address fd00::10 is IPv6: Cloudless supports IPv4 only for now (no IPv6, no dual-stack); give this host's IPv4 address"},
		{name: "IPv4 advertise address", change: func(c *Config) { c.AdvertiseAddress = "192.0.2.10" }},
		{name: "IPv6 bind address listens on both", change: func(c *Config) { c.BindAddress = "::" }},
		{name: "cluster inside service", change: func(c *Config) { c.ClusterCIDR = "10.43.128.0/17" },
			want: "--cluster-cidr 10.43.128.0/17 overlaps --service-cidr 10.43.0.0/16"},
		{name: "service inside cluster", change: func(c *Config) { c.ServiceCIDR = "10.42.200.0/24"; c.ClusterDNS = "10.42.200.10" },
			want: "overlaps --service-cidr 10.42.200.0/24"},
		{name: "cluster smaller than a node's range", change: func(c *Config) { c.ClusterCIDR = "10.42.0.0/25" },
			want: "--cluster-cidr 10.42.0.0/25 is smaller than one node's pod range (/24)"},
		{name: "cluster of one node", change: func(c *Config) { c.ClusterCIDR = "10.42.0.0/24" }},
		{name: "longer node mask fits", change: func(c *Config) {
			c.ClusterCIDR = "10.42.0.0/25"
			c.ControllerManagerArgs = []string{"--node-cidr-mask-size=26"}
		}},
		{name: "node mask larger than the cluster", change: func(c *Config) {
			c.ClusterCIDR = "10.42.0.0/24"
			c.ControllerManagerArgs = []string{"--node-cidr-mask-size-ipv4=22"}
		}, want: "is smaller than one node's pod range (/22)"},
		{name: "node mask without room for pods", change: func(c *Config) { c.ControllerManagerArgs = []string{"--node-cidr-mask-size=31"} },
			want: "--node-cidr-mask-size 31 leaves no room for pods"},
		{name: "node mask not a number", change: func(c *Config) { c.ControllerManagerArgs = []string{"--node-cidr-mask-size=big"} },
			want: "--kube-controller-manager-arg=--node-cidr-mask-size=big: want a mask size from 1 to 32"},
		{name: "DNS outside services", change: func(c *Config) { c.ClusterDNS = "10.42.0.10" },
			want: "--cluster-dns \"10.42.0.10\" must be an address inside --service-cidr 10.43.0.0/16"},
		{name: "DNS on the network address", change: func(c *Config) { c.ClusterDNS = "10.43.0.0" },
			want: "--cluster-dns 10.43.0.0 is reserved in --service-cidr 10.43.0.0/16"},
		{name: "DNS on the kubernetes Service", change: func(c *Config) { c.ClusterDNS = "10.43.0.1" },
			want: "--cluster-dns 10.43.0.1 is reserved"},
		{name: "DNS on the broadcast address", change: func(c *Config) { c.ClusterDNS = "10.43.255.255" },
			want: "--cluster-dns 10.43.255.255 is reserved"},
		{name: "service range without room", change: func(c *Config) { c.ServiceCIDR = "10.43.0.0/31"; c.ClusterDNS = "10.43.0.1" },
			want: "is reserved in --service-cidr 10.43.0.0/31"},
		{name: "bad cluster domain", change: func(c *Config) { c.ClusterDomain = "Cluster_Local" },
			want: `--cluster-domain "Cluster_Local"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			c.DataDir = t.TempDir()
			tt.change(&c)
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Validate() = %v, want an error containing %q", err, tt.want)
			case err != nil && strings.Contains(err.Error(), "\n"):
				t.Errorf("Validate() = %q, want one line", err)
			}
		})
	}
}

package cli

import (
	"log/slog"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cloudless-dev/cloudless/internal/controlplane"
	"github.com/cloudless-dev/cloudless/internal/datadir"
	authdns "github.com/cloudless-dev/cloudless/internal/dns"
	"github.com/cloudless-dev/cloudless/internal/klogslog"
)

func newServerCmd(logger func() (*slog.Logger, error)) *cobra.Command {
	cfg := controlplane.DefaultConfig()
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run a Kubernetes control plane: datastore, kube-apiserver, controller-manager and scheduler in one process",
		Long: `Run a Kubernetes control plane in this process: the datastore (embedded;
PostgreSQL with --datastore-endpoint postgres://…; or an external etcd
cluster with --datastore-endpoint https://… and the --datastore-*file
flags), certificates (created once, renewed
while running), and upstream kube-apiserver, kube-controller-manager and
kube-scheduler with secure defaults.

When it is ready it prints where the admin kubeconfig is
(<data-dir>/server/cred/admin.kubeconfig).

Configuration comes from, highest precedence first: flags, environment
variables CLOUDLESS_<FLAG> (e.g. CLOUDLESS_CLUSTER_CIDR), and the YAML file
--config (default /etc/cloudless/config.yaml, may be absent) whose keys are
the flag names:

  data-dir: /srv/cloudless
  tls-san: [k8s.example.net, 192.0.2.10]
  kube-apiserver-arg: ["--v=2"]

An unknown key in the file is an error. Must run as root.

Unless --disable-agent, the server is also a node: it runs containerd (with
runc and CNI plugins found next to this binary, as ` + "`make build`" + ` puts
them) and the kubelet, labelled node-role.kubernetes.io/control-plane.
Image archives dropped in <data-dir>/agent/images/ are imported.`,
		Example: `  cloudless server
  cloudless server --datastore-endpoint 'postgres://cloudless:secret@db/cloudless' --token "$TOKEN" --tls-san k8s.example.net
  cloudless server --datastore-endpoint https://etcd1:2379,https://etcd2:2379 --token "$TOKEN" \
    --datastore-cafile /etc/etcd/ca.crt --datastore-certfile /etc/etcd/client.crt --datastore-keyfile /etc/etcd/client.key`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := configure(cmd, true); err != nil {
				return err
			}
			log, err := logger()
			if err != nil {
				return err
			}
			klogslog.Install(log.Handler())
			s, err := controlplane.New(cfg, log.With("subsystem", "server"))
			if err != nil {
				return err
			}
			return s.Run(cmd.Context())
		},
	}
	addConfigFlag(cmd)
	f := cmd.Flags()
	addDatastoreFlags(cmd, &cfg)
	addReservedSpaceFlag(f, &cfg.DatastoreReservedSpace)
	f.StringVar(&cfg.Token, "token", cfg.Token, "cluster secret, the same on every server sharing a datastore (required with --datastore-endpoint)")
	f.StringVar(&cfg.BindAddress, "bind-address", cfg.BindAddress, "address kube-apiserver listens on")
	f.StringVar(&cfg.AdvertiseAddress, "advertise-address", cfg.AdvertiseAddress, "address other nodes reach kube-apiserver on (default: this host's address on its default route)")
	f.IntVar(&cfg.HTTPSPort, "https-listen-port", cfg.HTTPSPort, "kube-apiserver's port")
	f.StringVar(&cfg.ClusterCIDR, "cluster-cidr", cfg.ClusterCIDR, "pod network")
	f.StringVar(&cfg.ServiceCIDR, "service-cidr", cfg.ServiceCIDR, "Service ClusterIP range")
	f.StringVar(&cfg.ClusterDNS, "cluster-dns", cfg.ClusterDNS, "cluster DNS Service IP, inside --service-cidr")
	f.StringVar(&cfg.ClusterDomain, "cluster-domain", cfg.ClusterDomain, "cluster DNS domain")
	f.StringVar(&cfg.NetworkBackend, "network-backend", cfg.NetworkBackend, "how pod traffic crosses nodes: vxlan (works across routed networks) or host-gw (every node on one L2 network, no encapsulation)")
	f.StringVar(&cfg.ProxyMode, "proxy-mode", cfg.ProxyMode, "kube-proxy mode on every node: nftables, iptables or ipvs (a node without the kernel support falls back, and says so)")
	f.BoolVar(&cfg.LBNodePorts, "lb-node-ports", cfg.LBNodePorts, "give new LoadBalancer Services a NodePort each, as upstream does (default: allocateLoadBalancerNodePorts false unless the Service sets it; the built-in load balancer needs none)")
	f.IntVar(&cfg.PodDNSNdots, "pod-dns-ndots", cfg.PodDNSNdots, "ndots for pods on cluster DNS that set none (0 keeps the kubelet's 5, which costs up to 4 extra queries per external lookup)")
	f.StringSliceVar(&cfg.TLSSANs, "tls-san", nil, "extra names or IPs for kube-apiserver's certificate (repeatable)")
	f.DurationVar(&cfg.CertValidity, "cert-validity", cfg.CertValidity, "lifetime of leaf certificates")
	f.DurationVar(&cfg.RenewBefore, "cert-renew-before", cfg.RenewBefore, "renew leaf certificates while running when less than this remains (at most a third of --cert-validity)")
	f.StringVar(&cfg.PodSecurityEnforce, "pod-security-enforce", cfg.PodSecurityEnforce, "Pod Security level enforced in namespaces without their own pod-security.kubernetes.io labels: privileged, baseline or restricted")
	f.StringVar(&cfg.PodSecurityWarn, "pod-security-warn", cfg.PodSecurityWarn, "Pod Security level that only warns and audits: privileged, baseline or restricted")
	f.BoolVar(&cfg.DisableAgent, "disable-agent", cfg.DisableAgent, "do not run a node agent (kubelet, containerd) on this server")
	cfg.NodeConfig.AddFlags(f, "")
	f.StringVar(&cfg.DNSListen, "dns-listen", cfg.DNSListen, "serve the authoritative DNS for the cluster's public names here, UDP and TCP, e.g. :53 (zones: --dns-zone files, or kube-system ConfigMaps labelled "+authdns.ZoneLabel+"; records: annotated LoadBalancer Services, Ingresses, Gateway API routes, DNSEndpoints; see `cloudless dns --help`); empty runs none")
	f.StringSliceVar(&cfg.DNSTransferAllow, "dns-transfer-allow", nil, "addresses or CIDRs of secondaries that may transfer zones (AXFR over TCP); none by default")
	f.StringSliceVar(&cfg.DNSNotify, "dns-notify", nil, "secondaries (host or host:port) sent NOTIFY whenever a zone gets a new serial; give them --dns-transfer-allow too")
	f.StringArrayVar(&cfg.DNSZones, "dns-zone", nil, "a zone from an RFC 1035 file, ORIGIN=FILE (repeatable), checked at start and kept as ConfigMap kube-system/zone-<origin>, applied again at every start: edit the file, not the ConfigMap")
	f.StringVar(&cfg.ManifestsDir, "manifests-dir", "", "directory of manifest files this server keeps stored and applied, subdirectories included (default: <data-dir>/server/manifests; see `cloudless manifests --help`)")
	f.StringArrayVar(&cfg.Disable, "disable", nil, "built-in component not to run or install (repeatable): "+disableHelp())
	f.StringArrayVar(&cfg.APIServerArgs, "kube-apiserver-arg", nil, "extra kube-apiserver flag, e.g. --kube-apiserver-arg=--v=2 (repeatable, applied last)")
	f.StringArrayVar(&cfg.ControllerManagerArgs, "kube-controller-manager-arg", nil, "extra kube-controller-manager flag (repeatable, applied last)")
	f.StringArrayVar(&cfg.SchedulerArgs, "kube-scheduler-arg", nil, "extra kube-scheduler flag (repeatable, applied last)")
	return cmd
}

func disableHelp() string {
	var parts []string
	for name, what := range controlplane.Components {
		parts = append(parts, name+", "+what)
	}
	sort.Strings(parts)
	return strings.Join(parts, "; ")
}

// addDatastoreFlags adds the flags that say where the server's state is.
func addDatastoreFlags(cmd *cobra.Command, cfg *controlplane.Config) {
	f := cmd.Flags()
	datadir.AddFlag(f, &cfg.DataDir, "")
	f.StringVar(&cfg.DatastoreEndpoint, "datastore-endpoint", cfg.DatastoreEndpoint, "empty for the embedded datastore; a postgres:// URL shared by several servers; or an external etcd cluster, https://host:2379[,https://…]")
	f.StringVar(&cfg.DatastoreCAFile, "datastore-cafile", cfg.DatastoreCAFile, "CA that signs the external etcd's certificates")
	f.StringVar(&cfg.DatastoreCertFile, "datastore-certfile", cfg.DatastoreCertFile, "client certificate for the external etcd")
	f.StringVar(&cfg.DatastoreKeyFile, "datastore-keyfile", cfg.DatastoreKeyFile, "client key for the external etcd")
}

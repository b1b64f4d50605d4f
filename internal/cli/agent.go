package cli

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/cloudless-dev/cloudless/internal/agent"
	"github.com/cloudless-dev/cloudless/internal/controlplane"
	"github.com/cloudless-dev/cloudless/internal/datadir"
	"github.com/cloudless-dev/cloudless/internal/klogslog"
	"github.com/cloudless-dev/cloudless/internal/lb/speaker"
	"github.com/cloudless-dev/cloudless/internal/token"
	"github.com/cloudless-dev/cloudless/internal/volumes"
	"slices"
)

func newAgentCmd(logger func() (*slog.Logger, error)) *cobra.Command {
	var server, tok, dataDir, nodeName, nodeIP, resolvConf string
	var kubeletArgs, labels, volumeRoots []string
	registries := agent.DefaultRegistriesFile
	arpRefresh := speaker.DefaultRefresh
	detection := speaker.Fast
	dataDir = datadir.Default
	cmd := &cobra.Command{
		Use:   "agent --server https://HOST:6443 --token TOKEN",
		Short: "Join this machine to a cluster as a node (kubelet, containerd)",
		Long: `Join this machine to a cluster as a node. The token comes from
` + "`cloudless token create`" + ` on a server and pins the cluster CA: the agent
checks the server holds that CA before it sends anything. The kubelet then
gets its client certificate by TLS bootstrap and asks for a serving
certificate, which the server approves for known nodes only.

runc, pause and the CNI plugins must be next to this binary (` + "`make build`" + `).
Flags may also come from CLOUDLESS_<FLAG> or the --config file. Must run as root.`,
		Example: `  cloudless agent --server https://10.0.0.10:6443 --token CL1.4ae6…c3b.abcdef.0123456789abcdef`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := configure(cmd, true); err != nil {
				return err
			}
			if os.Geteuid() != 0 {
				return errors.New("cloudless agent must run as root: it runs containers, mounts and network setup; run it with sudo")
			}
			if server == "" || tok == "" {
				return errors.New("--server and --token are required: get a token with `cloudless token create` on a server")
			}
			j, err := token.Parse(tok)
			if err != nil {
				return fmt.Errorf("--token: %w", err)
			}
			if nodeName == "" {
				h, err := os.Hostname()
				if err != nil {
					return err
				}
				nodeName = strings.ToLower(h)
			}
			if errs := validation.IsDNS1123Subdomain(nodeName); len(errs) > 0 {
				return fmt.Errorf("node name %q: %s (give --node-name)", nodeName, strings.Join(errs, "; "))
			}
			if err := speaker.CheckDetection(detection); err != nil {
				return err
			}
			if arpRefresh < time.Second {
				return fmt.Errorf("--lb-arp-refresh %s: want 1s or more (default %s); switches age MAC entries out after minutes", arpRefresh, speaker.DefaultRefresh)
			}
			if nodeIP == "" {
				ip, err := controlplane.DefaultAddress()
				if err != nil {
					return err
				}
				nodeIP = ip.String()
			} else if net.ParseIP(nodeIP) == nil {
				return fmt.Errorf("--node-ip %q is not an IP address", nodeIP)
			}
			log, err := logger()
			if err != nil {
				return err
			}
			klogslog.Install(log.Handler())
			log.Info("checking the server against the token's CA", "server", server)
			info, err := agent.Discover(cmd.Context(), server, j)
			if err != nil {
				return err
			}
			caFile, bootstrap, err := agent.WriteJoinFiles(dataDir, server, info, j)
			if err != nil {
				return err
			}
			a, err := agent.New(agent.Config{
				DataDir: dataDir, NodeName: nodeName, NodeIP: nodeIP, CAFile: caFile,
				Kubeconfig: agent.KubeletKubeconfig(dataDir), BootstrapKubeconfig: bootstrap,
				ClusterDNS: info.ClusterDNS, ClusterDomain: info.ClusterDomain, NodeLabels: labels, ResolvConf: resolvConf,
				ClusterCIDR: info.ClusterCIDR, ServiceCIDR: info.ServiceCIDR, NetworkBackend: info.NetworkBackend, ProxyMode: info.ProxyMode, KubeletArgs: kubeletArgs, RegistriesFile: registries,
				LBARPRefresh: arpRefresh, LBFailureDetection: detection, VolumeRoots: volumeRoots,
				NoLocalVolumes: slices.Contains(info.Disabled, controlplane.ComponentLocalStorage),
			}, log.With("subsystem", "agent"))
			if err != nil {
				return err
			}
			return a.Run(cmd.Context())
		},
	}
	addConfigFlag(cmd)
	f := cmd.Flags()
	f.StringVar(&server, "server", "", "a server's URL, https://HOST:6443")
	f.StringVar(&tok, "token", "", "join token from `cloudless token create` (CL1.…)")
	datadir.AddFlag(f, &dataDir, "")
	f.StringVar(&nodeName, "node-name", "", "this node's name (default: the hostname, lowercased)")
	f.StringVar(&nodeIP, "node-ip", "", "address the cluster reaches this node on (default: the default route's interface)")
	f.StringSliceVar(&labels, "node-label", nil, "label to register the node with, key=value (repeatable; not kubernetes.io/ labels)")
	f.StringVar(&detection, "lb-failure-detection", detection, speaker.DetectionHelp)
	f.DurationVar(&arpRefresh, "lb-arp-refresh", arpRefresh, speaker.RefreshHelp)
	f.StringVar(&registries, "registries", registries, "registry mirrors file (mirrors.<registry>.endpoint, configs.<host>.tls); may be absent")
	f.StringArrayVar(&kubeletArgs, "kubelet-arg", nil, "extra kubelet flag (repeatable, applied last)")
	addVolumeRootFlag(f, &volumeRoots)
	f.StringVar(&resolvConf, "resolv-conf", "", "file naming this node's upstream DNS resolvers (default: /etc/resolv.conf, or systemd-resolved's when that holds only its stub)")
	return cmd
}

// addVolumeRootFlag adds --volume-root, the same on servers and agents.
func addVolumeRootFlag(f *pflag.FlagSet, roots *[]string) {
	f.StringArrayVar(roots, "volume-root", nil, volumes.RootHelp)
}

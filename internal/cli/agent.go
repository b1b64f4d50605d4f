package cli

import (
	"errors"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/cloudless-dev/cloudless/internal/agent"
	"github.com/cloudless-dev/cloudless/internal/controlplane"
	"github.com/cloudless-dev/cloudless/internal/datadir"
	"github.com/cloudless-dev/cloudless/internal/klogslog"
)

func newAgentCmd(logger func() (*slog.Logger, error)) *cobra.Command {
	var server, tok string
	dataDir := datadir.Default
	node := agent.DefaultNodeConfig()
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
			if err := node.Complete(); err != nil {
				return err
			}
			if node.NodeIP == "" {
				ip, err := controlplane.DefaultAddress()
				if err != nil {
					return err
				}
				node.NodeIP = ip.String()
			}
			log, err := logger()
			if err != nil {
				return err
			}
			klogslog.Install(log.Handler())
			a, err := agent.Join(cmd.Context(), server, tok, agent.Config{NodeConfig: node, DataDir: dataDir}, log.With("subsystem", "agent"))
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
	node.AddFlags(f, "node-ip")
	return cmd
}

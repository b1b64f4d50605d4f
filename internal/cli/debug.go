package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cloudless-dev/cloudless/internal/datadir"
	"github.com/cloudless-dev/cloudless/internal/network"
)

func newDebugCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "debug", Short: "Collect state for debugging"}
	dataDir := datadir.Default
	var output, node string
	netCmd := &cobra.Command{
		Use:   "network",
		Short: "Snapshot this node's network state into one archive",
		Long: `Write one .tar.gz with this node's network state, taken together: nftables
and iptables rules, IPVS, the conntrack table and its counters, addresses,
links, routes, rules, neighbours, bridge forwarding entries, listening
sockets, the CNI config and IPAM state, kube-proxy's configuration,
metrics and health, and cluster DNS readiness. Rules change while you look:
take the snapshot while the problem is there, and attach it to the report.
Runs on the node, as root.`,
		Example: `  sudo cloudless debug network                 # writes cloudless-network-<node>-<time>.tar.gz
  sudo cloudless debug network -o - | tar tz     # to stdout`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := configure(cmd, false); err != nil {
				return err
			}
			if os.Geteuid() != 0 {
				return errors.New("cloudless debug network must run as root (it reads the firewall rules and conntrack table)")
			}
			host, _ := os.Hostname()
			host = strings.ToLower(host)
			if node != "" && node != host {
				return fmt.Errorf("--node %s: the snapshot is taken on the node itself; run `sudo cloudless debug network` on %s (this machine is %s)", node, node, host)
			}
			var w io.Writer = cmd.OutOrStdout()
			if output != "-" {
				if output == "" {
					output = fmt.Sprintf("cloudless-network-%s-%s.tar.gz", host, time.Now().UTC().Format("20060102T150405Z"))
				}
				f, err := os.OpenFile(output, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
				if err != nil {
					return fmt.Errorf("create %s: %w (choose another -o)", output, err)
				}
				defer f.Close()
				w = f
			}
			err := network.Snapshot(cmd.Context(), dataDir, w, func(part string) { fmt.Fprintln(cmd.ErrOrStderr(), "collecting", part) })
			if err == nil && output != "-" {
				fmt.Fprintln(cmd.ErrOrStderr(), "wrote", output)
			}
			return err
		},
	}
	addConfigFlag(netCmd)
	datadir.AddFlag(netCmd.Flags(), &dataDir, "")
	netCmd.Flags().StringVarP(&output, "output", "o", "", "archive to write, - for stdout (default cloudless-network-<node>-<time>.tar.gz)")
	netCmd.Flags().StringVar(&node, "node", "", "node to snapshot; must be this machine (run the command on each node you need)")
	cmd.AddCommand(netCmd)
	return cmd
}

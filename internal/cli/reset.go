package cli

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/cloudless-dev/cloudless/internal/controlplane"
	"github.com/cloudless-dev/cloudless/internal/datadir"
)

func newResetCmd() *cobra.Command {
	dataDir := datadir.Default
	var yes bool
	cmd := &cobra.Command{
		Use:   "reset",
		Short: "Remove everything Cloudless created on this machine (the server must be stopped)",
		Long: `Remove what Cloudless created on this machine for --data-dir: the data dir
(certificates, keys, the embedded datastore, logs, a joined node's state)
and, outside it, exactly what its node recorded making in
<data-dir>/agent/footprint.json: its run dir, cgroups, containers, and the
bridge, VXLAN device, routes, nftables tables and iptables chains of the
network namespace it ran in. Without that record nothing outside the data
dir is touched. Another node's bridge and tables are never touched; a node
whose network namespace is another one must be reset from inside it. A
directory that is not a Cloudless data dir is refused, and nothing in it is
deleted. The config file (/etc/cloudless/config.yaml) is the operator's and
stays.

A running server or agent holds a lock on its data dir: stop it first. With a shared
datastore (PostgreSQL or etcd) the database is left alone, so other servers keep the
cluster; this machine can join again with the same --token.

It asks for confirmation unless --yes is given.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := configure(cmd, false); err != nil {
				return err
			}
			if os.Geteuid() != 0 {
				return errors.New("cloudless reset must run as root")
			}
			plan, err := controlplane.PlanReset(dataDir)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "This removes %s", plan.DataDir)
			if len(plan.Mounts) > 0 {
				fmt.Fprintf(out, " after unmounting %d mounts", len(plan.Mounts))
			}
			fmt.Fprintln(out, ".")
			if len(plan.Shims) > 0 {
				fmt.Fprintf(out, "It kills %d container shims and their containers.\n", len(plan.Shims))
			}
			if len(plan.Outside) > 0 {
				fmt.Fprintln(out, "Outside it, what the node recorded making:")
				for _, o := range plan.Outside {
					fmt.Fprintln(out, "  "+o)
				}
			}
			for _, n := range plan.Notes {
				fmt.Fprintln(out, "Note: "+n+".")
			}
			if plan.Shared {
				fmt.Fprintln(out, "The shared datastore (PostgreSQL or etcd) is not touched.")
			} else {
				fmt.Fprintln(out, "The embedded datastore is in it: this cluster's data is lost unless another copy exists.")
			}
			if !yes {
				if !term.IsTerminal(int(os.Stdin.Fd())) {
					return errors.New("not a terminal: pass --yes to confirm")
				}
				fmt.Fprint(out, "Continue? [y/N] ")
				line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
				if a := strings.ToLower(strings.TrimSpace(line)); a != "y" && a != "yes" {
					return errors.New("aborted; nothing was removed")
				}
			}
			if err := controlplane.Reset(plan); err != nil {
				return err
			}
			fmt.Fprintln(out, "Removed.")
			return nil
		},
	}
	addConfigFlag(cmd)
	datadir.AddFlag(cmd.Flags(), &dataDir, "")
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	return cmd
}

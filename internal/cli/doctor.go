package cli

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/cloudless-dev/cloudless/internal/controlplane"
	"github.com/cloudless-dev/cloudless/internal/datadir"
	"github.com/cloudless-dev/cloudless/internal/doctor"
	"github.com/cloudless-dev/cloudless/internal/lint"
)

func newDoctorCmd() *cobra.Command {
	cfg := doctor.Config{DataDir: datadir.Default}
	var output, failOn string
	var hostOnly bool
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check this host and the live cluster for on-prem foot-guns",
		Long: `Check this host: IP forwarding, br_netfilter and overlayfs, conntrack table
use, swap, clock synchronization, the fsync latency of the disk under
--data-dir (2 KiB writes + fdatasync, as etcd's WAL; guidance: p99 under
10 ms), upstream resolvers, certificates under --data-dir close to expiry,
and the datastore's size.

Then the cluster (through --kubeconfig, by default the server's admin
kubeconfig under --data-dir): datastore health, LoadBalancer Services
pending, claims Pending, rollouts whose surge does not fit the free
capacity, and every ` + "`cloudless lint`" + ` check on the live objects.

Every finding has an ID, the object or host item, what goes wrong, and the
fix: docs/doctor.md. -o json also prints the measured host facts.
Exit code: 0 clean (or below --fail-on), 1 findings at or above --fail-on,
2 errors.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := configure(cmd, false); err != nil {
				return err
			}
			fail, err := lint.ParseSeverity(failOn)
			if err != nil {
				return fmt.Errorf("--fail-on: %w", err)
			}
			if hostOnly {
				cfg.Kubeconfig = ""
			} else if cfg.Kubeconfig == "" {
				cfg.Kubeconfig = controlplane.AdminKubeconfig(cfg.DataDir)
				if _, err := os.Stat(cfg.Kubeconfig); err != nil {
					return fmt.Errorf("no admin kubeconfig at %s: run doctor on a server (as root), give --kubeconfig, or check only this host with --host-only", cfg.Kubeconfig)
				}
			}
			res, err := doctor.Run(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			if output == "json" {
				if err := writeJSON(cmd.OutOrStdout(), res); err != nil {
					return err
				}
			} else {
				if err := res.Report.Write(cmd.OutOrStdout(), output, "cloudless doctor"); err != nil {
					return err
				}
				if output != "sarif" {
					fmt.Fprintf(cmd.ErrOrStderr(), "checked in %.1f s (fsync p99 %.2f ms on %s)\n", res.Seconds, res.Facts.FsyncP99Millis, res.Facts.FsyncDir)
				}
			}
			if code := lint.ExitCode(res.Findings, fail); code != 0 {
				return exitCode(code)
			}
			return nil
		},
	}
	addConfigFlag(cmd)
	f := cmd.Flags()
	datadir.AddFlag(f, &cfg.DataDir, "directory for Cloudless state (its disk is measured, its certificates checked)")
	f.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "cluster to check (default: the server's admin kubeconfig under --data-dir)")
	f.BoolVar(&hostOnly, "host-only", false, "check this host only, not the cluster")
	f.IntVar(&cfg.FsyncSamples, "fsync-samples", 200, "write+fdatasync rounds measuring the data dir's disk")
	f.DurationVar(&cfg.FsyncThreshold, "fsync-threshold", 10*time.Millisecond, "fsync p99 above which the disk is reported (etcd's guidance: 10ms)")
	f.DurationVar(&cfg.PendingAfter, "pending-after", time.Minute, "how long a PersistentVolumeClaim may be Pending before it is reported")
	addReservedSpaceFlag(f, &cfg.ReservedSpace)
	f.StringVarP(&output, "output", "o", "table", "table, json or sarif")
	f.StringVar(&failOn, "fail-on", "error", "lowest severity that fails with exit code 1: info, warning or error (errors always exit 2)")
	return cmd
}

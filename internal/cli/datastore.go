package cli

import (
	"fmt"
	"io"
	"log/slog"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cloudless-dev/cloudless/internal/datadir"
	"github.com/cloudless-dev/cloudless/internal/datastore"
	"github.com/cloudless-dev/cloudless/internal/datastore/engine/pebble"
)

func newDatastoreCmd(logger func() (*slog.Logger, error)) *cobra.Command {
	cfg := datastore.DefaultConfig()
	cmd := &cobra.Command{
		Use:   "datastore",
		Short: "Run the datastore alone: the etcd v3 API over the embedded engine or PostgreSQL",
		Long: `Run the datastore alone. It serves the etcd v3 API that kube-apiserver uses
on a unix socket (default <data-dir>/datastore/etcd.sock), and optionally on
TCP with TLS client-certificate authentication.

Engines:
  (default)        embedded engine, files under <data-dir>/datastore/db
  postgres://...   PostgreSQL; several servers may share one database

Every flag can also be set with CLOUDLESS_<FLAG>, e.g. CLOUDLESS_DATASTORE_ENDPOINT,
or in the --config file (keys are flag names; keys of other commands are
ignored).`,
		Example: `  cloudless datastore --data-dir /var/lib/cloudless
  cloudless datastore --datastore-endpoint 'postgres://cloudless:secret@db:5432/cloudless'
  ETCDCTL_API=3 etcdctl --endpoints unix:///var/lib/cloudless/datastore/etcd.sock get --prefix /registry`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := configure(cmd, false); err != nil {
				return err
			}
			log, err := logger()
			if err != nil {
				return err
			}
			ds, err := datastore.Open(cmd.Context(), cfg, log.With("subsystem", "datastore"))
			if err != nil {
				return err
			}
			return ds.Run(cmd.Context())
		},
	}
	addConfigFlag(cmd)
	f := cmd.Flags()
	datadir.AddFlag(f, &cfg.DataDir, "")
	f.StringVar(&cfg.Endpoint, "datastore-endpoint", cfg.Endpoint, "empty for the embedded engine, or a postgres:// URL")
	f.StringVar(&cfg.ListenSocket, "listen-socket", cfg.ListenSocket, "unix socket to serve on (default <data-dir>/datastore/etcd.sock)")
	f.StringVar(&cfg.ListenAddress, "listen-address", cfg.ListenAddress, "also serve on this TCP address (host:port), with TLS client-certificate auth")
	f.StringVar(&cfg.TLSCertFile, "tls-cert-file", cfg.TLSCertFile, "server certificate for --listen-address")
	f.StringVar(&cfg.TLSKeyFile, "tls-key-file", cfg.TLSKeyFile, "server key for --listen-address")
	f.StringVar(&cfg.TLSClientCAFile, "tls-client-ca-file", cfg.TLSClientCAFile, "CA that signs client certificates for --listen-address")
	f.DurationVar(&cfg.ProgressNotifyInterval, "watch-progress-notify-interval", cfg.ProgressNotifyInterval, "how often idle watchers that asked for it get a progress notification")
	addReservedSpaceFlag(f, &cfg.ReservedSpace)
	cmd.AddCommand(newDatastoreRepairCmd(logger))
	return cmd
}

// addReservedSpaceFlag adds --datastore-reserved-space, which the server
// and the datastore commands share.
func addReservedSpaceFlag(f *pflag.FlagSet, v *uint64) {
	f.Uint64Var(v, "datastore-reserved-space", *v, fmt.Sprintf(
		"bytes of free disk below which the embedded engine refuses writes (reads go on); 0: %d MiB, or %d%% of the filesystem if that is less",
		datastore.DefaultReservedSpace>>20, datastore.ReservedSpacePercent))
}

func newDatastoreRepairCmd(logger func() (*slog.Logger, error)) *cobra.Command {
	cfg := datastore.DefaultConfig()
	var yes bool
	var output string
	cmd := &cobra.Command{
		Use:   "repair",
		Short: "Make a datastore with a damaged write-ahead log start again, dropping what follows the damage",
		Long: `Repair the embedded engine's write-ahead log after the datastore refused to
start because the log is damaged (a corrupt record followed by acknowledged
ones, a segment cut short, or a missing segment).

It keeps every record before the damage, drops the rest, and says how many
log records it drops and how many of them had been acknowledged to clients.
The revision counter resumes above the highest revision seen in the dropped
records, so clients' caches and watchers never see revisions go back. The
damaged segment is kept next to the new one as wal/segment.damaged.

Without --yes it only reports. Stop the server or datastore first. Prefer
restoring a backup when you have one: repair loses the dropped writes.`,
		Example: `  cloudless datastore repair --data-dir /var/lib/cloudless
  cloudless datastore repair --data-dir /var/lib/cloudless --yes`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := configure(cmd, false); err != nil {
				return err
			}
			if output != "table" && output != "json" {
				return fmt.Errorf("unknown --output %q: use table or json", output)
			}
			log, err := logger()
			if err != nil {
				return err
			}
			rep, err := datastore.Repair(cfg, !yes, log.With("subsystem", "datastore"))
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if output == "json" {
				return writeJSON(out, rep)
			}
			printRepair(out, rep, yes)
			return nil
		},
	}
	addConfigFlag(cmd)
	f := cmd.Flags()
	datadir.AddFlag(f, &cfg.DataDir, "")
	f.BoolVar(&yes, "yes", false, "repair; without it, only report what would be dropped")
	f.StringVarP(&output, "output", "o", "table", "table or json")
	return cmd
}

func printRepair(w io.Writer, rep pebble.RepairReport, yes bool) {
	if rep.Damage == "" {
		fmt.Fprintln(w, "the write-ahead log is intact: nothing to repair")
		return
	}
	count := func(n int64) string {
		if n < 0 {
			return "an unknown number of"
		}
		return fmt.Sprint(n)
	}
	fmt.Fprintf(w, "damage:  %s\n", rep.Damage)
	fmt.Fprintf(w, "keeps:   everything up to revision %d\n", rep.KeptRevision)
	fmt.Fprintf(w, "drops:   %s log records after it", count(rep.DroppedRecords))
	switch {
	case rep.DroppedAcked > 0:
		fmt.Fprintf(w, ", of which at least %d were acknowledged to clients\n", rep.DroppedAcked)
	case rep.DroppedAcked < 0 || rep.DroppedRecords < 0:
		fmt.Fprintln(w, "; how many were acknowledged to clients is unknown")
	default:
		fmt.Fprintln(w, "; none of them is known to have been acknowledged")
	}
	if rep.HighRevision > rep.KeptRevision {
		fmt.Fprintf(w, "resumes: above revision %d, the highest seen in the dropped records, so revisions never go back\n", rep.HighRevision)
	}
	if !yes {
		fmt.Fprintln(w, "dry run: nothing changed; run again with --yes to repair")
		return
	}
	fmt.Fprintln(w, "repaired: the datastore starts again; restart kube-apiserver clients so their caches reload")
}

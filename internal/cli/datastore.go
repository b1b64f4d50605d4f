package cli

import (
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/cloudless-dev/cloudless/internal/datastore"
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
	f.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory for Cloudless state")
	f.StringVar(&cfg.Endpoint, "datastore-endpoint", cfg.Endpoint, "empty for the embedded engine, or a postgres:// URL")
	f.StringVar(&cfg.ListenSocket, "listen-socket", cfg.ListenSocket, "unix socket to serve on (default <data-dir>/datastore/etcd.sock)")
	f.StringVar(&cfg.ListenAddress, "listen-address", cfg.ListenAddress, "also serve on this TCP address (host:port), with TLS client-certificate auth")
	f.StringVar(&cfg.TLSCertFile, "tls-cert-file", cfg.TLSCertFile, "server certificate for --listen-address")
	f.StringVar(&cfg.TLSKeyFile, "tls-key-file", cfg.TLSKeyFile, "server key for --listen-address")
	f.StringVar(&cfg.TLSClientCAFile, "tls-client-ca-file", cfg.TLSClientCAFile, "CA that signs client certificates for --listen-address")
	f.DurationVar(&cfg.ProgressNotifyInterval, "watch-progress-notify-interval", cfg.ProgressNotifyInterval, "how often idle watchers that asked for it get a progress notification")
	f.Uint64Var(&cfg.ReservedSpace, "datastore-reserved-space", cfg.ReservedSpace, "bytes of free disk below which the embedded engine refuses writes (reads go on)")
	return cmd
}

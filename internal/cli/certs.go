package cli

import (
	"fmt"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/cloudless-dev/cloudless/internal/datadir"
	"github.com/cloudless-dev/cloudless/internal/pki"
)

func newCertsCmd() *cobra.Command {
	dataDir := datadir.Default
	var output string
	cmd := &cobra.Command{Use: "certs", Short: "Inspect the control plane's certificates"}
	check := &cobra.Command{
		Use:   "check",
		Short: "List every certificate with its expiry, soonest first",
		Long: `List every certificate under <data-dir>/server/tls with its subject, issuer
and expiry, soonest first. A running server renews leaf certificates when
fewer than 120 days remain (--cert-renew-before); CAs last ten years.

Rotating the cluster CA is manual today: stop every server, move
<data-dir>/server/tls away, start the servers (new CA and leaves are made),
and rejoin nodes with a new token.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := configure(cmd, false); err != nil {
				return err
			}
			list, err := pki.List(datadir.Of(dataDir).ServerTLS())
			if err != nil {
				return err
			}
			if len(list) == 0 {
				return fmt.Errorf("no certificates under %s/server/tls: has `cloudless server` run with this --data-dir?", dataDir)
			}
			switch output {
			case "json":
				return writeJSON(cmd.OutOrStdout(), list)
			case "", "table":
				w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "CERTIFICATE\tSUBJECT\tEXPIRES\tDAYS LEFT\tCA")
				for _, c := range list {
					fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%v\n", filepath.Base(c.Path), c.Subject, c.NotAfter.UTC().Format(time.RFC3339), int(time.Until(c.NotAfter).Hours()/24), c.IsCA)
				}
				return w.Flush()
			}
			return fmt.Errorf("-o %q: want table or json", output)
		},
	}
	addConfigFlag(check)
	datadir.AddFlag(check.Flags(), &dataDir, "")
	check.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	cmd.AddCommand(check)
	return cmd
}

package cli

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/cloudless-dev/cloudless/internal/controlplane"
)

func newSecretsEncryptCmd() *cobra.Command {
	cfg := controlplane.DefaultConfig()
	var output string
	cmd := &cobra.Command{
		Use:   "secrets-encrypt",
		Short: "Show and rotate the keys that encrypt Secrets at rest",
		Long: `Secrets are encrypted in the datastore with secretbox from the first start;
the key is in <data-dir>/server/cred/encryption-config.yaml (mode 0600).
Run on a server while it runs, with the server's --data-dir and datastore
flags (or its config file: the same keys are read).`,
	}
	encryption := func(cmd *cobra.Command) (*controlplane.Encryption, error) {
		if err := configure(cmd, false); err != nil {
			return nil, err
		}
		c, _, err := adminClient(cfg.DataDir)
		if err != nil {
			return nil, err
		}
		return &controlplane.Encryption{Config: cfg, Client: c, Progress: func(m string) { fmt.Fprintln(cmd.ErrOrStderr(), m) }}, nil
	}
	status := &cobra.Command{
		Use:   "status",
		Short: "Show the keys and how many Secrets each one encrypts",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			e, err := encryption(cmd)
			if err != nil {
				return err
			}
			st, err := e.Status(cmd.Context())
			if err != nil {
				return err
			}
			switch output {
			case "json":
				return writeJSON(cmd.OutOrStdout(), st)
			case "table", "":
				out := cmd.OutOrStdout()
				fmt.Fprintf(out, "Provider: %s. Secrets in the datastore: %d, unencrypted: %d, with a key no longer configured: %d.\n\n", st.Provider, st.Secrets, st.Unencrypted, st.UnknownKey)
				w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "KEY\tACTIVE\tSECRETS")
				for _, k := range st.Keys {
					fmt.Fprintf(w, "%s\t%v\t%d\n", k.Name, k.Active, k.Secrets)
				}
				if err := w.Flush(); err != nil {
					return err
				}
				if st.Unencrypted > 0 || len(st.Keys) > 1 {
					fmt.Fprintln(out, "\nRun `cloudless secrets-encrypt rotate` to store every Secret with one new key.")
				}
				return nil
			}
			return fmt.Errorf("-o %q: want table or json", output)
		},
	}
	status.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Make a new key, re-encrypt every Secret with it, drop the old keys",
		Long: `Make a new key active, rewrite every Secret so that it is stored with it,
check the datastore, then remove the old keys. The running kube-apiserver
reloads the key file by itself; nothing restarts. Safe to run again if
interrupted: old keys are removed only once no Secret needs them.

Not yet supported with a shared (PostgreSQL) datastore; see
docs/security.md for the manual procedure there.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			e, err := encryption(cmd)
			if err != nil {
				return err
			}
			key, err := e.Rotate(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Secrets are now encrypted with %s only.\n", key)
			return nil
		},
	}
	for _, c := range []*cobra.Command{status, rotate} {
		addConfigFlag(c)
		addDatastoreFlags(c, &cfg)
		cmd.AddCommand(c)
	}
	return cmd
}

package cli

import (
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/cloudless-dev/cloudless/internal/controlplane"
	"github.com/cloudless-dev/cloudless/internal/datadir"
	"github.com/cloudless-dev/cloudless/internal/token"
	"k8s.io/client-go/rest"
)

func newTokenCmd() *cobra.Command {
	dataDir := datadir.Default
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create, list and delete join tokens for `cloudless agent`",
		Long: `Join tokens let another machine join this cluster as a node:

  cloudless agent --server https://<this server>:6443 --token <join token>

A join token is CL1.<CA hash>.<id>.<secret>. The CA hash lets the joining
machine check it reached this cluster before it sends anything; id.secret is
a Kubernetes bootstrap token (a Secret in kube-system) that lets the kubelet
ask for its certificate. Anyone holding a token can add nodes until it
expires or is deleted: keep tokens short-lived.

Run on a server; it uses <data-dir>/server/cred/admin.kubeconfig.`,
	}
	var ttl time.Duration
	var description, output string
	clients := func(cmd *cobra.Command) (kubernetes.Interface, []byte, error) {
		if err := configure(cmd, false); err != nil {
			return nil, nil, err
		}
		return adminClient(dataDir)
	}
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a join token and print it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ca, err := clients(cmd)
			if err != nil {
				return err
			}
			if ttl < 0 {
				return fmt.Errorf("--ttl %s is negative; use 0 for a token that never expires", ttl)
			}
			j, err := token.Create(cmd.Context(), c, ca, ttl, description)
			if err != nil {
				return err
			}
			if ttl == 0 {
				fmt.Fprintln(cmd.ErrOrStderr(), "warning: this token never expires; delete it with `cloudless token delete "+j.ID+"` when done")
			}
			fmt.Fprintln(cmd.OutOrStdout(), j.String())
			return nil
		},
	}
	create.Flags().DurationVar(&ttl, "ttl", 24*time.Hour, "how long the token is valid; 0 for ever")
	create.Flags().StringVar(&description, "description", "", "what the token is for, shown by `token list`")
	list := &cobra.Command{
		Use:   "list",
		Short: "List join tokens (ids only, never secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := clients(cmd)
			if err != nil {
				return err
			}
			infos, err := token.List(cmd.Context(), c)
			if err != nil {
				return err
			}
			switch output {
			case "json":
				if infos == nil {
					infos = []token.Info{}
				}
				return writeJSON(cmd.OutOrStdout(), infos)
			case "table", "":
				w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "ID\tEXPIRES\tUSAGES\tDESCRIPTION")
				for _, i := range infos {
					exp := "never"
					if i.Expires != nil {
						exp = i.Expires.UTC().Format(time.RFC3339)
						if time.Now().After(*i.Expires) {
							exp += " (expired)"
						}
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", i.ID, exp, strings.Join(i.Usages, ","), i.Description)
				}
				return w.Flush()
			}
			return fmt.Errorf("-o %q: want table or json", output)
		},
	}
	list.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	del := &cobra.Command{
		Use:   "delete ID|TOKEN...",
		Short: "Delete join tokens; nodes that joined with them stay",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := clients(cmd)
			if err != nil {
				return err
			}
			for _, a := range args {
				if err := token.Delete(cmd.Context(), c, a); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "deleted %s\n", strings.SplitN(a, ".", 2)[0])
			}
			return nil
		},
	}
	for _, c := range []*cobra.Command{create, list, del} {
		addConfigFlag(c)
		datadir.AddFlag(c.Flags(), &dataDir, "")
		cmd.AddCommand(c)
	}
	return cmd
}

// adminClient returns a client with the server's admin credentials and the
// cluster CA.
func adminClient(dataDir string) (kubernetes.Interface, []byte, error) {
	cfg, err := adminConfig(dataDir)
	if err != nil {
		return nil, nil, err
	}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, err
	}
	ca, err := os.ReadFile(datadir.Of(dataDir).CA())
	if err != nil {
		return nil, nil, fmt.Errorf("read cluster CA: %w", err)
	}
	return c, ca, nil
}

// adminConfig is the server's admin client configuration.
func adminConfig(dataDir string) (*rest.Config, error) {
	kc := controlplane.AdminKubeconfig(dataDir)
	if _, err := os.Stat(kc); err != nil {
		return nil, fmt.Errorf("no admin kubeconfig at %s: run this on a server, as root, with its --data-dir (%v)", kc, err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", kc, err)
	}
	cfg.Timeout = 30 * time.Second
	return cfg, nil
}

package cli

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/cloudless-dev/cloudless/internal/agent"
	"github.com/cloudless-dev/cloudless/internal/datadir"
)

func newImagesCmd() *cobra.Command {
	dataDir := datadir.Default
	cmd := &cobra.Command{Use: "images", Short: "Manage this node's images without a registry"}
	imp := &cobra.Command{
		Use:   "import FILE...",
		Short: "Import OCI or docker-archive tarballs into this node's container runtime",
		Long: `Import image archives (as written by ` + "`docker save`" + `, ` + "`podman save`" + `,
` + "`skopeo copy … docker-archive:`" + ` or ` + "`crane pull`" + `) into this node, for pods with
imagePullPolicy IfNotPresent or Never. Archives copied into
<data-dir>/agent/images/ are imported too, at start and within seconds
while the agent runs. Runs on the node, as root.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := configure(cmd, false); err != nil {
				return err
			}
			if os.Geteuid() != 0 {
				return errors.New("cloudless images import must run as root (it talks to containerd's socket)")
			}
			names, err := agent.ImportFiles(cmd.Context(), dataDir, args)
			for _, n := range names {
				fmt.Fprintln(cmd.OutOrStdout(), n)
			}
			return err
		},
	}
	addConfigFlag(imp)
	datadir.AddFlag(imp.Flags(), &dataDir, "")
	cmd.AddCommand(imp)
	return cmd
}

package cli

import (
	"os"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	kubectlcmd "k8s.io/kubectl/pkg/cmd"

	"github.com/cloudless-dev/cloudless/internal/controlplane"
)

// newKubectlCmd embeds upstream kubectl. Without --kubeconfig or
// KUBECONFIG it uses this server's admin kubeconfig.
func newKubectlCmd() *cobra.Command {
	return &cobra.Command{
		Use:                "kubectl [kubectl arguments]",
		Short:              "Run kubectl (embedded) against this server, with the admin kubeconfig by default",
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if os.Getenv("KUBECONFIG") == "" {
				dataDir := os.Getenv("CLOUDLESS_DATA_DIR")
				if dataDir == "" {
					dataDir = controlplane.DefaultConfig().DataDir
				}
				os.Setenv("KUBECONFIG", controlplane.AdminKubeconfig(dataDir))
			}
			k := kubectlcmd.NewDefaultKubectlCommandWithArgs(kubectlcmd.KubectlOptions{
				Arguments:   append([]string{"kubectl"}, args...),
				ConfigFlags: genericclioptions.NewConfigFlags(true).WithDeprecatedPasswordFlag().WithDiscoveryBurst(300).WithDiscoveryQPS(50.0),
				IOStreams:   genericiooptions.IOStreams{In: os.Stdin, Out: cmd.OutOrStdout(), ErrOut: cmd.ErrOrStderr()},
			})
			k.SetArgs(args)
			return k.ExecuteContext(cmd.Context())
		},
	}
}

package cli

import (
	"os"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	kubectlcmd "k8s.io/kubectl/pkg/cmd"

	"github.com/cloudless-dev/cloudless/internal/controlplane"
	"github.com/cloudless-dev/cloudless/internal/datadir"
)

// newKubectlCmd embeds upstream kubectl. Without --kubeconfig or
// KUBECONFIG it uses this server's admin kubeconfig, found from
// CLOUDLESS_DATA_DIR or data-dir in the config file.
func newKubectlCmd() *cobra.Command {
	return &cobra.Command{
		Use:                "kubectl [kubectl arguments]",
		Short:              "Run kubectl (embedded) against this server, with the admin kubeconfig by default",
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if os.Getenv("KUBECONFIG") == "" {
				dataDir, err := sharedDataDir()
				if err != nil {
					return err
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

// sharedDataDir is the data dir for commands that take no flags of their
// own: CLOUDLESS_DATA_DIR, else data-dir in the config file, else the default.
func sharedDataDir() (string, error) {
	if v := os.Getenv("CLOUDLESS_DATA_DIR"); v != "" {
		d, err := datadir.New(v)
		return string(d), err
	}
	path, explicit := os.LookupEnv("CLOUDLESS_CONFIG")
	if !explicit {
		path = DefaultConfigFile
	}
	file, err := readConfigFile(path, explicit)
	if err != nil {
		return "", err
	}
	if v, ok := file[datadir.FlagName].(string); ok && v != "" {
		d, err := datadir.New(v)
		return string(d), err
	}
	return datadir.Default, nil
}

package cli

import (
	"fmt"
	"runtime/debug"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/component-base/version"
)

func newVersionCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the versions of Cloudless and the components it embeds",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := map[string]string{"cloudless": "devel", "kubernetes": version.Get().GitVersion, "go": "", "commit": ""}
			if bi, ok := debug.ReadBuildInfo(); ok {
				v["go"] = bi.GoVersion
				if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
					v["cloudless"] = bi.Main.Version
				}
				for _, s := range bi.Settings {
					if s.Key == "vcs.revision" {
						v["commit"] = s.Value
					}
				}
				for _, d := range bi.Deps {
					if d.Path == "github.com/containerd/containerd/v2" {
						v["containerd"] = d.Version
					}
				}
			}
			switch output {
			case "json":
				return writeJSON(cmd.OutOrStdout(), v)
			case "", "text":
				for _, k := range []string{"cloudless", "commit", "kubernetes", "containerd", "go"} {
					fmt.Fprintf(cmd.OutOrStdout(), "%-11s %s\n", k+":", v[k])
				}
				return nil
			}
			return fmt.Errorf("-o %q: want text or json", output)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	return cmd
}

// hideUpstreamGlobalFlags hides flags that upstream packages register on
// the process-wide flag set (such as Kubernetes' --version), which cobra
// would otherwise show on every command.
func hideUpstreamGlobalFlags() {
	pflag.CommandLine.VisitAll(func(f *pflag.Flag) { f.Hidden = true })
}

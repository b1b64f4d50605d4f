package cli

import (
	"github.com/spf13/cobra"

	"github.com/cloudless-dev/cloudless/internal/agent"
)

// newContainerdCmd runs containerd; the agent starts it as a child process.
func newContainerdCmd() *cobra.Command {
	return &cobra.Command{
		Use:                "containerd [containerd flags]",
		Short:              "Run containerd (started by the node agent; not for direct use)",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(_ *cobra.Command, args []string) error {
			return agent.RunContainerd(args)
		},
	}
}

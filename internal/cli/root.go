// Package cli holds the cloudless command line: one file per subcommand.
// Subcommands parse flags into a subsystem's Config and call it; no logic
// lives here that a test could not reach through the subsystem.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/spf13/cobra"
)

// Run runs the command line and returns the process exit code.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := &cobra.Command{
		Use:           "cloudless",
		Short:         "Kubernetes for your own metal, in one binary",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	var logLevel string
	root.PersistentFlags().StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	logger := func() (*slog.Logger, error) {
		var lvl slog.Level
		if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
			return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", logLevel)
		}
		return slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl})), nil
	}
	root.AddCommand(newDatastoreCmd(logger), newServerCmd(logger), newAgentCmd(logger), newKubectlCmd(), newCertsCmd(), newTokenCmd(), newSecretsEncryptCmd(), newResetCmd(), newImagesCmd(), newContainerdCmd(), newVersionCmd(), newDebugCmd(), newLintCmd(), newDoctorCmd(), newLBCmd(), newManifestsCmd(), newDNSCmd())
	hideUpstreamGlobalFlags()
	if err := root.ExecuteContext(ctx); err != nil {
		var code exitCode
		if errors.As(err, &code) {
			return int(code)
		}
		fmt.Fprintf(stderr, "error: %v\n", err)
		return 1
	}
	return 0
}

// exitCode ends a command with that code and no message (it printed its
// own report).
type exitCode int

func (c exitCode) Error() string { return fmt.Sprintf("exit code %d", int(c)) }

// writeJSON writes v indented, for -o json.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

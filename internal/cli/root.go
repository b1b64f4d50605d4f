// Package cli holds the cloudless command line: one file per subcommand.
// Subcommands parse flags into a subsystem's Config and call it; no logic
// lives here that a test could not reach through the subsystem.
package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
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
	root.AddCommand(newDatastoreCmd(logger), newServerCmd(logger), newKubectlCmd(), newCertsCmd())
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintf(stderr, "error: %v\n", err)
		return 1
	}
	return 0
}

// bindEnv lets every flag of cmd be set by CLOUDLESS_<FLAG_NAME> as well;
// a flag given on the command line wins.
func bindEnv(cmd *cobra.Command) error {
	var err error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		name := "CLOUDLESS_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(name); ok && !f.Changed && err == nil {
			if serr := f.Value.Set(v); serr != nil {
				err = fmt.Errorf("%s=%q: %w", name, v, serr)
			}
		}
	})
	return err
}

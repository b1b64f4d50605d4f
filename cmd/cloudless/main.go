// Command cloudless is Kubernetes for your own metal, in one binary.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/cloudless-dev/cloudless/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Command cloudless is Kubernetes for your own metal, in one binary.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/cloudless-dev/cloudless/internal/agent"
	"github.com/cloudless-dev/cloudless/internal/cli"
)

func main() {
	// containerd starts the runc shim as this binary under the shim's name.
	if agent.IsShim(os.Args[0]) {
		agent.RunShim()
		return
	}
	// The shim publishes events by running containerd's executable, this
	// one, as `--address … publish --topic …`.
	if agent.IsPublish(os.Args[1:]) {
		if err := agent.RunContainerd(os.Args[1:]); err != nil {
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

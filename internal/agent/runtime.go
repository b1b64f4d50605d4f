package agent

// The only file that imports containerd's daemon and shim: both run from
// this binary, containerd as the child process `cloudless containerd`, the
// shim under its own name (ShimName) as containerd starts it.

import (
	"context"
	"os"
	"path/filepath"
	"slices"

	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/manager"
	"github.com/containerd/containerd/v2/cmd/containerd/command"
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/containerd/v2/plugins"
	"github.com/containerd/plugin"
	"github.com/containerd/plugin/registry"
	"github.com/containernetworking/cni/libcni"
	"github.com/prometheus/client_golang/prometheus"

	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/task/plugin"
	_ "github.com/containerd/containerd/v2/cmd/containerd/builtins"
)

// RunContainerd runs the containerd daemon with args (after the program
// name) until it is signalled.
func RunContainerd(args []string) error {
	cleanMetrics()
	if dir := os.Getenv(cniCacheEnv); dir != "" {
		libcni.CacheDir = dir
	}
	return command.App().Run(append([]string{"containerd"}, args...))
}

// shimEnv marks the shim's own re-executions: it starts its long-running
// server by running os.Executable(), which is this binary's real name.
const shimEnv = "CLOUDLESS_AS_CONTAINERD_SHIM"

// cniCacheEnv names the directory where libcni, in containerd, caches
// each pod's network results: the node's own, not upstream's fixed
// /var/lib/cni (set by startContainerd).
const cniCacheEnv = "CLOUDLESS_CNI_CACHE_DIR"

// IsShim reports whether the process was started as the runc shim.
func IsShim(argv0 string) bool {
	return filepath.Base(argv0) == ShimName || os.Getenv(shimEnv) == "1"
}

// RunShim runs the runc v2 shim; it exits the process itself.
func RunShim() {
	os.Setenv(shimEnv, "1")
	cleanMetrics()
	// The shim starts every plugin registered in this process, and the
	// daemon's (linked in for `cloudless containerd`) registered too: keep
	// only the runc task service, as in upstream's shim binary.
	var keep []plugin.Registration
	for _, r := range registry.Graph(func(*plugin.Registration) bool { return false }) {
		if r.Type == plugins.TTRPCPlugin && r.ID == "task" {
			keep = append(keep, r)
		}
	}
	registry.Reset()
	for i := range keep {
		registry.Register(&keep[i])
	}
	shim.Run(context.Background(), manager.NewShimManager("io.containerd.runc.v2"))
}

// cleanMetrics gives containerd and the shim a registry of their own:
// packages linked into this binary for the control plane register gRPC
// metrics with the default registry at init, and containerd registers its
// own under the same names.
func cleanMetrics() {
	reg := prometheus.NewRegistry()
	prometheus.DefaultRegisterer, prometheus.DefaultGatherer = reg, reg
}

// IsPublish reports whether args are the shim's event-publishing call to
// containerd's executable.
func IsPublish(args []string) bool {
	return len(args) > 2 && args[0] == "--address" && slices.Contains(args, "publish")
}

package agent

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cloudless-dev/cloudless/internal/network"
)

// BridgeName is the pod network's bridge on each node.
const BridgeName = network.BridgeName

// Shims returns the PIDs of the container shims serving the containerd
// whose state is under runDir, found by the -address they were given (a
// shim runs under this binary's own name once it has started).
func Shims(runDir string) []int {
	var out []int
	want := []byte("\x00-address\x00" + filepath.Join(runDir, "containerd", "containerd.sock") + "\x00")
	for _, pid := range pids() {
		cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && bytes.Contains(cmd, want) {
			out = append(out, pid)
		}
	}
	return out
}

// KillShims kills each shim's children (container inits: PID 1 of their
// namespaces, so their whole pid namespace goes), then the shims, and
// waits up to 10 s for them to go.
func KillShims(runDir string) {
	shims := Shims(runDir)
	for _, shim := range shims {
		for _, child := range children(shim) {
			syscall.Kill(child, syscall.SIGKILL)
		}
		syscall.Kill(shim, syscall.SIGKILL)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, shim := range shims {
		for syscall.Kill(shim, 0) == nil && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond) // the kernel reaps them; nothing to wait on
		}
	}
}

func pids() []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

func children(parent int) []int {
	var out []int
	for _, pid := range pids() {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) > 1 {
			if ppid, _ := strconv.Atoi(f[1]); ppid == parent {
				out = append(out, pid)
			}
		}
	}
	return out
}

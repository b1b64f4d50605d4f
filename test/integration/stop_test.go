package integration

import (
	"context"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// stop sends SIGTERM and returns the exit code, failing the test if the
// process does not exit within two minutes.
func (p *proc) stop(t *testing.T) int {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	select {
	case <-p.done:
	case <-time.After(2 * time.Minute):
		t.Fatalf("no exit two minutes after SIGTERM:\n%s", tail(p.stderr.Bytes(), 40))
	}
	return p.cmd.ProcessState.ExitCode()
}

// TestServerStopsCleanly stops a server with its node agent (kubelet,
// containerd) by SIGTERM 20 times, each once its kubelet has posted the
// node's status: every stop exits 0. The restarts reuse the data dir, so
// all but the first are warm.
func TestServerStopsCleanly(t *testing.T) {
	_, data := nodeDataDir(t, "cl-stop-")
	port := freePort(t)
	for i := 1; i <= 20; i++ {
		started := time.Now()
		p, cs, _ := startServerArgs(t, data, port, "--node-name", "node-a")
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		// The node outlives a stop: wait for this run's kubelet to post
		// its status.
		poll(t, ctx, "node-a's status posted by this run's kubelet", func() (bool, error) {
			if p.exited() {
				t.Fatalf("stop %d: server exited before its kubelet posted the node's status:\n%s", i, tail(p.stderr.Bytes(), 40))
			}
			n, err := cs.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			for _, c := range n.Status.Conditions {
				if c.LastHeartbeatTime.After(started) {
					return true, nil
				}
			}
			return false, nil
		})
		cancel()
		if code := p.stop(t); code != 0 {
			t.Fatalf("stop %d: SIGTERM exited %d, want 0:\n%s", i, code, tail(p.stderr.Bytes(), 40))
		}
	}
}

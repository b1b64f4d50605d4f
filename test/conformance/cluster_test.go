package conformance

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/cloudless-dev/cloudless/internal/agent"
	"github.com/cloudless-dev/cloudless/internal/controlplane"
	"github.com/cloudless-dev/cloudless/internal/datadir"
	"github.com/cloudless-dev/cloudless/internal/testutil/nodens"
)

// nodeNumbers are the nodens numbers of node-a (server) and node-b
// (agent): they get 10.250.<n>.2, the host 10.250.<n>.1. CONFORMANCE_NODES
// ("31 32" by default) lets two runs share the machine.
func nodeNumbers(t *testing.T) (a, b int) {
	v := os.Getenv("CONFORMANCE_NODES")
	if v == "" {
		return 31, 32
	}
	if _, err := fmt.Sscanf(v, "%d %d", &a, &b); err != nil || a == b || a < 1 || b < 1 || a > 250 || b > 250 {
		t.Fatalf("CONFORMANCE_NODES=%q: want two different numbers from 1 to 250, like \"31 32\"", v)
	}
	return a, b
}

// cluster is two Cloudless nodes on this machine, each in its own network
// and mount namespace: node-a runs `cloudless server` (with its node),
// node-b `cloudless agent`, joined with a token. Default settings; the
// only flags are the ones two nodes on one machine need (addresses,
// names, data dirs) and an upstream resolver inside the machine.
type cluster struct {
	a, b       *nodens.Node
	kubeconfig string // admin, with node-a's address
	cs         *kubernetes.Clientset
	procs      []*proc
	dead       chan struct{} // closed when a node process exits
	deadOnce   sync.Once
}

// proc is a node process; done closes when it exits.
type proc struct {
	cmd  *exec.Cmd
	log  *lockedBuffer
	done chan struct{}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func startCluster(t *testing.T, ctx context.Context, work, bin string, images string) *cluster {
	t.Helper()
	na, nb := nodeNumbers(t)
	c := &cluster{a: nodens.New(t, "conf-a", na), b: nodens.New(t, "conf-b", nb), dead: make(chan struct{})}
	dataA, dataB := filepath.Join(work, "node-a"), filepath.Join(work, "node-b")
	t.Cleanup(func() {
		for i := len(c.procs) - 1; i >= 0; i-- {
			p := c.procs[i]
			p.cmd.Process.Signal(os.Interrupt)
			select {
			case <-p.done:
			case <-time.After(30 * time.Second):
				p.cmd.Process.Kill()
				<-p.done
			}
		}
		// What each node made (containers, shims, cgroups, run dir, the
		// rules in its namespace) is undone by the node's own reset, run
		// in the namespace it ran in; the namespaces go after this.
		for i, d := range []string{dataA, dataB} {
			n := []*nodens.Node{c.a, c.b}[i]
			cmd := n.Command(filepath.Join(bin, "cloudless"), "reset", "--yes", "--data-dir", d)
			cmd.Env = append(os.Environ(), "CLOUDLESS_CONFIG=")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("cloudless reset --data-dir %s: %v\n%s", d, err, out)
				agent.KillShims(datadir.Of(d).RunDir())
				os.RemoveAll(datadir.Of(d).RunDir())
				agent.RemoveCgroups(d)
			}
		}
	})
	// Cluster DNS forwards to the host's end of node-a's link, where
	// nothing answers: no query leaves the machine.
	resolv := filepath.Join(work, "resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver "+c.a.HostIP+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{dataA, dataB} {
		if err := os.MkdirAll(datadir.Of(d).Images(), 0o700); err != nil {
			t.Fatal(err)
		}
		entries, err := os.ReadDir(images)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if err := os.Link(filepath.Join(images, e.Name()), filepath.Join(datadir.Of(d).Images(), e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
	cloudless := filepath.Join(bin, "cloudless")
	c.start(t, c.a.Command(cloudless, "server", "--data-dir", dataA, "--node-name", "node-a",
		"--advertise-address", c.a.IP, "--resolv-conf", resolv))
	admin := controlplane.AdminKubeconfig(dataA)
	poll(t, ctx, "the server's admin kubeconfig", func() bool {
		c.checkAlive(t)
		_, err := os.Stat(admin)
		return err == nil
	})
	cfg, err := clientcmd.LoadFromFile(admin)
	if err != nil {
		t.Fatal(err)
	}
	port := controlplane.DefaultConfig().HTTPSPort
	for _, cl := range cfg.Clusters {
		cl.Server = fmt.Sprintf("https://%s:%d", c.a.IP, port) // the kubeconfig says 127.0.0.1, inside node-a
	}
	c.kubeconfig = filepath.Join(work, "admin.kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, c.kubeconfig); err != nil {
		t.Fatal(err)
	}
	rc, err := clientcmd.BuildConfigFromFlags("", c.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	c.cs = kubernetes.NewForConfigOrDie(rc)
	poll(t, ctx, "kube-apiserver ready", func() bool {
		c.checkAlive(t)
		body, err := c.cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err == nil && string(body) == "ok"
	})
	tokCmd := c.a.Command(cloudless, "token", "create", "--data-dir", dataA)
	tokCmd.Env = append(os.Environ(), "CLOUDLESS_CONFIG=")
	tok, err := tokCmd.Output()
	if err != nil {
		t.Fatalf("token create: %v", err)
	}
	c.start(t, c.b.Command(cloudless, "agent", "--server", fmt.Sprintf("https://%s:%d", c.a.IP, port),
		"--token", strings.TrimSpace(string(tok)), "--data-dir", dataB, "--node-name", "node-b", "--node-ip", c.b.IP, "--resolv-conf", resolv))
	for _, n := range []string{"node-a", "node-b"} {
		poll(t, ctx, n+" Ready", func() bool {
			c.checkAlive(t)
			node, err := c.cs.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{})
			if err != nil {
				return false
			}
			for _, cond := range node.Status.Conditions {
				if cond.Type == corev1.NodeReady {
					return cond.Status == corev1.ConditionTrue
				}
			}
			return false
		})
	}
	return c
}

func (c *cluster) start(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	cmd.Env = append(os.Environ(), "CLOUDLESS_CONFIG=")
	p := &proc{cmd: cmd, log: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.procs = append(c.procs, p)
	go func() {
		cmd.Wait()
		close(p.done)
		c.deadOnce.Do(func() { close(c.dead) })
	}()
}

// checkAlive fails the run, with the last lines of its log, if a node
// process exited.
func (c *cluster) checkAlive(t *testing.T) {
	t.Helper()
	for _, p := range c.procs {
		if p.exited() {
			t.Fatalf("%s exited:\n%s", strings.Join(p.cmd.Args, " "), p.log.tail(40))
		}
	}
}

// writeLogs saves each node process's output under dir.
func (c *cluster) writeLogs(dir string) {
	for i, p := range c.procs {
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("node-%c.log", 'a'+i)), p.log.bytes(), 0o644)
	}
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]byte(nil), b.buf.Bytes()...)
}

func (b *lockedBuffer) tail(n int) string {
	lines := strings.Split(string(b.bytes()), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func poll(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(500 * time.Millisecond): // polling
		}
	}
}

package integration

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	nriapi "github.com/containerd/nri/pkg/api"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/cloudless-dev/cloudless/internal/agent"
	"github.com/cloudless-dev/cloudless/internal/datadir"
	"github.com/cloudless-dev/cloudless/internal/testutil/nodens"
)

// hostPaths are where a kubelet, containerd, CNI and NRI keep state by
// default. agent.DevicePluginsHostDir is left out: upstream hardcodes the
// kubelet's device-plugin socket there, and nodes share it.
var hostPaths = []string{
	nriapi.DefaultSocketPath, filepath.Dir(nriapi.DefaultSocketPath), "/run/nri", "/opt/nri", "/etc/nri",
	"/var/lib/kubelet/pods", "/var/lib/kubelet/plugins", "/var/lib/kubelet/plugins_registry", "/var/lib/kubelet/pod-resources", "/var/lib/kubelet/checkpoints",
	"/run/containerd", "/var/lib/containerd", "/etc/containerd", "/opt/containerd",
	"/var/log/pods", "/var/log/containers",
	"/opt/cni", "/etc/cni", "/var/lib/cni", "/run/cni",
	"/etc/cdi", "/var/run/cdi",
}

// hostState is what is at each of hostPaths, and below it, outside
// agent.SharedHostPaths: a path, its inode and modification time.
func hostState(t *testing.T) map[string]string {
	t.Helper()
	st := map[string]string{}
	for _, root := range hostPaths {
		filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil // absent
			}
			if shared(path) {
				return nil // other nodes' files come and go
			}
			if info, err := os.Lstat(path); err == nil {
				ino := info.Sys().(*syscall.Stat_t).Ino
				st[path] = fmt.Sprintf("%s inode %d, modified %s", info.Mode().Type(), ino, info.ModTime().Format(time.RFC3339Nano))
			}
			return nil
		})
	}
	return st
}

// shared reports whether path is in or above one of agent.SharedHostPaths
// (which several nodes may write to, never the same file).
func shared(path string) bool {
	for _, p := range agent.SharedHostPaths {
		if path == p || strings.HasPrefix(path, p+"/") || strings.HasPrefix(p, path+"/") {
			return true
		}
	}
	return false
}

// removeLogLinks removes the kubelet's links in the shared
// agent.ContainerLogLinksDir to logs under dir, which
// would dangle once the test's data dirs are gone.
func removeLogLinks(dir string) {
	links, _ := filepath.Glob(filepath.Join(agent.ContainerLogLinksDir, "*.log"))
	for _, l := range links {
		if to, err := os.Readlink(l); err == nil && strings.HasPrefix(to, dir+"/") {
			os.Remove(l)
		}
	}
}

// TestContainedNodes joins two nodes on one machine (two network and
// mount namespaces over the same filesystems), each running a pod: each
// has its own NRI socket under its own run dir, and neither creates or
// replaces anything at the host's default paths (whether or not those
// exist on the machine running the test) outside agent.SharedHostPaths
// and agent.DevicePluginsHostDir (the one known gap: an upstream constant).
func TestContainedNodes(t *testing.T) {
	dir, err := os.MkdirTemp("", "cl-contained-")
	if err != nil {
		t.Fatal(err)
	}
	before := hostState(t)
	type node struct {
		name, data string
		ns         *nodens.Node
		p          *proc
	}
	nodes := []*node{{name: "node-b"}, {name: "node-c"}}
	t.Cleanup(func() {
		for _, n := range nodes {
			if n.p != nil {
				n.p.kill()
			}
			if n.data != "" {
				agent.KillShims(datadir.Of(n.data).RunDir())
				os.RemoveAll(datadir.Of(n.data).RunDir())
				agent.RemoveCgroups(n.data)
			}
		}
		removeLogLinks(dir)
		os.RemoveAll(dir)
	})
	archive := appArchive(t)
	for i, n := range nodes {
		n.ns = nodens.New(t, strings.TrimPrefix(n.name, "node-"), i+1)
		n.data = filepath.Join(dir, n.name)
		if err := os.MkdirAll(datadir.Of(n.data).Images(), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(datadir.Of(n.data).Images(), "app.tar"), archive, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	port := freePort(t)
	serverData := filepath.Join(dir, "server")
	_, cs, _ := startServerArgs(t, serverData, port, "--disable-agent", "--bind-address", "0.0.0.0",
		"--advertise-address", nodes[0].ns.HostIP, "--tls-san", nodes[1].ns.HostIP)
	tok := strings.TrimSpace(mustCLI(t, "token", "create", "--data-dir", serverData))
	for _, n := range nodes {
		n.p = startCmd(t, n.ns.Command(cloudlessBin, "agent", "--server", fmt.Sprintf("https://%s:%d", n.ns.HostIP, port), "--token", tok,
			"--data-dir", n.data, "--node-name", n.name, "--node-ip", n.ns.IP))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for _, n := range nodes {
		poll(t, ctx, n.name+" Ready", func() (bool, error) {
			if n.p.exited() {
				t.Fatalf("%s's agent exited:\n%s", n.name, tail(n.p.stderr.Bytes(), 40))
			}
			node, err := cs.CoreV1().Nodes().Get(ctx, n.name, metav1.GetOptions{})
			return err == nil && nodeIsReady(node), err
		})
	}
	// A pod on each: runc, the shim, CNI and container logs at work.
	for _, n := range nodes {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "on-" + n.name, Namespace: "default"},
			Spec: corev1.PodSpec{NodeName: n.name, Containers: []corev1.Container{{
				Name: "app", Image: appImage, ImagePullPolicy: corev1.PullNever,
				SecurityContext: &corev1.SecurityContext{
					RunAsNonRoot: ptr.To(true), AllowPrivilegeEscalation: ptr.To(false),
					Capabilities:   &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
					SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
				},
			}}},
		}
		if _, err := cs.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range nodes {
		poll(t, ctx, "the pod on "+n.name+" Running", func() (bool, error) {
			p, err := cs.CoreV1().Pods("default").Get(ctx, "on-"+n.name, metav1.GetOptions{})
			return err == nil && p.Status.Phase == corev1.PodRunning, err
		})
	}
	for _, n := range nodes {
		if info, err := os.Stat(agent.NRISocket(n.data)); err != nil || info.Mode().Type() != fs.ModeSocket {
			t.Errorf("%s: %s: %v, want the node's own NRI socket", n.name, agent.NRISocket(n.data), err)
		}
	}
	after := hostState(t)
	for path, was := range before {
		if now, ok := after[path]; !ok {
			t.Errorf("%s was removed (was %s)", path, was)
		} else if now != was {
			t.Errorf("%s changed: was %s, now %s", path, was, now)
		}
	}
	for path, now := range after {
		if _, ok := before[path]; !ok {
			t.Errorf("%s was created (%s): a node's state belongs under its data or run dir", path, now)
		}
	}
	for _, n := range nodes {
		if code := n.p.stop(t); code != 0 {
			t.Errorf("%s's agent: SIGTERM exited %d, want 0:\n%s", n.name, code, tail(n.p.stderr.Bytes(), 40))
		}
	}
}

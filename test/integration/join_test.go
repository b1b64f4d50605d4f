package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	certsv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/cloudless-dev/cloudless/internal/agent"
	"github.com/cloudless-dev/cloudless/internal/controllers"
	"github.com/cloudless-dev/cloudless/internal/controlplane"
	"github.com/cloudless-dev/cloudless/internal/datadir"
	"github.com/cloudless-dev/cloudless/internal/network"
	"github.com/cloudless-dev/cloudless/internal/testutil/nodens"
	"github.com/cloudless-dev/cloudless/internal/token"
)

// TestAgentJoin joins a second machine (a network and mount namespace)
// with `cloudless agent --server --token`: the token's CA pin is checked,
// the kubelet bootstraps its client certificate, its serving certificate
// is approved for its own names only, another machine cannot take its
// name, and a pod runs there with logs and exec through the apiserver.
func TestAgentJoin(t *testing.T) {
	dir, err := os.MkdirTemp("", "cl-join-")
	if err != nil {
		t.Fatal(err)
	}
	nodeData := filepath.Join(dir, "node-b")
	var agentProc *proc
	t.Cleanup(func() {
		if agentProc != nil {
			agentProc.kill()
		}
		agent.KillShims(datadir.Of(nodeData).RunDir())
		os.RemoveAll(datadir.Of(nodeData).RunDir())
		agent.RemoveCgroups(nodeData)
		removeLogLinks(dir)
		os.RemoveAll(dir)
	})
	node, other := nodens.New(t, "b", 1), nodens.New(t, "c", 2)
	port := freePort(t)
	serverData := filepath.Join(dir, "server")
	_, cs, _ := startServerArgs(t, serverData, port, "--disable-agent", "--bind-address", "0.0.0.0", "--advertise-address", node.HostIP, "--tls-san", other.HostIP,
		"--kube-controller-manager-arg=--node-monitor-grace-period=20s") // a dead node turns NotReady sooner
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()

	tok := strings.TrimSpace(mustCLI(t, "token", "create", "--data-dir", serverData))
	server := fmt.Sprintf("https://%s:%d", node.HostIP, port)
	agentArgs := func(token string) []string {
		return []string{"agent", "--server", server, "--token", token, "--data-dir", nodeData, "--node-name", "node-b", "--node-ip", node.IP}
	}

	// A token that pins another CA is refused before anything is sent.
	j, err := token.Parse(tok)
	if err != nil {
		t.Fatal(err)
	}
	wrong := token.Join{CAHash: strings.Repeat("0", 64), ID: j.ID, Secret: j.Secret}.String()
	out, err := node.Command(cloudlessBin, agentArgs(wrong)...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "but the token pins") {
		t.Fatalf("agent with a token for another CA: %v\n%s", err, tail(out, 10))
	}

	images := datadir.Of(nodeData).Images()
	if err := os.MkdirAll(images, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(images, "app.tar"), appArchive(t), 0o600); err != nil {
		t.Fatal(err)
	}
	agentProc = startCmd(t, node.Command(cloudlessBin, agentArgs(tok)...))

	poll(t, ctx, "node-b Ready", func() (bool, error) {
		if agentProc.exited() {
			t.Fatalf("agent exited:\n%s", tail(agentProc.stderr.Bytes(), 40))
		}
		n, err := cs.CoreV1().Nodes().Get(ctx, "node-b", metav1.GetOptions{})
		return err == nil && nodeIsReady(n), err
	})
	var firstID string
	if n, _ := cs.CoreV1().Nodes().Get(ctx, "node-b", metav1.GetOptions{}); n != nil {
		if _, ok := n.Labels[controllers.ControlPlaneLabel]; ok {
			t.Error("a joined agent carries the control-plane label")
		}
		if firstID = n.Labels[agent.NodeIDLabel]; firstID == "" {
			t.Errorf("node-b has no %s label", agent.NodeIDLabel)
		}
	}
	// Its serving certificate was requested by the node and approved.
	poll(t, ctx, "node-b's serving certificate approved", func() (bool, error) {
		csrs, err := cs.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for _, c := range csrs.Items {
			if c.Spec.SignerName == certsv1.KubeletServingSignerName && c.Spec.Username == "system:node:node-b" {
				for _, cond := range c.Status.Conditions {
					if cond.Type == certsv1.CertificateApproved && len(c.Status.Certificate) > 0 {
						return true, nil
					}
				}
			}
		}
		return false, nil
	})

	// No join token is left on disk once the node has its certificate,
	// and a restart needs none: SIGTERM exits 0, and the same data dir
	// comes back Ready with the bootstrap kubeconfig still gone.
	assertNoToken := func(when string) {
		t.Helper()
		bootstrapKC := filepath.Join(datadir.Of(nodeData).AgentPKI(), "bootstrap.kubeconfig")
		if _, err := os.Stat(bootstrapKC); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: %s: %v, want it removed", when, bootstrapKC, err)
		}
		err := filepath.WalkDir(nodeData, func(path string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return nil // files that vanish while containerd runs
			}
			if b, err := os.ReadFile(path); err == nil && bytes.Contains(b, []byte(j.Secret)) {
				t.Errorf("%s: %s holds the join token's secret", when, path)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	assertNoToken("joined")
	if code := agentProc.stop(t); code != 0 {
		t.Fatalf("agent SIGTERM exited %d, want 0:\n%s", code, tail(agentProc.stderr.Bytes(), 40))
	}

	// NetworkPolicy enforcement that cannot start fails closed: with an
	// nft that refuses the policy table, the node says so (condition) and
	// is tainted NoSchedule; restarted with the real nft, both go.
	policyState := func() (cond corev1.ConditionStatus, tainted bool, err error) {
		n, err := cs.CoreV1().Nodes().Get(ctx, "node-b", metav1.GetOptions{})
		if err != nil {
			return "", false, err
		}
		for _, c := range n.Status.Conditions {
			if c.Type == network.PolicyCondition {
				cond = c.Status
			}
		}
		for _, tt := range n.Spec.Taints {
			tainted = tainted || tt.Key == network.PolicyTaint && tt.Effect == corev1.TaintEffectNoSchedule
		}
		return cond, tainted, nil
	}
	broken := brokenNFT(t, dir)
	faulty := node.Command(cloudlessBin, agentArgs(tok)...)
	faulty.Env = append(os.Environ(), "CLOUDLESS_CONFIG=", "PATH="+broken+":"+os.Getenv("PATH"))
	agentProc = startCmd(t, faulty)
	poll(t, ctx, "node-b reports NetworkPolicy not enforced and is tainted", func() (bool, error) {
		if agentProc.exited() {
			t.Fatalf("agent with a broken nft exited:\n%s", tail(agentProc.stderr.Bytes(), 40))
		}
		cond, tainted, err := policyState()
		return cond == corev1.ConditionTrue && tainted, fmt.Errorf("condition %q, tainted %v, %v", cond, tainted, err)
	})
	if code := agentProc.stop(t); code != 0 {
		t.Fatalf("agent SIGTERM exited %d, want 0:\n%s", code, tail(agentProc.stderr.Bytes(), 40))
	}
	restarted := time.Now()
	agentProc = startCmd(t, node.Command(cloudlessBin, agentArgs(tok)...))
	poll(t, ctx, "node-b enforces NetworkPolicy again and is untainted", func() (bool, error) {
		cond, tainted, err := policyState()
		return cond == corev1.ConditionFalse && !tainted, fmt.Errorf("condition %q, tainted %v, %v", cond, tainted, err)
	})
	poll(t, ctx, "node-b Ready again after a restart", func() (bool, error) {
		if agentProc.exited() {
			t.Fatalf("restarted agent exited:\n%s", tail(agentProc.stderr.Bytes(), 40))
		}
		n, err := cs.CoreV1().Nodes().Get(ctx, "node-b", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				return c.Status == corev1.ConditionTrue && c.LastHeartbeatTime.After(restarted), nil
			}
		}
		return false, nil
	})
	assertNoToken("restarted")

	// Another machine taking the live node's name is refused.
	otherData := filepath.Join(dir, "node-c")
	t.Cleanup(func() {
		agent.KillShims(datadir.Of(otherData).RunDir())
		os.RemoveAll(datadir.Of(otherData).RunDir())
		agent.RemoveCgroups(otherData)
	})
	clash := other.Command(cloudlessBin, "agent", "--server", fmt.Sprintf("https://%s:%d", other.HostIP, port), "--token", tok,
		"--data-dir", otherData, "--node-name", "node-b", "--node-ip", other.IP)
	if out, err := clash.CombinedOutput(); err == nil || !strings.Contains(string(out), "registered by another machine") {
		t.Errorf("a second machine joining as node-b: %v\n%s", err, tail(out, 10))
	}

	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "on-b", Namespace: "default"},
		Spec: corev1.PodSpec{NodeName: "node-b", Containers: []corev1.Container{{
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
	poll(t, ctx, "the pod on node-b Running", func() (bool, error) {
		p, err := cs.CoreV1().Pods("default").Get(ctx, "on-b", metav1.GetOptions{})
		return err == nil && p.Status.Phase == corev1.PodRunning, err
	})
	poll(t, ctx, "the pod's log through the apiserver", func() (bool, error) {
		b, err := cs.CoreV1().Pods("default").GetLogs("on-b", &corev1.PodLogOptions{}).DoRaw(ctx)
		return strings.Contains(string(b), "hello from cloudless"), err
	})
	cmd := exec.Command(cloudlessBin, "kubectl", "exec", "on-b", "--", "/app", "echo", "joined")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+controlplane.AdminKubeconfig(serverData))
	if out, err := cmd.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "joined" {
		t.Errorf("kubectl exec on node-b: %v %q", err, out)
	}

	// Reinstall: the machine is wiped and joins again under its name, with
	// a new identity; it takes the name back once the old node is NotReady.
	agentProc.kill()
	agent.KillShims(datadir.Of(nodeData).RunDir())
	reinstalled := filepath.Join(dir, "node-b-reinstalled")
	t.Cleanup(func() {
		agent.KillShims(datadir.Of(reinstalled).RunDir())
		os.RemoveAll(datadir.Of(reinstalled).RunDir())
		agent.RemoveCgroups(reinstalled)
	})
	rejoinArgs := []string{"agent", "--server", server, "--token", tok, "--data-dir", reinstalled, "--node-name", "node-b", "--node-ip", node.IP}
	poll(t, ctx, "node-b NotReady after its agent stopped", func() (bool, error) {
		n, err := cs.CoreV1().Nodes().Get(ctx, "node-b", metav1.GetOptions{})
		return err == nil && !nodeIsReady(n), err
	})
	agentProc = startCmd(t, node.Command(cloudlessBin, rejoinArgs...))
	poll(t, ctx, "the reinstalled node-b Ready with its new identity", func() (bool, error) {
		if agentProc.exited() {
			t.Fatalf("reinstalled agent exited:\n%s", tail(agentProc.stderr.Bytes(), 20))
		}
		n, err := cs.CoreV1().Nodes().Get(ctx, "node-b", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return nodeIsReady(n) && n.Labels[agent.NodeIDLabel] != firstID, nil
	})
}

// brokenNFT makes a directory holding an nft that refuses anything
// naming the NetworkPolicy table and runs the real one for the rest.
func brokenNFT(t *testing.T, dir string) string {
	t.Helper()
	real, err := exec.LookPath("nft")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "broken-nft")
	script := fmt.Sprintf(`#!/bin/sh
for a in "$@"; do case "$a" in *%[1]s*) echo "Error: refused by the test" >&2; exit 1;; esac; done
case " $* " in *" -f - "*|*" -f -") in=$(cat); case "$in" in *%[1]s*) echo "Error: refused by the test" >&2; exit 1;; esac; printf '%%s\n' "$in" | exec %[2]s "$@";; esac
exec %[2]s "$@"
`, network.PolicyTable, real)
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "nft"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

func nodeIsReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

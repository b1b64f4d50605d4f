package agent

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/cloudless-dev/cloudless/internal/atomicfile"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/kubernetes/pkg/kubelet/certificate/bootstrap"
)

// NodeIDLabel carries a hash of a secret each machine keeps in
// <data-dir>/agent/node-id: a machine that joins under the name of a live
// node with another id is refused, so two machines cannot fight over one
// Node. A reinstalled machine (new id) may take its name back once the old
// node is no longer Ready.
const NodeIDLabel = "cloudless.dev/node-id"

// nodeID returns this machine's node-id label value, making the secret
// on first use.
func (a *Agent) nodeID() (string, error) {
	path := filepath.Join(a.paths.root, "node-id")
	secret, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			return "", err
		}
		secret = []byte(hex.EncodeToString(b))
		if err := atomicfile.Write(path, secret, 0o600); err != nil {
			return "", err
		}
	} else if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(string(secret))))
	return hex.EncodeToString(sum[:16]), nil
}

// claimName gets the node's client certificate by TLS bootstrap (before
// the kubelet would, so that nothing is registered yet) and, with it,
// refuses to go on if a live node of this name belongs to another machine.
//
// The bootstrap kubeconfig holds the join token: it is removed here, used
// or not, so that no token stays on disk. The kubelet runs on the client
// certificate and renews it itself; an agent whose certificate expired
// bootstraps again at its next start, from --token.
func (a *Agent) claimName(ctx context.Context, id string) error {
	defer os.Remove(a.cfg.BootstrapKubeconfig)
	certDir := filepath.Join(a.paths.kubeletRoot(), "pki")
	if err := bootstrap.LoadClientCert(ctx, a.cfg.Kubeconfig, a.cfg.BootstrapKubeconfig, certDir, types.NodeName(a.cfg.NodeName)); err != nil {
		return fmt.Errorf("TLS bootstrap (is the token valid and not expired? `cloudless token list` on a server): %w", err)
	}
	if err := os.Remove(a.cfg.BootstrapKubeconfig); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove the bootstrap kubeconfig, which holds the join token: %w", err)
	}
	rc, err := clientcmd.BuildConfigFromFlags("", a.cfg.Kubeconfig)
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	node, err := cs.CoreV1().Nodes().Get(ctx, a.cfg.NodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up node %s: %w", a.cfg.NodeName, err)
	}
	if node.Labels[NodeIDLabel] == id {
		return nil
	}
	if !nodeReady(node) {
		// A reinstalled machine takes its name back; the kubelet keeps
		// labels of an existing node, so record the new id here.
		patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%q}}}`, NodeIDLabel, id)
		if _, err := cs.CoreV1().Nodes().Patch(ctx, a.cfg.NodeName, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			return fmt.Errorf("take over node %s: %w", a.cfg.NodeName, err)
		}
		a.log.Info("took over the name of a node that is not Ready (reinstalled machine?)", "node", a.cfg.NodeName)
		return nil
	}
	return fmt.Errorf("node %s is registered by another machine and is Ready: choose another --node-name, or if that machine is gone, wait until the node is NotReady (about 40 s) or `cloudless kubectl delete node %s`", a.cfg.NodeName, a.cfg.NodeName)
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

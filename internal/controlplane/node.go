package controlplane

import (
	"context"
	"fmt"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/cloudless-dev/cloudless/internal/agent"
)

// ControlPlaneLabel marks the nodes that run a server.
const ControlPlaneLabel = "node-role.kubernetes.io/control-plane"

// startAgent runs this machine's node agent with certificates the server
// issued, and labels the node as a control-plane node once it registers
// (NodeRestriction forbids the kubelet to set that label itself).
func (s *Server) startAgent(ctx context.Context, errc chan error) error {
	p, c := s.paths, s.cfg
	args := append([]string(nil), c.KubeletArgs...)
	if len(c.NodeTaints) > 0 {
		args = append(args, "--register-with-taints="+strings.Join(c.NodeTaints, ","))
	}
	a, err := agent.New(agent.Config{
		DataDir: c.DataDir, NodeName: c.NodeName, NodeIP: c.AdvertiseAddress,
		Kubeconfig: p.cred("kubelet-client.kubeconfig"), CAFile: p.tls("ca.crt"),
		ServingCertFile: p.tls("kubelet-serving.crt"), ServingKeyFile: p.tls("kubelet-serving.key"),
		ClusterDNS: c.ClusterDNS, ClusterDomain: c.ClusterDomain, KubeletArgs: args,
		ClusterCIDR: c.ClusterCIDR, ServiceCIDR: c.ServiceCIDR, NetworkBackend: c.NetworkBackend, ProxyMode: c.ProxyMode,
		ResolvConf: c.ResolvConf,
	}, s.log.With("subsystem", "agent"))
	if err != nil {
		return err
	}
	go func() { errc <- a.Run(ctx) }()
	go func() {
		if err := s.labelControlPlane(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("label the control-plane node", "node", c.NodeName, "err", err)
		}
	}()
	return nil
}

func (s *Server) labelControlPlane(ctx context.Context) error {
	rc, err := clientcmd.BuildConfigFromFlags("", s.paths.cred("admin.kubeconfig"))
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	patch := []byte(fmt.Sprintf(`{"metadata":{"labels":{%q:""}}}`, ControlPlaneLabel))
	for {
		_, err := cs.CoreV1().Nodes().Patch(ctx, s.cfg.NodeName, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

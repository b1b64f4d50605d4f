package controlplane

import (
	"context"
	"strings"

	"github.com/cloudless-dev/cloudless/internal/agent"
)

// startAgent runs this machine's node agent with certificates the server
// issued (the controllers label its node as a control-plane node).
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
		ResolvConf: c.ResolvConf, LBARPRefresh: c.LBARPRefresh, LBFailureDetection: c.LBFailureDetection,
		VolumeRoots: c.VolumeRoots, NoLocalVolumes: c.Disabled(ComponentLocalStorage),
	}, s.log.With("subsystem", "agent"))
	if err != nil {
		return err
	}
	go func() { errc <- a.Run(ctx) }()
	return nil
}

package controlplane

import (
	"context"

	"github.com/cloudless-dev/cloudless/internal/agent"
)

// startAgent runs this machine's node agent with certificates the server
// issued (the controllers label its node as a control-plane node).
func (s *Server) startAgent(ctx context.Context, errc chan error) error {
	p, c := s.paths, s.cfg
	node := c.NodeConfig
	node.NodeIP = c.AdvertiseAddress
	a, err := agent.New(agent.Config{
		NodeConfig: node, DataDir: c.DataDir,
		Kubeconfig: p.cred("kubelet-client.kubeconfig"), CAFile: p.tls("ca.crt"),
		ServingCertFile: p.tls("kubelet-serving.crt"), ServingKeyFile: p.tls("kubelet-serving.key"),
		ClusterDNS: c.ClusterDNS, ClusterDomain: c.ClusterDomain,
		ClusterCIDR: c.ClusterCIDR, ServiceCIDR: c.ServiceCIDR, NetworkBackend: c.NetworkBackend, ProxyMode: c.ProxyMode,
		NoLocalVolumes: c.Disabled(ComponentLocalStorage),
	}, s.log.With("subsystem", "agent"))
	if err != nil {
		return err
	}
	go func() { errc <- a.Run(ctx) }()
	return nil
}

package agent

// The only file that imports the kubelet. It runs in this process, from
// its upstream command, with a configuration file written here.

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	kubeletapp "k8s.io/kubernetes/cmd/kubelet/app"

	"github.com/cloudless-dev/cloudless/internal/klogslog"
)

// kubeletConfig is the KubeletConfiguration, with the lessons built in:
// resolv.conf without the host's search domains or a loopback stub, a
// graceful-shutdown period, reserved resources and eviction thresholds
// sized from the node's memory, swap refused, and no anonymous access.
func (a *Agent) kubeletConfig(memBytes uint64) string {
	mi := func(b uint64) string { return fmt.Sprintf("%dMi", b>>20) }
	clamp := func(v, lo, hi uint64) uint64 { return max(lo, min(v, hi)) }
	reserved := clamp(memBytes/20, 256<<20, 2<<30) // 5%, 256 MiB to 2 GiB, each for kube and system
	evict := clamp(memBytes/50, 100<<20, 1<<30)    // 2%, 100 MiB to 1 GiB
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %s
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: %s
authorization:
  mode: Webhook
%stlsMinVersion: VersionTLS12
clusterDNS: [%s]
clusterDomain: %s
resolvConf: %s
containerRuntimeEndpoint: unix://%s
cgroupDriver: %s
cgroupRoot: %s
failCgroupV1: false
failSwapOn: true
shutdownGracePeriod: 40s
shutdownGracePeriodCriticalPods: 20s
kubeReserved:
  cpu: 100m
  memory: %s
systemReserved:
  cpu: 100m
  memory: %s
evictionHard:
  memory.available: %s
  nodefs.available: 10%%
  nodefs.inodesFree: 5%%
  imagefs.available: 15%%
serializeImagePulls: false
staticPodPath: ""
podLogsDir: %s
logging:
  format: %s
`, a.cfg.NodeIP, a.cfg.CAFile, a.certConfig(), a.cfg.ClusterDNS, a.cfg.ClusterDomain,
		a.paths.resolvConf(), a.paths.containerdSocket(), a.cgroupDriver, a.cgroupRoot(), mi(reserved), mi(reserved), mi(evict), a.paths.podLogs(), klogslog.Format)
}

// certConfig: the server's own node gets its certificates from the
// server; a joined node bootstraps with a token, asks for a serving
// certificate (approved for known nodes only) and renews both itself.
func (a *Agent) certConfig() string {
	if a.cfg.BootstrapKubeconfig != "" {
		return "rotateCertificates: true\nserverTLSBootstrap: true\n"
	}
	return fmt.Sprintf("tlsCertFile: %s\ntlsPrivateKeyFile: %s\n", a.cfg.ServingCertFile, a.cfg.ServingKeyFile)
}

func (a *Agent) kubeletArgs() []string {
	args := []string{
		"--config=" + filepath.Join(a.paths.root, "kubelet.yaml"),
		"--kubeconfig=" + a.cfg.Kubeconfig,
		"--root-dir=" + a.paths.kubeletRoot(),
		"--cert-dir=" + filepath.Join(a.paths.kubeletRoot(), "pki"),
		"--hostname-override=" + a.cfg.NodeName,
		"--node-ip=" + a.cfg.NodeIP,
	}
	if len(a.cfg.NodeLabels) > 0 {
		args = append(args, "--node-labels="+strings.Join(a.cfg.NodeLabels, ","))
	}
	return append(args, a.cfg.KubeletArgs...)
}

// runKubelet runs the kubelet until the process is signalled; the kubelet
// sets up its own signal handling and cannot be stopped otherwise.
func runKubelet(ctx context.Context, args []string) error {
	ctx = klogslog.NewContext(ctx, "kubelet")
	cmd := kubeletapp.NewKubeletCommand(ctx)
	cmd.SetArgs(args)
	return cmd.ExecuteContext(ctx)
}

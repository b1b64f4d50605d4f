package agent

// The only file that imports the kubelet. It runs in this process, from
// its upstream command, with a configuration file written here.

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	logsapi "k8s.io/component-base/logs/api/v1"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
	kubeletapp "k8s.io/kubernetes/cmd/kubelet/app"
	kubeletcodec "k8s.io/kubernetes/pkg/kubelet/kubeletconfig/util/codec"
	"k8s.io/utils/ptr"

	"github.com/cloudless-dev/cloudless/internal/klogslog"
	"k8s.io/kubernetes/pkg/cluster/ports"
)

// kubeletConfig is the KubeletConfiguration, with the lessons built in:
// resolv.conf without the host's search domains or a loopback stub, a
// graceful-shutdown period, reserved resources and eviction thresholds
// sized from the node's memory, swap refused, and no anonymous access.
// It is upstream's v1beta1 type, written by the kubelet's own encoder.
func (a *Agent) kubeletConfig(memBytes uint64) ([]byte, error) {
	mi := func(b uint64) string { return fmt.Sprintf("%dMi", b>>20) }
	clamp := func(v, lo, hi uint64) uint64 { return max(lo, min(v, hi)) }
	reserved := clamp(memBytes/20, 256<<20, 2<<30) // 5%, 256 MiB to 2 GiB, each for kube and system
	evict := clamp(memBytes/50, 100<<20, 1<<30)    // 2%, 100 MiB to 1 GiB
	c := &kubeletv1beta1.KubeletConfiguration{
		TypeMeta:           metav1.TypeMeta{APIVersion: kubeletv1beta1.SchemeGroupVersion.String(), Kind: "KubeletConfiguration"},
		Address:            a.cfg.NodeIP,
		Port:               ports.KubeletPort,
		ReadOnlyPort:       0,
		HealthzBindAddress: "127.0.0.1",
		HealthzPort:        ptr.To[int32](ports.KubeletHealthzPort),
		Authentication: kubeletv1beta1.KubeletAuthentication{
			Anonymous: kubeletv1beta1.KubeletAnonymousAuthentication{Enabled: ptr.To(false)},
			Webhook:   kubeletv1beta1.KubeletWebhookAuthentication{Enabled: ptr.To(true)},
			X509:      kubeletv1beta1.KubeletX509Authentication{ClientCAFile: a.cfg.CAFile},
		},
		Authorization:                   kubeletv1beta1.KubeletAuthorization{Mode: kubeletv1beta1.KubeletAuthorizationModeWebhook},
		TLSMinVersion:                   "VersionTLS12",
		ClusterDNS:                      []string{a.cfg.ClusterDNS},
		ClusterDomain:                   a.cfg.ClusterDomain,
		ResolverConfig:                  ptr.To(a.paths.resolvConf()),
		ContainerRuntimeEndpoint:        "unix://" + a.paths.containerdSocket(),
		CgroupDriver:                    a.cgroupDriver,
		CgroupRoot:                      a.cgroupRoot(),
		FailCgroupV1:                    ptr.To(false),
		FailSwapOn:                      ptr.To(true),
		ShutdownGracePeriod:             metav1.Duration{Duration: 40 * time.Second},
		ShutdownGracePeriodCriticalPods: metav1.Duration{Duration: 20 * time.Second},
		KubeReserved:                    map[string]string{"cpu": "100m", "memory": mi(reserved)},
		SystemReserved:                  map[string]string{"cpu": "100m", "memory": mi(reserved)},
		EvictionHard: map[string]string{"memory.available": mi(evict), "nodefs.available": "10%",
			"nodefs.inodesFree": "5%", "imagefs.available": "15%"},
		SerializeImagePulls: ptr.To(false),
		StaticPodPath:       "",
		PodLogsDir:          a.paths.podLogs(),
		Logging:             logsapi.LoggingConfiguration{Format: klogslog.Format},
	}
	// The server's own node gets its certificates from the server; a
	// joined node bootstraps with a token, asks for a serving certificate
	// (approved for known nodes only) and renews both itself.
	if a.cfg.BootstrapKubeconfig != "" {
		c.RotateCertificates, c.ServerTLSBootstrap = true, true
	} else {
		c.TLSCertFile, c.TLSPrivateKeyFile = a.cfg.ServingCertFile, a.cfg.ServingKeyFile
	}
	enc, err := kubeletcodec.NewKubeletconfigYAMLEncoder(kubeletv1beta1.SchemeGroupVersion)
	if err != nil {
		return nil, fmt.Errorf("kubelet config encoder: %w", err)
	}
	b, err := runtime.Encode(enc, c)
	if err != nil {
		return nil, fmt.Errorf("encode the kubelet config: %w", err)
	}
	return b, nil
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
	if len(a.cfg.NodeTaints) > 0 {
		args = append(args, "--register-with-taints="+strings.Join(a.cfg.NodeTaints, ","))
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

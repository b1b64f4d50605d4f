// Package agent turns this machine into a Kubernetes node: it runs
// containerd (a child process of this binary) with runc and CNI plugins
// built from their Go modules, imports image archives (no registry
// needed), and runs the upstream kubelet in this process with a
// configuration that has the usual on-prem lessons built in.
//
// Files: containerd.go (runtime config and child), runtime.go (the only
// importer of containerd's daemon and shim), kubelet.go (the only importer
// of the kubelet), images.go (archives and the pause image), resolv.go,
// cni.go (the node's CNI conflist, written once it has a pod CIDR).
//
// The server package starts it for the server's own node; `cloudless
// agent` will start it on other machines.
package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/cloudless-dev/cloudless/internal/atomicfile"
	"github.com/cloudless-dev/cloudless/internal/datadir"
	"github.com/cloudless-dev/cloudless/internal/footprint"
	"github.com/cloudless-dev/cloudless/internal/lb/speaker"
	"github.com/cloudless-dev/cloudless/internal/network"
	"github.com/cloudless-dev/cloudless/internal/volumes"
)

// Config configures the agent.
type Config struct {
	NodeConfig
	DataDir string
	// Kubeconfig authenticates the kubelet (as system:node:<NodeName>).
	// With BootstrapKubeconfig (a bootstrap token), Run gets the client
	// certificate by TLS bootstrap, writes Kubeconfig pointing at it and
	// removes BootstrapKubeconfig before the kubelet starts.
	Kubeconfig          string
	BootstrapKubeconfig string
	// CAFile is the cluster CA; ServingCert/KeyFile the kubelet's serving
	// certificate, signed by it.
	CAFile, ServingCertFile, ServingKeyFile string
	ClusterDNS, ClusterDomain               string
	// The cluster's network: pod and Service ranges, how pod traffic
	// crosses nodes (vxlan, host-gw) and kube-proxy's mode.
	ClusterCIDR, ServiceCIDR  string
	NetworkBackend, ProxyMode string
	// HelpersDir holds runc, pause and cni/ (default: next to this binary).
	HelpersDir string
	// RunDir holds runtime state that must not outlive a reboot (default
	// datadir.Of(DataDir).RunDir()).
	RunDir string
	// NoLocalVolumes leaves the volume provisioner off: the server was
	// started with --disable local-storage (learnt from cluster-info by a
	// joined agent).
	NoLocalVolumes bool
}

type paths struct{ root, run string }

func (p paths) containerdRoot() string  { return filepath.Join(p.root, "containerd") }
func (p paths) containerdState() string { return filepath.Join(p.run, "containerd") }
func (p paths) containerdSocket() string {
	return filepath.Join(p.run, "containerd", "containerd.sock")
}
func (p paths) cniConfDir() string    { return filepath.Join(p.root, "cni", "net.d") }
func (p paths) shimDir() string       { return filepath.Join(p.root, "bin") }
func (p paths) kubeletRoot() string   { return filepath.Join(p.root, "kubelet") }
func (p paths) resolvConf() string    { return filepath.Join(p.root, "resolv.conf") }
func (p paths) podLogs() string       { return filepath.Join(p.root, "pod-logs") }
func (p paths) registryHosts() string { return filepath.Join(p.root, "registries.d") }

// nriSocket is containerd's NRI socket, for NRI plugins; nriDir holds the
// plugins containerd starts itself and their configuration.
func (p paths) nriSocket() string { return filepath.Join(p.run, "nri", "nri.sock") }
func (p paths) nriDir() string    { return filepath.Join(p.root, "nri") }

// SharedHostPaths are the only paths outside its data and run dirs that a
// node writes to, and no two nodes write the same file there: the
// kubelet's links to container logs in /var/log/containers (where log
// shippers look) are named after the container ID, and containerd's shim
// sockets in /run/containerd/s after a hash of the node's containerd
// socket; upstream hardcodes both directories.
var SharedHostPaths = []string{ContainerLogLinksDir, "/run/containerd/s"}

// ContainerLogLinksDir is where the kubelet links each container's log
// (upstream's legacy path, which log shippers read).
const ContainerLogLinksDir = "/var/log/containers"

// DevicePluginsHostDir is the one path a node uses outside its data and
// run dirs that is not contained: upstream hardcodes the kubelet's
// device-plugin socket there (pluginapi.KubeletSocket, a constant read by
// devicemanager.NewManagerImpl whatever --root-dir is), and every
// device-plugin DaemonSet mounts it. Two agents on one machine take turns
// holding kubelet.sock there. Not fixed by copying upstream's module: see
// internal/agent/README.md.
const DevicePluginsHostDir = pluginapi.DevicePluginPath

// NRISocket is containerd's NRI socket of the node with dataDir (and the
// default run dir).
func NRISocket(dataDir string) string { return paths{run: datadir.Of(dataDir).RunDir()}.nriSocket() }

// Agent is a node agent.
type Agent struct {
	cfg          Config
	log          *slog.Logger
	paths        paths
	cgroupDriver string
	ready        chan struct{}
	net          *network.Network
	footprint    *footprint.Recorder // what this node makes outside its data dir
	volumeRoots  volumes.Roots
}

// New checks cfg and returns an Agent; it starts nothing.
func New(cfg Config, log *slog.Logger) (*Agent, error) {
	if cfg.NodeName == "" || cfg.NodeIP == "" || cfg.Kubeconfig == "" {
		return nil, errors.New("agent: node name, node IP and kubeconfig are required")
	}
	d, err := datadir.New(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	cfg.DataDir = string(d)
	if cfg.HelpersDir == "" {
		self, err := os.Executable()
		if err != nil {
			return nil, err
		}
		cfg.HelpersDir = filepath.Dir(self)
	}
	if cfg.RegistriesFile == "" {
		cfg.RegistriesFile = DefaultRegistriesFile
	}
	if cfg.RunDir == "" {
		cfg.RunDir = datadir.Of(cfg.DataDir).RunDir()
	}
	a := &Agent{cfg: cfg, log: log, paths: paths{datadir.Of(cfg.DataDir).Agent(), cfg.RunDir}, cgroupDriver: cgroupDriver(), ready: make(chan struct{}),
		footprint: footprint.NewRecorder(cfg.DataDir)}
	helpers := []string{"runc", "pause"}
	for _, p := range cniHelpers {
		helpers = append(helpers, filepath.Join("cni", p))
	}
	for _, h := range helpers {
		if _, err := os.Stat(a.helper(h)); err != nil {
			return nil, fmt.Errorf("agent: helper %s is missing from %s: build with `make build`, which puts runc, pause and the CNI plugins next to cloudless", h, cfg.HelpersDir)
		}
	}
	if a.volumeRoots, err = volumes.ParseRoots(cfg.VolumeRoots, datadir.Of(cfg.DataDir).Volumes()); err != nil {
		return nil, err
	}
	a.net, err = network.New(network.Config{
		NodeName: cfg.NodeName, NodeIP: cfg.NodeIP, ClusterCIDR: cfg.ClusterCIDR, ServiceCIDR: cfg.ServiceCIDR,
		Backend: cfg.NetworkBackend, ProxyMode: cfg.ProxyMode, Kubeconfig: cfg.Kubeconfig, StateDir: filepath.Join(a.paths.root, "network"),
		ClusterDomain: cfg.ClusterDomain, ResolvConf: a.paths.resolvConf(), Footprint: a.footprint,
	}, log.With("subsystem", "network"))
	if err != nil {
		return nil, err
	}
	return a, nil
}

func (a *Agent) helper(name string) string { return filepath.Join(a.cfg.HelpersDir, name) }

// Ready is closed when the node is registered and its pod network set up.
func (a *Agent) Ready() <-chan struct{} { return a.ready }

func (a *Agent) phase(n int, msg string, args ...any) {
	a.log.Info(fmt.Sprintf("[agent %d/4] %s", n, msg), args...)
}

// Run runs the node until ctx ends. A stop (ctx ending) in any phase
// returns nil: the caller asked for it.
func (a *Agent) Run(ctx context.Context) error {
	err := a.run(ctx)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func (a *Agent) run(ctx context.Context) error {
	if err := checkSwap(a.cfg.KubeletArgs); err != nil {
		return err
	}
	release, err := datadir.Of(a.cfg.DataDir).LockNode()
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	defer release()
	if err := a.footprint.Begin(); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	if err := a.footprint.Add(func(r *footprint.Record) { r.RunDir = a.cfg.RunDir }); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	mem, err := memTotal()
	if err != nil {
		return err
	}
	id, err := a.nodeID()
	if err != nil {
		return fmt.Errorf("agent: node id: %w", err)
	}
	a.cfg.NodeLabels = append(a.cfg.NodeLabels, NodeIDLabel+"="+id)
	if a.cfg.BootstrapKubeconfig != "" {
		if err := a.claimName(ctx, id); err != nil {
			return err
		}
	}
	a.phase(1, "starting containerd", "cgroup-driver", a.cgroupDriver)
	if err := a.linkShim(); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	containerdDone, err := a.startContainerd(ctx)
	if err != nil {
		return err
	}
	go a.superviseContainerd(ctx, containerdDone)
	a.phase(2, "importing images")
	if err := a.importImages(ctx); err != nil {
		return err
	}
	a.phase(3, "starting kubelet", "node", a.cfg.NodeName)
	if err := writeResolvConf(a.paths.resolvConf(), a.cfg.ResolvConf, a.log); err != nil {
		return err
	}
	if err := ensureCgroupRoot(a.cgroupRoot(), a.footprint); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	kc, err := a.kubeletConfig(mem)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(a.paths.root, "kubelet.yaml"), kc, 0o600); err != nil {
		return err
	}
	errc := make(chan error, 3)
	go func() {
		err := runKubelet(ctx, a.kubeletArgs())
		if err == nil {
			// The kubelet returns without an error only when its own
			// signal handler got SIGTERM or SIGINT, which end ctx too
			// (cmd/cloudless): a clean stop, not a failure to report.
			<-ctx.Done()
			return
		}
		errc <- fmt.Errorf("kubelet: %w", err)
	}()
	go func() { errc <- a.watchImages(ctx) }()

	a.phase(4, "waiting for the node's pod CIDR")
	cs, err := a.setupPodNetwork(ctx, errc)
	if err != nil {
		return err
	}
	go func() { errc <- a.net.Run(ctx, cs) }()
	speakerDone := make(chan struct{})
	go func() { defer close(speakerDone); a.runSpeaker(ctx) }()
	if !a.cfg.NoLocalVolumes {
		go a.runVolumes(ctx)
	}
	close(a.ready)
	a.log.Info("node is up", "node", a.cfg.NodeName)
	select {
	case <-ctx.Done():
		// The speaker ends its BGP sessions with a Cease, so that routers
		// withdraw this node's routes now, not after the hold time.
		select {
		case <-speakerDone:
		case <-time.After(5 * time.Second):
		}
		return nil
	case err := <-errc:
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
}

// setupPodNetwork waits until the controller-manager gives the node a pod
// CIDR, sets up the node's network and writes the CNI config for it.
func (a *Agent) setupPodNetwork(ctx context.Context, errc chan error) (kubernetes.Interface, error) {
	var cs kubernetes.Interface
	for {
		if cs == nil {
			// A joining kubelet writes its kubeconfig once bootstrapped.
			if rc, err := clientcmd.BuildConfigFromFlags("", a.cfg.Kubeconfig); err == nil {
				cs, _ = kubernetes.NewForConfig(rc)
			}
		}
		if cs != nil {
			node, err := cs.CoreV1().Nodes().Get(ctx, a.cfg.NodeName, metav1.GetOptions{})
			if err == nil && node.Spec.PodCIDR != "" {
				mtu, err := a.net.Setup(ctx, cs, node)
				if err != nil {
					return nil, err
				}
				a.log.Info("pod network", "pod-cidr", node.Spec.PodCIDR, "mtu", mtu, "proxy-mode", a.net.ProxyMode())
				return cs, a.writeCNIConfig(node, mtu)
			}
		}
		select {
		case err := <-errc:
			return nil, err
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func (a *Agent) writeCNIConfig(node *corev1.Node, mtu int) error {
	backend := portmapBackend(a.net.ProxyMode())
	if err := a.footprint.Add(portmapFootprint(backend)); err != nil {
		return err
	}
	conf, err := cniConfig(node.Spec.PodCIDR, mtu, backend, a.paths.cniIPAMDir())
	if err != nil {
		return err
	}
	return atomicfile.Write(a.paths.cniConfFile(), conf, 0o600)
}

// cgroupDriver is systemd where systemd runs and cgroup v2 is the only
// hierarchy, cgroupfs otherwise (including cgroup v1 hybrid hosts).
func cgroupDriver() string {
	var st unix.Statfs_t
	if _, err := os.Stat("/run/systemd/system"); err == nil {
		if unix.Statfs("/sys/fs/cgroup", &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			return "systemd"
		}
	}
	return "cgroupfs"
}

// checkSwap refuses to start with swap on, unless the kubelet was told
// to accept it (--kubelet-arg=--fail-swap-on=false), which the error
// advises.
func checkSwap(kubeletArgs []string) error {
	b, err := os.ReadFile("/proc/swaps")
	if err != nil {
		return nil
	}
	return swapError(string(b), kubeletArgs)
}

// swapError decides from /proc/swaps' text and the kubelet's extra
// arguments.
func swapError(swaps string, kubeletArgs []string) error {
	if lines := strings.Split(strings.TrimSpace(swaps), "\n"); len(lines) <= 1 {
		return nil
	}
	for i, arg := range kubeletArgs {
		if arg == "--fail-swap-on=false" || arg == "--fail-swap-on" && i+1 < len(kubeletArgs) && kubeletArgs[i+1] == "false" {
			return nil
		}
	}
	return errors.New("agent: swap is on, and the kubelet cannot account for it; turn it off (swapoff -a, and remove it from /etc/fstab), or configure swap with --kubelet-arg=--fail-swap-on=false")
}

func memTotal() (uint64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var kb uint64
		if n, _ := fmt.Sscanf(sc.Text(), "MemTotal: %d kB", &kb); n == 1 {
			return kb << 10, nil
		}
	}
	return 0, errors.New("agent: no MemTotal in /proc/meminfo")
}

// runSpeaker announces the LoadBalancer addresses this node is chosen
// for (internal/lb/l2), with the node's credential. A failure restarts
// the speaker, never the agent.
func (a *Agent) runSpeaker(ctx context.Context) {
	log := a.log.With("subsystem", "lb-speaker")
	a.keepRunning(ctx, log, "load-balancer speaker", func(rc *rest.Config) error {
		return (&speaker.Speaker{Node: a.cfg.NodeName, NodeIP: a.cfg.NodeIP, Refresh: a.cfg.LBARPRefresh, Detection: a.cfg.LBFailureDetection, Log: log}).Run(ctx, rc)
	})
}

// runVolumes provisions, grows and deletes this node's local volumes.
func (a *Agent) runVolumes(ctx context.Context) {
	log := a.log.With("subsystem", "volumes")
	a.keepRunning(ctx, log, "volume provisioner", func(rc *rest.Config) error {
		return (&volumes.Provisioner{Node: a.cfg.NodeName, Roots: a.volumeRoots, Log: log}).Run(ctx, rc)
	})
}

// keepRunning runs a node-side controller with the node's credentials
// until ctx ends, restarting it 5 s after it stops.
func (a *Agent) keepRunning(ctx context.Context, log *slog.Logger, what string, run func(*rest.Config) error) {
	for {
		rc, err := clientcmd.BuildConfigFromFlags("", a.cfg.Kubeconfig)
		if err == nil {
			err = run(rc)
		}
		if ctx.Err() != nil {
			return
		}
		log.Warn(what+" stopped; restarting it in 5 s", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Second):
		}
	}
}

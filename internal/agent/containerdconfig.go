package agent

import (
	"path/filepath"

	"github.com/pelletier/go-toml/v2"
)

// containerd's configuration (version 3) as typed structs, serialised by
// the TOML codec containerd reads it with (pelletier/go-toml/v2). The
// top-level keys are those of containerd's server config
// (cmd/containerd/server/config.Config), checked by strict decoding
// into it; the CRI and NRI plugins' types are internal to containerd, so
// their sections are ours, holding only the keys we set, and
// TestContainerdConfig checks each against containerd's own `config
// dump`, which decodes every plugin section into the plugin's type.
type containerdConfig struct {
	Version         int            `toml:"version"`
	Root            string         `toml:"root"`
	State           string         `toml:"state"`
	DisabledPlugins []string       `toml:"disabled_plugins"`
	GRPC            address        `toml:"grpc"`
	TTRPC           address        `toml:"ttrpc"`
	Plugins         map[string]any `toml:"plugins"`
}

type address struct {
	Address string `toml:"address"`
}

// Plugin IDs, as containerd's registry names them.
const (
	pluginCRIImages  = "io.containerd.cri.v1.images"
	pluginCRIRuntime = "io.containerd.cri.v1.runtime"
	pluginCRI        = "io.containerd.grpc.v1.cri"
	pluginNRI        = "io.containerd.nri.v1.nri"
	pluginOpt        = "io.containerd.internal.v1.opt"
)

// disabledPlugins are built in but unused: the node's images live on
// overlayfs. btrfs, zfs, devmapper and tracing are not even built in
// (build/go.env's tags); listing them keeps a binary built without those
// tags the same.
var disabledPlugins = []string{
	"io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
	"io.containerd.snapshotter.v1.blockfile", "io.containerd.snapshotter.v1.erofs",
	"io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing",
}

type criImages struct {
	Snapshotter  string            `toml:"snapshotter"`
	PinnedImages map[string]string `toml:"pinned_images"`
	Registry     struct {
		ConfigPath string `toml:"config_path"`
	} `toml:"registry"`
}

type criRuntime struct {
	EnableSelinux            bool `toml:"enable_selinux"`
	NetNSMountsUnderStateDir bool `toml:"netns_mounts_under_state_dir"`
	// Without CAP_SYS_RESOURCE the kernel refuses the negative
	// oom_score_adj containerd gives the pause container.
	RestrictOOMScoreAdj bool `toml:"restrict_oom_score_adj"`
	Containerd          struct {
		DefaultRuntimeName string                       `toml:"default_runtime_name"`
		Runtimes           map[string]criRuntimeHandler `toml:"runtimes"`
	} `toml:"containerd"`
	CNI struct {
		BinDirs []string `toml:"bin_dirs"`
		ConfDir string   `toml:"conf_dir"`
	} `toml:"cni"`
}

type criRuntimeHandler struct {
	Type    string      `toml:"runtime_type"`
	Options runcOptions `toml:"options"`
}

// runcOptions are containerd's runc options (api/types/runc/options),
// whose TOML keys are the Go field names.
type runcOptions struct {
	BinaryName    string `toml:"BinaryName"`
	Root          string `toml:"Root"`
	SystemdCgroup bool   `toml:"SystemdCgroup"`
}

type criServer struct {
	StreamServerAddress string `toml:"stream_server_address"`
	StreamServerPort    string `toml:"stream_server_port"`
}

type nriConfig struct {
	SocketPath       string `toml:"socket_path"`
	PluginPath       string `toml:"plugin_path"`
	PluginConfigPath string `toml:"plugin_config_path"`
}

type optConfig struct {
	Path string `toml:"path"`
}

// containerdConfig is the config of the node's containerd: its state
// under the data dir, the CRI plugin the kubelet talks to with runc and
// the CNI plugins from the helpers, and registry mirrors from
// registries.d.
func (a *Agent) containerdConfig() containerdConfig {
	images := criImages{Snapshotter: "overlayfs", PinnedImages: map[string]string{"sandbox": PauseImage}}
	images.Registry.ConfigPath = a.paths.registryHosts()

	rt := criRuntime{NetNSMountsUnderStateDir: true, RestrictOOMScoreAdj: !hasCapSysResource()}
	rt.Containerd.DefaultRuntimeName = "runc"
	rt.Containerd.Runtimes = map[string]criRuntimeHandler{"runc": {
		Type: "io.containerd.runc.v2",
		Options: runcOptions{
			BinaryName:    a.helper("runc"),
			Root:          filepath.Join(a.paths.run, "runc"),
			SystemdCgroup: a.cgroupDriver == "systemd",
		},
	}}
	rt.CNI.BinDirs = []string{a.helper("cni")}
	rt.CNI.ConfDir = a.paths.cniConfDir()

	return containerdConfig{
		Version:         3,
		Root:            a.paths.containerdRoot(),
		State:           a.paths.containerdState(),
		DisabledPlugins: disabledPlugins,
		GRPC:            address{a.paths.containerdSocket()},
		TTRPC:           address{a.paths.containerdSocket() + ".ttrpc"},
		Plugins: map[string]any{
			pluginCRIImages:  images,
			pluginCRIRuntime: rt,
			// Streams (exec, attach, port-forward) on loopback, any port.
			pluginCRI: criServer{StreamServerAddress: "127.0.0.1", StreamServerPort: "0"},
			pluginNRI: nriConfig{
				SocketPath:       a.paths.nriSocket(),
				PluginPath:       filepath.Join(a.paths.nriDir(), "plugins"),
				PluginConfigPath: filepath.Join(a.paths.nriDir(), "conf.d"),
			},
			pluginOpt: optConfig{Path: filepath.Join(a.paths.root, "opt")},
		},
	}
}

// marshal encodes c as containerd reads it.
func (c containerdConfig) marshal() ([]byte, error) { return toml.Marshal(c) }

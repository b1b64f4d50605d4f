package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/cloudless-dev/cloudless/internal/atomicfile"
	containerd "github.com/containerd/containerd/v2/client"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// hasCapSysResource reports whether this process may lower oom_score_adj.
func hasCapSysResource() bool {
	var hdr = unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[0].Effective&(1<<unix.CAP_SYS_RESOURCE) != 0
}

// startContainerd runs containerd as a child process (the same binary,
// `cloudless containerd`), so that a kubelet restart does not take the
// runtime with it and containerd's signal handling stays its own. It
// returns when the socket answers, the CRI plugin included, with a channel that gets containerd's
// exit.
func (a *Agent) startContainerd(ctx context.Context) (<-chan error, error) {
	regs, err := loadRegistries(a.cfg.RegistriesFile)
	if err != nil {
		return nil, err
	}
	if err := writeRegistryHosts(a.paths.registryHosts(), regs); err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(a.paths.root, "containerd.toml")
	cfg, err := a.containerdConfig().marshal()
	if err != nil {
		return nil, fmt.Errorf("encode containerd's config: %w", err)
	}
	if err := atomicfile.Write(cfgPath, cfg, 0o600); err != nil {
		return nil, err
	}
	for _, d := range []string{a.paths.containerdRoot(), a.paths.containerdState(), a.paths.cniConfDir(), filepath.Join(a.paths.root, "logs")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(filepath.Join(a.paths.root, "logs", "containerd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "containerd", "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	// The shim is this binary under the name containerd-shim-runc-v2, in
	// shimDir; containerd looks it up in PATH, and so does the shim for
	// runc when it cleans up.
	cmd.Env = append(os.Environ(), "PATH="+a.paths.shimDir()+":"+a.cfg.HelpersDir+":"+os.Getenv("PATH"),
		cniCacheEnv+"="+filepath.Join(a.paths.root, "cni", "cache"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start containerd: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait(); logf.Close() }()
	deadline := time.Now().Add(time.Minute)
	for {
		c, err := containerd.New(a.paths.containerdSocket(), containerd.WithTimeout(2*time.Second))
		if err == nil {
			ok, serr := c.IsServing(ctx)
			c.Close()
			if serr == nil && ok {
				serr = criServing(ctx, a.paths.containerdSocket())
			}
			if serr == nil && ok {
				go func() {
					<-ctx.Done()
					cmd.Process.Signal(syscall.SIGTERM)
				}()
				return done, nil
			}
		}
		select {
		case err := <-done:
			return nil, fmt.Errorf("containerd exited (%v); see %s", err, filepath.Join(a.paths.root, "logs", "containerd.log"))
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			return nil, errors.New("containerd did not answer within a minute; see " + filepath.Join(a.paths.root, "logs", "containerd.log"))
		}
	}
}

// criServing asks containerd's CRI plugin for its version, the call the
// kubelet makes first and gives up on. The plugin comes up after
// containerd's own API does and, on a restart, only once it has loaded
// the state of the containers already running; until then it answers
// "server is not initialized yet".
func criServing(ctx context.Context, socket string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = runtimeapi.NewRuntimeServiceClient(conn).Version(ctx, &runtimeapi.VersionRequest{})
	return err
}

// superviseContainerd restarts containerd when it exits while the agent
// runs, backing off up to 30 s between tries. Containers keep running
// meanwhile: their shims are not containerd's children.
func (a *Agent) superviseContainerd(ctx context.Context, done <-chan error) {
	backoff := time.Second
	for {
		select {
		case <-ctx.Done():
			return
		case err := <-done:
			if ctx.Err() != nil {
				return
			}
			a.log.Error("containerd exited; restarting it", "err", err, "log", filepath.Join(a.paths.root, "logs", "containerd.log"))
			for {
				select {
				case <-ctx.Done():
					return
				case <-time.After(backoff):
				}
				d, err := a.startContainerd(ctx)
				if err == nil {
					done, backoff = d, time.Second
					a.log.Info("containerd is back")
					break
				}
				a.log.Error("restart containerd", "err", err)
				backoff = min(2*backoff, 30*time.Second)
			}
		}
	}
}

// linkShim makes the shim name point at this binary.
func (a *Agent) linkShim() error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(a.paths.shimDir(), 0o755); err != nil {
		return err
	}
	link := filepath.Join(a.paths.shimDir(), ShimName)
	if cur, err := os.Readlink(link); err == nil && cur == self {
		return nil
	}
	os.Remove(link)
	return os.Symlink(self, link)
}

// ShimName is the name containerd runs the runc shim by; main dispatches
// on it.
const ShimName = "containerd-shim-runc-v2"

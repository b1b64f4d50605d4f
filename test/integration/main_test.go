// Package integration runs the real cloudless binary: built once per test
// run, started as a separate process, killed and restarted.
package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/cloudless-dev/cloudless/internal/controlplane"
	"github.com/cloudless-dev/cloudless/internal/testutil/pgtest"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

var (
	cloudlessBin string
	pg           *pgtest.Server
)

// scratch is this run's directory, removed when the run ends: what is
// built once per run goes there.
var scratch string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "cloudless-it-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	scratch = dir
	// cloudless and its helpers (runc, pause, CNI plugins), once per run.
	cloudlessBin = filepath.Join(dir, "bin", "cloudless")
	build := exec.Command("build/build.sh", filepath.Join(dir, "bin"))
	build.Dir = "../.."
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build cloudless: %v\n%s", err, out)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	pg, err = pgtest.Start(ctx, 26432+os.Getpid()%1000)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "start PostgreSQL: %v\n", err)
		return 1
	}
	defer pg.Stop()
	return m.Run()
}

// proc is a running cloudless process.
type proc struct {
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	done   chan struct{}
}

func start(t *testing.T, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(cloudlessBin, args...)
	cmd.Env = append(os.Environ(), "CLOUDLESS_CONFIG=") // never the host's /etc/cloudless
	return startCmd(t, cmd)
}

// startCmd starts cmd, capturing its stderr, and kills it when the test ends.
func startCmd(t *testing.T, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{cmd: cmd, stderr: &bytes.Buffer{}, done: make(chan struct{})}
	p.cmd.Stderr = p.stderr
	if p.cmd.Env == nil {
		p.cmd.Env = append(os.Environ(), "CLOUDLESS_CONFIG=")
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", cmd.Args, err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.kill() })
	return p
}

func (p *proc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// datastoreArgs makes a fresh data dir (and, for postgres, a fresh
// database) and returns it, the socket path and the arguments that run a
// datastore on engine there.
func datastoreArgs(t *testing.T, engine string) (dir, sock string, args []string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "cl-ds-") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock = dir + "/etcd.sock"
	args = []string{"datastore", "--data-dir", dir, "--listen-socket", sock, "--log-level", "warn"}
	if engine == "postgres" {
		dsn, err := pg.NewDatabase(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		args = append(args, "--datastore-endpoint", dsn)
	}
	return dir, sock, args
}

// nodeDataDir makes a temporary dir for a test that runs a node, and the
// node's data dir in it (dir/data). When the test ends, after the
// processes it started are killed (their cleanups run first), reset
// removes whatever the node left (containers, mounts, bridge, tables) and
// the dir goes.
func nodeDataDir(t *testing.T, prefix string) (dir, data string) {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	data = filepath.Join(dir, "data")
	t.Cleanup(func() {
		if plan, err := controlplane.PlanReset(data); err == nil {
			if err := controlplane.Reset(plan); err != nil {
				t.Errorf("reset: %v", err)
			}
		}
		os.RemoveAll(dir)
	})
	return dir, data
}

// restConfig reads a kubeconfig with its certificate files inlined, so
// that client-go does not watch files which a test's cleanup removes
// (its rotation watcher then logs an error every few seconds until the
// whole test binary ends).
func restConfig(kubeconfig string) (*rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	for _, f := range []struct {
		path *string
		data *[]byte
	}{{&cfg.CertFile, &cfg.CertData}, {&cfg.KeyFile, &cfg.KeyData}, {&cfg.CAFile, &cfg.CAData}} {
		if *f.path == "" {
			continue
		}
		if *f.data, err = os.ReadFile(*f.path); err != nil {
			return nil, err
		}
		*f.path = ""
	}
	return cfg, nil
}

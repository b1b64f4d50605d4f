// Package datadir owns the layout of a Cloudless data dir: every path in
// it, the two locks (a running server's and a running node's) and the
// layout version, for servers and joined agents alike. A data dir is
// named by a Dir, always absolute and clean, so "data", "./data/" and
// "$PWD/data" are one data dir with one run dir.
//
//	<data-dir>/
//	  layout-version   the layout's number (LayoutVersion)
//	  server.lock      held by a running server
//	  server/          the control plane: tls/, cred/, manifests/, datastore (its mode)
//	  datastore/       the embedded engine's files and etcd.sock
//	  agent/           the node: agent.lock (held by a running node), footprint.json,
//	                   pki/ (a joined agent's credentials), images/, kubelet/, containerd/, …
//
// It imports only the standard library, pflag and atomicfile; every
// package that touches a data dir may import it, and none may spell a path
// in it by hand.
package datadir

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/cloudless-dev/cloudless/internal/atomicfile"
)

// Default is the data dir when --data-dir is not given.
const Default = "/var/lib/cloudless"

// DefaultRunDir is the run dir of the default data dir.
const DefaultRunDir = "/run/cloudless"

// LayoutVersion numbers the layout. A server refuses a data dir from a
// newer layout rather than misread it; older layouts are migrated when
// there are any.
const LayoutVersion = 1

// Dir is a data dir's root: absolute and clean (see New).
type Dir string

// New normalises path into a Dir: absolute (from the working directory)
// and clean, so a relative path or a trailing slash names the same data
// dir, and the same run dir, everywhere.
func New(path string) (Dir, error) {
	if strings.TrimSpace(path) == "" {
		return "", errors.New("--data-dir is empty: give a directory, e.g. --data-dir " + Default)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("--data-dir %q: %w", path, err)
	}
	return Dir(abs), nil
}

// Of is New for a path already checked (the flag's value, a Config
// field): a path New refuses is returned as given, cleaned.
func Of(path string) Dir {
	d, err := New(path)
	if err != nil {
		return Dir(filepath.Clean(path))
	}
	return d
}

func (d Dir) String() string          { return string(d) }
func (d Dir) join(p ...string) string { return filepath.Join(append([]string{string(d)}, p...)...) }

// Server is the control plane's directory.
func (d Dir) Server() string { return d.join("server") }

// ServerTLS holds the cluster's CAs, certificates and keys.
func (d Dir) ServerTLS() string { return d.join("server", "tls") }

// CA is the cluster CA's certificate.
func (d Dir) CA() string { return d.join("server", "tls", "ca.crt") }

// ServerCred holds the kubeconfigs the server writes.
func (d Dir) ServerCred() string { return d.join("server", "cred") }

// AdminKubeconfig is the cluster-admin kubeconfig a server writes.
func (d Dir) AdminKubeconfig() string { return d.join("server", "cred", "admin.kubeconfig") }

// Manifests is the directory a server mirrors into the cluster's stored
// manifests.
func (d Dir) Manifests() string { return d.join("server", "manifests") }

// DatastoreMode records which datastore a server was set up with
// ("embedded" or "shared").
func (d Dir) DatastoreMode() string { return d.join("server", "datastore") }

// Shared reports whether the server of d was set up on a shared datastore.
func (d Dir) Shared() bool {
	b, err := os.ReadFile(d.DatastoreMode())
	return err == nil && strings.TrimSpace(string(b)) == "shared"
}

// Engine is the embedded datastore engine's directory.
func (d Dir) Engine() string { return d.join("datastore") }

// EngineSocket is the unix socket the embedded datastore serves on.
func (d Dir) EngineSocket() string { return d.join("datastore", "etcd.sock") }

// Agent is the node's directory (a server's own node's too).
func (d Dir) Agent() string { return d.join("agent") }

// AgentPKI holds a joined agent's CA, bootstrap and kubelet credentials.
func (d Dir) AgentPKI() string { return d.join("agent", "pki") }

// Volumes is the node's default root for local volumes.
func (d Dir) Volumes() string { return d.join("agent", "volumes") }

// Images is where image archives are imported from at the node's start.
func (d Dir) Images() string { return d.join("agent", "images") }

// Footprint is the node's record of what it made outside the data dir.
func (d Dir) Footprint() string { return d.join("agent", "footprint.json") }

// ServerLock is the lock a running server holds.
func (d Dir) ServerLock() string { return d.join("server.lock") }

// NodeLock is the lock a running node holds (a server's own node too).
func (d Dir) NodeLock() string { return d.join("agent", "agent.lock") }

// LayoutFile holds the layout version.
func (d Dir) LayoutFile() string { return d.join("layout-version") }

// RunDir is DefaultRunDir for the default data dir, and a directory of its
// own for any other, named from the normalised path, so that several
// nodes (tests) can share a machine.
func (d Dir) RunDir() string {
	if d == Default {
		return DefaultRunDir
	}
	sum := sha256.Sum256([]byte(d))
	return DefaultRunDir + "-" + hex.EncodeToString(sum[:4])
}

// markers are what a Cloudless data dir holds: a server's layout and
// lock, a datastore's files, a node's agent/ (a joined agent has only
// that).
func (d Dir) markers() []string {
	return []string{d.LayoutFile(), d.Server(), d.Engine(), d.ServerLock(), d.Agent()}
}

// IsDataDir reports whether d holds anything a server or agent makes,
// and which names it looked for.
func (d Dir) IsDataDir() (bool, []string) {
	var names []string
	found := false
	for _, m := range d.markers() {
		names = append(names, filepath.Base(m))
		if _, err := os.Lstat(m); err == nil {
			found = true
		}
	}
	return found && d != "/", names
}

// LockServer takes the lock a running server holds, so that a second
// server, or reset, on the same data dir is refused. The kernel drops it
// when the process exits, however it exits.
func (d Dir) LockServer() (release func(), err error) {
	if err := os.MkdirAll(string(d), 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w (run as root or choose a writable --data-dir)", d, err)
	}
	return lockFile(d.ServerLock(), fmt.Sprintf("a cloudless server (pid %%s) is running with --data-dir %s; stop it first, or choose another --data-dir", d))
}

// LockNode takes the lock a running node holds (a server's own node too),
// so that reset refuses a running node.
func (d Dir) LockNode() (release func(), err error) {
	if err := os.MkdirAll(d.Agent(), 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w (run as root or choose a writable --data-dir)", d.Agent(), err)
	}
	return lockFile(d.NodeLock(), fmt.Sprintf("a cloudless node (pid %%s) is running with --data-dir %s; stop it first", d))
}

// ServerRunning and NodeRunning report whether a process holds the lock.
func (d Dir) ServerRunning() bool { return Held(d.ServerLock()) }
func (d Dir) NodeRunning() bool   { return Held(d.NodeLock()) }

// Held reports whether some process holds the lock file at path. It
// probes with a shared lock, released at once, so it never blocks or
// takes the lock from its owner.
func Held(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); err != nil {
		return errors.Is(err, syscall.EWOULDBLOCK)
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false
}

// lockFile takes an exclusive lock on the file at path (created 0600) and
// writes this process's pid in it. If another process holds it, the error
// is held, with %s replaced by that process's pid.
func lockFile(path, held string) (release func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		pid, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf(held, strings.TrimSpace(string(pid)))
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	f.Truncate(0)
	f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return func() { f.Close() }, nil
}

// CheckLayout records the layout in a new data dir and refuses one
// written by a newer Cloudless.
func (d Dir) CheckLayout() error {
	path := d.LayoutFile()
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return atomicfile.Write(path, []byte(strconv.Itoa(LayoutVersion)+"\n"), 0o600)
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return fmt.Errorf("%s is damaged (%q); if this data dir is Cloudless's, write %d into it", path, b, LayoutVersion)
	}
	if v > LayoutVersion {
		return fmt.Errorf("data dir %s was written by a newer Cloudless (layout %d; this binary knows %d): run that version, or `cloudless reset` to start over", d, v, LayoutVersion)
	}
	return nil
}

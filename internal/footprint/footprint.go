// Package footprint records what a node creates outside its data dir, so
// that `cloudless reset` removes exactly that and nothing of another
// node's: the run dir, cgroups, network devices, nftables tables and
// iptables chains, each noted in <data-dir>/agent/footprint.json before it
// is created. The network objects belong to the network namespace the
// node ran in; the record names that namespace, so a reset run elsewhere
// touches none of them.
//
// The agent and the network package write it (through a Recorder);
// internal/controlplane's reset reads it. Nothing else needs its path or
// format. It also owns the node lock, which a running agent holds.
package footprint

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/cloudless-dev/cloudless/internal/atomicfile"
	"github.com/cloudless-dev/cloudless/internal/datadir"
	"golang.org/x/sys/unix"
)

// Version numbers the record's format.
const Version = 1

// Path is the record of the node with dataDir.
func Path(dataDir string) string { return datadir.Of(dataDir).Footprint() }

// Record is what a node created outside its data dir. Network objects
// (Links, NFTables, IPTables, RouteProtocol, KubeProxy) live in Netns;
// everything here is gone after a reboot (BootID), /run and cgroups too.
type Record struct {
	Version int    `json:"version"`
	BootID  string `json:"bootId"`
	Netns   Netns  `json:"netns"`
	// RunDir holds containerd's sockets and state; mounts under it and
	// under the data dir are the node's.
	RunDir string `json:"runDir,omitempty"`
	// Cgroups are directories under /sys/fs/cgroup, removed deepest first.
	Cgroups  []string   `json:"cgroups,omitempty"`
	Links    []string   `json:"links,omitempty"`
	NFTables []NFTable  `json:"nftables,omitempty"`
	IPTables []IPTChain `json:"iptables,omitempty"`
	// RouteProtocol marks the routes the node owns (rtnetlink protocol).
	RouteProtocol int `json:"routeProtocol,omitempty"`
	// KubeProxy is the mode kube-proxy ran in; iptables and ipvs leave
	// chains and sets that kube-proxy's own cleanup removes.
	KubeProxy string `json:"kubeProxy,omitempty"`
}

// Netns names a network namespace: the inode and device of its nsfs file
// (/proc/<pid>/ns/net) and, where the kernel has it (5.14+), its cookie,
// which is never reused while the machine is up (an inode can be).
type Netns struct {
	Inode  uint64 `json:"inode"`
	Dev    uint64 `json:"dev"`
	Cookie uint64 `json:"cookie,omitempty"`
}

func (n Netns) String() string { return fmt.Sprintf("net:[%d]", n.Inode) }

// Same reports whether n and o are one namespace.
func (n Netns) Same(o Netns) bool {
	if n.Inode != o.Inode || n.Dev != o.Dev {
		return false
	}
	return n.Cookie == 0 || o.Cookie == 0 || n.Cookie == o.Cookie
}

// NFTable is an nftables table.
type NFTable struct {
	Family string `json:"family"`
	Name   string `json:"name"`
}

// IPTChain is an iptables chain the node created, and the built-in chain
// that jumps to it.
type IPTChain struct {
	Table string `json:"table"`
	Chain string `json:"chain"`
	From  string `json:"from,omitempty"`
}

// Outside lists what r holds outside the data dir, one line each, in the
// order reset removes it.
func (r Record) Outside() []string {
	var out []string
	if r.RunDir != "" {
		out = append(out, "run dir "+r.RunDir)
	}
	for _, c := range r.Cgroups {
		out = append(out, "cgroup "+c)
	}
	ns := " in " + r.Netns.String()
	for _, l := range r.Links {
		out = append(out, "link "+l+ns)
	}
	if r.RouteProtocol != 0 {
		out = append(out, fmt.Sprintf("routes of protocol %d%s", r.RouteProtocol, ns))
	}
	for _, t := range r.NFTables {
		out = append(out, "nftables table "+t.Family+" "+t.Name+ns)
	}
	for _, c := range r.IPTables {
		out = append(out, "iptables chain "+c.Table+" "+c.Chain+ns)
	}
	if r.KubeProxy == "iptables" || r.KubeProxy == "ipvs" {
		out = append(out, "kube-proxy "+r.KubeProxy+" rules"+ns)
	}
	return out
}

// Load reads the record of dataDir; fs.ErrNotExist if there is none.
func Load(dataDir string) (Record, error) {
	path := Path(dataDir)
	b, err := os.ReadFile(path)
	if err != nil {
		return Record{}, err
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return Record{}, fmt.Errorf("footprint: %s is damaged (%v): remove what the node created by hand, then the file", path, err)
	}
	if r.Version != Version {
		return Record{}, fmt.Errorf("footprint: %s has format version %d, this binary knows %d: reset with the Cloudless that wrote it", path, r.Version, Version)
	}
	return r, nil
}

// Here is the identity of this boot and of the caller's network namespace.
func Here() (bootID string, ns Netns, err error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", Netns{}, fmt.Errorf("footprint: boot id: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return "", Netns{}, fmt.Errorf("footprint: network namespace: %w", err)
	}
	ns = Netns{Inode: st.Ino, Dev: st.Dev}
	if fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err == nil {
		if c, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE); err == nil {
			ns.Cookie = c
		}
		unix.Close(fd)
	}
	return strings.TrimSpace(string(b)), ns, nil
}

// Recorder adds to the record of one node as it creates things. A nil
// Recorder records nothing (unit tests of its callers).
type Recorder struct {
	mu      sync.Mutex
	dataDir string
	rec     Record
	started bool
}

// NewRecorder returns the recorder of the node with dataDir; it touches
// nothing until Begin.
func NewRecorder(dataDir string) *Recorder { return &Recorder{dataDir: dataDir} }

// Begin loads the record a previous run left and writes it for this run:
// what a run before a reboot, or in another network namespace, recorded
// is gone or not this run's to remove, and is dropped.
func (r *Recorder) Begin() error {
	if r == nil {
		return nil
	}
	boot, ns, err := Here()
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	prev, err := Load(r.dataDir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return err
	}
	fresh := Record{Version: Version, BootID: boot, Netns: ns}
	if prev.BootID == boot {
		fresh.RunDir, fresh.Cgroups = prev.RunDir, prev.Cgroups
		if prev.Netns.Same(ns) {
			fresh.Links, fresh.NFTables, fresh.IPTables = prev.Links, prev.NFTables, prev.IPTables
			fresh.RouteProtocol, fresh.KubeProxy = prev.RouteProtocol, prev.KubeProxy
		}
	}
	r.rec, r.started = fresh, true
	return r.write()
}

// Add records what change adds, before the caller creates it: a crash
// in between leaves a record of something absent, which reset skips,
// never something present and unrecorded.
func (r *Recorder) Add(change func(*Record)) error {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.started {
		return errors.New("footprint: Add before Begin")
	}
	next := r.rec
	next.Cgroups = slices.Clone(r.rec.Cgroups)
	next.Links = slices.Clone(r.rec.Links)
	next.NFTables = slices.Clone(r.rec.NFTables)
	next.IPTables = slices.Clone(r.rec.IPTables)
	change(&next)
	next.Cgroups, next.Links = uniq(next.Cgroups), uniq(next.Links)
	next.NFTables, next.IPTables = uniq(next.NFTables), uniq(next.IPTables)
	if equal(next, r.rec) {
		return nil
	}
	old := r.rec
	r.rec = next
	if err := r.write(); err != nil {
		r.rec = old
		return err
	}
	return nil
}

// AddLink records a network device; AddNFTable a table; AddIPTChain a
// chain.
func (r *Recorder) AddLink(name string) error {
	return r.Add(func(rec *Record) { rec.Links = append(rec.Links, name) })
}

func (r *Recorder) AddNFTable(family, name string) error {
	return r.Add(func(rec *Record) { rec.NFTables = append(rec.NFTables, NFTable{family, name}) })
}

func (r *Recorder) AddIPTChain(table, chain, from string) error {
	return r.Add(func(rec *Record) { rec.IPTables = append(rec.IPTables, IPTChain{table, chain, from}) })
}

func uniq[T comparable](s []T) []T {
	var out []T
	for _, v := range s {
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

func equal(a, b Record) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// write replaces the record atomically, 0600.
func (r *Recorder) write() error {
	b, err := Marshal(r.rec)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(Path(r.dataDir), b, 0o600); err != nil {
		return fmt.Errorf("footprint: %w", err)
	}
	return nil
}

// Marshal is the record as written: indented JSON and a newline.
func Marshal(r Record) ([]byte, error) {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

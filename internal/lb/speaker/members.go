package speaker

// Which nodes' speakers are alive, by memberlist gossip between them
// (hashicorp/memberlist, SWIM): far faster than the Node's Ready
// condition, which the controller-manager changes only after its grace
// period (40 s by default). Timings are tuned for a LAN and measured in
// bench/lb.

import (
	"bytes"
	"fmt"
	"log"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// MemberlistPort is where the speakers gossip (TCP and UDP), MetalLB's
// port.
const MemberlistPort = 7946

// Failure detection timings: a node is probed every probeInterval, and
// declared dead about probeTimeout + suspicionMult × probeInterval after
// it stops answering (under a second).
const (
	probeInterval  = 200 * time.Millisecond
	probeTimeout   = 100 * time.Millisecond
	suspicionMult  = 2
	gossipInterval = 50 * time.Millisecond
)

// Failure detection profiles (--lb-failure-detection): Fast uses the
// timings above; Tolerant keeps memberlist's stock LAN timings (probe
// every 1 s, 500 ms timeout, suspicion x4: seconds to declare a node
// dead, fewer false alarms on a lossy or overloaded network).
const (
	Fast     = "fast"
	Tolerant = "tolerant"
)

// Flag help, shared by the server and agent commands.
const (
	DetectionHelp = "how fast this node's load-balancer speaker declares another node dead: fast (under a second) or tolerant (memberlist's LAN defaults, seconds; for lossy or overloaded networks)"
	RefreshHelp   = "how often this node re-sends gratuitous ARP for the load-balancer addresses it announces (keeps switches' MAC tables fresh)"
)

// CheckDetection validates a --lb-failure-detection value.
func CheckDetection(v string) error {
	if v != Fast && v != Tolerant {
		return fmt.Errorf("--lb-failure-detection %q: want %s (under a second) or %s (memberlist's LAN defaults, seconds)", v, Fast, Tolerant)
	}
	return nil
}

// members tracks the speakers memberlist sees alive.
type members struct {
	ml       *memberlist.Memberlist
	onChange func()
	log      *slog.Logger

	mu    sync.Mutex
	alive map[string]bool
	seen  map[string]bool // ever alive: a node never seen is not judged
}

// startMembers starts gossiping as node on bindIP:port, encrypted with
// key (16, 24 or 32 bytes).
func startMembers(node, bindIP string, port int, key []byte, detection string, onChange func(), lg *slog.Logger) (*members, error) {
	m := &members{onChange: onChange, log: lg, alive: map[string]bool{}, seen: map[string]bool{}}
	c := memberlist.DefaultLANConfig()
	c.Name = node
	c.BindAddr, c.BindPort = bindIP, port
	c.AdvertiseAddr, c.AdvertisePort = bindIP, port
	c.SecretKey = key
	if detection != Tolerant {
		c.ProbeInterval, c.ProbeTimeout = probeInterval, probeTimeout
		c.SuspicionMult = suspicionMult
		c.GossipInterval = gossipInterval
		// No Lifeguard back-off: memberlist slows its own probing (up to
		// 8x) after probes fail, taking that as a sign it is itself
		// overloaded. Each failover is such a failure, so back-to-back
		// failovers got slower and slower (bench/lb: 0.8 s rising to
		// 2.3 s over 20). Fast trades that protection for a fixed time.
		c.AwarenessMaxMultiplier = 1
	}
	c.TCPTimeout = time.Second
	c.Events = m
	c.Logger = log.New(&slogWriter{lg}, "", 0)
	ml, err := memberlist.Create(c)
	if err != nil {
		return nil, fmt.Errorf("memberlist on %s: %w", net.JoinHostPort(bindIP, strconv.Itoa(port)), err)
	}
	m.ml = ml
	return m, nil
}

// join contacts the given nodes' speakers (host:port), in the background.
func (m *members) join(addrs []string) {
	if len(addrs) == 0 {
		return
	}
	go func() {
		if _, err := m.ml.Join(addrs); err != nil {
			m.log.Debug("memberlist join", "addrs", addrs, "err", err)
		}
	}()
}

// known reports whether node's speaker is known alive; judged is false
// for a node never seen (no speaker, or not joined yet), which is then
// not held against it.
func (m *members) known(node string) (alive, judged bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.alive[node], m.seen[node]
}

func (m *members) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.alive)
}

func (m *members) set(n *memberlist.Node, alive bool) {
	m.mu.Lock()
	changed := m.alive[n.Name] != alive
	if alive {
		m.alive[n.Name], m.seen[n.Name] = true, true
	} else {
		delete(m.alive, n.Name)
	}
	m.mu.Unlock()
	if changed {
		m.log.Info("speaker membership", "node", n.Name, "alive", alive)
		m.onChange()
	}
}

func (m *members) NotifyJoin(n *memberlist.Node)   { m.set(n, true) }
func (m *members) NotifyLeave(n *memberlist.Node)  { m.set(n, false) }
func (m *members) NotifyUpdate(n *memberlist.Node) {}

func (m *members) stop() {
	m.ml.Leave(time.Second)
	m.ml.Shutdown()
}

// slogWriter passes memberlist's log lines to slog: [WARN] and [ERR] as
// warnings, the rest at debug.
type slogWriter struct{ log *slog.Logger }

func (w *slogWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(bytes.TrimSpace(p)))
	switch {
	case strings.Contains(line, "[ERR]"), strings.Contains(line, "[WARN]"):
		w.log.Warn(line)
	default:
		w.log.Debug(line)
	}
	return len(p), nil
}

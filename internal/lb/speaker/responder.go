package speaker

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"

	"github.com/cloudless-dev/cloudless/internal/network"
)

// takeoverRepeats are when gratuitous ARP is sent after a node starts
// announcing an address: at once, and again after Linux's neighbour
// lock time (1 s, neigh/*/locktime), during which a host ignores a new
// answer for an address it just learnt.
var takeoverRepeats = []time.Duration{0, 1100 * time.Millisecond, 2200 * time.Millisecond}

// responder answers ARP requests for the addresses it is given, on the
// interfaces it is given, and announces them with gratuitous ARP.
type responder struct {
	log     *slog.Logger
	refresh time.Duration // gratuitous ARP again, for switches' MAC tables

	mu      sync.Mutex
	ifaces  map[string]*arpIface
	refused map[string]bool // named interfaces already warned about
}

type arpIface struct {
	name string
	c    *arp.Client
	ips  map[netip.Addr]bool // guarded by responder.mu
	done chan struct{}
}

func newResponder(log *slog.Logger, refresh time.Duration) *responder {
	return &responder{log: log, refresh: refresh, ifaces: map[string]*arpIface{}}
}

// set makes the responder answer for exactly want (address -> interfaces;
// nil interfaces: the default ones for that address), and returns the
// interfaces each address is announced on. A named interface that is not
// a LAN interface (down, no ARP, a bond's member, the pod network's own)
// is skipped with a warning: the bond, not its member, must answer.
func (r *responder) set(ctx context.Context, want map[netip.Addr][]string) map[netip.Addr][]string {
	perIface := map[string]map[netip.Addr]bool{}
	used := map[netip.Addr][]string{}
	for ip, names := range want {
		if !ip.Is4() {
			continue // NDP for IPv6 pools is not built yet
		}
		if len(names) == 0 {
			names = network.DefaultLANInterfaces(ip)
		} else {
			names = r.usable(names)
		}
		used[ip] = names
		for _, n := range names {
			if perIface[n] == nil {
				perIface[n] = map[netip.Addr]bool{}
			}
			perIface[n][ip] = true
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for name, ai := range r.ifaces {
		if perIface[name] == nil {
			ai.c.Close()
			close(ai.done)
			delete(r.ifaces, name)
			r.log.Info("stopped announcing on interface", "interface", name)
		}
	}
	for name, ips := range perIface {
		ai := r.ifaces[name]
		if ai == nil {
			ifi, err := net.InterfaceByName(name)
			if err != nil {
				r.log.Warn("cannot announce on interface", "interface", name, "err", err)
				continue
			}
			c, err := arp.Dial(ifi)
			if err != nil {
				r.log.Warn("cannot announce on interface", "interface", name, "err", err)
				continue
			}
			ai = &arpIface{name: name, c: c, ips: map[netip.Addr]bool{}, done: make(chan struct{})}
			r.ifaces[name] = ai
			go r.serve(ai)
			go r.refreshLoop(ctx, ai)
		}
		for ip := range ips {
			if !ai.ips[ip] {
				r.log.Info("announcing", "address", ip, "interface", name)
				go r.takeover(ctx, ai, ip)
			}
		}
		for ip := range ai.ips {
			if !ips[ip] {
				r.log.Info("no longer announcing", "address", ip, "interface", name)
			}
		}
		ai.ips = ips
	}
	return used
}

// usable keeps the named interfaces that can answer ARP, warning once
// per interface about each one that cannot.
func (r *responder) usable(names []string) []string {
	var out []string
	for _, n := range names {
		ifi, err := net.InterfaceByName(n)
		if err == nil && network.LANInterface(*ifi) {
			out = append(out, n)
			continue
		}
		r.mu.Lock()
		if r.refused == nil {
			r.refused = map[string]bool{}
		}
		first := !r.refused[n]
		r.refused[n] = true
		r.mu.Unlock()
		if first {
			why := "it is down, has no Ethernet address or answers no ARP (NOARP), is a bond's member (name the bond), or is the pod network's own"
			if err != nil {
				why = err.Error()
			}
			r.log.Warn("L2Advertisement names an interface that cannot announce; skipped", "interface", n, "why", why)
		}
	}
	return out
}

func (r *responder) has(ai *arpIface, ip netip.Addr) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return ai.ips[ip]
}

// serve answers requests for ai's addresses until ai is closed.
func (r *responder) serve(ai *arpIface) {
	for {
		p, _, err := ai.c.Read()
		if err != nil {
			select {
			case <-ai.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if _, gone := net.InterfaceByName(ai.name); gone != nil {
				r.drop(ai)
				return
			}
			continue // a malformed frame
		}
		if p.Operation != arp.OperationRequest || !r.has(ai, p.TargetIP) {
			continue
		}
		if err := ai.c.Reply(p, ai.c.HardwareAddr(), p.TargetIP); err != nil {
			r.log.Warn("ARP reply failed", "interface", ai.name, "address", p.TargetIP, "err", err)
		}
	}
}

// takeover sends gratuitous ARP for ip now and past the lock time.
func (r *responder) takeover(ctx context.Context, ai *arpIface, ip netip.Addr) {
	start := time.Now()
	for _, at := range takeoverRepeats {
		select {
		case <-time.After(time.Until(start.Add(at))):
		case <-ctx.Done():
			return
		case <-ai.done:
			return
		}
		if !r.has(ai, ip) {
			return
		}
		r.gratuitous(ai, ip)
	}
}

func (r *responder) refreshLoop(ctx context.Context, ai *arpIface) {
	if r.refresh <= 0 {
		return
	}
	t := time.NewTicker(r.refresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ai.done:
			return
		case <-t.C:
		}
		r.mu.Lock()
		ips := make([]netip.Addr, 0, len(ai.ips))
		for ip := range ai.ips {
			ips = append(ips, ip)
		}
		r.mu.Unlock()
		for _, ip := range ips {
			r.gratuitous(ai, ip)
		}
	}
}

// gratuitous broadcasts ip as at this interface's MAC, as a request and
// as a reply: hosts and switches differ in which they heed.
func (r *responder) gratuitous(ai *arpIface, ip netip.Addr) {
	for _, op := range []arp.Operation{arp.OperationRequest, arp.OperationReply} {
		p, err := arp.NewPacket(op, ai.c.HardwareAddr(), ip, ethernet.Broadcast, ip)
		if err == nil {
			err = ai.c.WriteTo(p, ethernet.Broadcast)
		}
		if err != nil {
			r.log.Warn("gratuitous ARP failed", "interface", ai.name, "address", ip, "err", err)
			return
		}
	}
}

// drop forgets an interface that went away.
func (r *responder) drop(ai *arpIface) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ifaces[ai.name] == ai {
		ai.c.Close()
		close(ai.done)
		delete(r.ifaces, ai.name)
		r.log.Info("interface gone; no longer announcing on it", "interface", ai.name)
	}
}

func (r *responder) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for n, ai := range r.ifaces {
		ai.c.Close()
		close(ai.done)
		delete(r.ifaces, n)
	}
}

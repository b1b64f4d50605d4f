// Package dns is Cloudless's authoritative DNS for the cluster's public
// names: zones declared as RFC 1035 text in labelled ConfigMaps, records
// generated from annotated LoadBalancer Services, Ingresses, Gateway API
// routes and external-dns's DNSEndpoint objects, served over UDP and TCP
// with AXFR and IXFR to allowed secondaries that hold the TSIG key. The
// zones live in the Kubernetes API only: every server builds them from
// its informers and serves a zone under the serial the elected writer
// recorded for exactly that content (ADR 0012), so replicas answer alike
// and serials only grow. The pure part (parsing, merging, lookups, RFC
// 1982) is internal/dns/zone.
package dns

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
	"golang.org/x/time/rate"

	"github.com/cloudless-dev/cloudless/internal/dns/zone"
)

// Served is one zone as answered: its content and the serial recorded
// for it.
type Served struct {
	Zone   *zone.Zone
	Serial uint32
}

// Config is the authoritative server's.
type Config struct {
	// Listen is the UDP and TCP address, e.g. ":53" or "192.0.2.1:53".
	Listen string
	// TransferAllow are the sources that may AXFR (over TCP); none by
	// default.
	TransferAllow []netip.Prefix
	// Notify are the secondaries (host:port, port 53 when missing) told
	// by NOTIFY (RFC 1996) whenever a zone is served under a new serial.
	Notify []string
	// RateLimit is the queries a second answered per client /24 (IPv4)
	// or /56 (IPv6) over UDP, RateBurst its burst; 0 disables.
	RateLimit float64
	RateBurst int
}

// DefaultRateLimit answers a busy resolver's steady load and cuts a flood
// from one network down to it (TCP is not limited: it cannot be spoofed).
const (
	DefaultRateLimit = 1000
	DefaultRateBurst = 2000
)

// Server answers queries for the zones it is given (Set), REFUSED for
// any other name: it is never an open resolver.
type Server struct {
	cfg   Config
	log   *slog.Logger
	zones atomic.Pointer[map[string]Served]
	// cache holds packed answers for the zones now served, dropped by
	// Set: a query answered before costs a map lookup and two byte
	// writes, as PowerDNS's packet cache does.
	cache atomic.Pointer[answerCache]
	// fastAnswers counts the answers sent from the cache in a socket's
	// read loop (udp.go).
	fastAnswers atomic.Uint64

	// tsig is the key transfers must be signed with and NOTIFY is
	// signed with (tsig.go); nil refuses every transfer.
	tsig atomic.Pointer[TSIGKey]

	mu       sync.Mutex
	limiters map[netip.Prefix]*rate.Limiter
	history  map[string][]Served // origin → versions served, oldest first
}

// NewServer makes a server; Run listens.
func NewServer(cfg Config, log *slog.Logger) *Server {
	s := &Server{cfg: cfg, log: log, limiters: map[netip.Prefix]*rate.Limiter{}, history: map[string][]Served{}}
	empty := map[string]Served{}
	s.zones.Store(&empty)
	s.cache.Store(newAnswerCache())
	return s
}

// Set replaces the zones served, keyed by origin, and drops the answers
// cached for the zones before. The versions replaced are kept (a few per
// zone) to answer IXFR with differences.
func (s *Server) Set(zones map[string]Served) {
	s.mu.Lock()
	for origin, sv := range zones {
		h := s.history[origin]
		if len(h) == 0 || h[len(h)-1].Serial != sv.Serial {
			h = append(h, sv)
			if len(h) > ixfrVersions {
				h = h[len(h)-ixfrVersions:]
			}
			s.history[origin] = h
		}
	}
	for origin := range s.history {
		if _, ok := zones[origin]; !ok {
			delete(s.history, origin)
		}
	}
	s.mu.Unlock()
	s.zones.Store(&zones)
	s.cache.Store(newAnswerCache())
}

// ixfrVersions is how many versions of a zone IXFR can start from.
const ixfrVersions = 16

// Zones returns what is served.
func (s *Server) Zones() map[string]Served { return *s.zones.Load() }

// Run serves UDP and TCP on cfg.Listen until ctx ends. UDP is read
// from one socket per CPU (SO_REUSEPORT: the kernel spreads clients over
// them), in batches (udp.go), as PowerDNS's receiver threads do; TCP is
// miekg/dns's server.
func (s *Server) Run(ctx context.Context) error {
	// TCP first, without SO_REUSEPORT: it fails while another process
	// serves the port, which the UDP sockets alone would not notice.
	l, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("authoritative DNS: listen on tcp %s: %w (choose another --dns-listen, or free the port)", s.cfg.Listen, err)
	}
	tcp := &dns.Server{Listener: l, Handler: s, ReadTimeout: 5 * time.Second, WriteTimeout: 10 * time.Second, TsigProvider: tsigProvider{s}}
	var conns []*net.UDPConn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	lc := net.ListenConfig{Control: reusePort}
	for range max(1, runtime.GOMAXPROCS(0)) {
		pc, err := lc.ListenPacket(ctx, "udp", s.cfg.Listen)
		if err != nil {
			l.Close()
			return fmt.Errorf("authoritative DNS: listen on udp %s: %w (choose another --dns-listen, or free the port)", s.cfg.Listen, err)
		}
		conns = append(conns, pc.(*net.UDPConn))
	}
	started := make(chan struct{})
	tcp.NotifyStartedFunc = func() { close(started) }
	tcpDone, udpDone := make(chan error, 1), make(chan error, len(conns))
	go func() { tcpDone <- tcp.ActivateAndServe() }()
	for _, c := range conns {
		go func() { udpDone <- s.serveUDP(ctx, c) }()
	}
	s.log.Info("authoritative DNS serving", "addr", s.cfg.Listen, "udp_sockets", len(conns))
	tcpStopped := false
	select {
	case <-ctx.Done():
	case err = <-tcpDone:
		tcpStopped = true
	case err = <-udpDone:
	}
	for _, c := range conns {
		c.Close() // ends the UDP loops
	}
	if !tcpStopped {
		select {
		case <-started: // Shutdown refuses a server not started yet
			tcp.Shutdown()
		case <-tcpDone: // it stopped before it started
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("authoritative DNS stopped: %w", err)
}

// reusePort lets the UDP sockets of one server share its port.
func reusePort(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return err
	}
	return serr
}

// ServeDNS implements dns.Handler for TCP (UDP is udp.go's): TCP
// cannot be spoofed, so it is not rate limited.
func (s *Server) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	src, tcp := peer(w.RemoteAddr())
	signed := r.IsTsig() != nil
	if signed && w.TsigStatus() != nil {
		// RFC 8945 5.2: a signature that does not verify (unknown key,
		// bad MAC, clock skew) gets NOTAUTH, unsigned.
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeNotAuth)
		w.WriteMsg(m)
		return
	}
	if q := r.Question; len(q) == 1 && (q[0].Qtype == dns.TypeAXFR || q[0].Qtype == dns.TypeIXFR) && r.Opcode == dns.OpcodeQuery {
		s.transfer(w, r, src, tcp && signed)
		return
	}
	resp := s.Answer(r)
	if signed { // a secondary's SOA query: answered signed
		t := r.IsTsig()
		resp.SetTsig(t.Hdr.Name, t.Algorithm, t.Fudge, time.Now().Unix())
	}
	w.WriteMsg(resp)
}

// Answer builds the reply to one query from the zones served. It never
// fails on malformed input: it is what FuzzAnswer drives.
func (s *Server) Answer(r *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(r)
	m.RecursionAvailable = false
	m.Compress = true
	if o := r.IsEdns0(); o != nil {
		m.SetEdns0(dns.DefaultMsgSize, false)
	}
	switch {
	case r.Opcode != dns.OpcodeQuery:
		m.Rcode = dns.RcodeNotImplemented
		return m
	case len(r.Question) != 1:
		m.Rcode = dns.RcodeFormatError
		return m
	}
	q := r.Question[0]
	if q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY {
		m.Rcode = dns.RcodeRefused
		return m
	}
	sv, ok := s.find(q.Name)
	if !ok {
		m.Rcode = dns.RcodeRefused
		return m
	}
	res := sv.Zone.Lookup(q.Name, q.Qtype, sv.Serial)
	m.Rcode, m.Authoritative = res.Rcode, res.Authoritative
	m.Answer, m.Ns = res.Answer, res.Ns
	return m
}

// find returns the served zone with the longest origin holding name.
func (s *Server) find(name string) (Served, bool) {
	zones := *s.zones.Load()
	name = dns.CanonicalName(name)
	for n := name; ; {
		if sv, ok := zones[n]; ok {
			return sv, true
		}
		i, end := dns.NextLabel(n, 0)
		if end || n == "." {
			return Served{}, false
		}
		n = n[i:]
		if n == "" {
			n = "."
		}
	}
}

// transfer sends a zone over TCP, signed, to an allowed source: the
// whole zone (AXFR), or for IXFR the difference from the client's serial
// (RFC 1995, condensed to one) when that version is still known, else
// the whole. ok is false for UDP or a request without a valid TSIG.
func (s *Server) transfer(w dns.ResponseWriter, r *dns.Msg, src netip.Addr, ok bool) {
	q := r.Question[0]
	sv, found := s.find(q.Name)
	refuse := func() {
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeRefused)
		w.WriteMsg(m)
	}
	if !ok || !found || dns.CanonicalName(q.Name) != sv.Zone.Origin || !s.transferAllowed(src) {
		refuse()
		return
	}
	ch := make(chan *dns.Envelope)
	tr := new(dns.Transfer)
	errc := make(chan error, 1)
	go func() { errc <- tr.Out(w, r, ch) }()
	rrs := sv.Zone.Transfer(sv.Serial)
	if q.Qtype == dns.TypeIXFR {
		rrs = s.incremental(sv, r)
	}
	for len(rrs) > 0 {
		n := min(len(rrs), 500)
		ch <- &dns.Envelope{RR: rrs[:n]}
		rrs = rrs[n:]
	}
	close(ch)
	if err := <-errc; err != nil {
		s.log.Warn("zone transfer failed", "zone", sv.Zone.Origin, "to", src, "err", err)
	}
	w.Hijack()
	w.Close()
}

func (s *Server) transferAllowed(src netip.Addr) bool {
	for _, p := range s.cfg.TransferAllow {
		if p.Contains(src) {
			return true
		}
	}
	return false
}

// allow takes a token from the source network's bucket. The map is
// bounded: when it is full, it starts over.
func (s *Server) allow(src netip.Addr) bool {
	if s.cfg.RateLimit <= 0 || !src.IsValid() {
		return true
	}
	bits := 24
	if src.Is6() && !src.Is4In6() {
		bits = 56
	}
	p, _ := src.Unmap().Prefix(bits)
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.limiters[p]
	if !ok {
		if len(s.limiters) >= 65536 {
			s.limiters = map[netip.Prefix]*rate.Limiter{}
		}
		l = rate.NewLimiter(rate.Limit(s.cfg.RateLimit), s.cfg.RateBurst)
		s.limiters[p] = l
	}
	return l.Allow()
}

func peer(a net.Addr) (netip.Addr, bool) {
	switch a := a.(type) {
	case *net.UDPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap(), false
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap(), true
	}
	return netip.Addr{}, false
}

// ParsePrefixes reads a comma-separated list of addresses and CIDRs.
func ParsePrefixes(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !strings.Contains(f, "/") {
			a, err := netip.ParseAddr(f)
			if err != nil {
				return nil, fmt.Errorf("%q is not an address or CIDR", f)
			}
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("%q is not an address or CIDR", f)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// Origins lists the served zones' origins, sorted.
func Origins(zones map[string]Served) []string { return slices.Sorted(maps.Keys(zones)) }

// ReplicaSerial is one replica's answer to a zone's SOA query.
type ReplicaSerial struct {
	Addr   string `json:"addr"`
	Serial uint32 `json:"serial,omitempty"`
	Error  string `json:"error,omitempty"`
}

// CheckSerials asks each replica (host:port, port 53 when missing) for
// origin's SOA. Agree reports whether all answered with one serial.
func CheckSerials(origin string, addrs []string, timeout time.Duration) (out []ReplicaSerial, agree bool) {
	c := &dns.Client{Timeout: timeout}
	serials := map[uint32]bool{}
	for _, addr := range addrs {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			addr = net.JoinHostPort(addr, "53")
		}
		r := ReplicaSerial{Addr: addr}
		resp, _, err := c.Exchange(new(dns.Msg).SetQuestion(dns.CanonicalName(origin), dns.TypeSOA), addr)
		switch {
		case err != nil:
			r.Error = err.Error()
		case resp.Rcode != dns.RcodeSuccess || len(resp.Answer) != 1:
			r.Error = fmt.Sprintf("%s with %d answers", dns.RcodeToString[resp.Rcode], len(resp.Answer))
		default:
			if soa, ok := resp.Answer[0].(*dns.SOA); ok {
				r.Serial = soa.Serial
				serials[soa.Serial] = true
			} else {
				r.Error = "the answer is not an SOA"
			}
		}
		out = append(out, r)
	}
	for _, r := range out {
		if r.Error != "" {
			return out, false
		}
	}
	return out, len(serials) == 1
}

// Notified sends NOTIFY for a zone now served to every configured
// secondary, with its SOA, in the background, up to three times each
// until one answers (RFC 1996 4.3).
func (s *Server) Notified(sv Served) {
	origin, serial := sv.Zone.Origin, sv.Serial
	soa := sv.Zone.Lookup(origin, dns.TypeSOA, serial).Answer[0]
	for _, addr := range s.cfg.Notify {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			addr = net.JoinHostPort(addr, "53")
		}
		go func() {
			m := new(dns.Msg).SetNotify(origin)
			m.Answer = []dns.RR{soa}
			s.sign(m)
			c := &dns.Client{Timeout: 2 * time.Second, TsigProvider: tsigProvider{s}}
			var err error
			for range 3 {
				var r *dns.Msg
				if r, _, err = c.Exchange(m, addr); err == nil && r.Opcode == dns.OpcodeNotify {
					s.log.Info("secondary notified", "zone", origin, "serial", serial, "secondary", addr)
					return
				}
			}
			s.log.Warn("a secondary did not acknowledge NOTIFY; it will see the change at its next SOA refresh", "zone", origin, "serial", serial, "secondary", addr, "err", err)
		}()
	}
}

// incremental answers IXFR: the current SOA alone when the client is up
// to date; the condensed difference from the client's version (SOA new,
// SOA old, records gone, SOA new, records added, SOA new); or, for a
// version no longer known, the whole zone as AXFR sends it.
func (s *Server) incremental(cur Served, r *dns.Msg) []dns.RR {
	var client uint32
	found := false
	for _, rr := range r.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			client, found = soa.Serial, true
		}
	}
	full := cur.Zone.Transfer(cur.Serial)
	if !found {
		return full
	}
	newSOA := full[0]
	if client == cur.Serial || zone.Newer(client, cur.Serial) {
		return []dns.RR{newSOA}
	}
	s.mu.Lock()
	var old *Served
	for _, v := range s.history[cur.Zone.Origin] {
		if v.Serial == client {
			v := v
			old = &v
		}
	}
	s.mu.Unlock()
	if old == nil {
		return full
	}
	oldRRs := old.Zone.Transfer(old.Serial)
	index := func(rrs []dns.RR) map[string]dns.RR {
		m := map[string]dns.RR{}
		for _, rr := range rrs[1 : len(rrs)-1] {
			m[rr.String()] = rr
		}
		return m
	}
	was, is := index(oldRRs), index(full)
	out := []dns.RR{newSOA, oldRRs[0]}
	for _, rr := range oldRRs[1 : len(oldRRs)-1] {
		if _, ok := is[rr.String()]; !ok {
			out = append(out, rr)
		}
	}
	out = append(out, newSOA)
	for _, rr := range full[1 : len(full)-1] {
		if _, ok := was[rr.String()]; !ok {
			out = append(out, rr)
		}
	}
	return append(out, newSOA)
}

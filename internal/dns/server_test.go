package dns

import (
	"log/slog"
	"net/netip"
	"os"
	"testing"

	"github.com/miekg/dns"

	"context"
	"github.com/cloudless-dev/cloudless/internal/dns/zone"
	"net"
	"strings"
	"time"
)

func testServer(t testing.TB) *Server {
	t.Helper()
	text, err := os.ReadFile("zone/testdata/example.com.zone")
	if err != nil {
		t.Fatal(err)
	}
	recs, err := zone.Parse("example.com", string(text), "test")
	if err != nil {
		t.Fatal(err)
	}
	zones, _ := zone.Build(map[string][]zone.Record{"example.com.": recs}, nil)
	s := NewServer(Config{}, slog.New(slog.DiscardHandler))
	s.Set(map[string]Served{"example.com.": {Zone: zones["example.com."], Serial: 42}})
	return s
}

func TestAnswer(t *testing.T) {
	s := testServer(t)
	for _, tc := range []struct {
		name   string
		msg    func() *dns.Msg
		rcode  int
		aa     bool
		answer int
	}{
		{"in zone", func() *dns.Msg { return new(dns.Msg).SetQuestion("ns1.example.com.", dns.TypeA) }, dns.RcodeSuccess, true, 1},
		{"outside: refused, not resolved", func() *dns.Msg { return new(dns.Msg).SetQuestion("example.org.", dns.TypeA) }, dns.RcodeRefused, false, 0},
		{"root: refused", func() *dns.Msg { return new(dns.Msg).SetQuestion(".", dns.TypeNS) }, dns.RcodeRefused, false, 0},
		{"suffix but not subdomain", func() *dns.Msg { return new(dns.Msg).SetQuestion("badexample.com.", dns.TypeA) }, dns.RcodeRefused, false, 0},
		{"chaos class", func() *dns.Msg {
			m := new(dns.Msg).SetQuestion("version.bind.", dns.TypeTXT)
			m.Question[0].Qclass = dns.ClassCHAOS
			return m
		}, dns.RcodeRefused, false, 0},
		{"two questions", func() *dns.Msg {
			m := new(dns.Msg).SetQuestion("ns1.example.com.", dns.TypeA)
			m.Question = append(m.Question, m.Question[0])
			return m
		}, dns.RcodeFormatError, false, 0},
		{"update", func() *dns.Msg { m := new(dns.Msg).SetUpdate("example.com."); return m }, dns.RcodeNotImplemented, false, 0},
		{"serial in SOA", func() *dns.Msg { return new(dns.Msg).SetQuestion("example.com.", dns.TypeSOA) }, dns.RcodeSuccess, true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := s.Answer(tc.msg())
			if m.Rcode != tc.rcode || m.Authoritative != tc.aa || len(m.Answer) != tc.answer || m.RecursionAvailable {
				t.Errorf("rcode %s aa %v answers %d ra %v, want %s %v %d false", dns.RcodeToString[m.Rcode], m.Authoritative, len(m.Answer), m.RecursionAvailable,
					dns.RcodeToString[tc.rcode], tc.aa, tc.answer)
			}
			if tc.name == "serial in SOA" && m.Answer[0].(*dns.SOA).Serial != 42 {
				t.Errorf("SOA serial %d, want 42", m.Answer[0].(*dns.SOA).Serial)
			}
		})
	}
}

func TestRateLimit(t *testing.T) {
	s := NewServer(Config{RateLimit: 1, RateBurst: 3}, slog.New(slog.DiscardHandler))
	a, b := mustAddr("192.0.2.1"), mustAddr("192.0.2.200") // one /24
	c := mustAddr("198.51.100.1")
	n := 0
	for range 10 {
		if s.allow(a) {
			n++
		}
		if s.allow(b) {
			n++
		}
	}
	if n != 3 {
		t.Errorf("one /24 got %d answers in a burst, want the burst of 3", n)
	}
	if !s.allow(c) {
		t.Error("another network is starved by the flood")
	}
}

// FuzzAnswer: no packet, however malformed, panics the query path.
func FuzzAnswer(f *testing.F) {
	s := testServer(f)
	for _, m := range []*dns.Msg{
		new(dns.Msg).SetQuestion("www.example.com.", dns.TypeA),
		new(dns.Msg).SetQuestion("*.apps.example.com.", dns.TypeANY),
		new(dns.Msg).SetQuestion("host.lab.example.com.", dns.TypeDS),
		new(dns.Msg).SetQuestion("example.com.", dns.TypeAXFR),
	} {
		m.SetEdns0(4096, true)
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m := new(dns.Msg)
		if err := m.Unpack(b); err != nil {
			return // what the server's reader drops
		}
		resp := s.Answer(m)
		if _, err := resp.Pack(); err != nil && resp.Rcode == dns.RcodeSuccess && len(resp.Answer) > 0 {
			t.Fatalf("an answer that does not pack: %v", err)
		}
	})
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// TestServeCached: answers over UDP from the cache carry the query's ID,
// RD bit and name case, and a new set of zones is answered afresh.
func TestServeCached(t *testing.T) {
	l, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.LocalAddr().String()
	l.Close()
	s := testServer(t)
	s.cfg.Listen = addr
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	c := &dns.Client{Timeout: time.Second}
	ask := func(name string, id uint16, rd bool) *dns.Msg {
		t.Helper()
		m := new(dns.Msg).SetQuestion(name, dns.TypeA)
		m.Id, m.RecursionDesired = id, rd
		var r *dns.Msg
		deadline := time.Now().Add(10 * time.Second)
		for {
			if r, _, err = c.Exchange(m, addr); err == nil {
				return r
			}
			if time.Now().After(deadline) {
				t.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond) // polling for the listener
		}
	}
	a := ask("ns1.example.com.", 1, true)
	b := ask("ns1.example.com.", 2, false)
	if a.Id != 1 || b.Id != 2 || !a.RecursionDesired || b.RecursionDesired {
		t.Errorf("ids %d %d, rd %v %v: want the query's", a.Id, b.Id, a.RecursionDesired, b.RecursionDesired)
	}
	if len(b.Answer) != 1 || b.Answer[0].(*dns.A).A.String() != "192.0.2.53" {
		t.Errorf("cached answer %v", b.Answer)
	}
	if mixed := ask("NS1.Example.com.", 3, false); mixed.Question[0].Name != "NS1.Example.com." {
		t.Errorf("question echoed as %s, want the case sent", mixed.Question[0].Name)
	}
	recs, err := zone.Parse("example.com", "@ SOA ns1 h 1 1 1 1 1\n@ NS ns1\nns1 A 192.0.2.99\n", "test")
	if err != nil {
		t.Fatal(err)
	}
	zones, _ := zone.Build(map[string][]zone.Record{"example.com.": recs}, nil)
	s.Set(map[string]Served{"example.com.": {Zone: zones["example.com."], Serial: 43}})
	if r := ask("ns1.example.com.", 4, false); len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "192.0.2.99" {
		t.Errorf("after Set: %v, want 192.0.2.99", r.Answer)
	}
}

// TestIXFR: the difference from a known version (condensed, RFC 1995),
// the SOA alone for an up-to-date client, the whole zone otherwise.
func TestIXFR(t *testing.T) {
	version := func(text string, serial uint32) Served {
		recs, err := zone.Parse("example.com", "@ SOA ns1 h 1 1 1 1 1\n@ NS ns1\n"+text, "test")
		if err != nil {
			t.Fatal(err)
		}
		zones, _ := zone.Build(map[string][]zone.Record{"example.com.": recs}, nil)
		return Served{Zone: zones["example.com."], Serial: serial}
	}
	s := NewServer(Config{}, slog.New(slog.DiscardHandler))
	s.Set(map[string]Served{"example.com.": version("a A 192.0.2.1\nb A 192.0.2.2\n", 7)})
	cur := version("a A 192.0.2.1\nc A 192.0.2.3\n", 8)
	s.Set(map[string]Served{"example.com.": cur})
	ixfr := func(serial uint32) []string {
		m := new(dns.Msg).SetIxfr("example.com.", serial, "ns1.example.com.", "h.example.com.")
		var out []string
		for _, rr := range s.incremental(cur, m) {
			f := strings.Fields(rr.String())
			if f[3] == "SOA" {
				out = append(out, "SOA "+f[6])
			} else {
				out = append(out, f[0]+" "+f[3]+" "+f[4])
			}
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		client uint32
		want   string
	}{
		{"from 7", 7, "SOA 8|SOA 7|b.example.com. A 192.0.2.2|SOA 8|c.example.com. A 192.0.2.3|SOA 8"},
		{"up to date", 8, "SOA 8"},
		{"unknown version: whole zone", 3, "SOA 8|a.example.com. A 192.0.2.1|c.example.com. A 192.0.2.3|example.com. NS ns1.example.com.|SOA 8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := strings.Join(ixfr(tc.client), "|"); got != tc.want {
				t.Errorf("IXFR from %d:\n got %s\nwant %s", tc.client, got, tc.want)
			}
		})
	}
}

// TestNotify: a secondary gets NOTIFY with the zone's SOA and serial.
func TestNotify(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *dns.Msg, 1)
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		select {
		case got <- r:
		default:
		}
		m := new(dns.Msg)
		m.SetReply(r)
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	s := testServer(t)
	s.cfg.Notify = []string{pc.LocalAddr().String()}
	s.Notified(s.Zones()["example.com."])
	select {
	case r := <-got:
		soa, ok := r.Answer[0].(*dns.SOA)
		if r.Opcode != dns.OpcodeNotify || r.Question[0].Name != "example.com." || !ok || soa.Serial != 42 || soa.Ns != "ns1.example.com." {
			t.Errorf("NOTIFY %v", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no NOTIFY within 10 s")
	}
}

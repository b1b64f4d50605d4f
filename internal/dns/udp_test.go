package dns

import (
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"context"
	"github.com/cloudless-dev/cloudless/internal/dns/zone"
	"net/netip"
)

// TestUDP: what the batched UDP loop answers besides cached questions:
// a signed SOA query (signed back; NOTAUTH with a wrong secret), an
// answer too large for the client (truncated), a packet that does not
// unpack (FORMERR), a response (nothing), a transfer (REFUSED).
func TestUDP(t *testing.T) {
	s := testServer(t)
	var big strings.Builder
	big.WriteString("@ SOA ns1 h 1 1 1 1 1\n@ NS ns1\nns1 A 192.0.2.1\n")
	for i := range 60 {
		big.WriteString("many TXT \"" + strings.Repeat("x", 50) + strconv.Itoa(i) + "\"\n")
	}
	recs, err := zone.Parse("big.test", big.String(), "test")
	if err != nil {
		t.Fatal(err)
	}
	zones, _ := zone.Build(map[string][]zone.Record{"big.test.": recs}, nil)
	served := s.Zones()
	served["big.test."] = Served{Zone: zones["big.test."], Serial: 1}
	s.Set(served)
	sec, _ := NewTSIGSecret()
	key, _ := TSIGKeyOf(sec)
	s.SetTSIG(&key)
	addr := listen(t, s)

	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	exchange := func(b []byte) []byte {
		t.Helper()
		conn.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := conn.Write(b); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 65535)
		n, err := conn.Read(buf)
		if err != nil {
			return nil
		}
		return buf[:n]
	}
	unpack := func(b []byte) *dns.Msg {
		t.Helper()
		m := new(dns.Msg)
		if err := m.Unpack(b); err != nil {
			t.Fatalf("reply does not unpack: %v", err)
		}
		return m
	}
	signed := func(secret string) ([]byte, string) {
		m := new(dns.Msg).SetQuestion("example.com.", dns.TypeSOA)
		m.SetTsig(key.Name, dns.HmacSHA256, 300, time.Now().Unix())
		b, mac, err := dns.TsigGenerate(m, secret, "", false)
		if err != nil {
			t.Fatal(err)
		}
		return b, mac
	}

	// Signed with the key: a signed answer that verifies against the
	// request's MAC.
	req, mac := signed(key.Secret)
	b := exchange(req)
	if r := unpack(b); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.IsTsig() == nil {
		t.Errorf("signed SOA query: %v", r)
	} else if err := dns.TsigVerify(b, key.Secret, mac, false); err != nil {
		t.Errorf("signed answer does not verify: %v", err)
	}
	wrong, _ := signed("d3JvbmcgZG9lcyBub3QgbWF0dGVyIGhlcmUh")
	if r := unpack(exchange(wrong)); r.Rcode != dns.RcodeNotAuth || r.IsTsig() != nil {
		t.Errorf("wrong secret: %s signed %v, want NOTAUTH unsigned", dns.RcodeToString[r.Rcode], r.IsTsig() != nil)
	}

	// Too large for 512 bytes without EDNS: truncated, TC set.
	q, _ := new(dns.Msg).SetQuestion("many.big.test.", dns.TypeTXT).Pack()
	if r := unpack(exchange(q)); !r.Truncated || len(exchange(q)) > dns.MinMsgSize {
		t.Errorf("a large answer over UDP: truncated %v", r.Truncated)
	}
	// With EDNS 4096: whole.
	m := new(dns.Msg).SetQuestion("many.big.test.", dns.TypeTXT)
	m.SetEdns0(4096, false)
	q, _ = m.Pack()
	if r := unpack(exchange(q)); r.Truncated || len(r.Answer) != 60 {
		t.Errorf("with EDNS 4096: truncated %v, %d answers, want 60", r.Truncated, len(r.Answer))
	}

	// Garbage after a header: FORMERR with the query's ID.
	junk := []byte{0xbe, 0xef, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0xff, 0xff}
	if r := exchange(junk); len(r) != 12 || r[0] != 0xbe || r[1] != 0xef || r[3]&0x0f != dns.RcodeFormatError || r[2]&0x80 == 0 {
		t.Errorf("garbage: % x, want a FORMERR header", r)
	}
	// AXFR over UDP: REFUSED.
	q, _ = new(dns.Msg).SetAxfr("example.com.").Pack()
	if r := unpack(exchange(q)); r.Rcode != dns.RcodeRefused {
		t.Errorf("AXFR over UDP: %s, want REFUSED", dns.RcodeToString[r.Rcode])
	}
	// A response is never answered (no reflection between servers).
	resp := new(dns.Msg).SetQuestion("example.com.", dns.TypeSOA)
	resp.Response = true
	q, _ = resp.Pack()
	if r := exchange(q); r != nil {
		t.Errorf("a response was answered: % x", r)
	}
}

// FuzzUDPReply: no packet, however malformed, panics the UDP path, and
// a reply is always a message that unpacks.
func FuzzUDPReply(f *testing.F) {
	s := testServer(f)
	for _, q := range rawQueries() {
		b, _ := q.Pack()
		f.Add(b)
	}
	src := netip.MustParseAddr("192.0.2.1")
	f.Fuzz(func(t *testing.T, b []byte) {
		if r := s.udpReply(b, src, nil); r != nil {
			if err := new(dns.Msg).Unpack(r); err != nil && len(r) > 12 {
				t.Fatalf("reply to % x does not unpack: %v", b, err)
			}
		}
	})
}

// TestUDPWildcard: a server bound to the unspecified address answers a
// query sent to 127.0.0.2 from 127.0.0.2 (the client's connected socket
// takes nothing else), though the kernel would pick 127.0.0.1.
func TestUDPWildcard(t *testing.T) {
	s := testServer(t)
	l, err := net.ListenPacket("udp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.LocalAddr().(*net.UDPAddr).Port
	l.Close()
	s.cfg.Listen = net.JoinHostPort("0.0.0.0", strconv.Itoa(port))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	c := &dns.Client{Timeout: 500 * time.Millisecond}
	q := new(dns.Msg).SetQuestion("ns1.example.com.", dns.TypeA)
	for deadline := time.Now().Add(10 * time.Second); ; {
		r, _, err := c.Exchange(q, net.JoinHostPort("127.0.0.2", strconv.Itoa(port)))
		if err == nil && len(r.Answer) == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no answer from 127.0.0.2: %v", err)
		}
	}
}

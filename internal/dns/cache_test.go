package dns

import (
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// rawQueries are queries the fast path must key as ServeDNS does, or
// leave to it.
func rawQueries() []*dns.Msg {
	plain := new(dns.Msg).SetQuestion("wWw.Example.com.", dns.TypeA)
	edns := new(dns.Msg).SetQuestion("www.example.com.", dns.TypeAAAA)
	edns.SetEdns0(1232, false)
	do := new(dns.Msg).SetQuestion("www.example.com.", dns.TypeA)
	do.SetEdns0(4096, true)
	cookie := new(dns.Msg).SetQuestion("www.example.com.", dns.TypeA)
	cookie.SetEdns0(4096, false)
	cookie.IsEdns0().Option = append(cookie.IsEdns0().Option, &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0123456789abcdef"})
	notify := new(dns.Msg).SetNotify("example.com.")
	two := new(dns.Msg).SetQuestion("www.example.com.", dns.TypeA)
	two.Question = append(two.Question, two.Question[0])
	escaped := new(dns.Msg).SetQuestion(`a\.b.example.com.`, dns.TypeTXT)
	tsig := new(dns.Msg).SetQuestion("example.com.", dns.TypeSOA)
	tsig.SetTsig("k.", dns.HmacSHA256, 300, 0)
	return []*dns.Msg{plain, edns, do, cookie, notify, two, escaped, tsig}
}

// TestRawCacheKey: the fast path keys a packed query exactly as
// cacheKey keys it unpacked, or leaves it alone.
func TestRawCacheKey(t *testing.T) {
	for _, q := range rawQueries() {
		b, err := q.Pack()
		if err != nil {
			t.Fatal(err)
		}
		checkRawKey(t, b)
	}
}

func checkRawKey(t *testing.T, b []byte) {
	t.Helper()
	raw, rawOK := rawCacheKey(b)
	if !rawOK {
		return
	}
	m := new(dns.Msg)
	if err := m.Unpack(b); err != nil {
		t.Fatalf("the fast path keyed a query that does not unpack (%v): % x", err, b)
	}
	if key, ok := cacheKey(m); !ok || key != raw {
		t.Errorf("%v: fast path key %q, ServeDNS's %q (cacheable %v)", m.Question, raw, key, ok)
	}
}

func FuzzRawCacheKey(f *testing.F) {
	for _, q := range rawQueries() {
		b, _ := q.Pack()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkRawKey(t, b) })
}

// TestFastPath: the second ask of a question is answered from the cache
// in the read loop, with the asker's ID, RD and CD, and the same answer.
func TestFastPath(t *testing.T) {
	s := testServer(t)
	addr := listen(t, s)
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ask := func(id uint16, rd bool) *dns.Msg {
		t.Helper()
		q := new(dns.Msg).SetQuestion("WwW.example.com.", dns.TypeA)
		q.Id, q.RecursionDesired = id, rd
		q.SetEdns0(1232, false)
		b, _ := q.Pack()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Write(b); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4096)
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		r := new(dns.Msg)
		if err := r.Unpack(buf[:n]); err != nil {
			t.Fatal(err)
		}
		return r
	}
	first := ask(1, false)
	if _, hit := s.cache.Load().get(questionKey("WwW.example.com.", dns.TypeA, dns.ClassINET, 'e')); !hit {
		t.Fatal("the first answer was not cached")
	}
	second := ask(2, true)
	if n := s.fastAnswers.Load(); n != 1 {
		t.Errorf("%d answers from the read loop's fast path, want 1 (the second)", n)
	}
	if second.Id != 2 || !second.RecursionDesired || second.Question[0].Name != "WwW.example.com." {
		t.Errorf("cached reply: id %d, RD %v, question %v; want 2, true, the name as asked", second.Id, second.RecursionDesired, second.Question)
	}
	second.Id, second.RecursionDesired = first.Id, first.RecursionDesired
	if second.String() != first.String() {
		t.Errorf("cached reply differs:\n%s\nfirst:\n%s", second, first)
	}
}

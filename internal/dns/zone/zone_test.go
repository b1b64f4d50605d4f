package zone

import (
	"os"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

func mustRR(t *testing.T, s string) dns.RR {
	t.Helper()
	rr, err := dns.NewRR(s)
	if err != nil {
		t.Fatal(err)
	}
	return rr
}

func exampleZone(t *testing.T, claims ...Claim) (*Zone, []Problem) {
	t.Helper()
	text, err := os.ReadFile("testdata/example.com.zone")
	if err != nil {
		t.Fatal(err)
	}
	recs, err := Parse("example.com", string(text), "ConfigMap kube-system/example-com")
	if err != nil {
		t.Fatal(err)
	}
	zones, problems := Build(map[string][]Record{"example.com.": recs}, claims)
	return zones["example.com."], problems
}

func TestParseRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, origin, text, want string
	}{
		{"no SOA", "example.com", "@ NS ns1\n", "no SOA record"},
		{"no NS", "example.com", "@ SOA ns1 h 1 2 3 4 5\n", "no NS record"},
		{"two SOA", "example.com", "@ SOA ns1 h 1 2 3 4 5\n@ SOA ns1 h 2 2 3 4 5\n@ NS ns1\n", "2 SOA records"},
		{"SOA below apex", "example.com", "@ SOA ns1 h 1 2 3 4 5\n@ NS ns1\nx SOA ns1 h 1 2 3 4 5\n", "the only SOA is the apex's"},
		{"outside", "example.com", "@ SOA ns1 h 1 2 3 4 5\n@ NS ns1\nexample.org. A 192.0.2.1\n", "outside the zone"},
		{"bad line", "example.com", "@ SOA ns1 h 1 2 3 4 5\n@ NS ns1\nwww A not-an-address\n", "line: 3"},
		{"include", "example.com", "$INCLUDE /etc/passwd\n", "$INCLUDE"},
		{"bad origin", "exa mple", "", "not a domain name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.origin, tc.text, "test")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Parse = %v, want an error with %q", err, tc.want)
			}
		})
	}
}

func TestLookup(t *testing.T) {
	z, problems := exampleZone(t, Claim{Name: "web.example.com", RRs: []dns.RR{mustRR(t, "x 60 IN A 192.0.2.10")}, Owner: Owner{Ref: "Service default/web", Created: 1}})
	if len(problems) > 0 {
		t.Fatalf("problems: %v", problems)
	}
	for _, tc := range []struct {
		name    string
		qname   string
		qtype   uint16
		rcode   int
		aa      bool
		answer  []string // record types and data, in order
		authSOA bool
		authNS  int
	}{
		{"static A", "ns1.example.com.", dns.TypeA, dns.RcodeSuccess, true, []string{"A 192.0.2.53"}, false, 0},
		{"claimed A", "WEB.example.com.", dns.TypeA, dns.RcodeSuccess, true, []string{"A 192.0.2.10"}, false, 0},
		{"CNAME chased in zone", "www.example.com.", dns.TypeA, dns.RcodeSuccess, true, []string{"CNAME web.example.com.", "A 192.0.2.10"}, false, 0},
		{"CNAME itself", "www.example.com.", dns.TypeCNAME, dns.RcodeSuccess, true, []string{"CNAME web.example.com."}, false, 0},
		{"apex SOA", "example.com.", dns.TypeSOA, dns.RcodeSuccess, true, []string{"SOA ns1.example.com. hostmaster.example.com. 7 3600 600 604800 300"}, false, 0},
		{"apex MX", "example.com.", dns.TypeMX, dns.RcodeSuccess, true, []string{"MX 10 mail.example.com."}, false, 0},
		{"no data", "mail.example.com.", dns.TypeAAAA, dns.RcodeSuccess, true, nil, true, 0},
		{"no name", "nope.example.com.", dns.TypeA, dns.RcodeNameError, true, nil, true, 0},
		{"empty non-terminal", "b.deep.example.com.", dns.TypeA, dns.RcodeSuccess, true, nil, true, 0},
		{"wildcard", "shop.apps.example.com.", dns.TypeA, dns.RcodeSuccess, true, []string{"A 192.0.2.80"}, false, 0},
		{"delegation", "host.lab.example.com.", dns.TypeA, dns.RcodeSuccess, false, nil, false, 1},
		{"SRV", "_sip._tcp.example.com.", dns.TypeSRV, dns.RcodeSuccess, true, []string{"SRV 10 60 5060 sip.example.com."}, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := z.Lookup(tc.qname, tc.qtype, 7)
			if r.Rcode != tc.rcode || r.Authoritative != tc.aa {
				t.Errorf("rcode %d aa %v, want %d %v", r.Rcode, r.Authoritative, tc.rcode, tc.aa)
			}
			var got []string
			for _, rr := range r.Answer {
				f := strings.Fields(rr.String())
				got = append(got, strings.Join(f[3:], " "))
			}
			if strings.Join(got, "|") != strings.Join(tc.answer, "|") {
				t.Errorf("answer %q, want %q", got, tc.answer)
			}
			soa := len(r.Ns) == 1 && r.Ns[0].Header().Rrtype == dns.TypeSOA
			if soa != tc.authSOA {
				t.Errorf("authority %v, want SOA %v", r.Ns, tc.authSOA)
			}
			if tc.authNS > 0 && (len(r.Ns) != tc.authNS || r.Ns[0].Header().Rrtype != dns.TypeNS) {
				t.Errorf("authority %v, want %d NS", r.Ns, tc.authNS)
			}
		})
	}
}

func TestBuildConflicts(t *testing.T) {
	a := func(ip string) []dns.RR { return []dns.RR{mustRR(t, "x 60 IN A "+ip)} }
	cname := func(target string) []dns.RR { return []dns.RR{mustRR(t, "x 60 IN CNAME "+target)} }
	for _, tc := range []struct {
		name    string
		claims  []Claim
		want    map[string]string // name → answer data
		reasons map[string]string // ref → reason
	}{
		{"older object wins, both told",
			[]Claim{{"app.example.com", a("192.0.2.2"), Owner{"Service b/new", 20}}, {"app.example.com", a("192.0.2.1"), Owner{"Service a/old", 10}}},
			map[string]string{"app.example.com.": "192.0.2.1"}, map[string]string{"Service b/new": ReasonConflict, "Service a/old": ReasonConflict}},
		{"same age: lower ref wins",
			[]Claim{{"app.example.com", a("192.0.2.2"), Owner{"Service b/x", 10}}, {"app.example.com", a("192.0.2.1"), Owner{"Service a/x", 10}}},
			map[string]string{"app.example.com.": "192.0.2.1"}, map[string]string{"Service b/x": ReasonConflict, "Service a/x": ReasonConflict}},
		{"one object, two names, shared records",
			func() []Claim {
				rrs := a("192.0.2.9")
				return []Claim{{"x.example.com", rrs, Owner{"Service a/x", 1}}, {"y.example.com", rrs, Owner{"Service a/x", 1}}}
			}(),
			map[string]string{"x.example.com.": "192.0.2.9", "y.example.com.": "192.0.2.9"}, map[string]string{}},
		{"outside every zone",
			[]Claim{{"app.example.org", a("192.0.2.1"), Owner{"Service a/x", 1}}},
			nil, map[string]string{"Service a/x": ReasonOutsideZone}},
		{"CNAME at the apex",
			[]Claim{{"example.com", cname("elsewhere.net"), Owner{"DNSEndpoint a/x", 1}}},
			nil, map[string]string{"DNSEndpoint a/x": ReasonCNAME}},
		{"CNAME with addresses",
			[]Claim{{"app.example.com", append(cname("elsewhere.net"), a("192.0.2.1")...), Owner{"DNSEndpoint a/x", 1}}},
			nil, map[string]string{"DNSEndpoint a/x": ReasonCNAME}},
		{"name in the zone text",
			[]Claim{{"mail.example.com", a("192.0.2.1"), Owner{"Service a/x", 1}}},
			map[string]string{"mail.example.com.": "192.0.2.25"}, map[string]string{"Service a/x": ReasonStatic}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			z, problems := exampleZone(t, tc.claims...)
			got := map[string]string{}
			for _, p := range problems {
				got[p.Ref] = p.Reason
			}
			if len(got) != len(tc.reasons) {
				t.Errorf("problems %v, want reasons %v", problems, tc.reasons)
			}
			for ref, reason := range tc.reasons {
				if got[ref] != reason {
					t.Errorf("%s: reason %q, want %q (%v)", ref, got[ref], reason, problems)
				}
			}
			for name, want := range tc.want {
				r := z.Lookup(name, dns.TypeA, 1)
				if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != want {
					t.Errorf("%s: %v, want %s", name, r.Answer, want)
				}
			}
		})
	}
}

// The hash covers content, not the serial, and not the order of input.
func TestHash(t *testing.T) {
	c1 := Claim{"a.example.com", []dns.RR{mustRR(t, "x 60 IN A 192.0.2.1")}, Owner{"Service a/a", 1}}
	c2 := Claim{"b.example.com", []dns.RR{mustRR(t, "x 60 IN A 192.0.2.2")}, Owner{"Service a/b", 1}}
	z1, _ := exampleZone(t, c1, c2)
	z2, _ := exampleZone(t, c2, c1)
	z3, _ := exampleZone(t, c1)
	if z1.Hash != z2.Hash {
		t.Errorf("the same content hashes differently by order: %s %s", z1.Hash, z2.Hash)
	}
	if z1.Hash == z3.Hash {
		t.Error("different content, same hash")
	}
	tr := z1.Transfer(9)
	if tr[0].Header().Rrtype != dns.TypeSOA || tr[len(tr)-1].Header().Rrtype != dns.TypeSOA || tr[0].(*dns.SOA).Serial != 9 {
		t.Errorf("transfer not framed by the SOA with serial 9: %v … %v", tr[0], tr[len(tr)-1])
	}
	ns := 0
	for _, rr := range tr {
		if rr.Header().Rrtype == dns.TypeNS && rr.Header().Name == "example.com." {
			ns++
		}
	}
	if ns != 2 {
		t.Errorf("transfer holds %d apex NS, want 2", ns)
	}
}

func TestSerial(t *testing.T) {
	for _, tc := range []struct {
		last, text, want uint32
	}{
		{5, 1, 6},
		{5, 2026112901, 2026112901},
		{2026112901, 2026112901, 2026112902},
		{0xFFFFFFFF, 1, 1}, // wraps past 0, as RFC 1982 allows; 0 is skipped
		{0xFFFFFFFE, 0, 0xFFFFFFFF},
	} {
		if got := NextSerial(tc.last, tc.text); got != tc.want || !Newer(got, tc.last) {
			t.Errorf("NextSerial(%d, %d) = %d, want %d, newer than the last", tc.last, tc.text, got, tc.want)
		}
	}
	if Newer(1, 1) || !Newer(1, 0xFFFFFFFF) || Newer(0xFFFFFFFF, 1) || !Newer(0x7FFFFFFF, 0) {
		t.Error("Newer disagrees with RFC 1982")
	}
}

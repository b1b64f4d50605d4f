// Package zone is the pure core of Cloudless's authoritative DNS: zone
// text parsed as RFC 1035 master files, records claimed by cluster
// objects merged in by fixed rules, lookups, and serial arithmetic
// (RFC 1982). It imports no Kubernetes client: internal/dns feeds it and
// serves what it builds.
package zone

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/miekg/dns"
)

// Record is one resource record and where it came from ("ConfigMap
// kube-system/example-com line 4", "Service default/web").
type Record struct {
	RR     dns.RR
	Source string
}

// Zone is one authoritative zone as served: records by owner name and
// type, the SOA (whose serial the caller sets), and a hash of everything
// but the serial, by which replicas agree on content.
type Zone struct {
	Origin  string // lower-case FQDN
	SOA     *dns.SOA
	Records []Record // sorted, the SOA first
	Hash    string

	sets  map[string]map[uint16][]dns.RR
	names map[string]bool // owner names and the empty non-terminals above them
}

// MaxRecords bounds one zone, generated records included, so that a huge
// zone text or a flood of objects cannot take the server's memory.
const MaxRecords = 200_000

// Parse reads RFC 1035 zone text for origin. $INCLUDE is refused (the
// text comes from the API, not a file system). The apex must hold an SOA
// and at least one NS, as secondaries (BIND, nsd) refuse a transfer
// without them. Errors name the line and the fix.
func Parse(origin, text, source string) ([]Record, error) {
	origin = dns.CanonicalName(origin)
	if _, ok := dns.IsDomainName(origin); !ok || origin == "." || strings.ContainsAny(origin, " \t\\") {
		return nil, fmt.Errorf("%s: origin %q is not a domain name: give the zone's name, e.g. example.com", source, origin)
	}
	zp := dns.NewZoneParser(strings.NewReader(text), origin, source)
	zp.SetIncludeAllowed(false)
	zp.SetDefaultTTL(3600)
	var out []Record
	soa, ns := 0, 0
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		name := dns.CanonicalName(rr.Header().Name)
		rr.Header().Name = name
		if !dns.IsSubDomain(origin, name) {
			return nil, fmt.Errorf("%s: %s is outside the zone %s: records must be at or below its origin", source, name, origin)
		}
		switch rr.Header().Rrtype {
		case dns.TypeSOA:
			if name != origin {
				return nil, fmt.Errorf("%s: an SOA record at %s: the only SOA is the apex's (%s)", source, name, origin)
			}
			soa++
		case dns.TypeNS:
			if name == origin {
				ns++
			}
		}
		if len(out) >= MaxRecords {
			return nil, fmt.Errorf("%s: more than %d records: split the zone", source, MaxRecords)
		}
		out = append(out, Record{RR: rr, Source: source})
	}
	if err := zp.Err(); err != nil {
		return nil, fmt.Errorf("%w: fix the zone text", err)
	}
	switch {
	case soa == 0:
		return nil, fmt.Errorf("%s: no SOA record at %s: add one, e.g. `@ SOA ns1 hostmaster 1 3600 600 604800 300`", source, origin)
	case soa > 1:
		return nil, fmt.Errorf("%s: %d SOA records at %s: keep one", source, soa, origin)
	case ns == 0:
		return nil, fmt.Errorf("%s: no NS record at %s: add the zone's name servers, e.g. `@ NS ns1`; secondaries refuse a zone without them", source, origin)
	}
	return out, nil
}

// Owner is the cluster object that claims a name: the record's source.
// Older objects win a name (then the lower Ref), so every replica picks
// the same winner.
type Owner struct {
	Ref     string // "Service default/web"
	Created int64  // creation time, Unix seconds
}

func (o Owner) before(p Owner) bool {
	if o.Created != p.Created {
		return o.Created < p.Created
	}
	return o.Ref < p.Ref
}

// Claim is the records one object asks for at one name.
type Claim struct {
	Name  string
	RRs   []dns.RR
	Owner Owner
}

// Problem is something wrong with an object's claim or zone, for an
// event on that object.
type Problem struct {
	Ref     string
	Reason  string
	Message string
}

// Event reasons.
const (
	ReasonInvalidZone = "InvalidZone"
	ReasonOutsideZone = "NameOutsideZones"
	ReasonConflict    = "NameConflict"
	ReasonCNAME       = "CNAMEConflict"
	ReasonTooLarge    = "ZoneTooLarge"
	ReasonStatic      = "NameInZoneText"
)

// Build merges the static zones (origin → records from Parse) with the
// claims: each claim goes to the zone with the longest origin that holds
// its name; a name claimed by several objects goes to the oldest, and
// both sides get a problem; a CNAME next to other data at a name is
// refused, as is a claim on a name the zone text already holds.
func Build(static map[string][]Record, claims []Claim) (map[string]*Zone, []Problem) {
	var problems []Problem
	origins := make([]string, 0, len(static))
	for o := range static {
		origins = append(origins, o)
	}
	// Longest origin first, so that a claim goes to the deepest zone.
	sort.Slice(origins, func(i, j int) bool {
		if dns.CountLabel(origins[i]) != dns.CountLabel(origins[j]) {
			return dns.CountLabel(origins[i]) > dns.CountLabel(origins[j])
		}
		return origins[i] < origins[j]
	})
	zones := map[string]*Zone{}
	for _, o := range origins {
		zones[o] = &Zone{Origin: o, Records: append([]Record(nil), static[o]...)}
	}
	staticNames := map[string]bool{}
	for _, recs := range static {
		for _, r := range recs {
			staticNames[r.RR.Header().Name] = true
		}
	}

	// One winner per name.
	byName := map[string][]Claim{}
	for _, c := range claims {
		c.Name = dns.CanonicalName(c.Name)
		byName[c.Name] = append(byName[c.Name], c)
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		cs := byName[name]
		sort.Slice(cs, func(i, j int) bool { return cs[i].Owner.before(cs[j].Owner) })
		win := cs[0]
		if len(cs) > 1 {
			var losers []string
			for _, l := range cs[1:] {
				if l.Owner.Ref == win.Owner.Ref {
					// One object naming a host twice, or with several
					// record types (a DNSEndpoint's A and TXT): one set.
					win.RRs = mergeRRs(win.RRs, l.RRs)
					continue
				}
				losers = append(losers, l.Owner.Ref)
				problems = append(problems, Problem{l.Owner.Ref, ReasonConflict,
					fmt.Sprintf("%s is already published for %s (the older object wins): remove the name from one of them", name, win.Owner.Ref)})
			}
			if len(losers) > 0 {
				problems = append(problems, Problem{win.Owner.Ref, ReasonConflict,
					fmt.Sprintf("%s is also claimed by %s; this object, the older, keeps it", name, strings.Join(losers, ", "))})
			}
		}
		z := zoneFor(zones, origins, name)
		if z == nil {
			problems = append(problems, Problem{win.Owner.Ref, ReasonOutsideZone,
				fmt.Sprintf("%s is in none of the zones served (%s): declare its zone, or fix the name", name, strings.Join(origins, ", "))})
			continue
		}
		if name == z.Origin && hasType(win.RRs, dns.TypeCNAME) {
			problems = append(problems, Problem{win.Owner.Ref, ReasonCNAME,
				fmt.Sprintf("%s is the apex of zone %s, which holds SOA and NS: a CNAME cannot stand there; publish an address instead", name, z.Origin)})
			continue
		}
		if staticNames[name] {
			problems = append(problems, Problem{win.Owner.Ref, ReasonStatic,
				fmt.Sprintf("%s is already in zone %s's text: remove it there, or choose another name", name, z.Origin)})
			continue
		}
		if hasType(win.RRs, dns.TypeCNAME) && len(win.RRs) > 1 {
			problems = append(problems, Problem{win.Owner.Ref, ReasonCNAME,
				fmt.Sprintf("%s: a CNAME cannot stand next to other records at one name: publish either the alias or addresses", name)})
			continue
		}
		if len(z.Records)+len(win.RRs) > MaxRecords {
			problems = append(problems, Problem{win.Owner.Ref, ReasonTooLarge,
				fmt.Sprintf("zone %s already holds %d records: split it", z.Origin, MaxRecords)})
			continue
		}
		for _, rr := range win.RRs {
			rr = dns.Copy(rr) // claims may share records (one Service, several names)
			rr.Header().Name = name
			z.Records = append(z.Records, Record{RR: rr, Source: win.Owner.Ref})
		}
	}
	for _, z := range zones {
		z.index()
	}
	return zones, problems
}

func zoneFor(zones map[string]*Zone, origins []string, name string) *Zone {
	for _, o := range origins {
		if dns.IsSubDomain(o, name) {
			return zones[o]
		}
	}
	return nil
}

func hasType(rrs []dns.RR, t uint16) bool {
	for _, rr := range rrs {
		if rr.Header().Rrtype == t {
			return true
		}
	}
	return false
}

// index sorts the records (SOA first, then by name, type and text),
// drops duplicates, and fills the lookup maps and the hash.
func (z *Zone) index() {
	sort.SliceStable(z.Records, func(i, j int) bool { return less(z.Records[i].RR, z.Records[j].RR) })
	z.sets = map[string]map[uint16][]dns.RR{}
	z.names = map[string]bool{}
	h := sha256.New()
	out := z.Records[:0]
	var prev string
	for _, r := range z.Records {
		if soa, ok := r.RR.(*dns.SOA); ok {
			z.SOA = soa
		}
		text := canonicalText(r.RR)
		if text == prev {
			continue
		}
		prev = text
		out = append(out, r)
		name, t := r.RR.Header().Name, r.RR.Header().Rrtype
		if z.sets[name] == nil {
			z.sets[name] = map[uint16][]dns.RR{}
		}
		z.sets[name][t] = append(z.sets[name][t], r.RR)
		for n := name; dns.IsSubDomain(z.Origin, n) && !z.names[n]; n = parent(n) {
			z.names[n] = true
			if n == z.Origin {
				break
			}
		}
		h.Write([]byte(text))
		h.Write([]byte{'\n'})
	}
	z.Records = out
	z.Hash = hex.EncodeToString(h.Sum(nil))[:16]
}

// canonicalText is a record's text with the SOA serial zeroed: the hash
// covers content, not the serial the content is served under.
func canonicalText(rr dns.RR) string {
	if soa, ok := rr.(*dns.SOA); ok {
		c := *soa
		c.Serial = 0
		return c.String()
	}
	return rr.String()
}

func less(a, b dns.RR) bool {
	as, bs := a.Header().Rrtype == dns.TypeSOA, b.Header().Rrtype == dns.TypeSOA
	if as != bs {
		return as
	}
	if a.Header().Name != b.Header().Name {
		return a.Header().Name < b.Header().Name
	}
	if a.Header().Rrtype != b.Header().Rrtype {
		return a.Header().Rrtype < b.Header().Rrtype
	}
	return a.String() < b.String()
}

func parent(name string) string {
	i, end := dns.NextLabel(name, 0)
	if end {
		return "."
	}
	return name[i:]
}

// mergeRRs returns a's records and those of b not in a.
func mergeRRs(a, b []dns.RR) []dns.RR {
	out := append([]dns.RR(nil), a...)
	for _, rr := range b {
		if !slices.ContainsFunc(out, func(o dns.RR) bool { return dns.IsDuplicate(o, rr) }) {
			out = append(out, rr)
		}
	}
	return out
}

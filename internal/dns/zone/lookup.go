package zone

import (
	"github.com/miekg/dns"
)

// Result is the outcome of a lookup in one zone, as RFC 1034 4.3.2 has
// it: an answer (with the CNAME chain inside the zone), a referral to a
// delegated child, no data at an existing name, or no such name.
type Result struct {
	Rcode         int
	Authoritative bool
	Answer, Ns    []dns.RR
}

// Lookup answers qname/qtype from z. The SOA carries serial.
func (z *Zone) Lookup(qname string, qtype uint16, serial uint32) Result {
	soa := z.soa(serial)
	qname = dns.CanonicalName(qname)
	var answer []dns.RR
	for hops := 0; hops < 8; hops++ {
		// A delegation at or above qname, below the apex: a referral.
		for n := qname; n != z.Origin && dns.IsSubDomain(z.Origin, n); n = parent(n) {
			if ns := z.sets[n][dns.TypeNS]; len(ns) > 0 && !(n == qname && qtype == dns.TypeDS) {
				return Result{Rcode: dns.RcodeSuccess, Answer: answer, Ns: copyRRs(ns)}
			}
		}
		sets, ok := z.sets[qname]
		if !ok {
			if w := z.wildcard(qname); w != nil {
				sets, ok = w, true
			}
		}
		if !ok {
			if z.names[qname] { // an empty non-terminal
				return Result{Rcode: dns.RcodeSuccess, Authoritative: true, Answer: answer, Ns: []dns.RR{soa}}
			}
			return Result{Rcode: dns.RcodeNameError, Authoritative: true, Answer: answer, Ns: []dns.RR{soa}}
		}
		if qtype == dns.TypeSOA && qname == z.Origin {
			return Result{Rcode: dns.RcodeSuccess, Authoritative: true, Answer: append(answer, soa)}
		}
		if rrs := sets[qtype]; len(rrs) > 0 {
			return Result{Rcode: dns.RcodeSuccess, Authoritative: true, Answer: append(answer, rename(rrs, qname)...)}
		}
		if qtype == dns.TypeANY {
			var all []dns.RR
			for t, rrs := range sets {
				if t == dns.TypeSOA {
					all = append(all, soa)
					continue
				}
				all = append(all, rename(rrs, qname)...)
			}
			return Result{Rcode: dns.RcodeSuccess, Authoritative: true, Answer: append(answer, all...)}
		}
		if cname := sets[dns.TypeCNAME]; len(cname) > 0 {
			answer = append(answer, rename(cname, qname)...)
			target := dns.CanonicalName(cname[0].(*dns.CNAME).Target)
			if !dns.IsSubDomain(z.Origin, target) {
				return Result{Rcode: dns.RcodeSuccess, Authoritative: true, Answer: answer}
			}
			qname = target
			continue
		}
		return Result{Rcode: dns.RcodeSuccess, Authoritative: true, Answer: answer, Ns: []dns.RR{soa}}
	}
	return Result{Rcode: dns.RcodeServerFailure, Answer: answer}
}

// wildcard finds the records of the closest encloser's wildcard (RFC
// 4592): *.<closest existing ancestor>.
func (z *Zone) wildcard(qname string) map[uint16][]dns.RR {
	for n := parent(qname); dns.IsSubDomain(z.Origin, n); n = parent(n) {
		if z.names[n] {
			return z.sets["*."+n]
		}
		if n == z.Origin {
			break
		}
	}
	return nil
}

// soa is the zone's SOA with the serial set.
func (z *Zone) soa(serial uint32) *dns.SOA {
	s := dns.Copy(z.SOA).(*dns.SOA)
	s.Serial = serial
	return s
}

// Transfer is the zone as AXFR sends it: the SOA, every other record,
// the SOA again.
func (z *Zone) Transfer(serial uint32) []dns.RR {
	soa := z.soa(serial)
	out := []dns.RR{soa}
	for _, r := range z.Records {
		if r.RR.Header().Rrtype != dns.TypeSOA {
			out = append(out, r.RR)
		}
	}
	return append(out, soa)
}

func rename(rrs []dns.RR, name string) []dns.RR {
	out := copyRRs(rrs)
	for _, rr := range out {
		rr.Header().Name = name
	}
	return out
}

func copyRRs(rrs []dns.RR) []dns.RR {
	out := make([]dns.RR, len(rrs))
	for i, rr := range rrs {
		out[i] = dns.Copy(rr)
	}
	return out
}

// Newer reports whether serial a is newer than b in RFC 1982 serial
// number arithmetic (32 bits).
func Newer(a, b uint32) bool {
	return a != b && ((a > b && a-b < 1<<31) || (a < b && b-a > 1<<31))
}

// NextSerial is the serial for a zone whose content changed: one past
// the last one served (wrapping as RFC 1982 allows), or the zone text's
// own SOA serial when that is newer, so that an operator who bumps it by
// hand, or moves a zone here from another server, never sees it go back.
// It is never 0, which some secondaries treat as unset.
func NextSerial(last, text uint32) uint32 {
	next := last + 1
	if text != 0 && Newer(text, next) {
		next = text
	}
	if next == 0 {
		next = 1
	}
	return next
}

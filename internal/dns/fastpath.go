package dns

// The fast path's cache key, computed from a raw query (udp.go answers
// a cached question without unpacking it).

import (
	"encoding/binary"

	"github.com/miekg/dns"
)

// rawCacheKey is cacheKey for a raw query: one question, opcode QUERY,
// no answer or authority records, and at most an EDNS OPT record with
// no options, version 0. Anything else (TSIG, cookies, compression in
// the question) is not for the fast path.
func rawCacheKey(m []byte) (string, bool) {
	if len(m) < 12 || m[2]&0x80 != 0 || (m[2]>>3)&0x0f != dns.OpcodeQuery {
		return "", false
	}
	qd, an, ns, ar := binary.BigEndian.Uint16(m[4:]), binary.BigEndian.Uint16(m[6:]), binary.BigEndian.Uint16(m[8:]), binary.BigEndian.Uint16(m[10:])
	if qd != 1 || an != 0 || ns != 0 || ar > 1 {
		return "", false
	}
	// The name: plain labels only, no compression pointer.
	off := 12
	for {
		if off >= len(m) {
			return "", false
		}
		l := int(m[off])
		if l&0xc0 != 0 {
			return "", false
		}
		off += 1 + l
		if l == 0 {
			break
		}
	}
	if off+4 > len(m) || off-12 > 255 {
		return "", false
	}
	name, _, err := dns.UnpackDomainName(m, 12)
	if err != nil {
		return "", false
	}
	qtype, qclass := binary.BigEndian.Uint16(m[off:]), binary.BigEndian.Uint16(m[off+2:])
	off += 4
	edns := byte('-')
	if ar == 1 {
		// OPT: root owner, type 41, class = UDP size, TTL = extended
		// rcode, version, DO and Z; RDLENGTH 0.
		if off+11 != len(m) || m[off] != 0 || binary.BigEndian.Uint16(m[off+1:]) != dns.TypeOPT ||
			m[off+5] != 0 || m[off+6] != 0 || binary.BigEndian.Uint16(m[off+9:]) != 0 {
			return "", false
		}
		edns = 'e'
		if m[off+7]&0x80 != 0 {
			edns = 'd'
		}
		off += 11
	}
	if off != len(m) {
		return "", false
	}
	return questionKey(name, qtype, qclass, edns), true
}

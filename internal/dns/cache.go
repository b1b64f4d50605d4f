package dns

import (
	"encoding/binary"
	"sync"

	"github.com/miekg/dns"
)

// answerCache maps a question (name as sent, so that a client's 0x20
// case randomisation is echoed; type; class; EDNS and its DO bit) to the
// packed answer. It is bounded: full, it starts over.
type answerCache struct {
	mu sync.RWMutex
	m  map[string][]byte
}

const maxCachedAnswers = 100_000

func newAnswerCache() *answerCache { return &answerCache{m: map[string][]byte{}} }

func (c *answerCache) get(k string) ([]byte, bool) {
	c.mu.RLock()
	b, ok := c.m[k]
	c.mu.RUnlock()
	return b, ok
}

func (c *answerCache) put(k string, b []byte) {
	c.mu.Lock()
	if len(c.m) >= maxCachedAnswers {
		c.m = map[string][]byte{}
	}
	c.m[k] = b
	c.mu.Unlock()
}

// cacheKey is the key of a plain query: one question, opcode QUERY, and
// EDNS with no options but the buffer size (cookies and client subnets
// are answered afresh).
func cacheKey(r *dns.Msg) (string, bool) {
	if r.Opcode != dns.OpcodeQuery || len(r.Question) != 1 || len(r.Ns) > 0 || len(r.Answer) > 0 {
		return "", false
	}
	edns := byte('-')
	for _, rr := range r.Extra {
		o, ok := rr.(*dns.OPT)
		if !ok || len(o.Option) > 0 || o.Version() != 0 || o.ExtendedRcode() != 0 || len(r.Extra) > 1 {
			return "", false
		}
		edns = 'e'
		if o.Do() {
			edns = 'd'
		}
	}
	q := r.Question[0]
	return questionKey(q.Name, q.Qtype, q.Qclass, edns), true
}

// questionKey is the cache's key: the name as sent, type, class, and
// '-' without EDNS, 'e' with it, 'd' with its DO bit.
func questionKey(name string, qtype, qclass uint16, edns byte) string {
	b := make([]byte, 0, len(name)+6)
	b = append(b, name...)
	b = append(b, 0, byte(qtype>>8), byte(qtype), byte(qclass>>8), byte(qclass), edns)
	return string(b)
}

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

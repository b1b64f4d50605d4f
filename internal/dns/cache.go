package dns

import (
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

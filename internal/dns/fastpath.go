package dns

import (
	"encoding/binary"
	"net"
	"net/netip"
	"time"

	"github.com/miekg/dns"
)

// fastReader answers UDP queries whose answer is cached in the socket's
// read loop, from the raw packet: no message unpacked, no goroutine
// started, nothing allocated but the cache key, as PowerDNS's receiver
// threads answer from its packet cache. Every other packet goes on to
// miekg/dns's server and ServeDNS. The rate limit applies on both paths.
type fastReader struct {
	dns.Reader
	s   *Server
	buf []byte // the read buffer, reused while packets are answered here
	out []byte // the reply buffer
}

func (s *Server) fastPath(r dns.Reader) dns.Reader {
	return &fastReader{Reader: r, s: s, buf: make([]byte, dns.DefaultMsgSize), out: make([]byte, 0, dns.MinMsgSize)}
}

// ReadUDP returns the next packet the fast path cannot answer.
func (f *fastReader) ReadUDP(conn *net.UDPConn, _ time.Duration) ([]byte, *dns.SessionUDP, error) {
	for {
		// No read deadline: setting one per packet costs a timer update,
		// and Shutdown unblocks the read by setting one in the past.
		n, sess, err := dns.ReadFromSessionUDP(conn, f.buf)
		if err != nil {
			return nil, nil, err
		}
		m := f.buf[:n]
		src := netip.Addr{}
		if a, ok := sess.RemoteAddr().(*net.UDPAddr); ok {
			src, _ = netip.AddrFromSlice(a.IP)
			src = src.Unmap()
		}
		key, ok := rawCacheKey(m)
		if ok {
			if cached, hit := f.s.cache.Load().get(key); hit {
				if f.s.allow(src) {
					f.out = append(f.out[:0], cached...)
					f.out[0], f.out[1] = m[0], m[1]          // ID
					f.out[2] = f.out[2]&^0x01 | m[2]&0x01    // RD
					f.out[3] = f.out[3]&^0x10 | m[3]&0x10    // CD
					dns.WriteToSessionUDP(conn, f.out, sess) // a lost reply is retried by the client
					f.s.fastAnswers.Add(1)
				}
				continue
			}
		}
		return append([]byte(nil), m...), sess, nil
	}
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

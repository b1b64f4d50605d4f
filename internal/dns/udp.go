package dns

// The UDP side of the server is ours rather than miekg/dns's: each
// socket reads packets in batches (recvmmsg), answers them in its read
// loop (a cached answer straight from the raw packet, anything else
// unpacked and answered as ServeDNS would), and sends the replies in
// one batch (sendmmsg). A CPU profile under dnsperf showed two thirds
// of the time in one recvmsg and one sendmsg per query; miekg/dns's
// server also starts a goroutine per packet. TCP stays miekg/dns's.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// udpBatch is how many packets one system call reads or writes at most.
const udpBatch = 64

// batchConn is ipv4.PacketConn or ipv6.PacketConn: both read and write
// the same socket.Message batches.
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// serveUDP answers conn's packets until ctx ends. A socket bound to
// the unspecified address learns each query's destination address
// (IP_PKTINFO) and sends the reply from it, so that a host with several
// addresses answers from the one asked.
func (s *Server) serveUDP(ctx context.Context, conn *net.UDPConn) error {
	local, _ := conn.LocalAddr().(*net.UDPAddr)
	wildcard := local != nil && local.IP.IsUnspecified()
	var bc batchConn = ipv4.NewPacketConn(conn)
	if local != nil && local.IP.To4() == nil {
		bc = ipv6.NewPacketConn(conn)
	}
	if wildcard {
		// A dual-stack socket gets IPv4 queries too: ask for both
		// families' destinations; one failing is expected.
		err6 := ipv6.NewPacketConn(conn).SetControlMessage(ipv6.FlagDst, true)
		err4 := ipv4.NewPacketConn(conn).SetControlMessage(ipv4.FlagDst, true)
		if err4 != nil && err6 != nil {
			return fmt.Errorf("authoritative DNS: ask for packet destinations: %w", errors.Join(err4, err6))
		}
	}
	in := make([]ipv4.Message, udpBatch)
	for i := range in {
		in[i].Buffers = [][]byte{make([]byte, dns.DefaultMsgSize)}
		if wildcard {
			in[i].OOB = make([]byte, 128)
		}
	}
	out := make([]ipv4.Message, 0, udpBatch)
	replies := make([][]byte, udpBatch)
	for i := range replies {
		replies[i] = make([]byte, 0, dns.MinMsgSize)
	}
	for {
		n, err := bc.ReadBatch(in, 0)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("authoritative DNS: read udp: %w", err)
		}
		out = out[:0]
		for i := range n {
			m := &in[i]
			var src netip.Addr
			if a, ok := m.Addr.(*net.UDPAddr); ok {
				src, _ = netip.AddrFromSlice(a.IP)
				src = src.Unmap()
			}
			b := s.udpReply(m.Buffers[0][:m.N], src, replies[i][:0])
			if b == nil {
				continue
			}
			replies[i] = b
			o := ipv4.Message{Buffers: [][]byte{b}, Addr: m.Addr}
			if wildcard {
				o.OOB = replySource(m.OOB[:m.NN])
			}
			out = append(out, o)
		}
		for len(out) > 0 {
			k, err := bc.WriteBatch(out, 0)
			if err != nil || k == 0 {
				break // a lost reply is asked again
			}
			out = out[k:]
		}
	}
}

// replySource turns a query's control message into the reply's: sent
// from the address the query came to. An IPv4 destination (on a
// dual-stack socket too) needs IPv4's control message: the kernel sends
// to an IPv4 client by IPv4's path, which reads no IPv6 one.
func replySource(oob []byte) []byte {
	var dst net.IP
	var cm6 ipv6.ControlMessage
	var cm4 ipv4.ControlMessage
	switch {
	case cm6.Parse(oob) == nil && cm6.Dst != nil:
		dst = cm6.Dst
	case cm4.Parse(oob) == nil && cm4.Dst != nil:
		dst = cm4.Dst
	default:
		return nil
	}
	if v4 := dst.To4(); v4 != nil {
		return (&ipv4.ControlMessage{Src: v4}).Marshal()
	}
	return (&ipv6.ControlMessage{Src: dst}).Marshal()
}

// udpReply is the reply to one UDP packet from src, built in buf, or
// nil for none: responses are never answered, and a source over its
// rate limit is dropped (a real client asks again; a spoofed flood gets
// nothing to amplify).
func (s *Server) udpReply(raw []byte, src netip.Addr, buf []byte) []byte {
	if len(raw) < 12 || raw[2]&0x80 != 0 || !s.allow(src) {
		return nil
	}
	key, cacheable := rawCacheKey(raw)
	cache := s.cache.Load()
	if cacheable {
		if cached, hit := cache.get(key); hit {
			s.fastAnswers.Add(1)
			return patchReply(append(buf, cached...), raw)
		}
	}
	r := new(dns.Msg)
	if err := r.Unpack(raw); err != nil {
		return formErr(raw, buf)
	}
	q := r.Question
	switch t := r.IsTsig(); {
	case len(q) == 1 && (q[0].Qtype == dns.TypeAXFR || q[0].Qtype == dns.TypeIXFR) && r.Opcode == dns.OpcodeQuery:
		return packed(new(dns.Msg).SetRcode(r, dns.RcodeRefused), buf) // transfers are TCP only
	case t != nil:
		return s.signedReply(r, raw, t, buf)
	}
	resp := s.Answer(r)
	b, err := resp.PackBuffer(buf)
	if err != nil {
		s.log.Warn("an answer does not pack", "question", r.Question, "err", err)
		return packed(new(dns.Msg).SetRcode(r, dns.RcodeServerFailure), buf)
	}
	if len(b) <= dns.MinMsgSize {
		// Fits every client: cached (FuzzRawCacheKey holds cacheKey to
		// the key the fast path computes from the raw packet).
		if k, ok := cacheKey(r); ok {
			cache.put(k, bytes.Clone(b))
		}
		return b
	}
	size := dns.MinMsgSize
	if o := r.IsEdns0(); o != nil {
		size = max(int(o.UDPSize()), dns.MinMsgSize)
	}
	if len(b) > size {
		resp.Truncate(size)
		return packed(resp, buf)
	}
	return b
}

// signedReply answers a TSIG-signed query (a secondary's SOA query):
// NOTAUTH, unsigned, when the signature does not verify (RFC 8945 5.2);
// else the answer, signed.
func (s *Server) signedReply(r *dns.Msg, raw []byte, t *dns.TSIG, buf []byte) []byte {
	if err := dns.TsigVerifyWithProvider(raw, tsigProvider{s}, "", false); err != nil {
		return packed(new(dns.Msg).SetRcode(r, dns.RcodeNotAuth), buf)
	}
	resp := s.Answer(r)
	resp.SetTsig(t.Hdr.Name, t.Algorithm, t.Fudge, time.Now().Unix())
	b, _, err := dns.TsigGenerateWithProvider(resp, tsigProvider{s}, t.MAC, false)
	if err != nil {
		s.log.Warn("sign an answer", "question", r.Question, "err", err)
		return nil
	}
	return b
}

// patchReply gives a cached answer the query's ID, RD and CD bits.
func patchReply(b, query []byte) []byte {
	b[0], b[1] = query[0], query[1]
	b[2] = b[2]&^0x01 | query[2]&0x01
	b[3] = b[3]&^0x10 | query[3]&0x10
	return b
}

// formErr answers a query that does not unpack: its header, FORMERR,
// nothing else.
func formErr(query, buf []byte) []byte {
	b := append(buf, query[:12]...)
	b[2] = b[2]&0x79 | 0x80 // QR, the opcode and RD kept, AA and TC clear
	b[3] = dns.RcodeFormatError
	for i := 4; i < 12; i++ {
		b[i] = 0
	}
	return b
}

func packed(m *dns.Msg, buf []byte) []byte {
	b, err := m.PackBuffer(buf)
	if err != nil {
		return nil
	}
	return b
}

package dns

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestTSIG: transfers only with the key (REFUSED unsigned, NOTAUTH with
// a wrong secret, the zone with the right one, the answer signed);
// NOTIFY signed with it; the Secret's mistakes named.
func TestTSIG(t *testing.T) {
	sec, err := NewTSIGSecret()
	if err != nil {
		t.Fatal(err)
	}
	key, err := TSIGKeyOf(sec)
	if err != nil {
		t.Fatal(err)
	}
	s := testServer(t)
	addr := listen(t, s)
	s.cfg.TransferAllow = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	s.SetTSIG(&key)
	wrong := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))

	// first sends an AXFR, signed with secret unless "", and returns the
	// first message of the answer, unverified.
	first := func(secret string) *dns.Msg {
		t.Helper()
		m := new(dns.Msg).SetAxfr("example.com.")
		var b []byte
		var err error
		if secret == "" {
			b, err = m.Pack()
		} else {
			m.SetTsig(key.Name, dns.HmacSHA256, 300, time.Now().Unix())
			b, _, err = dns.TsigGenerate(m, secret, "", false)
		}
		if err != nil {
			t.Fatal(err)
		}
		conn, err := dns.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Write(b); err != nil {
			t.Fatal(err)
		}
		b, err = conn.ReadMsgHeader(nil)
		if err != nil {
			t.Fatal(err)
		}
		r := new(dns.Msg)
		if err := r.Unpack(b); err != nil {
			t.Fatal(err)
		}
		return r
	}
	for _, tc := range []struct {
		name, secret string
		rcode        int
	}{
		{"unsigned", "", dns.RcodeRefused},
		{"wrong secret", wrong, dns.RcodeNotAuth},
		{"the key", key.Secret, dns.RcodeSuccess},
	} {
		if r := first(tc.secret); r.Rcode != tc.rcode {
			t.Errorf("AXFR %s: %s, want %s", tc.name, dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.rcode])
		}
	}
	// With the key, the whole zone, every message signed and verified.
	m := new(dns.Msg).SetAxfr("example.com.")
	m.SetTsig(key.Name, dns.HmacSHA256, 300, time.Now().Unix())
	tr := &dns.Transfer{TsigSecret: map[string]string{key.Name: key.Secret}}
	env, err := tr.In(m, addr)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for e := range env {
		if e.Error != nil {
			t.Fatalf("signed transfer: %v", e.Error)
		}
		n += len(e.RR)
	}
	if want := len(s.Zones()["example.com."].Zone.Records) + 1; n != want {
		t.Errorf("signed transfer: %d records, want %d (the zone and its closing SOA)", n, want)
	}

	// NOTIFY is signed: a secondary holding the key verifies it.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	verified := make(chan error, 1)
	sec2 := &dns.Server{PacketConn: pc, TsigSecret: map[string]string{key.Name: key.Secret}, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		err := w.TsigStatus()
		if r.IsTsig() == nil {
			err = fmt.Errorf("NOTIFY not signed")
		}
		select {
		case verified <- err:
		default:
		}
		m := new(dns.Msg)
		m.SetReply(r)
		w.WriteMsg(m)
	})}
	go sec2.ActivateAndServe()
	t.Cleanup(func() { sec2.Shutdown() })
	s.cfg.Notify = []string{pc.LocalAddr().String()}
	s.Notified(s.Zones()["example.com."])
	select {
	case err := <-verified:
		if err != nil {
			t.Errorf("NOTIFY: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no NOTIFY within 10 s")
	}

	for _, bad := range []map[string][]byte{
		{TSIGAlgorithmKey: []byte("hmac-md5"), TSIGSecretKey: []byte(key.Secret)},
		{TSIGAlgorithmKey: []byte("hmac-sha256"), TSIGSecretKey: []byte("c2hvcnQ=")},
	} {
		if _, err := TSIGKeyOf(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: TSIGSecret, Namespace: "kube-system"}, Data: bad}); err == nil {
			t.Errorf("Secret data %q accepted", bad)
		}
	}
}

// listen runs s on a loopback port until the test ends.
func listen(t *testing.T, s *Server) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	s.cfg.Listen = addr
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not listening on %s: %v", addr, err)
		}
		time.Sleep(10 * time.Millisecond) // polling for the listener
	}
}

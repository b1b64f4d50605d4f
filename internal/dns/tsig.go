package dns

// TSIG (RFC 8945): the shared key that signs zone transfers and NOTIFY
// messages between the servers and their secondaries. It lives in a
// kube-system Secret (encrypted at rest, like every Secret), created
// once by the server with a random secret, so every replica signs with
// the same key and a secondary is configured once
// (`cloudless dns tsig` prints the key in nsd's and BIND's syntax).
// Transfers are refused without a valid signature, whatever
// --dns-transfer-allow says: the address list narrows who may ask, the
// key proves who asks.

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash"
	"strings"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The TSIG key's Secret (kube-system) and its data keys. The key's name
// on the wire is the Secret's name.
const (
	TSIGSecret       = "cloudless-dns-tsig"
	TSIGAlgorithmKey = "algorithm"
	TSIGSecretKey    = "secret"
)

// TSIGKey is a TSIG key: its name, algorithm and base64 secret.
type TSIGKey struct {
	Name      string
	Algorithm string
	Secret    string
}

// tsigAlgorithms are the HMACs accepted, by name as written in the
// Secret and in nsd's and BIND's configuration.
var tsigAlgorithms = map[string]func() hash.Hash{
	"hmac-sha256": sha256.New,
	"hmac-sha384": sha512.New384,
	"hmac-sha512": sha512.New,
	"hmac-sha1":   sha1.New,
}

// NewTSIGSecret makes the key's Secret with a random 256-bit secret.
func NewTSIGSecret() (*corev1.Secret, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: TSIGSecret, Namespace: metav1.NamespaceSystem},
		Data: map[string][]byte{TSIGAlgorithmKey: []byte("hmac-sha256"), TSIGSecretKey: []byte(base64.StdEncoding.EncodeToString(b))}}, nil
}

// TSIGKeyOf reads the key's Secret; the error says what to fix.
func TSIGKeyOf(s *corev1.Secret) (TSIGKey, error) {
	k := TSIGKey{Name: dns.Fqdn(s.Name), Algorithm: strings.ToLower(strings.TrimSpace(string(s.Data[TSIGAlgorithmKey]))),
		Secret: strings.TrimSpace(string(s.Data[TSIGSecretKey]))}
	if _, ok := tsigAlgorithms[k.Algorithm]; !ok {
		return TSIGKey{}, fmt.Errorf("Secret %s/%s: %s %q is not one of hmac-sha256, hmac-sha384, hmac-sha512, hmac-sha1",
			s.Namespace, s.Name, TSIGAlgorithmKey, k.Algorithm)
	}
	if raw, err := base64.StdEncoding.DecodeString(k.Secret); err != nil || len(raw) < 16 {
		return TSIGKey{}, fmt.Errorf("Secret %s/%s: %s must be at least 16 bytes in base64 (openssl rand -base64 32)", s.Namespace, s.Name, TSIGSecretKey)
	}
	return k, nil
}

// wireAlgorithm is the algorithm's name in TSIG records.
func (k TSIGKey) wireAlgorithm() string { return k.Algorithm + "." }

// tsigProvider signs and verifies with the server's current key; a
// message signed with another key name fails with dns.ErrSecret.
type tsigProvider struct{ s *Server }

func (p tsigProvider) mac(msg []byte, t *dns.TSIG) ([]byte, error) {
	k := p.s.tsig.Load()
	if k == nil || !strings.EqualFold(dns.Fqdn(t.Hdr.Name), k.Name) {
		return nil, dns.ErrSecret
	}
	newHash, ok := tsigAlgorithms[strings.TrimSuffix(strings.ToLower(t.Algorithm), ".")]
	if !ok || !strings.EqualFold(t.Algorithm, k.wireAlgorithm()) {
		return nil, dns.ErrKeyAlg
	}
	secret, err := base64.StdEncoding.DecodeString(k.Secret)
	if err != nil {
		return nil, dns.ErrSecret
	}
	h := hmac.New(newHash, secret)
	h.Write(msg)
	return h.Sum(nil), nil
}

func (p tsigProvider) Generate(msg []byte, t *dns.TSIG) ([]byte, error) { return p.mac(msg, t) }

func (p tsigProvider) Verify(msg []byte, t *dns.TSIG) error {
	want, err := p.mac(msg, t)
	if err != nil {
		return err
	}
	got, err := hex.DecodeString(t.MAC)
	if err != nil || !hmac.Equal(want, got) {
		return dns.ErrSig
	}
	return nil
}

// SetTSIG replaces the key (nil: none, and no transfers).
func (s *Server) SetTSIG(k *TSIGKey) { s.tsig.Store(k) }

// sign adds a TSIG record to m for the key, if there is one, to be
// signed when written.
func (s *Server) sign(m *dns.Msg) {
	if k := s.tsig.Load(); k != nil {
		m.SetTsig(k.Name, k.wireAlgorithm(), 300, time.Now().Unix())
	}
}

// NSDConfig and BINDConfig are the key as a secondary's configuration
// declares it.
func (k TSIGKey) NSDConfig() string {
	return fmt.Sprintf("key:\n  name: %q\n  algorithm: %s\n  secret: %q\n", strings.TrimSuffix(k.Name, "."), k.Algorithm, k.Secret)
}

func (k TSIGKey) BINDConfig() string {
	return fmt.Sprintf("key %q {\n  algorithm %s;\n  secret %q;\n};\n", strings.TrimSuffix(k.Name, "."), k.Algorithm, k.Secret)
}

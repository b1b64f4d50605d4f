package controlplane

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"unicode"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/hkdf"
)

// The bootstrap data servers share (CAs, keys) is sealed with AES-256-GCM
// under a key derived from --token by argon2id (RFC 9106) with a random
// salt, both stored with the sealed data. A dump of the datastore then
// costs an attacker 64 MiB and a few hundred milliseconds per guessed
// token, and a token must be strong enough that guessing fails anyway.
const (
	sealFormat     = "cloudless-bootstrap/v2"
	sealKDF        = "argon2id"
	argonTime      = 3
	argonMemoryKiB = 64 * 1024
	argonThreads   = 2
)

// sealed is the stored form: JSON, so its parameters can change later
// without guessing.
type sealed struct {
	Format    string `json:"format"`
	KDF       string `json:"kdf"`
	Time      uint32 `json:"time"`
	MemoryKiB uint32 `json:"memoryKiB"`
	Threads   uint8  `json:"threads"`
	Salt      []byte `json:"salt"`
	Nonce     []byte `json:"nonce"`
	Data      []byte `json:"data"`
}

// seal seals plain under token, bound to the datastore key it is stored at.
func seal(token string, plain []byte, key string) ([]byte, error) {
	s := sealed{Format: sealFormat, KDF: sealKDF, Time: argonTime, MemoryKiB: argonMemoryKiB, Threads: argonThreads, Salt: make([]byte, 16)}
	if _, err := rand.Read(s.Salt); err != nil {
		return nil, err
	}
	aead, err := gcm(argon2.IDKey([]byte(token), s.Salt, s.Time, s.MemoryKiB, s.Threads, 32))
	if err != nil {
		return nil, err
	}
	s.Nonce = make([]byte, aead.NonceSize())
	if _, err := rand.Read(s.Nonce); err != nil {
		return nil, err
	}
	s.Data = aead.Seal(nil, s.Nonce, plain, []byte(key))
	return json.Marshal(s)
}

// errWrongToken: the data does not open with this token.
var errWrongToken = errors.New("cannot open the cluster's bootstrap data: --token differs from the one the first server used; give every server the same --token")

// open opens data sealed by seal, or by the first format (HKDF of the
// token with a fixed salt), which it reports as legacy so the caller can
// seal it again.
func open(token string, data []byte, key string) (plain []byte, legacy bool, err error) {
	var s sealed
	if json.Unmarshal(data, &s) == nil && s.Format != "" {
		if s.Format != sealFormat || s.KDF != sealKDF || s.MemoryKiB > 4<<20 || s.Time > 64 || s.Threads == 0 {
			return nil, false, fmt.Errorf("cluster bootstrap data is in format %q (kdf %q), which this Cloudless cannot read: run the newer version", s.Format, s.KDF)
		}
		aead, err := gcm(argon2.IDKey([]byte(token), s.Salt, s.Time, s.MemoryKiB, s.Threads, 32))
		if err != nil {
			return nil, false, err
		}
		if len(s.Nonce) != aead.NonceSize() {
			return nil, false, errors.New("cluster bootstrap data in the datastore is damaged (nonce)")
		}
		plain, err := aead.Open(nil, s.Nonce, s.Data, []byte(key))
		if err != nil {
			return nil, false, errWrongToken
		}
		return plain, false, nil
	}
	aead, err := legacyAEAD(token)
	if err != nil {
		return nil, false, err
	}
	if len(data) < aead.NonceSize() {
		return nil, false, errors.New("cluster bootstrap data in the datastore is damaged")
	}
	plain, err = aead.Open(nil, data[:aead.NonceSize()], data[aead.NonceSize():], []byte(key))
	if err != nil {
		return nil, false, errWrongToken
	}
	return plain, true, nil
}

// legacyAEAD is the first format's cipher: only ever opened, to migrate.
func legacyAEAD(token string) (cipher.AEAD, error) {
	key := make([]byte, 32)
	if _, err := hkdf.New(sha256.New, []byte(token), []byte("cloudless"), []byte("bootstrap")).Read(key); err != nil {
		return nil, err
	}
	return gcm(key)
}

func gcm(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// MinTokenBits is the least estimated strength of a new cluster's --token.
const MinTokenBits = 80

// TokenBits estimates a token's strength: its length times the bits of
// the character classes it draws from; a token that repeats itself (fewer
// distinct characters than half its length) counts its distinct ones
// only. It errs high for words ("Password1234567!" passes), which is why
// the errors suggest a GenerateToken token.
func TokenBits(token string) float64 {
	var lower, upper, digit, other bool
	distinct := map[rune]bool{}
	for _, r := range token {
		distinct[r] = true
		switch {
		case unicode.IsLower(r):
			lower = true
		case unicode.IsUpper(r):
			upper = true
		case unicode.IsDigit(r):
			digit = true
		default:
			other = true
		}
	}
	alphabet := 0
	for _, c := range []struct {
		in   bool
		size int
	}{{lower, 26}, {upper, 26}, {digit, 10}, {other, 33}} {
		if c.in {
			alphabet += c.size
		}
	}
	if alphabet == 0 {
		return 0
	}
	n := len([]rune(token))
	if len(distinct)*2 < n {
		n = len(distinct)
	}
	return float64(n) * math.Log2(float64(alphabet))
}

// CheckToken refuses a token too weak to seal a new cluster's secrets.
func CheckToken(token string) error {
	if bits := TokenBits(token); bits < MinTokenBits {
		return fmt.Errorf("--token is too weak (about %.0f bits; at least %d needed): anyone with a copy of the datastore could guess it and read the cluster CA's key; use a random one, e.g. --token %s", bits, MinTokenBits, GenerateToken())
	}
	return nil
}

// GenerateToken returns a random token of 160 bits.
func GenerateToken() string {
	b := make([]byte, 20)
	rand.Read(b)
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))
}

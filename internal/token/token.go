// Package token makes, lists and parses join tokens: Kubernetes bootstrap
// tokens (Secrets of type bootstrap.kubernetes.io/token in kube-system)
// together with a hash of the cluster CA, so that a joining machine can
// check it talks to the right cluster before it trusts anything the
// server says.
//
// A join token reads CL1.<sha256 of the CA's public key, hex>.<id>.<secret>.
// The hash is the one kubeadm calls --discovery-token-ca-cert-hash.
//
// Used by the cli (cloudless token …) and, later, the node agent.
package token

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// NodeGroup is the extra group bootstrap tokens made here put their
// holders in; the server binds the node-bootstrapper role to it.
const NodeGroup = "system:bootstrappers:cloudless:nodes"

const (
	prefix       = "CL1"
	secretPrefix = "bootstrap-token-"
	idChars      = "abcdefghijklmnopqrstuvwxyz0123456789"
)

var (
	idRE     = regexp.MustCompile(`^[a-z0-9]{6}$`)
	secretRE = regexp.MustCompile(`^[a-z0-9]{16}$`)
	hashRE   = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// Join is a parsed join token.
type Join struct {
	CAHash string // hex SHA-256 of the CA's SubjectPublicKeyInfo
	ID     string
	Secret string
}

// String formats the join token.
func (j Join) String() string { return fmt.Sprintf("%s.%s.%s.%s", prefix, j.CAHash, j.ID, j.Secret) }

// Bootstrap is the bootstrap token part, as kubelet TLS bootstrap sends it.
func (j Join) Bootstrap() string { return j.ID + "." + j.Secret }

// Parse parses a join token, saying what is wrong with a bad one.
func Parse(s string) (Join, error) {
	parts := strings.Split(strings.TrimSpace(s), ".")
	if len(parts) != 4 || parts[0] != prefix {
		return Join{}, errors.New("not a join token: want CL1.<ca-hash>.<id>.<secret>, as printed by `cloudless token create` on a server")
	}
	j := Join{CAHash: parts[1], ID: parts[2], Secret: parts[3]}
	switch {
	case !hashRE.MatchString(j.CAHash):
		return Join{}, errors.New("join token: the CA hash is not 64 hex digits; copy the whole token")
	case !idRE.MatchString(j.ID) || !secretRE.MatchString(j.Secret):
		return Join{}, errors.New("join token: the id.secret part is damaged; copy the whole token")
	}
	return j, nil
}

// CAHash returns the hash of the first certificate in caPEM's public key.
func CAHash(caPEM []byte) (string, error) {
	block, _ := pem.Decode(caPEM)
	if block == nil {
		return "", errors.New("CA certificate: no PEM block")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return "", fmt.Errorf("CA certificate: %w", err)
	}
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(sum[:]), nil
}

// Info describes a bootstrap token without its secret.
type Info struct {
	ID          string     `json:"id"`
	Description string     `json:"description,omitempty"`
	Expires     *time.Time `json:"expires,omitempty"` // nil: never
	Usages      []string   `json:"usages"`
	Groups      []string   `json:"groups,omitempty"`
}

// Create stores a new bootstrap token valid for ttl (0: forever) and
// returns its join token.
func Create(ctx context.Context, c kubernetes.Interface, caPEM []byte, ttl time.Duration, description string) (Join, error) {
	hash, err := CAHash(caPEM)
	if err != nil {
		return Join{}, err
	}
	j := Join{CAHash: hash, ID: random(6), Secret: random(16)}
	data := map[string]string{
		"token-id":                       j.ID,
		"token-secret":                   j.Secret,
		"usage-bootstrap-authentication": "true",
		"usage-bootstrap-signing":        "true",
		"auth-extra-groups":              NodeGroup,
	}
	if description != "" {
		data["description"] = description
	}
	if ttl > 0 {
		data["expiration"] = time.Now().Add(ttl).UTC().Format(time.RFC3339)
	}
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: secretPrefix + j.ID, Namespace: metav1.NamespaceSystem},
		Type:       corev1.SecretTypeBootstrapToken,
		Data:       map[string][]byte{},
	}
	for k, v := range data {
		s.Data[k] = []byte(v)
	}
	if _, err := c.CoreV1().Secrets(metav1.NamespaceSystem).Create(ctx, s, metav1.CreateOptions{}); err != nil {
		return Join{}, fmt.Errorf("store bootstrap token: %w", err)
	}
	return j, nil
}

// List returns the bootstrap tokens, soonest expiry first.
func List(ctx context.Context, c kubernetes.Interface) ([]Info, error) {
	list, err := c.CoreV1().Secrets(metav1.NamespaceSystem).List(ctx, metav1.ListOptions{FieldSelector: "type=" + string(corev1.SecretTypeBootstrapToken)})
	if err != nil {
		return nil, fmt.Errorf("list bootstrap tokens: %w", err)
	}
	var out []Info
	for _, s := range list.Items {
		info := Info{ID: string(s.Data["token-id"]), Description: string(s.Data["description"]), Usages: []string{}}
		if info.ID == "" {
			info.ID = strings.TrimPrefix(s.Name, secretPrefix)
		}
		if e := string(s.Data["expiration"]); e != "" {
			if t, err := time.Parse(time.RFC3339, e); err == nil {
				info.Expires = &t
			}
		}
		for k, v := range s.Data {
			if u, ok := strings.CutPrefix(k, "usage-bootstrap-"); ok && string(v) == "true" {
				info.Usages = append(info.Usages, u)
			}
		}
		sort.Strings(info.Usages)
		if g := string(s.Data["auth-extra-groups"]); g != "" {
			info.Groups = strings.Split(g, ",")
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].Expires, out[j].Expires
		if (a == nil) != (b == nil) {
			return a != nil // tokens that never expire last
		}
		if a != nil && !a.Equal(*b) {
			return a.Before(*b)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// Delete removes a token given by id, id.secret or whole join token.
func Delete(ctx context.Context, c kubernetes.Interface, token string) error {
	id := token
	if j, err := Parse(token); err == nil {
		id = j.ID
	} else if before, _, ok := strings.Cut(token, "."); ok {
		id = before
	}
	if !idRE.MatchString(id) {
		return fmt.Errorf("%q is not a token id (6 lowercase letters or digits, see `cloudless token list`)", token)
	}
	err := c.CoreV1().Secrets(metav1.NamespaceSystem).Delete(ctx, secretPrefix+id, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("no token with id %s (see `cloudless token list`)", id)
	}
	if err != nil {
		return fmt.Errorf("delete token %s: %w", id, err)
	}
	return nil
}

func random(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	for i := range b {
		// 36 does not divide 256: reject the biased tail.
		for b[i] >= 252 {
			var one [1]byte
			rand.Read(one[:])
			b[i] = one[0]
		}
		b[i] = idChars[int(b[i])%len(idChars)]
	}
	return string(b)
}

// Package pki makes and keeps the cluster's certificates, as kubeadm lays
// them out: certificate authorities, leaf certificates with their SANs and
// usages, and kubeconfigs that use them. Keys are written 0600 and reused
// on restart; a leaf is reissued when it is missing, when fewer than the
// renewal window's days remain, when its names changed, or when another CA
// signed it. Nothing here starts a goroutine: callers run Ensure again on
// a timer to renew while running.
//
// Only the control-plane packages and the certs subcommand import it.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"github.com/cloudless-dev/cloudless/internal/atomicfile"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"
)

// DefaultRenewBefore is how long before expiry a leaf is renewed.
const DefaultRenewBefore = 120 * 24 * time.Hour

// CA is a certificate authority loaded from or written to Dir/Name.{crt,key}.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	PEM  []byte
}

// LoadOrCreateCA loads the CA dir/name.crt and .key, creating a
// self-signed one valid for validity if neither exists.
func LoadOrCreateCA(dir, name, commonName string, validity time.Duration) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	cert, key, err := load(certPath, keyPath)
	if err == nil {
		if !cert.IsCA {
			return nil, fmt.Errorf("pki: %s is not a CA certificate", certPath)
		}
		return &CA{Cert: cert, Key: key, PEM: encodeCert(cert.Raw)}, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-5 * time.Minute),
		NotAfter:              now.Add(validity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("pki: create CA %s: %w", name, err)
	}
	if err := write(certPath, keyPath, der, key); err != nil {
		return nil, err
	}
	cert, _ = x509.ParseCertificate(der)
	return &CA{Cert: cert, Key: key, PEM: encodeCert(der)}, nil
}

// Leaf describes a certificate signed by a CA.
type Leaf struct {
	Name         string // files Name.crt and Name.key
	CommonName   string
	Organization []string
	DNSNames     []string
	IPs          []net.IP
	Usages       []x509.ExtKeyUsage
	Validity     time.Duration
}

// Ensure makes sure dir/leaf.Name.{crt,key} exist, are signed by ca, carry
// leaf's names and have more than renewBefore left; otherwise it issues
// them anew, reusing the key. It reports whether it wrote a certificate.
func (ca *CA) Ensure(dir string, leaf Leaf, renewBefore time.Duration) (bool, error) {
	certPath, keyPath := filepath.Join(dir, leaf.Name+".crt"), filepath.Join(dir, leaf.Name+".key")
	cert, key, err := load(certPath, keyPath)
	switch {
	case errors.Is(err, os.ErrNotExist):
		key = nil
	case err != nil:
		return false, err
	case cert.CheckSignatureFrom(ca.Cert) == nil && time.Until(cert.NotAfter) > renewBefore && sameNames(cert, leaf):
		return false, nil
	}
	if key == nil {
		if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return false, err
		}
	}
	now := time.Now()
	notAfter := now.Add(leaf.Validity)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: leaf.CommonName, Organization: leaf.Organization},
		NotBefore:    now.Add(-5 * time.Minute),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  leaf.Usages,
		DNSNames:     leaf.DNSNames,
		IPAddresses:  leaf.IPs,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return false, fmt.Errorf("pki: issue %s: %w", leaf.Name, err)
	}
	return true, write(certPath, keyPath, der, key)
}

func sameNames(c *x509.Certificate, l Leaf) bool {
	dns := append([]string(nil), l.DNSNames...)
	have := append([]string(nil), c.DNSNames...)
	sort.Strings(dns)
	sort.Strings(have)
	var ips, haveIPs []string
	for _, ip := range l.IPs {
		ips = append(ips, ip.String())
	}
	for _, ip := range c.IPAddresses {
		haveIPs = append(haveIPs, ip.String())
	}
	sort.Strings(ips)
	sort.Strings(haveIPs)
	org := append([]string(nil), l.Organization...)
	sort.Strings(org)
	haveOrg := append([]string(nil), c.Subject.Organization...)
	sort.Strings(haveOrg)
	return c.Subject.CommonName == l.CommonName && slices.Equal(dns, have) && slices.Equal(ips, haveIPs) && slices.Equal(org, haveOrg)
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func load(certPath, keyPath string) (*x509.Certificate, crypto.Signer, error) {
	cb, err := os.ReadFile(certPath)
	if err != nil {
		return nil, nil, err
	}
	kb, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, nil, err
	}
	block, _ := pem.Decode(cb)
	if block == nil {
		return nil, nil, fmt.Errorf("pki: %s holds no PEM certificate", certPath)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: parse %s: %w", certPath, err)
	}
	kblock, _ := pem.Decode(kb)
	if kblock == nil {
		return nil, nil, fmt.Errorf("pki: %s holds no PEM key", keyPath)
	}
	k, err := x509.ParsePKCS8PrivateKey(kblock.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: parse %s: %w", keyPath, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("pki: %s is not a signing key", keyPath)
	}
	return cert, signer, nil
}

// write stores a certificate (0644) and its key (0600), each atomically.
func write(certPath, keyPath string, der []byte, key crypto.Signer) error {
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return err
	}
	return atomicfile.Write(certPath, encodeCert(der), 0o644)
}

// CertInfo describes one certificate on disk.
type CertInfo struct {
	Path     string    `json:"path"`
	Subject  string    `json:"subject"`
	Issuer   string    `json:"issuer"`
	NotAfter time.Time `json:"notAfter"`
	IsCA     bool      `json:"isCA"`
}

// List returns every certificate under dir, soonest expiry first.
func List(dir string) ([]CertInfo, error) {
	var out []CertInfo
	paths, err := filepath.Glob(filepath.Join(dir, "*.crt"))
	if err != nil {
		return nil, err
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		block, _ := pem.Decode(b)
		if block == nil {
			return nil, fmt.Errorf("pki: %s holds no PEM certificate", p)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("pki: parse %s: %w", p, err)
		}
		out = append(out, CertInfo{Path: p, Subject: c.Subject.String(), Issuer: c.Issuer.String(), NotAfter: c.NotAfter, IsCA: c.IsCA})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].NotAfter.Before(out[j].NotAfter) })
	return out, nil
}

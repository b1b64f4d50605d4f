package datastore_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/cloudless-dev/cloudless/internal/datastore"
)

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T) *testCA {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test-ca"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func (ca *testCA) issue(t *testing.T, cn string, usage x509.ExtKeyUsage) (certPEM, keyPEM []byte) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

// TestTCPRequiresClientCertificates serves on TCP with TLS: a client with a
// certificate from the client CA gets in, one without is refused.
func TestTCPRequiresClientCertificates(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t)
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	scert, skey := ca.issue(t, "datastore", x509.ExtKeyUsageServerAuth)
	ccert, ckey := ca.issue(t, "kube-apiserver", x509.ExtKeyUsageClientAuth)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	sockDir, _ := os.MkdirTemp("", "cl-tls-")
	defer os.RemoveAll(sockDir)
	cfg := datastore.DefaultConfig()
	cfg.DataDir, cfg.ListenSocket, cfg.ListenAddress = dir, sockDir+"/s.sock", addr
	cfg.TLSCertFile, cfg.TLSKeyFile, cfg.TLSClientCAFile = write("s.crt", scert), write("s.key", skey), write("ca.crt", ca.pem)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ds, err := datastore.Open(ctx, cfg, slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- ds.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-ds.Ready()

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.pem)
	pair, _ := tls.X509KeyPair(ccert, ckey)
	for _, tc := range []struct {
		name   string
		certs  []tls.Certificate
		wantOK bool
	}{
		{name: "with client certificate", certs: []tls.Certificate{pair}, wantOK: true},
		{name: "without client certificate", wantOK: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"https://" + addr}, DialTimeout: 2 * time.Second, Logger: zap.NewNop(),
				TLS: &tls.Config{RootCAs: pool, Certificates: tc.certs}})
			if err == nil {
				rctx, rcancel := context.WithTimeout(ctx, 3*time.Second)
				_, err = cli.Put(rctx, "/tls", "x")
				rcancel()
				cli.Close()
			}
			if (err == nil) != tc.wantOK {
				t.Errorf("put over TLS: err = %v, want ok=%v", err, tc.wantOK)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		mod     func(*datastore.Config)
		wantErr string
	}{
		{name: "defaults", mod: func(*datastore.Config) {}},
		{name: "postgres", mod: func(c *datastore.Config) { c.Endpoint = "postgres://u:p@db/cloudless" }},
		{name: "empty data dir", mod: func(c *datastore.Config) { c.DataDir = "" }, wantErr: "--data-dir is empty"},
		{name: "mysql endpoint", mod: func(c *datastore.Config) { c.Endpoint = "mysql://u:secret@db/x" }, wantErr: "give a postgres:// URL"},
		{name: "password not echoed", mod: func(c *datastore.Config) { c.Endpoint = "mysql://u:secret@db/x" }, wantErr: "u:xxxxx@db"},
		{name: "tcp without tls", mod: func(c *datastore.Config) { c.ListenAddress = "0.0.0.0:2379" }, wantErr: "needs TLS with client certificates"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := datastore.DefaultConfig()
			tc.mod(&cfg)
			err := cfg.Validate()
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("Validate() = %v, want error containing %q", err, tc.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("Validate() = %v leaks the password", err)
			}
		})
	}
}

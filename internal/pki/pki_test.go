package pki

import (
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestEnsure(t *testing.T) {
	dir := t.TempDir()
	ca, err := LoadOrCreateCA(dir, "ca", "cloudless-ca", 10*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	base := Leaf{Name: "apiserver", CommonName: "kube-apiserver", DNSNames: []string{"kubernetes", "node1"},
		IPs: []net.IP{net.ParseIP("127.0.0.1")}, Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, Validity: 365 * 24 * time.Hour}
	tests := []struct {
		name        string
		leaf        func(Leaf) Leaf
		renewBefore time.Duration
		wantWrite   bool
	}{
		{name: "first issue", leaf: func(l Leaf) Leaf { return l }, renewBefore: DefaultRenewBefore, wantWrite: true},
		{name: "unchanged is reused", leaf: func(l Leaf) Leaf { return l }, renewBefore: DefaultRenewBefore, wantWrite: false},
		{name: "new SAN reissues", leaf: func(l Leaf) Leaf { l.DNSNames = append(l.DNSNames, "extra.example"); return l }, renewBefore: DefaultRenewBefore, wantWrite: true},
		{name: "inside the renewal window reissues", leaf: func(l Leaf) Leaf { l.DNSNames = append(l.DNSNames, "extra.example"); return l }, renewBefore: 400 * 24 * time.Hour, wantWrite: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wrote, err := ca.Ensure(dir, tc.leaf(base), tc.renewBefore)
			if err != nil {
				t.Fatal(err)
			}
			if wrote != tc.wantWrite {
				t.Errorf("Ensure wrote = %v, want %v", wrote, tc.wantWrite)
			}
		})
	}
	st, err := os.Stat(filepath.Join(dir, "apiserver.key"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key mode = %v (err %v), want 0600", st.Mode().Perm(), err)
	}
	// A restart loads the same CA.
	again, err := LoadOrCreateCA(dir, "ca", "cloudless-ca", time.Hour)
	if err != nil || !again.Cert.Equal(ca.Cert) {
		t.Errorf("LoadOrCreateCA after restart returned another CA (err %v)", err)
	}
	// A leaf signed by another CA is reissued.
	other, err := LoadOrCreateCA(t.TempDir(), "ca", "other", time.Hour*24*365)
	if err != nil {
		t.Fatal(err)
	}
	if wrote, err := other.Ensure(dir, base, DefaultRenewBefore); err != nil || !wrote {
		t.Errorf("Ensure with another CA wrote = %v (err %v), want a reissue", wrote, err)
	}
	list, err := List(dir)
	if err != nil || len(list) != 2 {
		t.Fatalf("List = %v, %v; want 2 certificates", list, err)
	}
}

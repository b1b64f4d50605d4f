package controllers

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"net"
	"testing"
	"time"

	certsv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
)

func csrPEM(t *testing.T, cn string, dns []string, ips []string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn, Organization: []string{"system:nodes"}}, DNSNames: dns}
	for _, ip := range ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func servingCSR(name, user string, groups []string, req []byte) *certsv1.CertificateSigningRequest {
	return &certsv1.CertificateSigningRequest{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: certsv1.CertificateSigningRequestSpec{SignerName: certsv1.KubeletServingSignerName, Username: user, Groups: groups, Request: req,
			Usages: []certsv1.KeyUsage{certsv1.UsageDigitalSignature, certsv1.UsageServerAuth}}}
}

func node(name string, addrs ...string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	for _, a := range addrs {
		n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a})
	}
	return n
}

func TestServingCSRVerdict(t *testing.T) {
	nodes := []*corev1.Node{node("n1", "10.0.0.1"), node("unregistered")}
	groups := []string{"system:nodes", "system:authenticated"}
	for _, tc := range []struct {
		name   string
		user   string
		groups []string
		req    []byte
		want   verdict
	}{
		{"own name and address", "system:node:n1", groups, csrPEM(t, "system:node:n1", []string{"n1"}, []string{"10.0.0.1"}), approve},
		{"address only", "system:node:n1", groups, csrPEM(t, "system:node:n1", nil, []string{"10.0.0.1"}), approve},
		{"another node's address", "system:node:n1", groups, csrPEM(t, "system:node:n1", nil, []string{"10.0.0.2"}), deny},
		{"a name the node does not have", "system:node:n1", groups, csrPEM(t, "system:node:n1", []string{"api.example.com"}, nil), deny},
		{"subject is another node", "system:node:n1", groups, csrPEM(t, "system:node:n2", nil, []string{"10.0.0.1"}), deny},
		{"not in system:nodes", "system:node:n1", []string{"system:authenticated"}, csrPEM(t, "system:node:n1", nil, []string{"10.0.0.1"}), deny},
		{"not a node user", "alice", groups, csrPEM(t, "alice", nil, nil), deny},
		{"garbage request", "system:node:n1", groups, []byte("not PEM"), deny},
		{"node not registered", "system:node:n9", groups, csrPEM(t, "system:node:n9", nil, []string{"10.0.0.9"}), wait},
		{"node without addresses yet", "system:node:unregistered", groups, csrPEM(t, "system:node:unregistered", nil, nil), wait},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := informers.NewSharedInformerFactory(fake.NewClientset(), 0)
			idx := f.Core().V1().Nodes().Informer().GetIndexer()
			for _, n := range nodes {
				idx.Add(n)
			}
			got, reason := servingCSRVerdict(servingCSR("c", tc.user, tc.groups, tc.req), f.Core().V1().Nodes().Lister())
			if got != tc.want {
				t.Errorf("verdict %v (%s), want %v", got, reason, tc.want)
			}
		})
	}
}

// TestServingCSRApprover runs the controller on a fake API: a CSR of a
// known node is approved, a bad one denied, and one that waits for its
// node is approved once the node registers.
func TestServingCSRApprover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	groups := []string{"system:nodes"}
	cs := fake.NewClientset(node("n1", "10.0.0.1"),
		servingCSR("good", "system:node:n1", groups, csrPEM(t, "system:node:n1", []string{"n1"}, []string{"10.0.0.1"})),
		servingCSR("bad", "system:node:n1", groups, csrPEM(t, "system:node:n1", nil, []string{"192.0.2.1"})),
		servingCSR("early", "system:node:n2", groups, csrPEM(t, "system:node:n2", nil, []string{"10.0.0.2"})))
	g := Group{Name: "test", New: []func(Env) (Controller, error){NewServingCSRApprover}}
	done := make(chan error, 1)
	go func() {
		done <- g.Run(ctx, cs, dynamicfake.NewSimpleDynamicClient(runtime.NewScheme()), slog.New(slog.DiscardHandler))
	}()

	decided := func(name string) certsv1.RequestConditionType {
		csr, err := cs.CertificatesV1().CertificateSigningRequests().Get(ctx, name, metav1.GetOptions{})
		if err != nil || len(csr.Status.Conditions) == 0 {
			return ""
		}
		return csr.Status.Conditions[0].Type
	}
	waitFor := func(name string, want certsv1.RequestConditionType) {
		t.Helper()
		for decided(name) != want {
			select {
			case <-ctx.Done():
				t.Fatalf("CSR %s: condition %q, want %q", name, decided(name), want)
			case <-time.After(10 * time.Millisecond): // polling the fake API
			}
		}
	}
	waitFor("good", certsv1.CertificateApproved)
	waitFor("bad", certsv1.CertificateDenied)
	if got := decided("early"); got != "" {
		t.Fatalf("CSR of an unregistered node was decided: %s", got)
	}
	if _, err := cs.CoreV1().Nodes().Create(ctx, node("n2", "10.0.0.2"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor("early", certsv1.CertificateApproved)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cloudless-dev/cloudless/internal/pki"
)

// TestServerExternalEtcd runs the server on an external etcd cluster (Debian's
// etcd 3.4) over TLS with client certificates, as kubeadm's external etcd.
func TestServerExternalEtcd(t *testing.T) {
	etcdBin, err := exec.LookPath("etcd")
	if err != nil {
		t.Fatal("etcd is not installed: .ci/setup installs etcd-server")
	}
	dir, err := os.MkdirTemp("", "cl-etcd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	tlsDir := filepath.Join(dir, "etcd-pki")
	ca, err := pki.LoadOrCreateCA(tlsDir, "ca", "etcd-ca", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []pki.Leaf{
		{Name: "server", CommonName: "etcd", IPs: []net.IP{net.ParseIP("127.0.0.1")}, Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, Validity: time.Hour},
		{Name: "client", CommonName: "kube-apiserver-etcd-client", Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, Validity: time.Hour},
	} {
		if _, err := ca.Ensure(tlsDir, l, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	f := func(name string) string { return filepath.Join(tlsDir, name) }
	clientPort, peerPort := freePort(t), freePort(t)
	endpoint := fmt.Sprintf("https://127.0.0.1:%d", clientPort)
	etcd := exec.Command(etcdBin, "--data-dir", filepath.Join(dir, "etcd"), "--name", "default",
		"--listen-client-urls", endpoint, "--advertise-client-urls", endpoint,
		"--listen-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", peerPort), "--initial-advertise-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", peerPort),
		"--initial-cluster", fmt.Sprintf("default=http://127.0.0.1:%d", peerPort),
		"--cert-file", f("server.crt"), "--key-file", f("server.key"), "--client-cert-auth", "--trusted-ca-file", f("ca.crt"))
	var etcdLog strings.Builder
	etcd.Stderr = &etcdLog
	if err := etcd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { etcd.Process.Kill(); etcd.Wait() })

	// A client certificate etcd does not trust is refused before anything
	// starts.
	other, err := pki.LoadOrCreateCA(filepath.Join(dir, "other"), "ca", "other", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other.Ensure(filepath.Join(dir, "other"), pki.Leaf{Name: "client", CommonName: "x", Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, Validity: time.Hour}, time.Minute)
	_, errOut, err := cli(t, "server", "--data-dir", filepath.Join(dir, "bad"), "--https-listen-port", fmt.Sprint(freePort(t)),
		"--datastore-endpoint", endpoint, "--token", haToken, "--datastore-cafile", f("ca.crt"),
		"--datastore-certfile", filepath.Join(dir, "other", "client.crt"), "--datastore-keyfile", filepath.Join(dir, "other", "client.key"))
	if err == nil || !strings.Contains(errOut, "does not answer") {
		t.Errorf("server with an untrusted etcd client certificate: %v\n%s", err, tail([]byte(errOut), 10))
	}

	data := filepath.Join(dir, "data")
	_, cs, _ := startServer(t, data, freePort(t), "--datastore-endpoint", endpoint, "--token", haToken,
		"--datastore-cafile", f("ca.crt"), "--datastore-certfile", f("client.crt"), "--datastore-keyfile", f("client.key"))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "in-etcd"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The namespace is in etcd itself, and so is the sealed bootstrap data.
	cert, _ := tls.LoadX509KeyPair(f("client.crt"), f("client.key"))
	pool := x509.NewCertPool()
	caPEM, _ := os.ReadFile(f("ca.crt"))
	pool.AppendCertsFromPEM(caPEM)
	ec, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		TLS: &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool}})
	if err != nil {
		t.Fatal(err)
	}
	defer ec.Close()
	for _, key := range []string{"/registry/namespaces/in-etcd", "/cloudless/bootstrap"} {
		resp, err := ec.Get(ctx, key)
		if err != nil || len(resp.Kvs) != 1 {
			t.Errorf("etcd key %s: %v, %v", key, resp, err)
		}
	}
	if _, err := os.Stat(filepath.Join(data, "datastore")); err == nil {
		t.Error("the embedded datastore was created although an external etcd was given")
	}
}

package controlplane

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/cloudless-dev/cloudless/internal/atomicfile"
	"github.com/cloudless-dev/cloudless/internal/datadir"
	"github.com/cloudless-dev/cloudless/internal/metrics"
	"github.com/cloudless-dev/cloudless/internal/pki"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// paths under <data-dir>/server.
type paths struct{ root string }

func (p paths) tls(name string) string  { return filepath.Join(p.root, "tls", name) }
func (p paths) cred(name string) string { return filepath.Join(p.root, "cred", name) }
func (p paths) file(rel string) string  { return filepath.Join(p.root, rel) }

// AdminKubeconfig is where the admin kubeconfig is written.
func AdminKubeconfig(dataDir string) string {
	return datadir.Of(dataDir).AdminKubeconfig()
}

type certs struct {
	ca, frontProxyCA *pki.CA
}

// ensureCerts creates or renews every certificate and kubeconfig. It
// returns the names of the leaves it wrote.
func (s *Server) ensureCerts() ([]string, error) {
	p, c := s.paths, s.cfg
	dir := filepath.Join(p.root, "tls")
	if s.certs.ca == nil {
		if err := s.ensureCAs(); err != nil {
			return nil, err
		}
	}
	host, _ := os.Hostname()
	dns := []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc." + c.ClusterDomain}
	if host != "" {
		dns = append(dns, host)
	}
	ips := []net.IP{net.ParseIP("127.0.0.1"), c.firstServiceIP()}
	if c.AdvertiseAddress != "" {
		ips = append(ips, net.ParseIP(c.AdvertiseAddress))
	}
	for _, san := range c.TLSSANs {
		if ip := net.ParseIP(san); ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, san)
		}
	}
	v := c.CertValidity
	client := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	leaves := []struct {
		ca   *pki.CA
		leaf pki.Leaf
	}{
		{s.certs.ca, pki.Leaf{Name: "apiserver", CommonName: "kube-apiserver", DNSNames: dns, IPs: ips, Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, Validity: v}},
		{s.certs.ca, pki.Leaf{Name: "apiserver-kubelet-client", CommonName: "kube-apiserver-kubelet-client", Organization: []string{"system:masters"}, Usages: client, Validity: v}},
		{s.certs.frontProxyCA, pki.Leaf{Name: "front-proxy-client", CommonName: "front-proxy-client", Usages: client, Validity: v}},
		{s.certs.ca, pki.Leaf{Name: "admin", CommonName: "cloudless-admin", Organization: []string{"system:masters"}, Usages: client, Validity: v}},
		{s.certs.ca, pki.Leaf{Name: "controller-manager", CommonName: "system:kube-controller-manager", Usages: client, Validity: v}},
		{s.certs.ca, pki.Leaf{Name: "scheduler", CommonName: "system:kube-scheduler", Usages: client, Validity: v}},
		{s.certs.ca, pki.Leaf{Name: "metrics-client", CommonName: metrics.User, Usages: client, Validity: v}},
		{s.certs.ca, pki.Leaf{Name: "metrics-serving", CommonName: metrics.ServiceHost, DNSNames: []string{metrics.ServiceHost, "localhost"}, IPs: []net.IP{net.ParseIP("127.0.0.1")}, Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, Validity: v}},
	}
	if !c.DisableAgent {
		// This machine's own node: the server has the CA, so it issues the
		// kubelet's certificates itself; other nodes use TLS bootstrap.
		node := "system:node:" + c.NodeName
		leaves = append(leaves,
			struct {
				ca   *pki.CA
				leaf pki.Leaf
			}{s.certs.ca, pki.Leaf{Name: "kubelet-client", CommonName: node, Organization: []string{"system:nodes"}, Usages: client, Validity: v}},
			struct {
				ca   *pki.CA
				leaf pki.Leaf
			}{s.certs.ca, pki.Leaf{Name: "kubelet-serving", CommonName: node, Organization: []string{"system:nodes"}, DNSNames: []string{c.NodeName, "localhost"}, IPs: []net.IP{net.ParseIP(c.AdvertiseAddress), net.ParseIP("127.0.0.1")}, Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, Validity: v}},
		)
	}
	var wrote []string
	for _, l := range leaves {
		w, err := l.ca.Ensure(dir, l.leaf, c.renewBefore())
		if err != nil {
			return wrote, err
		}
		if w {
			wrote = append(wrote, l.leaf.Name)
		}
	}
	server := fmt.Sprintf("https://127.0.0.1:%d", c.HTTPSPort)
	kubeconfigs := []string{"admin", "controller-manager", "scheduler", "metrics-client"}
	if !c.DisableAgent {
		kubeconfigs = append(kubeconfigs, "kubelet-client")
	}
	for _, k := range kubeconfigs {
		if err := writeKubeconfig(p.cred(k+".kubeconfig"), server, s.certs.ca.PEM, p.tls(k+".crt"), p.tls(k+".key")); err != nil {
			return wrote, err
		}
	}
	return wrote, nil
}

// ensureCAs loads or creates the CAs and the service-account key pair.
func (s *Server) ensureCAs() error {
	dir := filepath.Join(s.paths.root, "tls")
	var err error
	if s.certs.ca, err = pki.LoadOrCreateCA(dir, "ca", "cloudless-ca", 10*365*24*time.Hour); err != nil {
		return err
	}
	if s.certs.frontProxyCA, err = pki.LoadOrCreateCA(dir, "front-proxy-ca", "cloudless-front-proxy-ca", 10*365*24*time.Hour); err != nil {
		return err
	}
	return ensureSAKey(s.paths.tls("sa.key"), s.paths.tls("sa.pub"))
}

func writeShared(path string, data []byte, mode os.FileMode) error {
	return atomicfile.Write(path, data, mode)
}

func ensureSAKey(keyPath, pubPath string) error {
	if _, err := os.Stat(keyPath); err == nil {
		return nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	pub, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err := atomicfile.Write(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return err
	}
	return atomicfile.Write(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644)
}

// writeKubeconfig writes a kubeconfig that names the certificate files,
// so clients pick up renewed certificates without a restart.
func writeKubeconfig(path, server string, caPEM []byte, certFile, keyFile string) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["cloudless"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	kc.AuthInfos["user"] = &clientcmdapi.AuthInfo{ClientCertificate: certFile, ClientKey: keyFile}
	kc.Contexts["cloudless"] = &clientcmdapi.Context{Cluster: "cloudless", AuthInfo: "user"}
	kc.CurrentContext = "cloudless"
	data, err := clientcmd.Write(*kc)
	if err != nil {
		return fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	return atomicfile.Write(path, data, 0o600)
}

// ensureSecretFile writes generated content once; it is never replaced.
func ensureSecretFile(path string, gen func() ([]byte, error)) error {
	if _, err := os.Stat(path); err == nil {
		return os.Chmod(path, 0o600)
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	data, err := gen()
	if err != nil {
		return err
	}
	return atomicfile.Write(path, data, 0o600)
}

func pkiWrite(path string, data []byte) error { return atomicfile.Write(path, data, 0o600) }

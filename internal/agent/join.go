package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/cloudless-dev/cloudless/internal/atomicfile"
	"github.com/cloudless-dev/cloudless/internal/clusterinfo"
	"github.com/cloudless-dev/cloudless/internal/datadir"
	"github.com/cloudless-dev/cloudless/internal/token"
	"github.com/cloudless-dev/cloudless/internal/volumes"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"log/slog"
	"slices"
)

// ClusterInfo is what a joining machine learns from a server.
type ClusterInfo = clusterinfo.Info

// Discover fetches kube-public/cluster-info from server without trusting
// it, checks its CA against the hash in the join token, then fetches it
// again over TLS verified with that CA. Nothing secret is sent before the
// server is known to hold the pinned CA.
func Discover(ctx context.Context, server string, j token.Join) (ClusterInfo, error) {
	u, err := url.Parse(server)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return ClusterInfo{}, fmt.Errorf("--server %q: want https://HOST:6443", server)
	}
	path := server + "/api/v1/namespaces/" + clusterinfo.Namespace + "/configmaps/" + clusterinfo.Name
	insecure := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	info, err := fetchClusterInfo(ctx, insecure, path)
	if err != nil {
		return ClusterInfo{}, err
	}
	hash, err := token.CAHash(info.CAPEM)
	if err != nil {
		return ClusterInfo{}, err
	}
	if hash != j.CAHash {
		return ClusterInfo{}, fmt.Errorf("the server at %s has CA %s, but the token pins %s: wrong server, or someone in between; get a token from this cluster's server (`cloudless token create`)", server, hash, j.CAHash)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(info.CAPEM)
	verified := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	again, err := fetchClusterInfo(ctx, verified, path)
	if err != nil {
		return ClusterInfo{}, fmt.Errorf("verify the server's certificate with the pinned CA: %w (is %s among the server's --tls-san?)", err, u.Hostname())
	}
	return again, nil
}

func fetchClusterInfo(ctx context.Context, c *http.Client, url string) (ClusterInfo, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := c.Do(req)
	if err != nil {
		return ClusterInfo{}, fmt.Errorf("reach the server: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return ClusterInfo{}, fmt.Errorf("read cluster-info from the server: %s: %s", resp.Status, body)
	}
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := json.Unmarshal(body, &cm); err != nil {
		return ClusterInfo{}, fmt.Errorf("cluster-info: %w", err)
	}
	return clusterinfo.Parse(cm.Data)
}

// KubeletKubeconfig is where a joined agent's kubelet keeps its
// credentials, once bootstrapped: the node's identity, system:node:NAME.
func KubeletKubeconfig(dataDir string) string {
	return filepath.Join(datadir.Of(dataDir).AgentPKI(), "kubelet.kubeconfig")
}

// WriteJoinFiles writes the CA and the kubelet's bootstrap kubeconfig under
// the agent's dir and returns their paths.
func WriteJoinFiles(dataDir, server string, info ClusterInfo, j token.Join) (caFile, bootstrap string, err error) {
	dir := datadir.Of(dataDir).AgentPKI()
	caFile, bootstrap = filepath.Join(dir, "ca.crt"), filepath.Join(dir, "bootstrap.kubeconfig")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", err
	}
	if err := atomicfile.Write(caFile, info.CAPEM, 0o644); err != nil {
		return "", "", err
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["cloudless"] = &clientcmdapi.Cluster{Server: server, CertificateAuthority: caFile}
	kc.AuthInfos["bootstrap"] = &clientcmdapi.AuthInfo{Token: j.Bootstrap()}
	kc.Contexts["cloudless"] = &clientcmdapi.Context{Cluster: "cloudless", AuthInfo: "bootstrap"}
	kc.CurrentContext = "cloudless"
	b, err := clientcmd.Write(*kc)
	if err != nil {
		return "", "", fmt.Errorf("bootstrap kubeconfig: %w", err)
	}
	return caFile, bootstrap, atomicfile.Write(bootstrap, b, 0o600)
}

// Join joins this machine to the cluster at server: it checks the server
// against the token's CA (Discover), writes the CA and the bootstrap
// kubeconfig, and returns the agent configured from cfg (node settings,
// data dir) and what cluster-info says (DNS, network, disabled parts).
// Run then bootstraps the kubelet's credentials.
func Join(ctx context.Context, server, tok string, cfg Config, log *slog.Logger) (*Agent, error) {
	j, err := token.Parse(tok)
	if err != nil {
		return nil, fmt.Errorf("--token: %w", err)
	}
	log.Info("checking the server against the token's CA", "server", server)
	info, err := Discover(ctx, server, j)
	if err != nil {
		return nil, err
	}
	caFile, bootstrap, err := WriteJoinFiles(cfg.DataDir, server, info, j)
	if err != nil {
		return nil, err
	}
	cfg.CAFile, cfg.BootstrapKubeconfig, cfg.Kubeconfig = caFile, bootstrap, KubeletKubeconfig(cfg.DataDir)
	cfg.ClusterDNS, cfg.ClusterDomain = info.ClusterDNS, info.ClusterDomain
	cfg.ClusterCIDR, cfg.ServiceCIDR, cfg.NetworkBackend, cfg.ProxyMode = info.ClusterCIDR, info.ServiceCIDR, info.NetworkBackend, info.ProxyMode
	cfg.NoLocalVolumes = slices.Contains(info.Disabled, volumes.DisableName)
	return New(cfg, log)
}

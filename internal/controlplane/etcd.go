package controlplane

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/cloudless-dev/cloudless/internal/datastore"
)

// The datastore is one of: the embedded engine (DatastoreEndpoint empty),
// PostgreSQL (postgres://, run through our datastore), or an external etcd
// cluster (https://, comma-separated, with client certificates, as
// kubeadm's external etcd).

func (c *Config) externalEtcd() bool {
	return strings.HasPrefix(c.DatastoreEndpoint, "https://") || strings.HasPrefix(c.DatastoreEndpoint, "http://")
}

// validateEtcd checks an external etcd endpoint list and its TLS files.
func (c *Config) validateEtcd() error {
	for _, ep := range strings.Split(c.DatastoreEndpoint, ",") {
		u, err := url.Parse(ep)
		if err != nil || u.Host == "" {
			return fmt.Errorf("--datastore-endpoint: %q is not an etcd URL (want https://host:2379, comma-separated for several)", ep)
		}
		if u.Scheme == "http" {
			host := u.Hostname()
			if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
				return fmt.Errorf("--datastore-endpoint %s: plain http to etcd is allowed on loopback only; use https:// with --datastore-cafile, --datastore-certfile and --datastore-keyfile", ep)
			}
		}
	}
	if strings.Contains(c.DatastoreEndpoint, "https://") {
		if c.DatastoreCAFile == "" || c.DatastoreCertFile == "" || c.DatastoreKeyFile == "" {
			return errors.New("an https:// etcd --datastore-endpoint needs --datastore-cafile, --datastore-certfile and --datastore-keyfile (etcd's CA and a client certificate it trusts)")
		}
		for flag, f := range map[string]string{"--datastore-cafile": c.DatastoreCAFile, "--datastore-certfile": c.DatastoreCertFile, "--datastore-keyfile": c.DatastoreKeyFile} {
			if _, err := os.Stat(f); err != nil {
				return fmt.Errorf("%s: %w", flag, err)
			}
		}
	}
	return nil
}

// etcdServers is the value of kube-apiserver's --etcd-servers.
func (c *Config) etcdServers() string {
	if c.externalEtcd() {
		return c.DatastoreEndpoint
	}
	return "unix://" + c.localSocket()
}

func (c *Config) localSocket() string {
	ds := datastore.DefaultConfig()
	ds.DataDir = c.DataDir
	return ds.SocketPath()
}

// EtcdClient connects to the cluster's datastore, as kube-apiserver does.
func (c *Config) EtcdClient() (*clientv3.Client, error) {
	cfg := clientv3.Config{Endpoints: strings.Split(c.etcdServers(), ","), DialTimeout: 10 * time.Second, Logger: zap.NewNop()}
	if c.externalEtcd() && c.DatastoreCAFile != "" {
		cert, err := tls.LoadX509KeyPair(c.DatastoreCertFile, c.DatastoreKeyFile)
		if err != nil {
			return nil, fmt.Errorf("etcd client certificate: %w", err)
		}
		ca, err := os.ReadFile(c.DatastoreCAFile)
		if err != nil {
			return nil, fmt.Errorf("etcd CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(ca) {
			return nil, fmt.Errorf("--datastore-cafile %s holds no PEM certificate", c.DatastoreCAFile)
		}
		cfg.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to the datastore %s: %w", c.etcdServers(), err)
	}
	return cli, nil
}

// Package datastore serves the etcd v3 API that kube-apiserver uses, over
// one of two engines: the embedded engine (pebble, files under the data
// dir; the default) or PostgreSQL (several servers share one database).
//
// Layers, outermost first: server (gRPC, error mapping) → mvcc (etcd
// semantics: revisions, txn, watch, leases) → engine/pebble or
// engine/postgres (storage). Only this package wires them together.
package datastore

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/cloudless-dev/cloudless/internal/datadir"
	"github.com/cloudless-dev/cloudless/internal/datastore/engine/pebble"
	"github.com/cloudless-dev/cloudless/internal/datastore/engine/postgres"
	"github.com/cloudless-dev/cloudless/internal/datastore/mvcc"
	"github.com/cloudless-dev/cloudless/internal/datastore/server"
)

// Config configures a datastore.
type Config struct {
	// DataDir holds the embedded engine's files and the default socket.
	DataDir string
	// Endpoint selects the engine: empty for the embedded engine, or a
	// postgres:// (postgresql://) URL.
	Endpoint string
	// ListenSocket is the unix socket to serve on (plaintext, mode 0600).
	// Empty means <DataDir>/datastore/etcd.sock.
	ListenSocket string
	// ListenAddress, if set, also serves on TCP with TLS and client
	// certificates from TLSCertFile, TLSKeyFile and TLSClientCAFile.
	ListenAddress   string
	TLSCertFile     string
	TLSKeyFile      string
	TLSClientCAFile string
	// ProgressNotifyInterval is how often idle watchers get a progress
	// notification when they asked for one.
	ProgressNotifyInterval time.Duration
	// ReservedSpace is the free disk space, in bytes, below which the
	// embedded engine refuses writes (reads go on); 0 is automatic (see
	// Reserve).
	ReservedSpace uint64
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{DataDir: datadir.Default, ProgressNotifyInterval: 10 * time.Minute}
}

// Validate checks the configuration without side effects.
func (c *Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("datastore: --data-dir is empty; give a directory for the datastore's files")
	}
	if c.Endpoint != "" && !strings.HasPrefix(c.Endpoint, "postgres://") && !strings.HasPrefix(c.Endpoint, "postgresql://") {
		return fmt.Errorf("datastore: endpoint %q is not supported; leave it empty for the embedded engine or give a postgres:// URL", redact(c.Endpoint))
	}
	if c.ListenAddress != "" && (c.TLSCertFile == "" || c.TLSKeyFile == "" || c.TLSClientCAFile == "") {
		return fmt.Errorf("datastore: listening on TCP %s needs TLS with client certificates; give --tls-cert-file, --tls-key-file and --tls-client-ca-file, or use only the unix socket", c.ListenAddress)
	}
	return nil
}

// SocketPath returns the unix socket the datastore serves on.
func (c *Config) SocketPath() string {
	if c.ListenSocket != "" {
		return c.ListenSocket
	}
	return datadir.Of(c.DataDir).EngineSocket()
}

// Datastore is a running datastore.
type Datastore struct {
	cfg   Config
	log   *slog.Logger
	eng   mvcc.Engine
	store *mvcc.Store
	ready chan struct{}
}

// Open opens the engine; it serves nothing until Run.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Datastore, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var eng mvcc.Engine
	var err error
	if err := cfg.CheckDisk(); err != nil {
		return nil, err
	}
	if cfg.Endpoint == "" {
		dir := cfg.EngineDir()
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("datastore: create %s: %w (is the data dir writable? run as root or choose --data-dir)", dir, err)
		}
		reserve := cfg.reserveFor(dir)
		log.Info("opening embedded engine", "dir", dir, "reserved_space_mib", reserve>>20)
		eng, err = pebble.Open(dir, pebble.Options{MinFreeBytes: reserve}, log.With("engine", "pebble"))
	} else {
		log.Info("connecting to PostgreSQL", "endpoint", redact(cfg.Endpoint))
		eng, err = postgres.Open(ctx, cfg.Endpoint, log.With("engine", "postgres"))
	}
	if err != nil {
		return nil, fmt.Errorf("datastore: %w", err)
	}
	return &Datastore{cfg: cfg, log: log, eng: eng, store: mvcc.New(eng, log), ready: make(chan struct{})}, nil
}

// Ready is closed when the datastore serves requests.
func (d *Datastore) Ready() <-chan struct{} { return d.ready }

// Run serves until ctx is cancelled, then closes the engine.
func (d *Datastore) Run(ctx context.Context) error {
	defer d.eng.Close()
	sock := d.cfg.SocketPath()
	if err := os.MkdirAll(filepath.Dir(sock), 0o700); err != nil {
		return fmt.Errorf("datastore: create socket dir: %w", err)
	}
	if err := removeStaleSocket(sock); err != nil {
		return err
	}
	ul, err := net.Listen("unix", sock)
	if err != nil {
		return fmt.Errorf("datastore: listen on %s: %w", sock, err)
	}
	if err := os.Chmod(sock, 0o600); err != nil {
		ul.Close()
		return fmt.Errorf("datastore: chmod %s: %w", sock, err)
	}
	urls := []string{"unix://" + sock}
	serverOpts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(16 << 20),
		grpc.MaxSendMsgSize(1<<31 - 1),
		grpc.MaxConcurrentStreams(1 << 20),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	}
	var gs = []*grpc.Server{grpc.NewServer(serverOpts...)}
	var tl net.Listener
	if d.cfg.ListenAddress != "" {
		creds, err := d.tlsCreds()
		if err != nil {
			ul.Close()
			return err
		}
		if tl, err = net.Listen("tcp", d.cfg.ListenAddress); err != nil {
			ul.Close()
			return fmt.Errorf("datastore: listen on %s: %w (is another etcd or datastore running? choose another --listen-address)", d.cfg.ListenAddress, err)
		}
		urls = append(urls, "https://"+tl.Addr().String())
		gs = append(gs, grpc.NewServer(append(serverOpts, grpc.Creds(creds))...))
	}
	opts := server.Options{ProgressNotifyInterval: d.cfg.ProgressNotifyInterval, ClientURLs: urls}
	for _, g := range gs {
		server.Register(g, d.store, opts)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	storeErr := make(chan error, 1)
	go func() { storeErr <- d.store.Run(ctx) }()
	select {
	case <-d.store.Ready():
	case err := <-storeErr:
		return fmt.Errorf("datastore: %w", err)
	}
	serveErr := make(chan error, len(gs))
	go func() { serveErr <- gs[0].Serve(ul) }()
	if tl != nil {
		go func() { serveErr <- gs[1].Serve(tl) }()
	}
	d.log.Info("datastore ready", "urls", urls)
	close(d.ready)
	select {
	case <-ctx.Done():
	case err = <-serveErr:
	case err = <-storeErr:
	}
	cancel()
	// Stop, not GracefulStop: watch and keep-alive streams never end on
	// their own, and grpc's Stop cannot interrupt a GracefulStop under way.
	for _, g := range gs {
		g.Stop()
	}
	if err != nil {
		return fmt.Errorf("datastore: %w", err)
	}
	return nil
}

func (d *Datastore) tlsCreds() (credentials.TransportCredentials, error) {
	cert, err := tls.LoadX509KeyPair(d.cfg.TLSCertFile, d.cfg.TLSKeyFile)
	if err != nil {
		return nil, fmt.Errorf("datastore: load TLS key pair: %w", err)
	}
	pem, err := os.ReadFile(d.cfg.TLSClientCAFile)
	if err != nil {
		return nil, fmt.Errorf("datastore: read client CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("datastore: no certificates in client CA file %s", d.cfg.TLSClientCAFile)
	}
	return credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	}), nil
}

// removeStaleSocket removes a socket file left by a process that is gone,
// and refuses to take over one that still answers.
func removeStaleSocket(path string) error {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("datastore: %s is in use by a running process; stop it or choose --listen-socket", path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("datastore: remove stale socket %s: %w", path, err)
	}
	return nil
}

// redact hides a password in a URL for logs and errors.
func redact(endpoint string) string {
	at := strings.LastIndex(endpoint, "@")
	scheme := strings.Index(endpoint, "://")
	if at < 0 || scheme < 0 {
		return endpoint
	}
	userinfo := endpoint[scheme+3 : at]
	if i := strings.Index(userinfo, ":"); i >= 0 {
		return endpoint[:scheme+3] + userinfo[:i] + ":xxxxx" + endpoint[at:]
	}
	return endpoint
}

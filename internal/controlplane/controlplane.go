// Package controlplane boots a Kubernetes control plane in this process:
// the datastore, certificates, and upstream kube-apiserver,
// kube-controller-manager and kube-scheduler (components.go is the only
// file that touches them), with secure defaults: RBAC and Node
// authorizers, NodeRestriction, anonymous access only to health
// endpoints, Pod Security baseline enforced and restricted warned,
// Secrets encrypted at rest, an audit log, and leaf certificates renewed
// while running.
//
// Only the cli package imports it.
package controlplane

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cloudless-dev/cloudless/internal/datadir"
	"github.com/cloudless-dev/cloudless/internal/datastore"
	authdns "github.com/cloudless-dev/cloudless/internal/dns"
	"github.com/cloudless-dev/cloudless/internal/metrics"
	"github.com/cloudless-dev/cloudless/internal/network"
)

// Server is a control plane.
type Server struct {
	cfg   Config
	log   *slog.Logger
	paths paths
	certs certs
	ready chan struct{}
	// dns is the authoritative DNS server, nil without --dns-listen.
	dns *authdns.Server
}

// New returns a Server; it starts nothing.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.AdvertiseAddress == "" {
		ip, err := DefaultAddress()
		if err != nil {
			return nil, err
		}
		cfg.AdvertiseAddress = ip.String()
	}
	d, err := datadir.New(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	cfg.DataDir = string(d)
	if err := cfg.NodeConfig.Complete(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: log, paths: paths{datadir.Dir(cfg.DataDir).Server()}, ready: make(chan struct{})}
	if cfg.DNSListen != "" {
		allow, _ := authdns.ParsePrefixes(strings.Join(cfg.DNSTransferAllow, ",")) // Validate checked them
		s.dns = authdns.NewServer(authdns.Config{Listen: cfg.DNSListen, TransferAllow: allow, Notify: cfg.DNSNotify,
			RateLimit: authdns.DefaultRateLimit, RateBurst: authdns.DefaultRateBurst}, log.With("subsystem", "dns"))
	}
	return s, nil
}

// Ready is closed when the API server answers /readyz.
func (s *Server) Ready() <-chan struct{} { return s.ready }

func (s *Server) phase(n int, msg string, args ...any) {
	s.log.Info(fmt.Sprintf("[%d/5] %s", n, msg), args...)
}

// Run boots the control plane and serves until ctx ends. A stop (ctx
// ending) at any point, during start-up too, returns nil: the caller
// asked for it.
func (s *Server) Run(ctx context.Context) error {
	err := s.run(ctx)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func (s *Server) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	containExits(s.log)
	if os.Geteuid() != 0 {
		return errors.New("cloudless server must run as root: it manages certificates under /var/lib, mounts and network rules; run it with sudo (or as a systemd service)")
	}
	dscfg := datastore.DefaultConfig()
	dscfg.DataDir, dscfg.Endpoint, dscfg.ReservedSpace = s.cfg.DataDir, s.cfg.DatastoreEndpoint, s.cfg.DatastoreReservedSpace
	if !s.cfg.externalEtcd() {
		// Before anything starts: a disk too small fails here, in one line,
		// not after the components have logged hundreds.
		if err := dscfg.CheckDisk(); err != nil {
			return err
		}
	}
	release, err := datadir.Dir(s.cfg.DataDir).LockServer()
	if err != nil {
		return err
	}
	defer release()
	if err := datadir.Dir(s.cfg.DataDir).CheckLayout(); err != nil {
		return err
	}
	if err := os.MkdirAll(s.paths.root, 0o700); err != nil {
		return fmt.Errorf("create %s: %w (run as root or choose a writable --data-dir)", s.paths.root, err)
	}
	// reset reads this to tell the operator a shared datastore stays.
	engine := "embedded"
	if s.cfg.DatastoreEndpoint != "" {
		engine = "shared"
	}
	if err := pkiWrite(datadir.Dir(s.cfg.DataDir).DatastoreMode(), []byte(engine)); err != nil {
		return err
	}
	addr := net.JoinHostPort(s.cfg.BindAddress, strconv.Itoa(s.cfg.HTTPSPort))
	if err := s.checkPorts(); err != nil {
		return err
	}
	if !s.cfg.DisableAgent {
		for _, r := range [][2]string{{"--cluster-cidr", s.cfg.ClusterCIDR}, {"--service-cidr", s.cfg.ServiceCIDR}} {
			p := netip.MustParsePrefix(r[1]).Masked() // validated
			if err := network.CheckOverlap(p, r[0]+" "+p.String(), "choose another "+r[0]); err != nil {
				return err
			}
		}
	}
	errc := make(chan error, 4)

	s.phase(1, "starting datastore")
	if s.cfg.externalEtcd() {
		if err := s.checkEtcd(ctx); err != nil {
			return err
		}
	} else {
		ds, err := datastore.Open(ctx, dscfg, s.log.With("subsystem", "datastore"))
		if err != nil {
			return err
		}
		go func() { errc <- ds.Run(ctx) }()
		select {
		case <-ds.Ready():
		case err := <-errc:
			return err
		}
	}

	s.phase(2, "certificates")
	if s.cfg.DatastoreEndpoint != "" {
		if err := s.syncBootstrap(ctx); err != nil {
			return err
		}
	}
	if _, err := s.ensureCerts(); err != nil {
		return fmt.Errorf("certificates: %w", err)
	}
	if err := s.writeConfigFiles(); err != nil {
		return err
	}

	s.phase(3, "starting kube-apiserver", "address", addr)
	go func() {
		errc <- exited("kube-apiserver", runAPIServer(ctx, s.apiserverArgs(s.cfg.etcdServers()), s.cfg.PodDNSNdots, s.cfg.LBNodePorts))
	}()
	// The node agent starts now, alongside kube-apiserver: containerd,
	// images and the kubelet need no API until the kubelet registers, and
	// it retries until the API answers.
	if !s.cfg.DisableAgent {
		if err := s.startAgent(ctx, errc); err != nil {
			return err
		}
	}
	if err := s.waitReady(ctx, errc); err != nil {
		return err
	}

	s.phase(4, "starting kube-controller-manager, kube-scheduler and the metrics API")
	// Each runs under a restarter: losing its lease (say, the disk is full
	// and the datastore refuses writes) or failing restarts that one
	// component, never the server.
	restart := newRestarter(s.log)
	go restart.run(ctx, "kube-controller-manager", func(ctx context.Context) error {
		return runControllerManager(ctx, s.controllerManagerArgs())
	})
	go restart.run(ctx, "kube-scheduler", func(ctx context.Context) error {
		return runScheduler(ctx, s.schedulerArgs())
	})
	if !s.cfg.Disabled(ComponentMetrics) {
		go restart.run(ctx, "metrics-server", func(ctx context.Context) error {
			return metrics.Run(ctx, s.metricsConfig())
		})
	}

	kc := AdminKubeconfig(s.cfg.DataDir)
	s.phase(5, "ready", "kubeconfig", kc)
	fmt.Fprintf(os.Stderr, "\nCloudless control plane is ready.\n  export KUBECONFIG=%s\n  cloudless kubectl get nodes   (or any kubectl)\n\n", kc)
	close(s.ready)
	go func() {
		if err := s.runJoinSupport(ctx); err != nil && ctx.Err() == nil {
			errc <- fmt.Errorf("node join support: %w", err)
		}
	}()
	renew := time.NewTicker(max(s.cfg.renewBefore()/10, time.Second))
	defer renew.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			if ctx.Err() != nil {
				return nil
			}
			return err
		case <-renew.C:
			wrote, err := s.ensureCerts()
			if err != nil {
				s.log.Error("renew certificates", "err", err)
			} else if len(wrote) > 0 {
				s.log.Info("renewed certificates", "certs", wrote)
			}
		}
	}
}

// metricsConfig points the metrics API at this server's certificates.
func (s *Server) metricsConfig() metrics.Config {
	p := s.paths
	return metrics.Config{Kubeconfig: p.cred("metrics-client.kubeconfig"),
		ServingCert: p.tls("metrics-serving.crt"), ServingKey: p.tls("metrics-serving.key"),
		ClientCA: p.tls("ca.crt"), FrontProxyCA: p.tls("front-proxy-ca.crt"), KubeletCA: p.tls("ca.crt")}
}

// checkPorts fails early, naming the flag to change, if a port a component
// will listen on is taken.
func (s *Server) checkPorts() error {
	for _, c := range []struct {
		name, flag string
		args       []string
	}{
		{"kube-apiserver", "--https-listen-port", s.apiserverArgs("")},
		{"kube-controller-manager", "--kube-controller-manager-arg=--secure-port=N", s.controllerManagerArgs()},
		{"kube-scheduler", "--kube-scheduler-arg=--secure-port=N", s.schedulerArgs()},
	} {
		host, port := lastFlag(c.args, "--bind-address"), lastFlag(c.args, "--secure-port")
		if port == "" || port == "0" {
			continue
		}
		addr := net.JoinHostPort(host, port)
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("%s's port %s is in use (%v); stop what holds it (another Kubernetes control plane?) or choose %s", c.name, addr, err, c.flag)
		}
		l.Close()
	}
	if s.cfg.Disabled(ComponentMetrics) {
		return nil
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(metrics.Port)))
	if err != nil {
		return fmt.Errorf("the metrics API's port 127.0.0.1:%d is in use (%v); stop what holds it (a metrics-server run by hand?), or --disable %s", metrics.Port, err, ComponentMetrics)
	}
	l.Close()
	return nil
}

// lastFlag is the value the last --name=value in args gives.
func lastFlag(args []string, name string) string {
	v := ""
	for _, a := range args {
		if rest, ok := strings.CutPrefix(a, name+"="); ok {
			v = rest
		}
	}
	return v
}

// ComponentArgs returns the flags the server gives its in-process
// kube-apiserver (pointed at etcdServers), kube-controller-manager and
// kube-scheduler, for files under cfg.DataDir that a server has written.
// bench/server uses it to run the same components as separate processes.
func ComponentArgs(cfg Config, etcdServers string) (apiserver, controllerManager, scheduler []string, err error) {
	s, err := New(cfg, slog.Default())
	if err != nil {
		return nil, nil, nil, err
	}
	return s.apiserverArgs(etcdServers), s.controllerManagerArgs(), s.schedulerArgs(), nil
}

// waitReady polls the API server's /readyz with the admin certificate.
func (s *Server) waitReady(ctx context.Context, errc chan error) error {
	cert, err := tls.LoadX509KeyPair(s.paths.tls("admin.crt"), s.paths.tls("admin.key"))
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.certs.ca.PEM)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}}}
	url := fmt.Sprintf("https://127.0.0.1:%d/readyz", s.cfg.HTTPSPort)
	deadline := time.Now().Add(5 * time.Minute)
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kube-apiserver not ready after 5 minutes: %v", err)
		}
		select {
		case err := <-errc:
			return err
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (s *Server) apiserverArgs(etcdServers string) []string {
	p, c := s.paths, s.cfg
	args := []string{
		"--etcd-servers=" + etcdServers,
		"--bind-address=" + c.BindAddress,
		"--secure-port=" + strconv.Itoa(c.HTTPSPort),
		"--advertise-address=" + c.AdvertiseAddress,
		"--tls-cert-file=" + p.tls("apiserver.crt"),
		"--tls-private-key-file=" + p.tls("apiserver.key"),
		"--client-ca-file=" + p.tls("ca.crt"),
		"--kubelet-client-certificate=" + p.tls("apiserver-kubelet-client.crt"),
		"--kubelet-client-key=" + p.tls("apiserver-kubelet-client.key"),
		"--kubelet-preferred-address-types=InternalIP,Hostname",
		"--kubelet-certificate-authority=" + p.tls("ca.crt"),
		"--requestheader-client-ca-file=" + p.tls("front-proxy-ca.crt"),
		"--requestheader-allowed-names=front-proxy-client",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-username-headers=X-Remote-User",
		"--proxy-client-cert-file=" + p.tls("front-proxy-client.crt"),
		"--proxy-client-key-file=" + p.tls("front-proxy-client.key"),
		"--service-account-issuer=https://kubernetes.default.svc." + c.ClusterDomain,
		"--service-account-key-file=" + p.tls("sa.pub"),
		"--service-account-signing-key-file=" + p.tls("sa.key"),
		"--service-cluster-ip-range=" + c.ServiceCIDR,
		"--authorization-mode=Node,RBAC",
		"--authentication-config=" + p.cred("authentication.yaml"),
		"--enable-admission-plugins=NodeRestriction",
		"--admission-control-config-file=" + p.cred("admission.yaml"),
		"--encryption-provider-config=" + p.cred("encryption-config.yaml"),
		"--encryption-provider-config-automatic-reload=true",
		"--audit-policy-file=" + p.cred("audit-policy.yaml"),
		"--audit-log-path=" + filepath.Join(p.root, "logs", "audit.log"),
		"--audit-log-maxage=30", "--audit-log-maxbackup=10", "--audit-log-maxsize=100",
		"--enable-bootstrap-token-auth=true",
		"--allow-privileged=true",
		"--profiling=false",
		"--cert-dir=" + filepath.Join(p.root, "tls", "generated"),
	}
	if c.externalEtcd() && c.DatastoreCAFile != "" {
		args = append(args, "--etcd-cafile="+c.DatastoreCAFile, "--etcd-certfile="+c.DatastoreCertFile, "--etcd-keyfile="+c.DatastoreKeyFile)
	}
	return append(args, c.APIServerArgs...)
}

// checkEtcd fails early, with the fix, if the external etcd cannot be
// reached.
func (s *Server) checkEtcd(ctx context.Context) error {
	cli, err := s.cfg.EtcdClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	ep := strings.Split(s.cfg.DatastoreEndpoint, ",")[0]
	if _, err := cli.Status(cctx, ep); err != nil {
		return fmt.Errorf("etcd at %s does not answer (%v): check the URL, that etcd runs, and that --datastore-cafile/certfile/keyfile are the ones etcd trusts", ep, err)
	}
	return nil
}

func (s *Server) controllerManagerArgs() []string {
	p, c := s.paths, s.cfg
	kc := p.cred("controller-manager.kubeconfig")
	args := []string{
		"--kubeconfig=" + kc, "--authentication-kubeconfig=" + kc, "--authorization-kubeconfig=" + kc,
		"--bind-address=127.0.0.1", "--secure-port=10257",
		"--cert-dir=" + filepath.Join(p.root, "tls", "generated"),
		"--cluster-signing-cert-file=" + p.tls("ca.crt"), "--cluster-signing-key-file=" + p.tls("ca.key"),
		"--root-ca-file=" + p.tls("ca.crt"),
		"--service-account-private-key-file=" + p.tls("sa.key"),
		"--use-service-account-credentials=true",
		"--controllers=*,bootstrapsigner,tokencleaner",
		"--allocate-node-cidrs=true", "--cluster-cidr=" + c.ClusterCIDR, "--service-cluster-ip-range=" + c.ServiceCIDR,
		"--leader-elect=true", "--profiling=false",
	}
	return append(args, c.ControllerManagerArgs...)
}

func (s *Server) schedulerArgs() []string {
	kc := s.paths.cred("scheduler.kubeconfig")
	args := []string{
		"--kubeconfig=" + kc, "--authentication-kubeconfig=" + kc, "--authorization-kubeconfig=" + kc,
		"--bind-address=127.0.0.1", "--secure-port=10259", "--leader-elect=true", "--profiling=false",
		"--cert-dir=" + filepath.Join(s.paths.root, "tls", "generated"),
	}
	return append(args, s.cfg.SchedulerArgs...)
}

// writeConfigFiles writes the apiserver's policy files. The encryption key
// is generated once and kept.
func (s *Server) writeConfigFiles() error {
	p := s.paths
	if err := os.MkdirAll(filepath.Join(p.root, "logs"), 0o700); err != nil {
		return err
	}
	err := ensureSecretFile(p.cred("encryption-config.yaml"), func() ([]byte, error) {
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		return encryptionConfig(key)
	})
	if err != nil {
		return fmt.Errorf("encryption config: %w", err)
	}
	files := map[string]func() ([]byte, error){
		"authentication.yaml": authenticationConfig,
		"admission.yaml":      func() ([]byte, error) { return admissionConfig(s.cfg.PodSecurityEnforce, s.cfg.PodSecurityWarn) },
		"audit-policy.yaml":   auditPolicy,
	}
	for name, gen := range files {
		data, err := gen()
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if err := os.MkdirAll(filepath.Dir(p.cred(name)), 0o700); err != nil {
			return err
		}
		if err := pkiWrite(p.cred(name), data); err != nil {
			return err
		}
	}
	return nil
}

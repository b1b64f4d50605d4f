package integration

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

var (
	k8sOnce sync.Once
	k8sDir  string
	k8sErr  error
)

// k8sBinaries builds upstream kube-apiserver and kubectl from the Go
// modules pinned in go.mod, once per test run.
func k8sBinaries(t *testing.T) (apiserver, kubectl string) {
	t.Helper()
	k8sOnce.Do(func() {
		k8sDir, k8sErr = os.MkdirTemp(scratch, "k8s-") // removed with the run's directory
		if k8sErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", k8sDir+"/", "k8s.io/kubernetes/cmd/kube-apiserver", "k8s.io/kubernetes/cmd/kubectl")
		cmd.Dir = "../.."
		if out, err := cmd.CombinedOutput(); err != nil {
			k8sErr = fmt.Errorf("build kube-apiserver and kubectl: %v\n%s", err, out)
		}
	})
	if k8sErr != nil {
		t.Fatal(k8sErr)
	}
	return filepath.Join(k8sDir, "kube-apiserver"), filepath.Join(k8sDir, "kubectl")
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestKubeAPIServer runs upstream kube-apiserver on the datastore, for each
// engine, and drives it with upstream kubectl.
func TestKubeAPIServer(t *testing.T) {
	apiserverBin, kubectlBin := k8sBinaries(t)
	for _, engine := range []string{"pebble", "postgres"} {
		t.Run(engine, func(t *testing.T) {
			dir, sock, args := datastoreArgs(t, engine)
			ds := start(t, args...)
			etcd := connect(t, ds, sock)
			defer etcd.Close()

			key, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				t.Fatal(err)
			}
			pub, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
			write := func(name string, data []byte) string {
				p := filepath.Join(dir, name)
				if err := os.WriteFile(p, data, 0o600); err != nil {
					t.Fatal(err)
				}
				return p
			}
			saKey := write("sa.key", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
			saPub := write("sa.pub", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))
			tokens := write("tokens.csv", []byte(`test-admin-token,admin,admin,"system:masters"`+"\n"))
			port := freePort(t)
			kas := exec.Command(apiserverBin,
				"--etcd-servers=unix://"+sock,
				"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
				fmt.Sprintf("--secure-port=%d", port),
				"--cert-dir="+filepath.Join(dir, "certs"),
				"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
				"--service-account-key-file="+saPub, "--service-account-signing-key-file="+saKey,
				"--service-cluster-ip-range=10.43.0.0/16",
				"--authorization-mode=RBAC", "--anonymous-auth=false",
				"--token-auth-file="+tokens,
				"--enable-priority-and-fairness=false",
			)
			logf, _ := os.Create(filepath.Join(dir, "kube-apiserver.log"))
			kas.Stdout, kas.Stderr = logf, logf
			if err := kas.Start(); err != nil {
				t.Fatal(err)
			}
			kasDone := make(chan struct{})
			go func() { kas.Wait(); close(kasDone) }()
			t.Cleanup(func() { kas.Process.Kill(); <-kasDone; logf.Close() })

			kubeconfig := write("kubeconfig", []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: "https://127.0.0.1:%d", insecure-skip-tls-verify: true}}]
users: [{name: admin, user: {token: test-admin-token}}]
contexts: [{name: test, context: {cluster: test, user: admin}}]
current-context: test
`, port)))
			kubectl := func(args ...string) (string, error) {
				out, err := exec.Command(kubectlBin, append([]string{"--kubeconfig", kubeconfig, "--request-timeout=20s"}, args...)...).CombinedOutput()
				return strings.TrimSpace(string(out)), err
			}
			deadline := time.Now().Add(3 * time.Minute)
			for {
				out, err := kubectl("get", "--raw", "/readyz")
				if err == nil && out == "ok" {
					break
				}
				select {
				case <-kasDone:
					log, _ := os.ReadFile(filepath.Join(dir, "kube-apiserver.log"))
					t.Fatalf("kube-apiserver exited:\n%s", tail(log, 40))
				default:
				}
				if time.Now().After(deadline) {
					log, _ := os.ReadFile(filepath.Join(dir, "kube-apiserver.log"))
					t.Fatalf("kube-apiserver not ready: %s %v\n%s", out, err, tail(log, 40))
				}
				time.Sleep(250 * time.Millisecond) // polling for readiness
			}

			steps := [][]string{
				{"create", "namespace", "demo"},
				{"create", "configmap", "cm", "-n", "demo", "--from-literal=greeting=hello"},
				{"label", "configmap", "cm", "-n", "demo", "tier=test"},
			}
			for _, s := range steps {
				if out, err := kubectl(s...); err != nil {
					t.Fatalf("kubectl %v: %v\n%s", s, err, out)
				}
			}
			out, err := kubectl("get", "configmap", "cm", "-n", "demo", "-o", "jsonpath={.data.greeting}/{.metadata.labels.tier}")
			if err != nil || out != "hello/test" {
				t.Fatalf("kubectl get configmap = %q, %v; want hello/test", out, err)
			}
			// The object lives in our datastore.
			r, err := etcd.Get(context.Background(), "/registry/configmaps/demo/cm")
			if err != nil || len(r.Kvs) != 1 {
				t.Fatalf("datastore has %v for the configmap (err %v), want one key", r, err)
			}
			if out, err := kubectl("delete", "configmap", "cm", "-n", "demo", "--wait=true"); err != nil {
				t.Fatalf("kubectl delete: %v\n%s", err, out)
			}
			if out, err := kubectl("get", "configmap", "cm", "-n", "demo"); err == nil || !strings.Contains(out, "NotFound") {
				t.Fatalf("configmap still there after delete: %q, %v", out, err)
			}
			r, err = etcd.Get(context.Background(), "/registry/", clientv3.WithPrefix(), clientv3.WithCountOnly())
			if err != nil || r.Count < 10 {
				t.Fatalf("datastore holds %v registry keys (err %v), want the apiserver's bootstrap objects", r, err)
			}
		})
	}
}

func tail(b []byte, n int) string {
	lines := strings.Split(string(b), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

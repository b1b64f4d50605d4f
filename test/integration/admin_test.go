package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/cloudless-dev/cloudless/internal/controlplane"
	"github.com/cloudless-dev/cloudless/internal/datadir"
	"github.com/cloudless-dev/cloudless/internal/testutil/nodens"
	"github.com/cloudless-dev/cloudless/internal/token"
)

// cli runs the cloudless binary to completion.
func cli(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var o, e bytes.Buffer
	cmd := exec.Command(cloudlessBin, args...)
	cmd.Stdout, cmd.Stderr = &o, &e
	cmd.Env = append(os.Environ(), "CLOUDLESS_CONFIG=") // never the host's /etc/cloudless
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(4 * time.Minute):
		cmd.Process.Kill()
		t.Fatalf("cloudless %v did not finish in 4 minutes", args)
	}
	return o.String(), e.String(), err
}

func mustCLI(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, err := cli(t, args...)
	if err != nil {
		t.Fatalf("cloudless %s: %v\n%s", strings.Join(args, " "), err, errOut)
	}
	return out
}

// TestServerAdmin drives the operator commands against a running server:
// the config file, join tokens, Secrets key rotation, the data-dir lock
// and reset.
func TestServerAdmin(t *testing.T) {
	dir, err := os.MkdirTemp("", "cl-admin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	conf := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(conf, []byte("pod-security-enforce: restricted\nlog-level: warn\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	port := freePort(t)
	p, cs, cfg := startServer(t, data, port, "--config", conf)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	// The config file took effect: restricted is enforced, so a pod that
	// may run as root is refused.
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "root"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "example.invalid/c:1"}}}}
	poll(t, ctx, "a root pod refused by PodSecurity restricted", func() (bool, error) {
		_, err := cs.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{})
		if err == nil {
			t.Fatal("a pod that may run as root was admitted under pod-security-enforce: restricted")
		}
		// Until the default ServiceAccount exists, admission stops earlier.
		return strings.Contains(err.Error(), `violates PodSecurity "restricted`), err
	})

	// A second server on the same data dir is refused.
	second := start(t, "server", "--data-dir", data, "--https-listen-port", fmt.Sprint(freePort(t)))
	poll(t, ctx, "the second server to exit", func() (bool, error) { return second.exited(), nil })
	if !strings.Contains(second.stderr.String(), "is running with --data-dir") {
		t.Errorf("second server on the same data dir: stderr %q, want it to name the running server", second.stderr.String())
	}

	t.Run("token", func(t *testing.T) {
		out := mustCLI(t, "token", "create", "--data-dir", data, "--ttl", "1h", "--description", "test node")
		j, err := token.Parse(out)
		if err != nil {
			t.Fatalf("token create printed %q: %v", out, err)
		}
		ca, _ := os.ReadFile(datadir.Of(data).CA())
		if h, _ := token.CAHash(ca); h != j.CAHash {
			t.Fatalf("token pins CA %s, cluster CA is %s", j.CAHash, h)
		}
		// The bootstrap token authenticates, as the joining kubelet will.
		bt := rest.AnonymousClientConfig(cfg)
		bt.BearerToken = j.Bootstrap()
		var review *authnv1.SelfSubjectReview
		poll(t, ctx, "the bootstrap token to authenticate", func() (bool, error) {
			review, err = kubernetes.NewForConfigOrDie(bt).AuthenticationV1().SelfSubjectReviews().Create(ctx, &authnv1.SelfSubjectReview{}, metav1.CreateOptions{})
			return err == nil, err
		})
		if u := review.Status.UserInfo; u.Username != "system:bootstrap:"+j.ID || !contains(u.Groups, token.NodeGroup) {
			t.Errorf("bootstrap token authenticates as %s %v", u.Username, u.Groups)
		}
		var infos []token.Info
		if err := json.Unmarshal([]byte(mustCLI(t, "token", "list", "--data-dir", data, "-o", "json")), &infos); err != nil {
			t.Fatal(err)
		}
		if len(infos) != 1 || infos[0].ID != j.ID || infos[0].Description != "test node" || infos[0].Expires == nil {
			t.Fatalf("token list = %+v", infos)
		}
		if table := mustCLI(t, "token", "list", "--data-dir", data); strings.Contains(table, j.Secret) {
			t.Error("token list prints the secret")
		}
		mustCLI(t, "token", "delete", "--data-dir", data, j.ID)
		poll(t, ctx, "the deleted token to stop working", func() (bool, error) {
			_, err := kubernetes.NewForConfigOrDie(bt).AuthenticationV1().SelfSubjectReviews().Create(ctx, &authnv1.SelfSubjectReview{}, metav1.CreateOptions{})
			return apierrors.IsUnauthorized(err), nil
		})
		if _, errOut, err := cli(t, "token", "delete", "--data-dir", data, j.ID); err == nil || !strings.Contains(errOut, "no token with id") {
			t.Errorf("deleting a deleted token: %v %q", err, errOut)
		}
	})

	t.Run("secrets-encrypt", func(t *testing.T) {
		want := map[string][]byte{"password": []byte("hunter2")}
		if _, err := cs.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "db"}, Data: want}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		status := func() controlplane.EncryptionStatus {
			var st controlplane.EncryptionStatus
			if err := json.Unmarshal([]byte(mustCLI(t, "secrets-encrypt", "status", "--data-dir", data, "-o", "json")), &st); err != nil {
				t.Fatal(err)
			}
			return st
		}
		before := status()
		if len(before.Keys) != 1 || before.Secrets == 0 || before.Keys[0].Secrets != before.Secrets || before.Unencrypted != 0 {
			t.Fatalf("status before rotation: %+v: want every Secret under the one key", before)
		}
		out := mustCLI(t, "secrets-encrypt", "rotate", "--data-dir", data)
		after := status()
		if len(after.Keys) != 1 || after.Keys[0].Name == before.Keys[0].Name || !strings.Contains(out, after.Keys[0].Name) {
			t.Fatalf("after rotation: %+v (printed %q): want one new key", after, out)
		}
		if after.Keys[0].Secrets != after.Secrets || after.Unencrypted != 0 || after.UnknownKey != 0 {
			t.Fatalf("after rotation: %+v: want every Secret under the new key", after)
		}
		got, err := cs.CoreV1().Secrets("default").Get(ctx, "db", metav1.GetOptions{})
		if err != nil || string(got.Data["password"]) != "hunter2" {
			t.Fatalf("Secret after rotation: %v, %v", got.Data, err)
		}
	})

	// reset refuses while the server runs, then removes the data dir.
	if _, errOut, err := cli(t, "reset", "--data-dir", data, "--yes"); err == nil || !strings.Contains(errOut, "is running") {
		t.Fatalf("reset with the server running: %v %q", err, errOut)
	}
	if _, errOut, err := cli(t, "reset", "--data-dir", dir, "--yes"); err == nil || !strings.Contains(errOut, "does not look like a Cloudless data dir") {
		t.Fatalf("reset of a dir that is not a data dir: %v %q", err, errOut)
	}
	p.kill()
	mustCLI(t, "reset", "--data-dir", data, "--yes")
	if _, err := os.Stat(data); !os.IsNotExist(err) {
		t.Fatalf("data dir after reset: %v", err)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// TestServerRejectsBadInput checks that bad configuration stops the server
// before it starts anything, with a message that names the problem.
func TestServerRejectsBadInput(t *testing.T) {
	dir, err := os.MkdirTemp("", "cl-bad-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	unknown := filepath.Join(dir, "unknown.yaml")
	os.WriteFile(unknown, []byte("cluster-cdir: 10.50.0.0/16\n"), 0o600)
	nodens.New(t, "bad", 249) // a network of this machine: 10.250.249.0/24
	newer := filepath.Join(dir, "newer")
	os.MkdirAll(newer, 0o700)
	os.WriteFile(datadir.Of(newer).LayoutFile(), []byte("99\n"), 0o600)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"data dir from a newer version", []string{"--data-dir", newer}, "written by a newer Cloudless (layout 99"},
		{"unknown flag", []string{"--clustr-cidr", "10.50.0.0/16"}, "unknown flag: --clustr-cidr"},
		{"unknown config key", []string{"--config", unknown}, `unknown key "cluster-cdir"`},
		{"missing config file", []string{"--config", filepath.Join(dir, "absent.yaml")}, "absent.yaml: no such file"},
		{"overlapping CIDRs", []string{"--cluster-cidr", "10.43.0.0/16"}, "overlaps --service-cidr"},
		{"bad CIDR", []string{"--service-cidr", "10.43.0.0/33"}, `--service-cidr "10.43.0.0/33" is not a CIDR`},
		{"DNS outside services", []string{"--cluster-dns", "10.42.0.10"}, "must be an address inside --service-cidr"},
		{"unsupported datastore", []string{"--datastore-endpoint", "mysql://db/k8s", "--token", "x"}, `endpoint "mysql://db/k8s" is not supported`},
		{"plain http etcd off loopback", []string{"--datastore-endpoint", "http://192.0.2.1:2379", "--token", "x"}, "plain http to etcd is allowed on loopback only"},
		{"https etcd without TLS files", []string{"--datastore-endpoint", "https://192.0.2.1:2379", "--token", "x"}, "needs --datastore-cafile"},
		{"unreachable PostgreSQL", []string{"--datastore-endpoint", "postgres://cloudless@127.0.0.1:1/x", "--token", "x"}, "connect to PostgreSQL"},
		{"unwritable data dir", []string{"--data-dir", "/dev/null/data"}, "choose a writable --data-dir"},
		{"shared datastore without token", []string{"--datastore-endpoint", "postgres://db/k8s"}, "--datastore-endpoint needs --token"},
		{"unknown network backend", []string{"--network-backend", "flannel"}, "use vxlan (works across routed networks) or host-gw"},
		{"unknown proxy mode", []string{"--proxy-mode", "userspace"}, "use nftables (the default), iptables or ipvs"},
		{"ndots out of range", []string{"--pod-dns-ndots", "20"}, "--pod-dns-ndots 20"},
		{"pod network over this machine's network", []string{"--cluster-cidr", "10.250.0.0/16"},
			"--cluster-cidr 10.250.0.0/16 overlaps this machine's route 10.250."},
		{"bad pod security level", []string{"--pod-security-enforce", "strict"}, "want privileged, baseline or restricted"},
		{"port in use", []string{"--bind-address", "127.0.0.1", "--https-listen-port", fmt.Sprint(busyPort(t))}, "kube-apiserver's port"},
		{"controller-manager port in use", []string{"--kube-controller-manager-arg=--secure-port=" + fmt.Sprint(busyPort(t))}, "kube-controller-manager's port"},
		{"IPv6 cluster CIDR", []string{"--cluster-cidr", "fd00::/64"}, "--cluster-cidr fd00::/64 is IPv6: Cloudless supports IPv4 only for now (no IPv6, no dual-stack); give an IPv4 range"},
		{"IPv6 service CIDR", []string{"--service-cidr", "fd00:43::/112", "--cluster-dns", "fd00:43::a"}, "--service-cidr fd00:43::/112 is IPv6"},
		{"dual-stack cluster CIDR", []string{"--cluster-cidr", "10.42.0.0/16,fd00::/56"}, "is a list: Cloudless supports IPv4 only for now"},
		{"IPv6 advertise address", []string{"--advertise-address", "fd00::10"}, "--advertise-address fd00::10 is IPv6"},
		{"cluster CIDR smaller than a node's range", []string{"--cluster-cidr", "10.42.0.0/25"}, "is smaller than one node's pod range (/24)"},
		{"DNS on the kubernetes Service", []string{"--cluster-dns", "10.43.0.1"}, "--cluster-dns 10.43.0.1 is reserved"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-"))
			_, errOut, err := cli(t, append([]string{"server", "--data-dir", data}, tt.args...)...)
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(errOut, tt.want) {
				t.Errorf("err = %v, stderr %q: want exit code 1 and stderr containing %q", err, errOut, tt.want)
			}
			if strings.Contains(errOut, "control plane is ready") {
				t.Errorf("the server said it was ready before refusing its input:\n%s", errOut)
			}
			if _, err := os.Stat(datadir.Of(data).ServerTLS()); err == nil {
				t.Error("certificates were made before the input was checked")
			}
		})
	}
}

// busyPort returns a port something listens on until the test ends.
func busyPort(t *testing.T) int {
	t.Helper()
	p := freePort(t)
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return p
}

package integration

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"github.com/cloudless-dev/cloudless/internal/agent"
	"github.com/cloudless-dev/cloudless/internal/controlplane"
	"github.com/cloudless-dev/cloudless/internal/testutil/nodens"
)

// netCluster is two nodes, each a network and mount namespace: node-a
// runs the server with its agent, node-b an agent that joined. The host
// routes between them (so VXLAN crosses a routed network) and to the
// "outside" namespaces a test adds.
type netCluster struct {
	a, b           *nodens.Node
	dir            string
	cs             *kubernetes.Clientset
	agentB         *proc
	agentBArgs     []string
	kubeconfig     string // the admin kubeconfig, as seen inside node-a
	resolvConfPath string
}

func startNetCluster(t *testing.T, ctx context.Context, resolvConf string, serverArgs ...string) *netCluster {
	t.Helper()
	dir, err := os.MkdirTemp("", "cl-net-")
	if err != nil {
		t.Fatal(err)
	}
	c := &netCluster{a: nodens.New(t, "na", 11), b: nodens.New(t, "nb", 12), dir: dir}
	dataA, dataB := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	t.Cleanup(func() {
		for _, d := range []string{dataA, dataB} {
			agent.KillShims(agent.RunDirFor(d))
			os.RemoveAll(agent.RunDirFor(d))
			agent.RemoveCgroups(d)
		}
		os.RemoveAll(dir)
	})
	c.resolvConfPath = filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(c.resolvConfPath, []byte(resolvConf), 0o644); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"server", "--data-dir", dataA, "--node-name", "node-a", "--advertise-address", c.a.IP,
		"--resolv-conf", c.resolvConfPath, "--kube-controller-manager-arg=--node-monitor-grace-period=20s"}, serverArgs...)
	server := startCmd(t, c.a.Command(cloudlessBin, args...))
	c.kubeconfig = controlplane.AdminKubeconfig(dataA)
	poll(t, ctx, "the server's admin kubeconfig", func() (bool, error) {
		if server.exited() {
			t.Fatalf("server exited:\n%s", tail(server.stderr.Bytes(), 40))
		}
		_, err := os.Stat(c.kubeconfig)
		return err == nil, nil
	})
	rc, err := clientcmd.BuildConfigFromFlags("", c.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	rc.Host = "https://" + c.a.IP + ":6443" // the kubeconfig says 127.0.0.1, inside node-a
	c.cs = kubernetes.NewForConfigOrDie(rc)
	poll(t, ctx, "kube-apiserver ready", func() (bool, error) {
		if server.exited() {
			t.Fatalf("server exited:\n%s", tail(server.stderr.Bytes(), 40))
		}
		body, err := c.cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err == nil && string(body) == "ok", nil
	})
	for _, d := range []string{dataA, dataB} {
		if err := os.MkdirAll(agent.ImagesDir(d), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(agent.ImagesDir(d), "app.tar"), appArchive(t), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tok := strings.TrimSpace(c.runIn(t, c.a, cloudlessBin, "token", "create", "--data-dir", dataA))
	c.agentBArgs = []string{"agent", "--server", "https://" + c.a.IP + ":6443", "--token", tok, "--data-dir", dataB,
		"--node-name", "node-b", "--node-ip", c.b.IP, "--resolv-conf", c.resolvConfPath}
	c.agentB = startCmd(t, c.b.Command(cloudlessBin, c.agentBArgs...))
	for _, n := range []string{"node-a", "node-b"} {
		poll(t, ctx, n+" Ready", func() (bool, error) {
			if server.exited() || c.agentB.exited() {
				t.Fatalf("a node exited:\nserver:\n%s\nagent:\n%s", tail(server.stderr.Bytes(), 30), tail(c.agentB.stderr.Bytes(), 30))
			}
			node, err := c.cs.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{})
			return err == nil && nodeIsReady(node), nil
		})
	}
	return c
}

// runIn runs a command in node's namespaces with the admin kubeconfig.
func (c *netCluster) runIn(t *testing.T, node *nodens.Node, bin string, args ...string) string {
	t.Helper()
	out, err := c.tryIn(node, bin, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, out)
	}
	return out
}

func (c *netCluster) tryIn(node *nodens.Node, bin string, args ...string) (string, error) {
	cmd := node.Command(bin, args...)
	cmd.Env = append(os.Environ(), "CLOUDLESS_CONFIG=", "KUBECONFIG="+c.kubeconfig)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// exec runs the app in pod with args and returns its output.
func (c *netCluster) exec(pod string, args ...string) (string, error) {
	return c.tryIn(c.a, cloudlessBin, append([]string{"kubectl", "exec", "-n", "default", pod, "--", "/app"}, args...)...)
}

// appPod is the test app pinned to node, labelled app=name.
func appPod(name, node string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: labels},
		Spec: corev1.PodSpec{NodeName: node, TerminationGracePeriodSeconds: ptr.To[int64](1), Containers: []corev1.Container{{
			Name: "app", Image: appImage, ImagePullPolicy: corev1.PullNever,
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
			ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromInt32(8080)}},
				PeriodSeconds: 1},
			SecurityContext: &corev1.SecurityContext{
				RunAsNonRoot: ptr.To(true), AllowPrivilegeEscalation: ptr.To(false),
				Capabilities:   &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
		}}},
	}
}

// runPods creates pods and waits until each is Ready; it returns their IPs.
func (c *netCluster) runPods(t *testing.T, ctx context.Context, ns string, pods ...*corev1.Pod) map[string]string {
	t.Helper()
	ips := map[string]string{}
	for _, p := range pods {
		p.Namespace = ns
		if _, err := c.cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range pods {
		poll(t, ctx, "pod "+ns+"/"+p.Name+" Ready", func() (bool, error) {
			got, err := c.cs.CoreV1().Pods(ns).Get(ctx, p.Name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			for _, cond := range got.Status.Conditions {
				if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
					ips[p.Name] = got.Status.PodIP
					return true, nil
				}
			}
			return false, nil
		})
	}
	return ips
}

// expect polls until the app in pod, run with args, prints want.
func (c *netCluster) expect(t *testing.T, ctx context.Context, what, pod, want string, args ...string) {
	t.Helper()
	for {
		out, err := c.exec(pod, args...)
		if err == nil && strings.TrimSpace(out) == want {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: want %q, last got %v: %s", what, want, err, out)
		case <-time.After(500 * time.Millisecond): // polling
		}
	}
}

// expectFail checks that the app in pod, run with args, fails (each try
// times out after 5 s inside the app).
func (c *netCluster) expectFail(t *testing.T, what, pod string, args ...string) {
	t.Helper()
	if out, err := c.exec(pod, args...); err == nil {
		t.Errorf("%s: succeeded, want blocked: %s", what, out)
	}
}

func service(name string, typ corev1.ServiceType, selector map[string]string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.ServiceSpec{Type: typ, Selector: selector,
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}}},
	}
}

// TestNetwork runs two nodes and checks the pod network across them, the
// Service proxy (ClusterIP, NodePort, externalTrafficPolicy Local keeping
// the client's address), masquerade to the outside, and that restarting
// an agent keeps established connections.
func TestNetwork(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	outside := nodens.New(t, "out", 13)   // a server outside the cluster
	client := nodens.New(t, "client", 14) // a client outside the cluster
	c := startNetCluster(t, ctx, "nameserver "+outside.IP+"\n")
	srv := startCmd(t, outside.Command(appBinary(t)))
	_ = srv

	ips := c.runPods(t, ctx, "default",
		appPod("a1", "node-a", nil), appPod("a2", "node-a", nil), appPod("b1", "node-b", map[string]string{"app": "web"}))
	if ips["a1"] == ips["b1"] || !strings.HasPrefix(ips["a1"], "10.42.") || !strings.HasPrefix(ips["b1"], "10.42.") {
		t.Fatalf("pod IPs %v: want distinct addresses in the cluster CIDR", ips)
	}

	t.Run("pod to pod", func(t *testing.T) {
		c.expect(t, ctx, "a1 → a2 on the same node", "a1", ips["a1"], "get", "http://"+ips["a2"]+":8080/whoami")
		c.expect(t, ctx, "a1 → b1 across nodes, source address kept", "a1", ips["a1"], "get", "http://"+ips["b1"]+":8080/whoami")
		c.expect(t, ctx, "b1 → a2 across nodes", "b1", ips["b1"], "get", "http://"+ips["a2"]+":8080/whoami")
	})

	web, err := c.cs.CoreV1().Services("default").Create(ctx, service("web", corev1.ServiceTypeNodePort, map[string]string{"app": "web"}), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	local := service("web-local", corev1.ServiceTypeNodePort, map[string]string{"app": "web"})
	local.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	if local, err = c.cs.CoreV1().Services("default").Create(ctx, local, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	t.Run("ClusterIP", func(t *testing.T) {
		c.expect(t, ctx, "a1 → web's ClusterIP", "a1", "pong", "get", "http://"+web.Spec.ClusterIP+"/")
		c.expect(t, ctx, "b1 → web's ClusterIP (itself, hairpin)", "b1", "pong", "get", "http://"+web.Spec.ClusterIP+"/")
	})

	t.Run("NodePort from outside the cluster", func(t *testing.T) {
		np := web.Spec.Ports[0].NodePort
		for _, node := range []*nodens.Node{c.a, c.b} {
			url := fmt.Sprintf("http://%s:%d/", node.IP, np)
			poll(t, ctx, "client → "+url, func() (bool, error) {
				out, err := exec.Command("nsenter", "--net=/var/run/netns/"+client.Name, appBinary(t), "get", url).CombinedOutput()
				return err == nil && string(out) == "pong", nil
			})
		}
		// externalTrafficPolicy Local: the pod sees the client's own address.
		url := fmt.Sprintf("http://%s:%d/whoami", c.b.IP, local.Spec.Ports[0].NodePort)
		poll(t, ctx, "client → web-local on node-b sees the client's address", func() (bool, error) {
			out, err := exec.Command("nsenter", "--net=/var/run/netns/"+client.Name, appBinary(t), "get", url).CombinedOutput()
			return err == nil && string(out) == client.IP, nil
		})
	})

	t.Run("masquerade to the outside", func(t *testing.T) {
		// The outside has no route to pod CIDRs: only a masqueraded
		// request (from the node's address) gets an answer.
		for pod, node := range map[string]*nodens.Node{"a1": c.a, "b1": c.b} {
			c.expect(t, ctx, pod+" → outside server, seen from its node's address", pod, node.IP, "get", "http://"+outside.IP+":8080/whoami")
		}
	})

	t.Run("agent restart keeps connections", func(t *testing.T) {
		// A keep-alive connection from the host through node-b's NodePort
		// to b1 must survive the agent's restart.
		url := fmt.Sprintf("http://%s:%d/whoami", c.b.IP, local.Spec.Ports[0].NodePort)
		tr := &http.Transport{MaxConnsPerHost: 1, IdleConnTimeout: 5 * time.Minute,
			DialContext: (&net.Dialer{KeepAlive: -1}).DialContext}
		hc := &http.Client{Transport: tr, Timeout: 5 * time.Second}
		get := func() (reused bool, err error) {
			trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
			req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), "GET", url, nil)
			resp, err := hc.Do(req)
			if err != nil {
				return false, err
			}
			defer resp.Body.Close()
			_, err = io.ReadAll(resp.Body)
			return reused, err
		}
		poll(t, ctx, "host → node-b NodePort", func() (bool, error) { _, err := get(); return err == nil, nil })
		c.agentB.kill()
		c.agentB = startCmd(t, c.b.Command(cloudlessBin, c.agentBArgs...))
		poll(t, ctx, "node-b's restarted agent up", func() (bool, error) {
			if c.agentB.exited() {
				t.Fatalf("agent exited:\n%s", tail(c.agentB.stderr.Bytes(), 30))
			}
			return strings.Contains(c.agentB.stderr.String(), "node is up"), nil
		})
		reused, err := get()
		if err != nil || !reused {
			t.Errorf("the connection opened before the restart: reused %v, err %v", reused, err)
		}
	})
}

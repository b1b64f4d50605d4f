package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/cloudless-dev/cloudless/internal/agent"
	"github.com/cloudless-dev/cloudless/internal/controllers"
	"github.com/cloudless-dev/cloudless/internal/controlplane"
	"github.com/cloudless-dev/cloudless/internal/datadir"
)

const appImage = "registry.cloudless.local/app:1"

var (
	appOnce sync.Once
	appBin  string
	appErr  error
)

// appBinary builds testdata/app statically, once per run.
func appBinary(t *testing.T) string {
	t.Helper()
	appOnce.Do(func() {
		appBin = filepath.Join(filepath.Dir(cloudlessBin), "app")
		build := exec.Command("go", "build", "-o", appBin, "./testdata/app")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			appErr = fmt.Errorf("build app: %v\n%s", err, out)
		}
	})
	if appErr != nil {
		t.Fatal(appErr)
	}
	return appBin
}

// appArchive packs testdata/app into an image archive, as an operator
// would bring an image into an air-gapped rack.
func appArchive(t *testing.T) []byte {
	t.Helper()
	data, err := os.ReadFile(appBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	archive, err := agent.BinaryImageArchive(appImage, "app", data, "65534:65534")
	if err != nil {
		t.Fatal(err)
	}
	return archive
}

// TestAgent runs a server with its node agent (containerd, runc, kubelet)
// and a Deployment of a locally built image on it (brought in with
// `cloudless images import`): the pod runs, logs, exec and port-forward
// work, and deleting the pod stops its container. reset then removes
// every container, mount and the bridge.
func TestAgent(t *testing.T) {
	dir, data := nodeDataDir(t, "cl-agent-")
	archive := filepath.Join(dir, "app.tar")
	if err := os.WriteFile(archive, appArchive(t), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	p, cs, _ := startServerArgs(t, data, port, "--node-name", "node-a", "--node-taint", "example.com/dedicated=test:PreferNoSchedule")
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()

	poll(t, ctx, "node node-a Ready, labelled control-plane", func() (bool, error) {
		n, err := cs.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if _, ok := n.Labels[controllers.ControlPlaneLabel]; !ok {
			return false, nil
		}
		if len(n.Spec.Taints) != 1 || n.Spec.Taints[0].Key != "example.com/dedicated" || n.Spec.Taints[0].Effect != corev1.TaintEffectPreferNoSchedule {
			return false, fmt.Errorf("taints %v, want the --node-taint", n.Spec.Taints)
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})

	// The image comes in by hand, as into an air-gapped rack.
	if out := mustCLI(t, "images", "import", "--data-dir", data, archive); strings.TrimSpace(out) != appImage {
		t.Fatalf("images import printed %q, want %s", out, appImage)
	}

	labels := map[string]string{"app": "app"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: "default"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "app", Image: appImage, ImagePullPolicy: corev1.PullNever,
					SecurityContext: &corev1.SecurityContext{
						RunAsNonRoot: ptr.To(true), AllowPrivilegeEscalation: ptr.To(false),
						Capabilities:   &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
				}}},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments("default").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var pod corev1.Pod
	poll(t, ctx, "the app pod Running", func() (bool, error) {
		pods, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=app"})
		if err != nil || len(pods.Items) != 1 {
			return false, err
		}
		pod = pods.Items[0]
		return pod.Status.Phase == corev1.PodRunning, nil
	})
	if pod.Spec.NodeName != "node-a" || pod.Status.PodIP == "" {
		t.Errorf("pod on %q with IP %q", pod.Spec.NodeName, pod.Status.PodIP)
	}

	kubectl := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(cloudlessBin, append([]string{"kubectl"}, args...)...)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+controlplane.AdminKubeconfig(data))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	// kube-proxy watches ServiceCIDRs with the node's credential.
	for _, verb := range []string{"list", "watch"} {
		// The answer is the last line (kubectl may warn before it).
		out := strings.TrimSpace(kubectl("auth", "can-i", verb, "servicecidrs.networking.k8s.io", "--as=system:node:node-a", "--as-group=system:nodes"))
		if lines := strings.Split(out, "\n"); lines[len(lines)-1] != "yes" {
			t.Errorf("can node-a %s servicecidrs? %q, want yes", verb, out)
		}
	}
	var logs string
	poll(t, ctx, "the pod's log", func() (bool, error) {
		b, err := cs.CoreV1().Pods("default").GetLogs(pod.Name, &corev1.PodLogOptions{}).DoRaw(ctx)
		logs = string(b)
		return strings.Contains(logs, "hello from cloudless"), err
	})
	if out := kubectl("logs", pod.Name); !strings.Contains(out, "hello from cloudless") {
		t.Errorf("kubectl logs: %q", out)
	}
	if out := kubectl("exec", pod.Name, "--", "/app", "echo", "exec", "works"); strings.TrimSpace(out) != "exec works" {
		t.Errorf("kubectl exec: %q", out)
	}

	// containerd is supervised: killed, it comes back, and the pod (whose
	// shim is not containerd's child) keeps running and answers exec.
	cfgPath := filepath.Join(data, "agent", "containerd.toml")
	killed := 0
	for _, pid := range procsWithArgs(t, "containerd", "--config", cfgPath) {
		if err := syscall.Kill(pid, syscall.SIGKILL); err == nil {
			killed++
		}
	}
	if killed != 1 {
		t.Fatalf("killed %d containerd processes, want 1", killed)
	}
	poll(t, ctx, "containerd restarted and exec working again", func() (bool, error) {
		cmd := exec.Command(cloudlessBin, "kubectl", "exec", pod.Name, "--", "/app", "echo", "again")
		cmd.Env = append(os.Environ(), "KUBECONFIG="+controlplane.AdminKubeconfig(data))
		out, err := cmd.CombinedOutput()
		return err == nil && strings.TrimSpace(string(out)) == "again", err
	})
	if got, err := cs.CoreV1().Pods("default").Get(ctx, pod.Name, metav1.GetOptions{}); err != nil || got.Status.ContainerStatuses[0].RestartCount != 0 {
		t.Errorf("after a containerd restart the container restarted: %v", err)
	}

	// port-forward reaches the pod's port through the apiserver and kubelet.
	pf := exec.Command(cloudlessBin, "kubectl", "port-forward", "pod/"+pod.Name, "0:8080")
	pf.Env = append(os.Environ(), "KUBECONFIG="+controlplane.AdminKubeconfig(data))
	stdout, err := pf.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	pfProc := startCmd(t, pf)
	line, err := bufio.NewReader(stdout).ReadString('\n') // "Forwarding from 127.0.0.1:PORT -> 8080"
	if err != nil {
		t.Fatalf("port-forward: %v\n%s", err, pfProc.stderr.String())
	}
	local, _, _ := strings.Cut(strings.TrimPrefix(strings.TrimSpace(line), "Forwarding from "), " ")
	resp, err := http.Get("http://" + local + "/")
	if err != nil {
		t.Fatalf("through port-forward (%q): %v", line, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "pong" {
		t.Errorf("through port-forward: %q, want pong", body)
	}
	pfProc.kill()

	// Deleting the pod (and its Deployment, so it is not replaced) stops
	// its containers: the shims serving it exit.
	runDir := datadir.Of(data).RunDir()
	if n := len(agent.Shims(runDir)); n == 0 {
		t.Fatal("no container shim found while the pod runs")
	}
	if err := cs.AppsV1().Deployments("default").Delete(ctx, "app", metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationForeground)}); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "the pod gone and no container shim left", func() (bool, error) {
		pods, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=app"})
		if err != nil {
			return false, err
		}
		return len(pods.Items) == 0 && len(agent.Shims(runDir)) == 0, nil
	})
	poll(t, ctx, "the Deployment gone (its foreground deletion done)", func() (bool, error) {
		_, err := cs.AppsV1().Deployments("default").Get(ctx, "app", metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})

	// reset, with a pod running again, leaves no container, mount, bridge
	// or directory behind.
	if _, err := cs.AppsV1().Deployments("default").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "a container shim again", func() (bool, error) { return len(agent.Shims(runDir)) > 0, nil })

	// doctor on this running cluster: the host facts are /proc's, and the
	// live Deployment (no requests) is reported.
	lb := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "pending-lb", Namespace: "default"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "app"}, Ports: []corev1.ServicePort{{Port: 80}}}}
	if _, err := cs.CoreV1().Services("default").Create(ctx, lb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "stuck", Namespace: "default"},
		Spec: corev1.PersistentVolumeClaimSpec{StorageClassName: ptr.To("none-such"), AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}}
	if _, err := cs.CoreV1().PersistentVolumeClaims("default").Create(ctx, pvc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := cli(t, "doctor", "--data-dir", data, "-o", "json", "--fsync-samples", "50", "--pending-after", "1ns")
	var code *exec.ExitError
	if err != nil && !errors.As(err, &code) {
		t.Fatalf("doctor: %v\n%s", err, errOut)
	}
	var rep struct {
		Findings []struct{ ID, Object string }
		Facts    struct {
			IPForward      int     `json:"ip_forward"`
			ConntrackMax   int     `json:"conntrack_max"`
			SwapTotalKB    int     `json:"swap_total_kb"`
			FsyncP99Millis float64 `json:"fsync_p99_ms"`
		}
		Seconds float64
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("doctor -o json: %v\n%s\n%s", err, out, errOut)
	}
	procInt := func(path string) int {
		b, _ := os.ReadFile(path)
		n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return n
	}
	if rep.Facts.IPForward != procInt("/proc/sys/net/ipv4/ip_forward") || rep.Facts.ConntrackMax != procInt("/proc/sys/net/netfilter/nf_conntrack_max") {
		t.Errorf("doctor facts %+v differ from /proc", rep.Facts)
	}
	if swaps, _ := os.ReadFile("/proc/swaps"); (rep.Facts.SwapTotalKB > 0) != (strings.Count(strings.TrimSpace(string(swaps)), "\n") > 0) {
		t.Errorf("doctor says swap %d KiB; /proc/swaps:\n%s", rep.Facts.SwapTotalKB, swaps)
	}
	if rep.Facts.FsyncP99Millis <= 0 {
		t.Error("doctor measured no fsync latency")
	}
	got := map[string]bool{}
	for _, f := range rep.Findings {
		got[f.ID+" "+f.Object] = true
	}
	for _, want := range []string{"CL-RES-001 Deployment default/app", "CL-LB-001 Service default/pending-lb", "CL-PVC-001 PersistentVolumeClaim default/stuck"} {
		if !got[want] {
			t.Errorf("doctor did not report %s: %+v", want, rep.Findings)
		}
	}
	if got["CL-LB-001 Service default/kubernetes"] {
		t.Error("doctor reports the ClusterIP Service kubernetes as a pending LoadBalancer")
	}
	t.Logf("doctor took %.1f s", rep.Seconds)
	p.kill()
	mustCLI(t, "reset", "--data-dir", data, "--yes")
	if n := len(agent.Shims(runDir)); n != 0 {
		t.Errorf("%d container shims left after reset", n)
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, d := range []string{data, runDir} {
		if strings.Contains(string(mounts), d) {
			t.Errorf("mounts under %s left after reset", d)
		}
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("%s left after reset: %v", d, err)
		}
	}
	if _, err := net.InterfaceByName(agent.BridgeName); err == nil {
		t.Errorf("bridge %s left after reset", agent.BridgeName)
	}
}

// procsWithArgs returns the PIDs whose command line holds args in a row.
func procsWithArgs(t *testing.T, args ...string) []int {
	t.Helper()
	want := []byte("\x00" + strings.Join(args, "\x00") + "\x00")
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(cmd, want) {
			out = append(out, pid)
		}
	}
	return out
}

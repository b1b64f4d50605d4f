package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/cloudless-dev/cloudless/internal/agent"
	"github.com/cloudless-dev/cloudless/internal/controlplane"
	"github.com/cloudless-dev/cloudless/internal/datadir"
	"github.com/cloudless-dev/cloudless/internal/metrics"
)

// metricsBench compares the metrics API served inside the server with
// metrics-server run as its own process (the upstream binary, built from
// the same module, on the same certificates and port), each scraping the
// node while -pods pods run: memory and CPU of everything after -idle.
func metricsBench(ctx context.Context, data string) {
	server := filepath.Join(*bin, "cloudless")
	containerd := map[string][]string{"containerd": {"containerd", "--config", filepath.Join(data, "agent", "containerd.toml")}}
	run := func(tag string, extraArgs []string, separate bool) result {
		procs := &group{}
		t0 := time.Now()
		procs.start("cloudless", server, append(serverArgs(data, false), extraArgs...)...)
		cs := waitAPI(ctx, data)
		waitNodeReady(ctx, cs, t0)
		if separate {
			p := func(parts ...string) string { return filepath.Join(append([]string{data, "server"}, parts...)...) }
			procs.start("metrics-server", filepath.Join(*upstream, "metrics-server"),
				"--secure-port="+fmt.Sprint(metrics.Port), "--bind-address=127.0.0.1",
				"--tls-cert-file="+p("tls", "metrics-serving.crt"), "--tls-private-key-file="+p("tls", "metrics-serving.key"),
				"--kubeconfig="+p("cred", "metrics-client.kubeconfig"),
				"--authentication-kubeconfig="+p("cred", "metrics-client.kubeconfig"), "--authorization-kubeconfig="+p("cred", "metrics-client.kubeconfig"),
				"--client-ca-file="+p("tls", "ca.crt"), "--requestheader-client-ca-file="+p("tls", "front-proxy-ca.crt"),
				"--requestheader-allowed-names=front-proxy-client", "--kubelet-certificate-authority="+p("tls", "ca.crt"),
				"--kubelet-preferred-address-types=InternalIP,Hostname", "--metric-resolution="+metrics.DefaultResolution.String())
		}
		runPods(ctx, cs, data)
		waitPodMetrics(ctx, cs, tag)
		var r result
		r.rss, r.pss, r.cpu = measureIdle(procs, containerd)
		procs.stop()
		agent.KillShims(datadir.Of(data).RunDir())
		return r
	}
	// The node needs an address that is not loopback: the kubelet gives
	// a loopback node IP no InternalIP, and the metrics API scrapes
	// kubelets at their InternalIP. This machine's own address stays on
	// this machine.
	ip, err := controlplane.DefaultAddress()
	if err != nil {
		fatalf("this machine's address: %v", err)
	}
	addr := []string{"--advertise-address", ip.String()}
	ours := run("in-process", addr, false)
	theirs := run("metrics-server", append(addr, "--disable", controlplane.ComponentMetrics), true)
	if err := writeMetrics(ours, theirs); err != nil {
		fatalf("%v", err)
	}
}

// runPods makes sure -pods pods of the app run (created once; after a
// restart the kubelet starts them again).
func runPods(ctx context.Context, cs *kubernetes.Clientset, data string) {
	if l, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{}); err == nil && len(l.Items) == 0 {
		run(filepath.Join(*bin, "cloudless"), "images", "import", "--data-dir", data, *appTar)
		for i := range *pods {
			createPod(ctx, cs, appPod(fmt.Sprintf("m-%d", i)))
		}
	}
	for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(200 * time.Millisecond) {
		l, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
		running := 0
		if err == nil {
			for _, p := range l.Items {
				if p.Status.Phase == corev1.PodRunning {
					running++
				}
			}
		}
		if running == *pods {
			return
		}
		if time.Now().After(deadline) {
			fatalf("%d of %d pods Running after 3 minutes", running, *pods)
		}
	}
}

// waitPodMetrics waits until the metrics API, through kube-apiserver, has
// the node and every pod: the path kubectl top and HPAs take.
func waitPodMetrics(ctx context.Context, cs *kubernetes.Clientset, tag string) {
	t0 := time.Now()
	for deadline := t0.Add(3 * time.Minute); ; time.Sleep(time.Second) {
		nodeList, err1 := cs.RESTClient().Get().AbsPath("/apis/metrics.k8s.io/v1beta1/nodes").DoRaw(ctx)
		podList, err2 := cs.RESTClient().Get().AbsPath("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods").DoRaw(ctx)
		if err1 == nil && err2 == nil && strings.Contains(string(nodeList), `"name":"`+nodeName+`"`) && strings.Count(string(podList), `"name":"m-`) >= *pods {
			log.Printf("%s: metrics for the node and %d pods after %s", tag, *pods, time.Since(t0).Round(time.Second))
			return
		}
		if time.Now().After(deadline) {
			fatalf("%s: no metrics for the node and all pods after 3 minutes: %v %v", tag, err1, err2)
		}
	}
}

func writeMetrics(ours, theirs result) error {
	host, _ := os.Hostname()
	date := time.Now().UTC().Format("2006-01-02")
	path := filepath.Join(*out, fmt.Sprintf("metrics-%s-%s.md", date, *machine))
	mib := func(b int64) float64 { return float64(b) / (1 << 20) }
	md := fmt.Sprintf("# Metrics API, %s, %s\n\n`ONLY_METRICS=1 sudo bench/agent/run.sh` (%d pods, %s idle).\n\n", date, host, *pods, *idle) +
		"A one-machine cluster (`cloudless server`, its agent, containerd) with the pods running and their metrics served through kube-apiserver. " +
		"In-process: the server's own metrics API (metrics-server v0.8.0 as a library). Separate: `cloudless server --disable metrics` and the upstream metrics-server v0.8.0 binary, built in its own module on the Kubernetes modules it pins, on the same certificates, port and 15 s resolution.\n\n" +
		"| Metric | In-process | Separate metrics-server | Ratio |\n|---|---|---|---|\n"
	for _, r := range []struct {
		name string
		a, b float64
		unit string
	}{
		{fmt.Sprintf("memory (PSS) after %s, all processes", *idle), mib(total(ours.pss)), mib(total(theirs.pss)), "MiB"},
		{fmt.Sprintf("RSS after %s, all processes", *idle), mib(total(ours.rss)), mib(total(theirs.rss)), "MiB"},
		{"CPU in the second half of the idle period", ours.cpu.Seconds(), theirs.cpu.Seconds(), "s"},
	} {
		md += fmt.Sprintf("| %s | %.2f %s | %.2f %s | %.2f× |\n", r.name, r.a, r.unit, r.b, r.unit, r.a/r.b)
	}
	md += fmt.Sprintf("\nPSS by process: in-process %s; separate %s, metrics-server %.0f MiB.\n\nTarget (issue 14): the metrics path's memory at most metrics-server's.\n",
		byProc(ours.pss), byProc(theirs.pss), mib(theirs.pss["metrics-server"]))
	log.Printf("wrote %s", path)
	return os.WriteFile(path, []byte(md), 0o644)
}

package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/cloudless-dev/cloudless/internal/datadir"
	authdns "github.com/cloudless-dev/cloudless/internal/dns"
	"github.com/cloudless-dev/cloudless/internal/lb"
)

// changeToVisible runs cloudless server with its authoritative DNS and
// times annotated Services from creation to the first answer.
func changeToVisible(ctx context.Context, dir string) []time.Duration {
	data := filepath.Join(dir, "data")
	dnsAddr := fmt.Sprintf("127.0.0.1:%d", freePort())
	cmd := exec.CommandContext(ctx, *bin, "server", "--data-dir", data, "--disable-agent", "--bind-address", "127.0.0.1",
		"--https-listen-port", fmt.Sprint(freePort()), "--dns-listen", dnsAddr)
	logf, err := os.Create(filepath.Join(dir, "server.log"))
	must(err)
	cmd.Stdout, cmd.Stderr = logf, logf
	must(cmd.Start())
	defer func() { cmd.Process.Kill(); cmd.Wait() }()

	var cs *kubernetes.Clientset
	var dyn *dynamic.DynamicClient
	deadline := time.Now().Add(4 * time.Minute)
	for {
		if rc, err := clientcmd.BuildConfigFromFlags("", datadir.Of(data).AdminKubeconfig()); err == nil {
			cs = kubernetes.NewForConfigOrDie(rc)
			dyn = dynamic.NewForConfigOrDie(rc)
			if b, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx); err == nil && string(b) == "ok" {
				break
			}
		}
		if time.Now().After(deadline) {
			log.Fatalf("cloudless server not ready; see %s", logf.Name())
		}
		time.Sleep(250 * time.Millisecond) // polling for readiness
	}
	pool := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": lb.Group + "/v1beta1", "kind": "IPAddressPool",
		"metadata": map[string]any{"name": "bench", "namespace": lb.Namespace},
		"spec":     map[string]any{"addresses": []any{"198.51.100.0/24"}},
	}}
	for {
		_, err := dyn.Resource(lb.GVR("IPAddressPool")).Namespace(lb.Namespace).Create(ctx, pool, metav1.CreateOptions{})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			log.Fatalf("create pool: %v", err)
		}
		time.Sleep(250 * time.Millisecond) // the CRDs are installed after readyz
	}
	zoneCM := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "bench", Namespace: metav1.NamespaceSystem, Labels: map[string]string{authdns.ZoneLabel: "true"}},
		Data: map[string]string{authdns.ZoneOriginKey: origin, authdns.ZoneTextKey: "@ SOA ns1 hostmaster 1 3600 600 604800 60\n@ NS ns1\nns1 A 192.0.2.1\n"}}
	_, err = cs.CoreV1().ConfigMaps(metav1.NamespaceSystem).Create(ctx, zoneCM, metav1.CreateOptions{})
	must(err)
	waitAnswer(dnsAddr, "ns1."+origin)

	c := &dns.Client{Timeout: 200 * time.Millisecond}
	var out []time.Duration
	for i := range *changes {
		name := fmt.Sprintf("svc-%d", i)
		host := fmt.Sprintf("app-%d.%s", i, origin)
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default",
			Annotations: map[string]string{"external-dns.kubernetes.io/hostname": host}},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Ports: []corev1.ServicePort{{Port: 80}}}}
		if _, err := cs.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			log.Fatal(err)
		}
		start := time.Now()
		for {
			r, _, err := c.Exchange(new(dns.Msg).SetQuestion(host, dns.TypeA), dnsAddr)
			if err == nil && r.Rcode == dns.RcodeSuccess && len(r.Answer) == 1 && r.Answer[0].Header().Rrtype == dns.TypeA {
				break
			}
			if time.Since(start) > time.Minute {
				log.Fatalf("%s not visible after a minute; see %s", host, logf.Name())
			}
			time.Sleep(5 * time.Millisecond) // the measurement's resolution
		}
		out = append(out, time.Since(start))
	}
	return out
}

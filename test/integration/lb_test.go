package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"fmt"
	"github.com/cloudless-dev/cloudless/internal/controllers"
	"github.com/cloudless-dev/cloudless/internal/controlplane"
	"github.com/cloudless-dev/cloudless/internal/lb"
)

// TestLoadBalancerAllocation: MetalLB's documented manifests apply
// unchanged, and LoadBalancer Services get addresses from the pools by
// MetalLB's rules, every refusal visible on the Service.
func TestLoadBalancerAllocation(t *testing.T) {
	dir, err := os.MkdirTemp("", "cl-lb-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	_, cs, cfg := startServer(t, dir, freePort(t))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	kubectl := func(args ...string) (string, error) {
		cmd := exec.Command(cloudlessBin, append([]string{"kubectl"}, args...)...)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+controlplane.AdminKubeconfig(dir))
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	for _, f := range []string{"l2.yaml", "bgp.yaml", "bad-pool.yaml"} {
		if out, err := kubectl("apply", "-f", filepath.Join("testdata", "metallb", f)); err != nil {
			t.Fatalf("kubectl apply %s: %v\n%s", f, err, out)
		}
	}
	// Objects wrong in themselves are refused when written, each named
	// with its field.
	out, err := kubectl("apply", "-f", filepath.Join("testdata", "metallb", "rejected.yaml"))
	if err == nil {
		t.Errorf("rejected.yaml applied:\n%s", out)
	}
	for _, want := range []string{
		`IPAddressPool.metallb.io "not-an-address" is invalid: spec.addresses[0]: Invalid value: "192.168.10.0/33": each address must be a CIDR`,
		`IPAddressPool.metallb.io "mixed-range" is invalid: spec.addresses[0]`,
		`BGPPeer.metallb.io "asn-zero" is invalid: spec.myASN: Invalid value: 0`,
		`BGPPeer.metallb.io "asn-too-big" is invalid: spec.myASN: Invalid value: 4294967296`,
		`BGPPeer.metallb.io "router-by-name" is invalid: spec: Invalid value: spec.peerAddress must be the router's IP address`,
		`BGPAdvertisement.metallb.io "aggregation-33" is invalid: spec.aggregationLength: Invalid value: 33`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("applying rejected.yaml did not say %q:\n%s", want, out)
		}
	}
	// Served as MetalLB serves them: BGPPeer in v1beta2 and v1beta1.
	if out, err := kubectl("get", "bgppeers.v1beta1.metallb.io", "-n", lb.Namespace, "sample", "-o", "jsonpath={.spec.peerAddress}"); err != nil || out != "10.0.0.1" {
		t.Errorf("BGPPeer through v1beta1: %q %v", out, err)
	}
	dyn := dynamic.NewForConfigOrDie(cfg)
	bp, err := dyn.Resource(controllers.PoolGVR).Namespace(lb.Namespace).Get(ctx, "bgp-pool", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if v, _, _ := unstructured.NestedBool(bp.Object, "spec", "avoidBuggyIPs"); !v {
		t.Errorf("bgp-pool lost avoidBuggyIPs: %v", bp.Object["spec"])
	}

	tcp := func(port int32) corev1.ServicePort {
		return corev1.ServicePort{Name: "tcp", Protocol: corev1.ProtocolTCP, Port: port}
	}
	udp := func(port int32) corev1.ServicePort {
		return corev1.ServicePort{Name: "udp", Protocol: corev1.ProtocolUDP, Port: port}
	}
	create := func(name string, ann map[string]string, ports ...corev1.ServicePort) {
		t.Helper()
		s := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Annotations: ann},
			Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": name}, Ports: ports},
		}
		if _, err := cs.CoreV1().Services("default").Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create Service %s: %v", name, err)
		}
	}

	// The documented layer 2 example: the first address of first-pool.
	create("web", nil, tcp(80))
	web := waitAllocated(t, ctx, cs, "web", metav1.ConditionTrue, lb.ReasonAllocated)
	if ip := ingressIP(web); ip != "192.168.1.240" || web.Annotations[lb.AnnotationPrefix+lb.AllocatedFromPool] != "first-pool" {
		t.Errorf("web: %s from %q, want 192.168.1.240 from first-pool", ip, web.Annotations[lb.AnnotationPrefix+lb.AllocatedFromPool])
	}
	// No NodePort by default (--lb-node-ports).
	if a := web.Spec.AllocateLoadBalancerNodePorts; a == nil || *a || web.Spec.Ports[0].NodePort != 0 {
		t.Errorf("web: allocateLoadBalancerNodePorts %v, nodePort %d: want false and none", a, web.Spec.Ports[0].NodePort)
	}
	waitEvent(t, ctx, cs, "web", "IPAllocated")

	// Sharing: TCP/53 and UDP/53 on one address under one key (one under
	// the deprecated prefix, which still works, with an event); TCP/53
	// again is refused.
	create("dns-tcp", map[string]string{lb.AnnotationPrefix + lb.AllowSharedIP: "dns"}, tcp(53))
	create("dns-udp", map[string]string{lb.DeprecatedPrefix + lb.AllowSharedIP: "dns"}, udp(53))
	dnsTCP := waitAllocated(t, ctx, cs, "dns-tcp", metav1.ConditionTrue, lb.ReasonAllocated)
	dnsUDP := waitAllocated(t, ctx, cs, "dns-udp", metav1.ConditionTrue, lb.ReasonAllocated)
	if ingressIP(dnsTCP) != ingressIP(dnsUDP) || ingressIP(dnsTCP) == ingressIP(web) {
		t.Errorf("dns-tcp %s and dns-udp %s: want one shared address, not web's %s", ingressIP(dnsTCP), ingressIP(dnsUDP), ingressIP(web))
	}
	waitEvent(t, ctx, cs, "dns-udp", lb.ReasonDeprecated)
	create("dns-tcp2", map[string]string{lb.AnnotationPrefix + lb.AllowSharedIP: "dns", lb.AnnotationPrefix + lb.LoadBalancerIPs: ingressIP(dnsTCP)}, tcp(53))
	refused := waitAllocated(t, ctx, cs, "dns-tcp2", metav1.ConditionFalse, lb.ReasonSharing)
	if len(refused.Status.LoadBalancer.Ingress) != 0 {
		t.Errorf("dns-tcp2 refused yet has %v", refused.Status.LoadBalancer.Ingress)
	}
	waitEvent(t, ctx, cs, "dns-tcp2", lb.ReasonSharing)

	// A pool with autoAssign false gives addresses only when asked, and
	// avoids .0: the first is .1; a /24 is not exhausted, so ask for one
	// outside every pool instead.
	create("bgp", map[string]string{lb.AnnotationPrefix + lb.AddressPool: "bgp-pool"}, tcp(80))
	if ip := ingressIP(waitAllocated(t, ctx, cs, "bgp", metav1.ConditionTrue, lb.ReasonAllocated)); ip != "192.168.10.1" {
		t.Errorf("bgp: %s, want 192.168.10.1 (bgp-pool avoids .0)", ip)
	}
	create("outside", map[string]string{lb.AnnotationPrefix + lb.LoadBalancerIPs: "192.168.77.1"}, tcp(80))
	waitAllocated(t, ctx, cs, "outside", metav1.ConditionFalse, lb.ReasonUnavailable)

	// Exhausted: first-pool has 11 addresses; web and dns use 2.
	for i := range 9 {
		create("fill-"+string(rune('a'+i)), nil, tcp(80))
	}
	create("one-too-many", nil, tcp(80))
	waitAllocated(t, ctx, cs, "one-too-many", metav1.ConditionFalse, lb.ReasonExhausted)
	// Freeing one (a Service that stops being a LoadBalancer) lets it in.
	fill, err := cs.CoreV1().Services("default").Get(ctx, "fill-a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fill.Spec.Type = corev1.ServiceTypeClusterIP
	fill.Spec.AllocateLoadBalancerNodePorts = nil
	if _, err := cs.CoreV1().Services("default").Update(ctx, fill, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitAllocated(t, ctx, cs, "one-too-many", metav1.ConditionTrue, lb.ReasonAllocated)
	poll(t, ctx, "fill-a cleared of its address and annotation", func() (bool, error) {
		s, err := cs.CoreV1().Services("default").Get(ctx, "fill-a", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		_, ann := s.Annotations[lb.AnnotationPrefix+lb.AllocatedFromPool]
		return len(s.Status.LoadBalancer.Ingress) == 0 && !ann && meta.FindStatusCondition(s.Status.Conditions, lb.ConditionAllocated) == nil, nil
	})

	// A bad pool is refused with an event naming it and why.
	poll(t, ctx, "a Warning event on IPAddressPool overlaps-pods naming the cluster CIDR", func() (bool, error) {
		evs, err := cs.CoreV1().Events(lb.Namespace).List(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("involvedObject.name", "overlaps-pods").String()})
		if err != nil {
			return false, err
		}
		for _, e := range evs.Items {
			if e.Reason == "InvalidPool" && strings.Contains(e.Message, "cluster CIDR") {
				return true, nil
			}
		}
		return false, nil
	})

	// A pool removed while in use: the Service keeps its address, and
	// says so.
	if err := dyn.Resource(controllers.PoolGVR).Namespace(lb.Namespace).Delete(ctx, "bgp-pool", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "Service bgp keeping 192.168.10.1 with its pool gone, and saying so", func() (bool, error) {
		s, err := cs.CoreV1().Services("default").Get(ctx, "bgp", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		c := meta.FindStatusCondition(s.Status.Conditions, lb.ConditionAllocated)
		return ingressIP(s) == "192.168.10.1" && c != nil && strings.Contains(c.Message, "pool is gone"), nil
	})
}

func ingressIP(s *corev1.Service) string {
	if len(s.Status.LoadBalancer.Ingress) == 0 {
		return ""
	}
	return s.Status.LoadBalancer.Ingress[0].IP
}

// waitAllocated waits for the Service's allocation condition to have
// status and reason, and returns the Service.
func waitAllocated(t *testing.T, ctx context.Context, cs kubernetes.Interface, name string, status metav1.ConditionStatus, reason string) *corev1.Service {
	t.Helper()
	var got *corev1.Service
	var last string
	poll(t, ctx, "Service "+name+" condition "+lb.ConditionAllocated+"="+string(status)+" ("+reason+")", func() (bool, error) {
		s, err := cs.CoreV1().Services("default").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		c := meta.FindStatusCondition(s.Status.Conditions, lb.ConditionAllocated)
		if c == nil {
			return false, nil
		}
		if last != c.Message {
			last = c.Message
			t.Logf("Service %s: %s %s: %s", name, c.Status, c.Reason, c.Message)
		}
		got = s
		return c.Status == status && c.Reason == reason, nil
	})
	return got
}

// waitEvent waits for the allocator's event reason on Service
// default/name.
func waitEvent(t *testing.T, ctx context.Context, cs kubernetes.Interface, name, reason string) {
	t.Helper()
	waitEventFromComponent(t, ctx, cs, "default", name, reason, controllers.LBComponent)
}

// waitEventFromComponent waits for an event reason on the object ns/name
// from component.
func waitEventFromComponent(t *testing.T, ctx context.Context, cs kubernetes.Interface, ns, name, reason, component string) {
	t.Helper()
	poll(t, ctx, fmt.Sprintf("event %s from %s on %s/%s", reason, component, ns, name), func() (bool, error) {
		evs, err := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("involvedObject.name", name).String()})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		for _, e := range evs.Items {
			if e.Reason == reason && e.Source.Component == component {
				return true, nil
			}
		}
		return false, nil
	})
}

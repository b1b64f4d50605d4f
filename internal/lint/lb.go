package lint

// Load-balancer pitfalls (MetalLB's annotations, as Cloudless reads
// them: internal/lb), from MetalLB's issue tracker and our seeds.

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/cloudless-dev/cloudless/internal/lb"
)

func init() { checks = append(checks, lbChecks...) }

var lbChecks = []Check{
	{ID: "CL-LB-002", Severity: Warning, Title: "deprecated MetalLB annotation prefix", Run: func(objs []*Object, report func(*Object, string, string)) {
		for _, o := range objs {
			s, ok := o.Obj.(*corev1.Service)
			if !ok {
				continue
			}
			for _, k := range slices.Sorted(maps.Keys(s.Annotations)) {
				if name, old := strings.CutPrefix(k, lb.DeprecatedPrefix); old {
					report(o, fmt.Sprintf("annotation %s uses the prefix MetalLB deprecated: it still works, but is dropped when MetalLB removes it", k), "rename it "+lb.AnnotationPrefix+name)
				}
			}
		}
	}},
	{ID: "CL-LB-003", Severity: Warning, Title: "spec.loadBalancerIP is deprecated", Run: func(objs []*Object, report func(*Object, string, string)) {
		for _, o := range objs {
			if s, ok := o.Obj.(*corev1.Service); ok && s.Spec.LoadBalancerIP != "" {
				report(o, "spec.loadBalancerIP is deprecated in Kubernetes and holds one address of one family", "use the annotation "+lb.AnnotationPrefix+lb.LoadBalancerIPs+": "+s.Spec.LoadBalancerIP)
			}
		}
	}},
	{ID: "CL-LB-004", Severity: Error, Title: "Services meant to share an address cannot", Run: func(objs []*Object, report func(*Object, string, string)) {
		type sharer struct {
			o *Object
			s *corev1.Service
		}
		byKey := map[string][]sharer{}
		for _, o := range objs {
			s, ok := o.Obj.(*corev1.Service)
			if !ok || s.Spec.Type != corev1.ServiceTypeLoadBalancer {
				continue
			}
			if k, _ := lb.Annotation(s.Annotations, lb.AllowSharedIP); k != "" {
				ips, _ := lb.Annotation(s.Annotations, lb.LoadBalancerIPs)
				byKey[s.Namespace+"\x00"+k+"\x00"+ips] = append(byKey[s.Namespace+"\x00"+k+"\x00"+ips], sharer{o, s})
			}
		}
		for _, group := range byKey {
			for i, b := range group {
				for _, a := range group[:i] {
					if why := shareClash(a.s, b.s); why != "" {
						report(b.o, fmt.Sprintf("shares its %s key with Service %s, but %s: one of them stays <pending>", lb.AllowSharedIP, a.s.Name, why), "give them different ports, the same externalTrafficPolicy (and with Local the same selector), or different keys")
					}
				}
			}
		}
	}},
	{ID: "CL-LB-005", Severity: Error, Title: "malformed loadBalancerIPs annotation", Run: func(objs []*Object, report func(*Object, string, string)) {
		for _, o := range objs {
			s, ok := o.Obj.(*corev1.Service)
			if !ok {
				continue
			}
			v, key := lb.Annotation(s.Annotations, lb.LoadBalancerIPs)
			if key == "" {
				continue
			}
			for _, w := range strings.Split(v, ",") {
				if _, err := netip.ParseAddr(strings.TrimSpace(w)); err != nil {
					report(o, fmt.Sprintf("%s: %q is not an IP address: the Service gets no address", key, w), "give addresses separated by commas, e.g. 192.168.1.240 or 192.168.1.240,fd00::240 (no CIDRs, no ranges)")
					break
				}
			}
		}
	}},
	{ID: "CL-LB-007", Severity: Warning, Title: "externalTrafficPolicy Local on a single pod", Run: func(objs []*Object, report func(*Object, string, string)) {
		for _, o := range objs {
			s, ok := o.Obj.(*corev1.Service)
			if !ok || s.Spec.Type != corev1.ServiceTypeLoadBalancer || s.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal || len(s.Spec.Selector) == 0 {
				continue
			}
			for _, w := range workloads(objs) {
				if w.o.Namespace != o.Namespace || !labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(w.labels)) {
					continue
				}
				if n, single := singleReplica(w.o.Obj); single {
					report(o, fmt.Sprintf("externalTrafficPolicy Local, and its pods come from %s %s with %s: only the one node running that pod announces the address, so every reschedule moves it (ARP caches, BGP withdrawals) and a node drain cuts it off", w.o.Kind, w.o.Name, n),
						"run 2 or more replicas spread over nodes (topologySpreadConstraints), or use externalTrafficPolicy Cluster if the pods need not see the client's address")
				}
			}
		}
	}},
}

// singleReplica reports whether a workload runs one pod (a bare Pod, or
// a Deployment or StatefulSet with replicas 1 or unset).
func singleReplica(obj any) (string, bool) {
	switch t := obj.(type) {
	case *corev1.Pod:
		return "a bare pod", true
	case *appsv1.Deployment:
		return "replicas 1", t.Spec.Replicas == nil || *t.Spec.Replicas == 1
	case *appsv1.StatefulSet:
		return "replicas 1", t.Spec.Replicas == nil || *t.Spec.Replicas == 1
	}
	return "", false
}

// shareClash says why two Services with one sharing key cannot share an
// address under MetalLB's rules, or "".
func shareClash(a, b *corev1.Service) string {
	for _, p := range a.Spec.Ports {
		for _, q := range b.Spec.Ports {
			if p.Port == q.Port && protocol(p) == protocol(q) {
				return fmt.Sprintf("both use %s/%d", protocol(p), p.Port)
			}
		}
	}
	local := func(s *corev1.Service) bool {
		return s.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal
	}
	if local(a) != local(b) {
		return "their externalTrafficPolicy differs"
	}
	if local(a) && !maps.Equal(a.Spec.Selector, b.Spec.Selector) {
		return "with externalTrafficPolicy Local they select different pods"
	}
	return ""
}

func protocol(p corev1.ServicePort) corev1.Protocol {
	if p.Protocol == "" {
		return corev1.ProtocolTCP
	}
	return p.Protocol
}

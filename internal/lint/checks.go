package lint

import (
	"fmt"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
)

// workload is an object that runs pods.
type workload struct {
	o           *Object
	spec        *corev1.PodSpec
	labels      map[string]string // the pods' labels
	longRunning bool
}

func workloadOf(o *Object) (workload, bool) {
	w := workload{o: o, longRunning: true}
	switch t := o.Obj.(type) {
	case *corev1.Pod:
		w.spec, w.labels = &t.Spec, t.Labels
	case *appsv1.Deployment:
		w.spec, w.labels = &t.Spec.Template.Spec, t.Spec.Template.Labels
	case *appsv1.StatefulSet:
		w.spec, w.labels = &t.Spec.Template.Spec, t.Spec.Template.Labels
	case *appsv1.DaemonSet:
		w.spec, w.labels = &t.Spec.Template.Spec, t.Spec.Template.Labels
	case *appsv1.ReplicaSet:
		w.spec, w.labels = &t.Spec.Template.Spec, t.Spec.Template.Labels
	case *batchv1.Job:
		w.spec, w.labels, w.longRunning = &t.Spec.Template.Spec, t.Spec.Template.Labels, false
	case *batchv1.CronJob:
		w.spec, w.labels, w.longRunning = &t.Spec.JobTemplate.Spec.Template.Spec, t.Spec.JobTemplate.Spec.Template.Labels, false
	default:
		return w, false
	}
	return w, true
}

func workloads(objs []*Object) []workload {
	var ws []workload
	for _, o := range objs {
		if w, ok := workloadOf(o); ok {
			ws = append(ws, w)
		}
	}
	return ws
}

func allContainers(s *corev1.PodSpec) []corev1.Container {
	return append(append([]corev1.Container(nil), s.InitContainers...), s.Containers...)
}

func services(objs []*Object) []*corev1.Service {
	var out []*corev1.Service
	for _, o := range objs {
		if s, ok := o.Obj.(*corev1.Service); ok {
			out = append(out, s)
		}
	}
	return out
}

func selectsPods(svc *corev1.Service, ns string, podLabels map[string]string) bool {
	return len(svc.Spec.Selector) > 0 && svc.Namespace == ns && labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(podLabels))
}

// removedAPIs are group versions Kubernetes 1.35 no longer serves.
var removedAPIs = map[string]string{
	"extensions/v1beta1 Deployment": "apps/v1", "extensions/v1beta1 DaemonSet": "apps/v1",
	"extensions/v1beta1 ReplicaSet": "apps/v1", "extensions/v1beta1 Ingress": "networking.k8s.io/v1",
	"extensions/v1beta1 NetworkPolicy": "networking.k8s.io/v1", "extensions/v1beta1 PodSecurityPolicy": "Pod Security Admission (namespace labels pod-security.kubernetes.io/*)",
	"apps/v1beta1 *": "apps/v1", "apps/v1beta2 *": "apps/v1",
	"policy/v1beta1 PodSecurityPolicy":   "Pod Security Admission (namespace labels pod-security.kubernetes.io/*)",
	"policy/v1beta1 PodDisruptionBudget": "policy/v1", "batch/v1beta1 CronJob": "batch/v1",
	"autoscaling/v2beta1 HorizontalPodAutoscaler": "autoscaling/v2", "autoscaling/v2beta2 HorizontalPodAutoscaler": "autoscaling/v2",
	"networking.k8s.io/v1beta1 Ingress": "networking.k8s.io/v1", "networking.k8s.io/v1beta1 IngressClass": "networking.k8s.io/v1",
	"discovery.k8s.io/v1beta1 EndpointSlice": "discovery.k8s.io/v1", "events.k8s.io/v1beta1 Event": "events.k8s.io/v1",
	"storage.k8s.io/v1beta1 CSIStorageCapacity": "storage.k8s.io/v1", "node.k8s.io/v1beta1 RuntimeClass": "node.k8s.io/v1",
	"rbac.authorization.k8s.io/v1beta1 *": "rbac.authorization.k8s.io/v1", "admissionregistration.k8s.io/v1beta1 *": "admissionregistration.k8s.io/v1",
	"apiextensions.k8s.io/v1beta1 CustomResourceDefinition": "apiextensions.k8s.io/v1",
	"flowcontrol.apiserver.k8s.io/v1beta1 *":                "flowcontrol.apiserver.k8s.io/v1", "flowcontrol.apiserver.k8s.io/v1beta2 *": "flowcontrol.apiserver.k8s.io/v1",
	"flowcontrol.apiserver.k8s.io/v1beta3 *": "flowcontrol.apiserver.k8s.io/v1",
}

var checks = []Check{
	{ID: "CL-API-001", Severity: Error, Title: "API version removed in Kubernetes 1.35", Run: func(objs []*Object, report func(*Object, string, string)) {
		for _, o := range objs {
			u, ok := o.Obj.(*unstructured.Unstructured)
			if !ok {
				continue
			}
			av := u.GetAPIVersion()
			to, found := removedAPIs[av+" "+o.Kind]
			if !found {
				to, found = removedAPIs[av+" *"]
			}
			if found {
				report(o, fmt.Sprintf("%s %s is no longer served: the apply fails", av, o.Kind), "use "+to)
			}
		}
	}},
	{ID: "CL-SEC-001", Severity: Warning, Title: "container may run as root", Run: func(objs []*Object, report func(*Object, string, string)) {
		for _, w := range workloads(objs) {
			pod := w.spec.SecurityContext
			for _, c := range allContainers(w.spec) {
				nonRoot, uid := false, int64(-1)
				if pod != nil {
					nonRoot = pod.RunAsNonRoot != nil && *pod.RunAsNonRoot
					if pod.RunAsUser != nil {
						uid = *pod.RunAsUser
					}
				}
				if sc := c.SecurityContext; sc != nil {
					if sc.RunAsNonRoot != nil {
						nonRoot = *sc.RunAsNonRoot
					}
					if sc.RunAsUser != nil {
						uid = *sc.RunAsUser
					}
				}
				if uid == 0 || (!nonRoot && uid < 0) {
					report(w.o, fmt.Sprintf("container %q may run as root: a breakout owns the node", c.Name), "set securityContext.runAsNonRoot: true (and runAsUser to a non-zero UID)")
				}
			}
		}
	}},
	{ID: "CL-SEC-002", Severity: Warning, Title: "privilege escalation allowed", Run: func(objs []*Object, report func(*Object, string, string)) {
		for _, w := range workloads(objs) {
			for _, c := range allContainers(w.spec) {
				if sc := c.SecurityContext; sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
					report(w.o, fmt.Sprintf("container %q allows privilege escalation: setuid binaries can gain root", c.Name), "set securityContext.allowPrivilegeEscalation: false")
				}
			}
		}
	}},
	{ID: "CL-SEC-003", Severity: Error, Title: "privileged container", Run: func(objs []*Object, report func(*Object, string, string)) {
		for _, w := range workloads(objs) {
			for _, c := range allContainers(w.spec) {
				if sc := c.SecurityContext; sc != nil && sc.Privileged != nil && *sc.Privileged {
					report(w.o, fmt.Sprintf("container %q is privileged: it has every device and capability of the node", c.Name), "remove securityContext.privileged; add only the capabilities needed")
				}
			}
		}
	}},
	{ID: "CL-RES-001", Severity: Warning, Title: "long-running workload without requests or limits (BestEffort)", Run: func(objs []*Object, report func(*Object, string, string)) {
		for _, w := range workloads(objs) {
			if !w.longRunning {
				continue
			}
			best := true
			for _, c := range w.spec.Containers {
				best = best && len(c.Resources.Requests) == 0 && len(c.Resources.Limits) == 0
			}
			if best {
				report(w.o, "no container has requests or limits: the pods are BestEffort, first evicted under pressure and scheduled blind", "set resources.requests (cpu, memory) on each container")
			}
		}
	}},
	{ID: "CL-RES-002", Severity: Warning, Title: "DaemonSet without guaranteed resources", Run: func(objs []*Object, report func(*Object, string, string)) {
		for _, o := range objs {
			ds, ok := o.Obj.(*appsv1.DaemonSet)
			if !ok {
				continue
			}
			for _, c := range ds.Spec.Template.Spec.Containers {
				r := c.Resources
				if r.Requests.Cpu().Cmp(*r.Limits.Cpu()) != 0 || r.Requests.Memory().Cmp(*r.Limits.Memory()) != 0 || r.Limits.Memory().IsZero() {
					report(o, fmt.Sprintf("container %q is not Guaranteed: a node agent evicted under pressure takes the node's function with it", c.Name), "set resources.limits equal to resources.requests for cpu and memory")
					break
				}
			}
		}
	}},
	{ID: "CL-PROBE-001", Severity: Warning, Title: "no readiness probe behind a Service", Run: func(objs []*Object, report func(*Object, string, string)) {
		svcs := services(objs)
		for _, w := range workloads(objs) {
			for _, s := range svcs {
				if !selectsPods(s, w.o.Namespace, w.labels) {
					continue
				}
				for _, c := range w.spec.Containers {
					if c.ReadinessProbe == nil {
						report(w.o, fmt.Sprintf("container %q has no readiness probe but Service %s sends it traffic: requests fail while it starts", c.Name, s.Name), "add readinessProbe")
					}
				}
				break
			}
		}
	}},
	{ID: "CL-IMG-001", Severity: Warning, Title: "latest or untagged image", Run: func(objs []*Object, report func(*Object, string, string)) {
		for _, w := range workloads(objs) {
			for _, c := range allContainers(w.spec) {
				if strings.Contains(c.Image, "@") {
					continue
				}
				name := c.Image[strings.LastIndex(c.Image, "/")+1:]
				tag := ""
				if i := strings.LastIndex(name, ":"); i >= 0 {
					tag = name[i+1:]
				}
				if tag != "" && tag != "latest" {
					continue
				}
				why := "pulled on every start (pullPolicy defaults to Always): without the registry (air-gapped, outage) pods cannot start"
				if c.ImagePullPolicy == corev1.PullIfNotPresent || c.ImagePullPolicy == corev1.PullNever {
					why = "with pullPolicy " + string(c.ImagePullPolicy) + ", each node keeps whatever it pulled first: nodes run different code"
				}
				report(w.o, fmt.Sprintf("container %q uses %q: %s", c.Name, c.Image, why), "pin a version tag or a digest (image: name:1.2.3 or name@sha256:…)")
			}
		}
	}},
	{ID: "CL-NET-001", Severity: Info, Title: "externalTrafficPolicy Cluster hides client addresses", Run: func(objs []*Object, report func(*Object, string, string)) {
		for _, o := range objs {
			s, ok := o.Obj.(*corev1.Service)
			if !ok || (s.Spec.Type != corev1.ServiceTypeLoadBalancer && s.Spec.Type != corev1.ServiceTypeNodePort) {
				continue
			}
			if s.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
				report(o, "externalTrafficPolicy is Cluster: pods see a node's address, not the client's, and traffic may take an extra hop", "set spec.externalTrafficPolicy: Local if the pods need client addresses (logs, allow-lists)")
			}
		}
	}},
	{ID: "CL-NET-002", Severity: Warning, Title: "pods that no NetworkPolicy covers where policies exist", Run: func(objs []*Object, report func(*Object, string, string)) {
		policies := map[string][]*networkingv1.NetworkPolicy{}
		for _, o := range objs {
			if p, ok := o.Obj.(*networkingv1.NetworkPolicy); ok {
				policies[o.Namespace] = append(policies[o.Namespace], p)
			}
		}
		for _, w := range workloads(objs) {
			ps := policies[w.o.Namespace]
			if len(ps) == 0 {
				continue
			}
			covered := false
			for _, p := range ps {
				sel, err := metav1.LabelSelectorAsSelector(&p.Spec.PodSelector)
				covered = covered || (err == nil && sel.Matches(labels.Set(w.labels)))
			}
			if !covered {
				report(w.o, fmt.Sprintf("namespace %s has NetworkPolicies but none selects these pods: they accept traffic from anywhere", w.o.Namespace), "add a default-deny policy (podSelector: {}) or one that selects these pods")
			}
		}
	}},
	{ID: "CL-NET-003", Severity: Warning, Title: "Service selects no pods", Run: func(objs []*Object, report func(*Object, string, string)) {
		ws := workloads(objs)
		inNS := map[string]bool{}
		for _, w := range ws {
			inNS[w.o.Namespace] = true
		}
		for _, o := range objs {
			s, ok := o.Obj.(*corev1.Service)
			if !ok || len(s.Spec.Selector) == 0 || !inNS[o.Namespace] {
				continue // without workloads in its namespace here, we cannot tell
			}
			s.Namespace = o.Namespace
			found := false
			for _, w := range ws {
				found = found || selectsPods(s, w.o.Namespace, w.labels)
			}
			if !found {
				report(o, fmt.Sprintf("selector %v matches no pod template here: the Service has no endpoints and connections are refused", s.Spec.Selector), "make spec.selector match the pod template's labels")
			}
		}
	}},
	{ID: "CL-NET-004", Severity: Info, Title: "LoadBalancer Service allocates NodePorts", Run: func(objs []*Object, report func(*Object, string, string)) {
		for _, o := range objs {
			s, ok := o.Obj.(*corev1.Service)
			if !ok || s.Spec.Type != corev1.ServiceTypeLoadBalancer {
				continue
			}
			switch a := s.Spec.AllocateLoadBalancerNodePorts; {
			case a == nil:
				report(o, "the Service leaves allocateLoadBalancerNodePorts unset: Cloudless defaults it to false, but upstream Kubernetes (and a Cloudless server with --lb-node-ports) opens a NodePort on every node's address, reachable from the whole LAN", "set spec.allocateLoadBalancerNodePorts: false, so the manifest means the same everywhere")
			case *a:
				report(o, "the Service also opens a NodePort on every node's address, reachable from the whole LAN", "set spec.allocateLoadBalancerNodePorts: false")
			}
		}
	}},
	{ID: "CL-DNS-001", Severity: Warning, Title: "high ndots multiplies DNS lookups", Run: func(objs []*Object, report func(*Object, string, string)) {
		for _, w := range workloads(objs) {
			if w.spec.DNSConfig == nil {
				continue
			}
			for _, opt := range w.spec.DNSConfig.Options {
				if n, err := strconv.Atoi(ptrOr(opt.Value, "")); opt.Name == "ndots" && err == nil && n >= 3 {
					report(w.o, fmt.Sprintf("ndots %s: every external name with fewer dots is tried against each search domain first, up to 4 extra queries per lookup", *opt.Value), "remove the ndots option (Cloudless sets 2) or use fully qualified names ending in a dot")
				}
			}
		}
	}},
	{ID: "CL-STS-001", Severity: Info, Title: "StatefulSet volumes outlive it", Run: func(objs []*Object, report func(*Object, string, string)) {
		for _, o := range objs {
			s, ok := o.Obj.(*appsv1.StatefulSet)
			if !ok || len(s.Spec.VolumeClaimTemplates) == 0 {
				continue
			}
			if p := s.Spec.PersistentVolumeClaimRetentionPolicy; p == nil || p.WhenDeleted == "" || p.WhenDeleted == appsv1.RetainPersistentVolumeClaimRetentionPolicyType {
				report(o, "its PersistentVolumeClaims stay after the StatefulSet is deleted or scaled down: disks fill with orphans, and a re-created set silently reuses old data", "set spec.persistentVolumeClaimRetentionPolicy.whenDeleted (Retain on purpose, or Delete)")
			}
		}
	}},
	{ID: "CL-HPA-001", Severity: Error, Title: "HPA and VPA fight over one workload", Run: func(objs []*Object, report func(*Object, string, string)) {
		vpas := map[string]bool{}
		for _, o := range objs {
			u, ok := o.Obj.(*unstructured.Unstructured)
			if !ok || o.Kind != "VerticalPodAutoscaler" {
				continue
			}
			mode, _, _ := unstructured.NestedString(u.Object, "spec", "updatePolicy", "updateMode")
			kind, _, _ := unstructured.NestedString(u.Object, "spec", "targetRef", "kind")
			name, _, _ := unstructured.NestedString(u.Object, "spec", "targetRef", "name")
			if mode != "Off" {
				vpas[o.Namespace+"/"+kind+"/"+name] = true
			}
		}
		for _, o := range objs {
			h, ok := o.Obj.(*autoscalingv2.HorizontalPodAutoscaler)
			if !ok || !vpas[o.Namespace+"/"+h.Spec.ScaleTargetRef.Kind+"/"+h.Spec.ScaleTargetRef.Name] {
				continue
			}
			for _, m := range h.Spec.Metrics {
				if m.Resource != nil && (m.Resource.Name == corev1.ResourceCPU || m.Resource.Name == corev1.ResourceMemory) {
					report(o, fmt.Sprintf("a VerticalPodAutoscaler also resizes %s %s on %s: each reacts to the other and replicas and requests oscillate", h.Spec.ScaleTargetRef.Kind, h.Spec.ScaleTargetRef.Name, m.Resource.Name), "scale the HPA on a custom metric, or set the VPA's updateMode: Off")
					break
				}
			}
		}
	}},
	{ID: "CL-SIDE-001", Severity: Warning, Title: "native sidecar without probes", Run: func(objs []*Object, report func(*Object, string, string)) {
		for _, w := range workloads(objs) {
			for _, c := range w.spec.InitContainers {
				if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways && c.StartupProbe == nil && c.ReadinessProbe == nil {
					report(w.o, fmt.Sprintf("sidecar %q (init container with restartPolicy Always) has no startup or readiness probe: the app containers start before it is ready", c.Name), "add a startupProbe (or readinessProbe) to the sidecar")
				}
			}
		}
	}},
}

func ptrOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

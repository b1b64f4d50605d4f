package doctor

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/cloudless-dev/cloudless/internal/clusterinfo"
	"github.com/cloudless-dev/cloudless/internal/lb"
	"github.com/cloudless-dev/cloudless/internal/lint"
	"github.com/cloudless-dev/cloudless/internal/network"
	"github.com/cloudless-dev/cloudless/internal/volumes"
	"slices"
)

// clusterChecks reads the cluster once and checks it. An unreachable
// cluster is one error naming the address and the fix.
func clusterChecks(ctx context.Context, cfg Config, r *reporter) error {
	rc, err := clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	if err != nil {
		return fmt.Errorf("kubeconfig %s: %w (give --kubeconfig, or --host-only)", cfg.Kubeconfig, err)
	}
	rc.Timeout = 5 * time.Second
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	body, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").Param("verbose", "true").DoRaw(ctx)
	if err != nil && len(body) == 0 {
		return fmt.Errorf("the cluster at %s does not answer: %v; is `cloudless server` running? (or check only this host with --host-only)", rc.Host, err)
	}
	if strings.Contains(string(body), "[-]etcd") {
		r.add("CL-DS-002", lint.Error, "datastore", "kube-apiserver reports its datastore unhealthy: writes fail", "check `cloudless server`'s log for datastore errors, and the disk (CL-HOST-005)")
	}
	all := metav1.ListOptions{ResourceVersion: "0"}
	nodes, err := cs.CoreV1().Nodes().List(ctx, all)
	if err != nil {
		return fmt.Errorf("list nodes: %w", err)
	}
	var objs []*lint.Object
	add := func(kind string, o metav1.Object, obj runtime.Object) {
		objs = append(objs, &lint.Object{Obj: obj, Kind: kind, Namespace: o.GetNamespace(), Name: o.GetName(), Annotations: o.GetAnnotations()})
	}
	deps, err := cs.AppsV1().Deployments("").List(ctx, all)
	if err != nil {
		return fmt.Errorf("list Deployments: %w", err)
	}
	for i := range deps.Items {
		add("Deployment", &deps.Items[i], &deps.Items[i])
	}
	if l, err := cs.AppsV1().StatefulSets("").List(ctx, all); err == nil {
		for i := range l.Items {
			add("StatefulSet", &l.Items[i], &l.Items[i])
		}
	}
	if l, err := cs.AppsV1().DaemonSets("").List(ctx, all); err == nil {
		for i := range l.Items {
			add("DaemonSet", &l.Items[i], &l.Items[i])
		}
	}
	var arpTargets []arpTarget
	if l, err := cs.CoreV1().Services("").List(ctx, all); err == nil {
		for i := range l.Items {
			s := &l.Items[i]
			add("Service", s, s)
			if s.Spec.Type == corev1.ServiceTypeLoadBalancer && s.Spec.LoadBalancerClass == nil {
				for _, in := range s.Status.LoadBalancer.Ingress {
					if ip, err := netip.ParseAddr(in.IP); err == nil {
						arpTargets = append(arpTargets, arpTarget{ip: ip, object: "Service " + s.Namespace + "/" + s.Name})
					}
				}
			}
			if s.Spec.Type == corev1.ServiceTypeLoadBalancer && len(s.Status.LoadBalancer.Ingress) == 0 {
				why := "the LoadBalancer Service has no address: it stays <pending> and nothing outside reaches it"
				if c := meta.FindStatusCondition(s.Status.Conditions, lb.ConditionAllocated); c != nil && c.Status == metav1.ConditionFalse {
					why += " (" + c.Reason + ": " + c.Message + ")"
				}
				if s.Spec.LoadBalancerClass == nil {
					r.add("CL-LB-001", lint.Warning, "Service "+s.Namespace+"/"+s.Name, why, "create an IPAddressPool in namespace "+lb.Namespace+" (MetalLB's format) with free LAN addresses, or use type NodePort")
				}
			}
		}
	}
	if len(arpTargets) > 0 {
		localAnnouncer(ctx, cs, nodes.Items, arpTargets)
		arpChecks(ctx, arpTargets, r)
	}
	if dyn, err := dynamic.NewForConfig(rc); err == nil {
		if l, err := dyn.Resource(lbPools).Namespace(lb.Namespace).List(ctx, all); err == nil {
			gws, _ := network.Gateways()
			poolChecks(l.Items, gws, lbReserved(ctx, cs, nodes.Items), r)
		}
	}
	if l, err := cs.NetworkingV1().NetworkPolicies("").List(ctx, all); err == nil {
		for i := range l.Items {
			add("NetworkPolicy", &l.Items[i], &l.Items[i])
		}
	}
	if l, err := cs.AutoscalingV2().HorizontalPodAutoscalers("").List(ctx, all); err == nil {
		for i := range l.Items {
			add("HorizontalPodAutoscaler", &l.Items[i], &l.Items[i])
		}
	}
	pods, err := cs.CoreV1().Pods("").List(ctx, all)
	if err != nil {
		return fmt.Errorf("list pods: %w", err)
	}
	for i := range pods.Items {
		if len(pods.Items[i].OwnerReferences) == 0 {
			add("Pod", &pods.Items[i], &pods.Items[i])
		}
	}
	if l, err := cs.CoreV1().PersistentVolumeClaims("").List(ctx, all); err == nil {
		for _, c := range l.Items {
			if c.Status.Phase == corev1.ClaimPending && time.Since(c.CreationTimestamp.Time) > cfg.PendingAfter {
				r.add("CL-PVC-001", lint.Warning, "PersistentVolumeClaim "+c.Namespace+"/"+c.Name, "the claim is Pending: its pods cannot start", "install a storage provisioner for its storageClassName, or create a matching PersistentVolume")
			}
		}
	}
	if l, err := cs.CoreV1().PersistentVolumes().List(ctx, all); err == nil {
		for _, pv := range l.Items {
			if pv.Annotations[volumes.SizeEnforcedAnnotation] == "false" && pv.Spec.Local != nil {
				r.add("CL-PVC-002", lint.Warning, "PersistentVolume "+pv.Name,
					fmt.Sprintf("the local volume %s on node %s is not capped at its size: its pods can fill the node's disk", pv.Spec.Local.Path, pv.Labels[volumes.NodeLabel]),
					"put the node's --volume-root on btrfs with quotas on, or on ext4/XFS mounted with prjquota; the claim's SizeNotEnforced event says what is missing")
			}
		}
	}
	r.findings = append(r.findings, lint.Run(objs)...)
	surgeChecks(deps.Items, pods.Items, nodes.Items, r)
	policyChecks(nodes.Items, r)
	dnsChecks(ctx, cs, 2*time.Second, r)
	return nil
}

var lbPools = lb.GVR("IPAddressPool")

// lbReserved are the ranges the allocator keeps pools out of: the
// cluster and Service CIDRs (from cluster-info) and the nodes' addresses.
func lbReserved(ctx context.Context, cs kubernetes.Interface, nodes []corev1.Node) []lb.Reserved {
	var out []lb.Reserved
	if cm, err := cs.CoreV1().ConfigMaps(clusterinfo.Namespace).Get(ctx, clusterinfo.Name, metav1.GetOptions{}); err == nil {
		if info, err := clusterinfo.Parse(cm.Data); err == nil {
			out = lb.ReservedCIDRs(info.ClusterCIDR, info.ServiceCIDR)
		}
	}
	ptrs := make([]*corev1.Node, len(nodes))
	for i := range nodes {
		ptrs[i] = &nodes[i]
	}
	return append(out, lb.ReservedNodes(ptrs)...)
}

// poolChecks reports IPAddressPools that the allocator refuses, by its
// own rules (CL-LB-008: malformed, or overlapping another pool, the
// cluster or Service CIDR, or a node's address), and pools holding one of
// this machine's gateways (CL-LB-006): the allocator would give the
// router's address to a Service, and the node announcing it would take
// the LAN's traffic for the router.
func poolChecks(pools []unstructured.Unstructured, gateways []netip.Addr, reserved []lb.Reserved, r *reporter) {
	refused := func(name string, err error) {
		r.add("CL-LB-008", lint.Error, "IPAddressPool "+lb.Namespace+"/"+name,
			fmt.Sprintf("the allocator refuses this pool and gives no address from it: %v", err),
			"fix spec.addresses: a pool may not overlap another pool, the cluster or Service CIDR, or a node's address; the pool's InvalidPool event says the same")
	}
	var all []*lb.Pool
	for _, u := range pools {
		var p lb.IPAddressPool
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &p); err != nil {
			refused(u.GetName(), err)
			continue
		}
		parsed, err := lb.ParsePool(&p)
		if err != nil {
			refused(p.Name, err)
			continue
		}
		all = append(all, parsed)
		for _, gw := range gateways {
			for _, rg := range parsed.Ranges {
				if rg.Contains(gw) {
					r.add("CL-LB-006", lint.Error, "IPAddressPool "+lb.Namespace+"/"+p.Name,
						fmt.Sprintf("its range %s holds %s, a gateway of this machine: a Service given that address would be announced in the router's place and cut the LAN off", rg, gw),
						"take the router's address out of spec.addresses (use a range that stops short of it)")
				}
			}
		}
	}
	_, bad := lb.Validate(all, reserved)
	names := make([]string, 0, len(bad))
	for n := range bad {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		refused(n, bad[n])
	}
}

// policyChecks reports nodes that say they do not enforce NetworkPolicy
// (network.PolicyCondition): their pods run without the policies that
// select them.
func policyChecks(nodes []corev1.Node, r *reporter) {
	for _, n := range nodes {
		for _, c := range n.Status.Conditions {
			if c.Type == network.PolicyCondition && c.Status == corev1.ConditionTrue {
				r.add("CL-NET-005", lint.Error, "Node "+n.Name,
					"NetworkPolicy is not enforced on this node ("+c.Message+"): pods already there run without their policies; new ones are kept off by the taint "+network.PolicyTaint,
					"read the node agent's log for the cause (often nftables: `nft list ruleset`); the agent retries by itself and the taint goes when it succeeds")
			}
		}
	}
}

// surgeChecks reports Deployments whose rolling update needs more free
// CPU or memory than the nodes have: the rollout stalls with pods Pending.
func surgeChecks(deps []appsv1.Deployment, pods []corev1.Pod, nodes []corev1.Node, r *reporter) {
	free := corev1.ResourceList{corev1.ResourceCPU: resource.Quantity{}, corev1.ResourceMemory: resource.Quantity{}}
	for _, n := range nodes {
		for k := range free {
			q := free[k]
			q.Add(n.Status.Allocatable[k])
			free[k] = q
		}
	}
	for _, p := range pods {
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed || p.Spec.NodeName == "" {
			continue
		}
		for _, c := range p.Spec.Containers {
			for k := range free {
				q := free[k]
				q.Sub(c.Resources.Requests[k])
				free[k] = q
			}
		}
	}
	for _, d := range deps {
		if d.Spec.Strategy.Type == appsv1.RecreateDeploymentStrategyType {
			continue
		}
		replicas := 1
		if d.Spec.Replicas != nil {
			replicas = int(*d.Spec.Replicas)
		}
		surgeVal := intstr.FromString("25%")
		if ru := d.Spec.Strategy.RollingUpdate; ru != nil && ru.MaxSurge != nil {
			surgeVal = *ru.MaxSurge
		}
		surge, err := intstr.GetScaledValueFromIntOrPercent(&surgeVal, replicas, true)
		if err != nil || surge == 0 {
			continue
		}
		for k, left := range free {
			need := resource.Quantity{}
			for _, c := range d.Spec.Template.Spec.Containers {
				q := c.Resources.Requests[k]
				need.Add(q)
			}
			total := need.DeepCopy()
			for range surge - 1 {
				total.Add(need)
			}
			if !need.IsZero() && total.Cmp(left) > 0 {
				r.add("CL-ROLL-001", lint.Warning, "Deployment "+d.Namespace+"/"+d.Name, fmt.Sprintf("a rolling update starts %d extra pods needing %s %s, and the nodes have %s free: the rollout stalls with pods Pending", surge, total.String(), k, left.String()),
					"lower spec.strategy.rollingUpdate.maxSurge (with maxUnavailable > 0), or free capacity")
			}
		}
	}
}

package controllers

// Cluster DNS runs on every node (internal/network), so its Service has
// no selector: this controller keeps the Service kube-system/kube-dns on
// the cluster DNS address, and its EndpointSlice, which lists the DNS
// address every node announced (network.AnnotationDNS), ready while the
// node is Ready.

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/utils/ptr"

	"github.com/cloudless-dev/cloudless/internal/network"
)

const (
	// DNSService is the cluster DNS Service in kube-system, named as
	// upstream's add-on names it.
	DNSService = "kube-dns"
	// DNSSlice is its EndpointSlice, owned by this controller.
	DNSSlice     = "kube-dns-cloudless"
	dnsManagedBy = "cluster-dns.cloudless.dev"
)

type clusterDNS struct {
	*queue
	client   kubernetes.Interface
	address  string
	nodes    corelisters.NodeLister
	services corelisters.ServiceLister
	slices   discoverylisters.EndpointSliceLister
}

// NewClusterDNS returns the constructor of the controller that keeps the
// cluster DNS Service on address, and its endpoints.
func NewClusterDNS(address string) func(Env) (Controller, error) {
	return func(env Env) (Controller, error) {
		nodeInf := env.Informers.Core().V1().Nodes()
		svcInf := env.Informers.Core().V1().Services()
		sliceInf := env.Informers.Discovery().V1().EndpointSlices()
		c := &clusterDNS{client: env.Client, address: address, nodes: nodeInf.Lister(), services: svcInf.Lister(), slices: sliceInf.Lister()}
		c.queue = newQueue("cluster-dns", env.Log, c.reconcile)
		// One key: every change that matters recomputes the one slice.
		always := func(any) string { return DNSService }
		ours := func(name string) func(any) string {
			return func(obj any) string {
				if o, ok := obj.(metav1.Object); ok && o.GetNamespace() == metav1.NamespaceSystem && o.GetName() == name {
					return DNSService
				}
				return ""
			}
		}
		if _, err := nodeInf.Informer().AddEventHandler(c.handler(always)); err != nil {
			return nil, err
		}
		if _, err := svcInf.Informer().AddEventHandler(c.handler(ours(DNSService))); err != nil {
			return nil, err
		}
		if _, err := sliceInf.Informer().AddEventHandler(c.handler(ours(DNSSlice))); err != nil {
			return nil, err
		}
		c.add(DNSService) // create the Service even before any node
		return c, nil
	}
}

func (c *clusterDNS) reconcile(ctx context.Context, _ string) error {
	if _, err := c.services.Services(metav1.NamespaceSystem).Get(DNSService); apierrors.IsNotFound(err) {
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: DNSService, Namespace: metav1.NamespaceSystem,
				Labels: map[string]string{"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS", "kubernetes.io/cluster-service": "true"}},
			Spec: corev1.ServiceSpec{ClusterIP: c.address, Ports: []corev1.ServicePort{
				{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53, TargetPort: intstr.FromInt32(network.DNSPort)},
				{Name: "dns-tcp", Protocol: corev1.ProtocolTCP, Port: 53, TargetPort: intstr.FromInt32(network.DNSPort)},
			}},
		}
		if _, err := c.client.CoreV1().Services(metav1.NamespaceSystem).Create(ctx, svc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create Service %s: %w", DNSService, err)
		}
	} else if err != nil {
		return err
	}
	nodes, err := c.nodes.List(labels.Everything())
	if err != nil {
		return err
	}
	want := dnsEndpoints(nodes)
	have, err := c.slices.EndpointSlices(metav1.NamespaceSystem).Get(DNSSlice)
	api := c.client.DiscoveryV1().EndpointSlices(metav1.NamespaceSystem)
	if apierrors.IsNotFound(err) {
		slice := &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Name: DNSSlice, Namespace: metav1.NamespaceSystem, Labels: map[string]string{
				discoveryv1.LabelServiceName: DNSService, discoveryv1.LabelManagedBy: dnsManagedBy}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints:   want,
			Ports: []discoveryv1.EndpointPort{
				{Name: ptr.To("dns"), Protocol: ptr.To(corev1.ProtocolUDP), Port: ptr.To[int32](network.DNSPort)},
				{Name: ptr.To("dns-tcp"), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To[int32](network.DNSPort)},
			},
		}
		if _, err := api.Create(ctx, slice, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create EndpointSlice %s: %w", DNSSlice, err)
		}
		return nil
	}
	if err != nil || endpointsEqual(have.Endpoints, want) {
		return err
	}
	slice := have.DeepCopy()
	slice.Endpoints = want
	if _, err := api.Update(ctx, slice, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update EndpointSlice %s: %w", DNSSlice, err)
	}
	return nil
}

// dnsEndpoints lists the nodes that announced a cluster DNS address,
// sorted by node name, ready while the node is Ready.
func dnsEndpoints(nodes []*corev1.Node) []discoveryv1.Endpoint {
	var eps []discoveryv1.Endpoint
	for _, n := range nodes {
		ap, err := netip.ParseAddrPort(n.Annotations[network.AnnotationDNS])
		if err != nil {
			continue
		}
		ready := false
		for _, c := range n.Status.Conditions {
			ready = ready || (c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue)
		}
		eps = append(eps, discoveryv1.Endpoint{Addresses: []string{ap.Addr().String()}, NodeName: ptr.To(n.Name),
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready)}})
	}
	slices.SortFunc(eps, func(a, b discoveryv1.Endpoint) int { return strings.Compare(*a.NodeName, *b.NodeName) })
	return eps
}

func endpointsEqual(a, b []discoveryv1.Endpoint) bool {
	return slices.EqualFunc(a, b, func(x, y discoveryv1.Endpoint) bool {
		return slices.Equal(x.Addresses, y.Addresses) && ptr.Deref(x.NodeName, "") == ptr.Deref(y.NodeName, "") &&
			ptr.Deref(x.Conditions.Ready, false) == ptr.Deref(y.Conditions.Ready, false)
	})
}

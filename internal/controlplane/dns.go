package controlplane

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/cloudless-dev/cloudless/internal/network"
)

const (
	dnsService    = "kube-dns"
	dnsSlice      = "kube-dns-cloudless"
	dnsManagedBy  = "cluster-dns.cloudless.dev"
	dnsSyncPeriod = 2 * time.Second
)

// runClusterDNS keeps the cluster DNS Service (on --cluster-dns, without a
// selector: its endpoints are nodes, not pods) and its EndpointSlice,
// which lists the DNS address of every Ready node that announced one.
func (s *Server) runClusterDNS(ctx context.Context, cs kubernetes.Interface) {
	for {
		if err := s.syncClusterDNS(ctx, cs); err != nil && ctx.Err() == nil {
			s.log.Warn("cluster DNS endpoints", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(dnsSyncPeriod):
		}
	}
}

func (s *Server) syncClusterDNS(ctx context.Context, cs kubernetes.Interface) error {
	svcs := cs.CoreV1().Services(metav1.NamespaceSystem)
	if _, err := svcs.Get(ctx, dnsService, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: dnsService, Namespace: metav1.NamespaceSystem,
				Labels: map[string]string{"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS", "kubernetes.io/cluster-service": "true"}},
			Spec: corev1.ServiceSpec{ClusterIP: s.cfg.ClusterDNS, Ports: []corev1.ServicePort{
				{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53, TargetPort: intstr.FromInt32(network.DNSPort)},
				{Name: "dns-tcp", Protocol: corev1.ProtocolTCP, Port: 53, TargetPort: intstr.FromInt32(network.DNSPort)},
			}},
		}
		if _, err := svcs.Create(ctx, svc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create Service %s: %w", dnsService, err)
		}
	} else if err != nil {
		return err
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{ResourceVersion: "0"})
	if err != nil {
		return err
	}
	var eps []discoveryv1.Endpoint
	for _, n := range nodes.Items {
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
	want := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: dnsSlice, Namespace: metav1.NamespaceSystem, Labels: map[string]string{
			discoveryv1.LabelServiceName: dnsService, discoveryv1.LabelManagedBy: dnsManagedBy}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   eps,
		Ports: []discoveryv1.EndpointPort{
			{Name: ptr.To("dns"), Protocol: ptr.To(corev1.ProtocolUDP), Port: ptr.To[int32](network.DNSPort)},
			{Name: ptr.To("dns-tcp"), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To[int32](network.DNSPort)},
		},
	}
	slicesAPI := cs.DiscoveryV1().EndpointSlices(metav1.NamespaceSystem)
	have, err := slicesAPI.Get(ctx, dnsSlice, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = slicesAPI.Create(ctx, want, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	if endpointsEqual(have.Endpoints, want.Endpoints) {
		return nil
	}
	have.Endpoints = want.Endpoints
	_, err = slicesAPI.Update(ctx, have, metav1.UpdateOptions{})
	return err
}

func endpointsEqual(a, b []discoveryv1.Endpoint) bool {
	return slices.EqualFunc(a, b, func(x, y discoveryv1.Endpoint) bool {
		return slices.Equal(x.Addresses, y.Addresses) && ptr.Deref(x.NodeName, "") == ptr.Deref(y.NodeName, "") &&
			ptr.Deref(x.Conditions.Ready, false) == ptr.Deref(y.Conditions.Ready, false)
	})
}

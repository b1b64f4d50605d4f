package controlplane

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
)

func TestDefaultService(t *testing.T) {
	for _, tc := range []struct {
		name string
		typ  corev1.ServiceType
		set  *bool
		want *bool
	}{
		{"LoadBalancer, unset: false", corev1.ServiceTypeLoadBalancer, nil, ptr.To(false)},
		{"LoadBalancer, asked for node ports: kept", corev1.ServiceTypeLoadBalancer, ptr.To(true), ptr.To(true)},
		{"ClusterIP: untouched", corev1.ServiceTypeClusterIP, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &corev1.Service{Spec: corev1.ServiceSpec{Type: tc.typ, AllocateLoadBalancerNodePorts: tc.set, Ports: []corev1.ServicePort{{Port: 80}}}}
			defaultService(s)
			if (s.Spec.AllocateLoadBalancerNodePorts == nil) != (tc.want == nil) || tc.want != nil && *s.Spec.AllocateLoadBalancerNodePorts != *tc.want {
				t.Errorf("allocateLoadBalancerNodePorts = %v, want %v", s.Spec.AllocateLoadBalancerNodePorts, tc.want)
			}
			if s.Spec.Ports[0].Protocol != corev1.ProtocolTCP {
				t.Error("upstream's defaults did not run (port protocol unset)")
			}
		})
	}
}

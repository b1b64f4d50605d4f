package controlplane

// Service defaults of our own in kube-apiserver: a new LoadBalancer
// Service that does not say otherwise gets allocateLoadBalancerNodePorts:
// false. On bare metal the load balancer sends traffic to the Service's
// address on a node (kube-proxy carries it), so a NodePort per Service
// only opens ports on every node that nothing needs. --lb-node-ports
// keeps upstream's default (true).
//
// This is a defaulting function, not an admission plugin as for ndots:
// upstream's defaulting sets the field to true while decoding the
// request, before admission, so a plugin could not tell a Service that
// asked for node ports from one that said nothing.

import (
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/kubernetes/pkg/api/legacyscheme"
	corev1defaults "k8s.io/kubernetes/pkg/apis/core/v1"
	"k8s.io/utils/ptr"
)

var serviceDefaultsOnce sync.Once

// registerServiceDefaults wraps upstream's Service defaulting in the
// API server's scheme (once per process).
func registerServiceDefaults(lbNodePorts bool) {
	if lbNodePorts {
		return
	}
	serviceDefaultsOnce.Do(func() {
		legacyscheme.Scheme.AddTypeDefaultingFunc(&corev1.Service{}, func(obj any) {
			defaultService(obj.(*corev1.Service))
		})
	})
}

func defaultService(s *corev1.Service) {
	if s.Spec.Type == corev1.ServiceTypeLoadBalancer && s.Spec.AllocateLoadBalancerNodePorts == nil {
		s.Spec.AllocateLoadBalancerNodePorts = ptr.To(false)
	}
	corev1defaults.SetObjectDefaults_Service(s)
}

package controllers

import (
	"testing"

	"k8s.io/apimachinery/pkg/runtime/schema"
)

func TestSystemObject(t *testing.T) {
	res := func(r string) schema.GroupVersionResource { return schema.GroupVersionResource{Resource: r} }
	for _, tc := range []struct {
		resource, ns, name string
		want               bool
	}{
		{"configmaps", "kube-system", "coredns", true},
		{"configmaps", "kube-public", "cluster-info", true},
		{"configmaps", "default", "app", false},
		{"clusterroles", "", "system:node", true},
		{"clusterroles", "", "cloudless:node-network", true},
		{"clusterroles", "", "my-role", false},
		{"apiservices", "", "v1beta1.metrics.k8s.io", true},
		{"customresourcedefinitions", "", "ipaddresspools.metallb.io", true},
		{"namespaces", "", "default", true},
		{"namespaces", "", "kube-system", true},
		{"namespaces", "", "apps", false},
		{"storageclasses", "", "fast", false},
	} {
		if got := systemObject(res(tc.resource), tc.ns, tc.name); got != tc.want {
			t.Errorf("systemObject(%s %s/%s) = %v, want %v", tc.resource, tc.ns, tc.name, got, tc.want)
		}
	}
}

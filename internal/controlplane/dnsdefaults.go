package controlplane

// DNSDefaults is an admission plugin of our own in kube-apiserver: it
// gives pods that use cluster DNS a lower ndots than the kubelet's 5, so
// that looking up an external name (api.example.com) costs one query, not
// one per search domain first. A pod that sets its own ndots keeps it.

import (
	"context"
	"io"
	"strconv"

	"k8s.io/apiserver/pkg/admission"
	genericoptions "k8s.io/apiserver/pkg/server/options"
	api "k8s.io/kubernetes/pkg/apis/core"
)

// DNSDefaultsPlugin is the plugin's name in --enable-admission-plugins.
const DNSDefaultsPlugin = "CloudlessDNSDefaults"

type dnsDefaults struct {
	*admission.Handler
	ndots int
}

var _ admission.MutationInterface = (*dnsDefaults)(nil)

// registerDNSDefaults registers the plugin (ndots <= 0: it changes nothing)
// and orders it before the webhooks, so that they see its result.
func registerDNSDefaults(o *genericoptions.AdmissionOptions, ndots int) {
	o.Plugins.Register(DNSDefaultsPlugin, func(io.Reader) (admission.Interface, error) {
		return &dnsDefaults{Handler: admission.NewHandler(admission.Create), ndots: ndots}, nil
	})
	o.RecommendedPluginOrder = append([]string{DNSDefaultsPlugin}, o.RecommendedPluginOrder...)
}

func (d *dnsDefaults) Admit(_ context.Context, a admission.Attributes, _ admission.ObjectInterfaces) error {
	if d.ndots <= 0 || a.GetResource().GroupResource() != api.Resource("pods") || a.GetSubresource() != "" {
		return nil
	}
	pod, ok := a.GetObject().(*api.Pod)
	if !ok || !usesClusterDNS(pod) {
		return nil
	}
	if _, mirror := pod.Annotations[api.MirrorPodAnnotationKey]; mirror {
		return nil // the kubelet's copy of a static pod must match its file
	}
	if pod.Spec.DNSConfig == nil {
		pod.Spec.DNSConfig = &api.PodDNSConfig{}
	}
	for _, o := range pod.Spec.DNSConfig.Options {
		if o.Name == "ndots" {
			return nil // the pod's own choice
		}
	}
	v := strconv.Itoa(d.ndots)
	pod.Spec.DNSConfig.Options = append(pod.Spec.DNSConfig.Options, api.PodDNSConfigOption{Name: "ndots", Value: &v})
	return nil
}

func usesClusterDNS(pod *api.Pod) bool {
	hostNet := pod.Spec.SecurityContext != nil && pod.Spec.SecurityContext.HostNetwork
	switch pod.Spec.DNSPolicy {
	case api.DNSClusterFirstWithHostNet:
		return true
	case api.DNSClusterFirst, "":
		return !hostNet
	}
	return false
}

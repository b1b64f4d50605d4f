package dns

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
)

// CRDResource is the CustomResourceDefinition resource.
var CRDResource = apiextensionsv1.SchemeGroupVersion.WithResource("customresourcedefinitions")

// ServedVersion returns the version of api the CRD serves that the DNS
// reads, or "" while the CRD is not established or serves none of them.
func ServedVersion(crd *apiextensionsv1.CustomResourceDefinition, api OptionalAPI) string {
	established := false
	for _, c := range crd.Status.Conditions {
		if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
			established = true
		}
	}
	if !established || crd.Spec.Group != api.Resource.Group || crd.Spec.Names.Plural != api.Resource.Resource {
		return ""
	}
	for _, want := range api.Versions {
		for _, v := range crd.Spec.Versions {
			if v.Name == want && v.Served {
				return want
			}
		}
	}
	return ""
}

// GVR is the api's resource at version.
func (a OptionalAPI) GVR(version string) schema.GroupVersionResource {
	return a.Resource.WithVersion(version)
}

// List reads the source objects from the API, for a one-off build (the
// dns command); the servers' controllers read them from informers.
func List(ctx context.Context, cs kubernetes.Interface, dyn dynamic.Interface) (Objects, *corev1.ConfigMap, error) {
	var objs Objects
	var serials *corev1.ConfigMap
	cms, err := cs.CoreV1().ConfigMaps(metav1.NamespaceSystem).List(ctx, metav1.ListOptions{LabelSelector: ZoneLabel})
	if err != nil {
		return objs, nil, fmt.Errorf("list zone ConfigMaps: %w", err)
	}
	for i := range cms.Items {
		if cms.Items[i].Name == SerialsConfigMap {
			serials = &cms.Items[i]
		}
		objs.ConfigMaps = append(objs.ConfigMaps, &cms.Items[i])
	}
	svcs, err := cs.CoreV1().Services("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return objs, nil, fmt.Errorf("list Services: %w", err)
	}
	for i := range svcs.Items {
		objs.Services = append(objs.Services, &svcs.Items[i])
	}
	ings, err := cs.NetworkingV1().Ingresses("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return objs, nil, fmt.Errorf("list Ingresses: %w", err)
	}
	for i := range ings.Items {
		objs.Ingresses = append(objs.Ingresses, &ings.Items[i])
	}
	objs.Custom = map[string][]*unstructured.Unstructured{}
	for _, api := range OptionalAPIs {
		u, err := dyn.Resource(CRDResource).Get(ctx, api.CRD(), metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return objs, nil, fmt.Errorf("read CRD %s: %w", api.CRD(), err)
		}
		var crd apiextensionsv1.CustomResourceDefinition
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &crd); err != nil {
			return objs, nil, fmt.Errorf("read CRD %s: %w", api.CRD(), err)
		}
		v := ServedVersion(&crd, api)
		if v == "" {
			continue
		}
		list, err := dyn.Resource(api.GVR(v)).List(ctx, metav1.ListOptions{})
		if err != nil {
			return objs, nil, fmt.Errorf("list %s: %w", api.Kind, err)
		}
		for i := range list.Items {
			objs.Custom[api.Kind] = append(objs.Custom[api.Kind], &list.Items[i])
		}
	}
	return objs, serials, nil
}

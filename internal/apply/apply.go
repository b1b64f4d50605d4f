// Package apply puts the objects Cloudless itself owns into the cluster
// (RBAC, admission policies, the metrics APIService, cluster-info, the
// local-volume StorageClass), one way for every caller:
//
//   - Apply: server-side apply under one field manager, FieldManager,
//     taking ownership of the fields it sets. An upgrade's changes land
//     on the next start; fields that others set on the same object stay.
//   - Create: create when absent, then leave the object to the operator
//     (the StorageClass, whose default mark an operator may remove).
//
// Objects are the typed structs of client-go, apiextensions or the
// aggregator; their kind comes from the scheme and their resource from
// the API server's discovery.
package apply

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiregv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
)

// FieldManager owns the fields Cloudless applies.
const FieldManager = "cloudless"

var scheme = runtime.NewScheme()

func init() {
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, apiextensionsv1.AddToScheme, apiregv1.AddToScheme} {
		if err := add(scheme); err != nil {
			panic(err)
		}
	}
}

// Client writes objects through the dynamic client.
type Client struct {
	dyn    dynamic.Interface
	mapper meta.RESTMapper
}

// New makes a Client for the cluster rc points at.
func New(rc *rest.Config) (*Client, error) {
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	dc, err := discovery.NewDiscoveryClientForConfig(rc)
	if err != nil {
		return nil, err
	}
	return &Client{dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))}, nil
}

// Apply server-side applies objs, in order, forcing ownership of their
// fields.
func (c *Client) Apply(ctx context.Context, objs ...runtime.Object) error {
	for _, o := range objs {
		u, r, err := c.resource(o)
		if err != nil {
			return err
		}
		if _, err := r.Apply(ctx, u.GetName(), u, metav1.ApplyOptions{FieldManager: FieldManager, Force: true}); err != nil {
			return fmt.Errorf("apply %s %s: %w", u.GetKind(), ref(u), err)
		}
	}
	return nil
}

// Create creates each of objs that does not exist yet and leaves the ones
// that do as they are.
func (c *Client) Create(ctx context.Context, objs ...runtime.Object) error {
	for _, o := range objs {
		u, r, err := c.resource(o)
		if err != nil {
			return err
		}
		if _, err := r.Create(ctx, u, metav1.CreateOptions{FieldManager: FieldManager}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create %s %s: %w", u.GetKind(), ref(u), err)
		}
	}
	return nil
}

// resource converts o to unstructured with its apiVersion and kind, and
// finds the client for its resource (namespaced or not).
func (c *Client) resource(o runtime.Object) (*unstructured.Unstructured, dynamic.ResourceInterface, error) {
	gvks, _, err := scheme.ObjectKinds(o)
	if err != nil {
		return nil, nil, fmt.Errorf("apply: %T is not a kind Cloudless knows: %w", o, err)
	}
	gvk := gvks[0]
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
	if err != nil {
		return nil, nil, fmt.Errorf("apply: convert %T: %w", o, err)
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetGroupVersionKind(gvk)
	// Server-side apply refuses these; typed structs carry them empty.
	unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
	unstructured.RemoveNestedField(u.Object, "status")
	mapping, err := c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return nil, nil, fmt.Errorf("apply %s %s: the API server does not serve it: %w", gvk.Kind, ref(u), err)
	}
	if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
		return u, c.dyn.Resource(mapping.Resource).Namespace(u.GetNamespace()), nil
	}
	return u, c.dyn.Resource(mapping.Resource), nil
}

func ref(u *unstructured.Unstructured) string {
	if ns := u.GetNamespace(); ns != "" {
		return ns + "/" + u.GetName()
	}
	return u.GetName()
}

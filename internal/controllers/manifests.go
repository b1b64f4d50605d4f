package controllers

// The manifests applier: keeps each stored manifest file
// (internal/manifests, ConfigMaps in kube-system) applied by server-side
// apply, and deletes what a file no longer holds, or everything it made
// once it is removed (a finalizer holds the ConfigMap until then). Errors
// are events on the file's ConfigMap naming file, line and reason; one
// bad document or file does not stop the others. Elected (Lease
// cloudless-manifests): one server applies.

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/record"

	"github.com/cloudless-dev/cloudless/internal/lint"
	"github.com/cloudless-dev/cloudless/internal/manifests"
)

// ManifestsComponent signs the applier's events; its field managers are
// ManifestsComponent:<ConfigMap of the file>.
const ManifestsComponent = "cloudless-manifests"

// Event reasons on a manifest file's ConfigMap.
const (
	ReasonManifestApplied  = "Applied"
	ReasonManifestInvalid  = "InvalidManifest"
	ReasonManifestRefused  = "Refused"
	ReasonManifestApplyErr = "ApplyFailed"
)

// ManifestsOnly narrows a group's informers to the manifest ConfigMaps.
var ManifestsOnly = []informers.SharedInformerOption{
	informers.WithNamespace(manifests.Namespace),
	informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = manifests.FileLabel + "=true" }),
}

type objRef struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace,omitempty"`
	Name       string `json:"name"`
}

func (r objRef) String() string {
	if r.Namespace == "" {
		return r.Kind + " " + r.Name
	}
	return r.Kind + " " + r.Namespace + "/" + r.Name
}

type manifestApplier struct {
	*queue
	client kubernetes.Interface
	dyn    dynamic.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
	files  corelisters.ConfigMapLister
	events record.EventRecorder
}

// NewManifests builds the applier; its group must use ManifestsOnly.
func NewManifests(env Env) (Controller, error) {
	inf := env.Informers.Core().V1().ConfigMaps()
	c := &manifestApplier{client: env.Client, dyn: env.Dynamic, files: inf.Lister(),
		mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(env.Client.Discovery()))}
	c.queue = newQueue("manifests", env.Log, c.reconcile)
	c.events = env.Recorder(ManifestsComponent)
	if _, err := inf.Informer().AddEventHandler(c.handler(func(obj any) string {
		if cm, ok := obj.(*corev1.ConfigMap); ok {
			return cm.Name
		}
		return ""
	})); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *manifestApplier) reconcile(ctx context.Context, name string) error {
	cm, err := c.files.ConfigMaps(manifests.Namespace).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	} else if err != nil {
		return err
	}
	file := cm.Annotations[manifests.FileAnnotation]
	var before []objRef
	if s := cm.Annotations[manifests.AppliedAnnotation]; s != "" {
		if err := json.Unmarshal([]byte(s), &before); err != nil {
			c.log.Warn("unreadable inventory of a manifest file; nothing of it will be pruned", "file", file, "err", err)
		}
	}
	if cm.DeletionTimestamp != nil {
		if !slices.Contains(cm.Finalizers, manifests.Finalizer) {
			return nil
		}
		if cm.Annotations[manifests.SkipAnnotation] != "true" {
			if left := c.prune(ctx, cm, before, nil); len(left) > 0 {
				return fmt.Errorf("manifest %s removed: %d objects not deleted yet", file, len(left))
			}
		}
		cm = cm.DeepCopy()
		cm.Finalizers = slices.DeleteFunc(cm.Finalizers, func(f string) bool { return f == manifests.Finalizer })
		_, err := c.client.CoreV1().ConfigMaps(cm.Namespace).Update(ctx, cm, metav1.UpdateOptions{})
		return err
	}
	if !slices.Contains(cm.Finalizers, manifests.Finalizer) {
		cm = cm.DeepCopy()
		cm.Finalizers = append(cm.Finalizers, manifests.Finalizer)
		_, err := c.client.CoreV1().ConfigMaps(cm.Namespace).Update(ctx, cm, metav1.UpdateOptions{})
		return err // the update brings it back here
	}
	if cm.Annotations[manifests.SkipAnnotation] == "true" {
		return nil
	}
	if msg := cm.Annotations[manifests.ErrorAnnotation]; msg != "" {
		c.events.Eventf(cm, corev1.EventTypeWarning, ReasonManifestInvalid, "%s: %s; skipped", file, msg)
		return nil
	}
	objs, notes := lint.Parse(file, []byte(cm.Data[manifests.DataKey]))
	for _, n := range notes {
		c.events.Eventf(cm, corev1.EventTypeWarning, ReasonManifestInvalid, "%s: %s; this document is skipped, the others applied", n.Where(), n.Message)
	}
	var applied, failed []objRef
	for _, o := range objs {
		ref, err := c.apply(ctx, cm, o)
		switch {
		case err != nil && ref.Name == "":
			c.events.Eventf(cm, corev1.EventTypeWarning, ReasonManifestInvalid, "%s:%d: %v", file, o.Line, err)
		case err != nil:
			failed = append(failed, ref)
			reason := ReasonManifestApplyErr
			if refusal(err) {
				reason = ReasonManifestRefused
			}
			c.events.Eventf(cm, corev1.EventTypeWarning, reason, "%s:%d: %s: %v", file, o.Line, ref, err)
		default:
			applied = append(applied, ref)
		}
	}
	// What failed to apply this time is kept, not pruned: it may be a
	// passing error on an object that exists.
	keep := append(slices.Clone(applied), failed...)
	left := c.prune(ctx, cm, before, keep)
	inventory := append(slices.Clone(applied), left...)
	for _, r := range failed {
		if slices.Contains(before, r) {
			inventory = append(inventory, r) // pruned later if it leaves the file
		}
	}
	js, _ := json.Marshal(inventory)
	if string(js) != cm.Annotations[manifests.AppliedAnnotation] {
		cm = cm.DeepCopy()
		cm.Annotations[manifests.AppliedAnnotation] = string(js)
		if _, err := c.client.CoreV1().ConfigMaps(cm.Namespace).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("record what manifest %s applied: %w", file, err)
		}
		c.events.Eventf(cm, corev1.EventTypeNormal, ReasonManifestApplied, "%s: %d objects applied, %d pruned", file, len(applied), len(before)-countIn(before, inventory))
	}
	return nil
}

func countIn(refs, in []objRef) int {
	n := 0
	for _, r := range refs {
		if slices.Contains(in, r) {
			n++
		}
	}
	return n
}

type refusedError struct{ msg string }

func (e refusedError) Error() string { return e.msg }

func refusal(err error) bool { _, ok := err.(refusedError); return ok }

// apply server-side applies one object of the file; the ref is empty when
// the object could not even be named (no kind, unknown kind).
func (c *manifestApplier) apply(ctx context.Context, cm *corev1.ConfigMap, o *lint.Object) (objRef, error) {
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(o.JSON); err != nil {
		return objRef{}, err
	}
	gvk := u.GroupVersionKind()
	mapping, err := c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		c.mapper.Reset() // a CRD applied since the last discovery
		mapping, err = c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	if err != nil {
		return objRef{}, fmt.Errorf("kind %s of %s is not served by this cluster (install its CRD first, or fix apiVersion): %v", gvk.Kind, gvk.GroupVersion(), err)
	}
	if u.GetName() == "" {
		return objRef{}, fmt.Errorf("%s without metadata.name (generateName cannot be kept applied)", gvk.Kind)
	}
	ns := ""
	if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
		ns = u.GetNamespace()
		if ns == "" {
			ns = metav1.NamespaceDefault
		}
	}
	u.SetNamespace(ns)
	ref := objRef{APIVersion: gvk.GroupVersion().String(), Kind: gvk.Kind, Namespace: ns, Name: u.GetName()}
	res := c.dyn.Resource(mapping.Resource).Namespace(ns)
	cur, err := res.Get(ctx, u.GetName(), metav1.GetOptions{})
	if err == nil && cur.GetLabels()[manifests.OwnerLabel] != cm.Name && systemObject(mapping.Resource, ns, u.GetName()) {
		return ref, refusedError{fmt.Sprintf("refused: it is a system object Cloudless or Kubernetes owns; change it through Cloudless's flags, or give your object another name")}
	}
	labels := u.GetLabels()
	if labels == nil {
		labels = map[string]string{}
	}
	labels[manifests.OwnerLabel] = cm.Name
	u.SetLabels(labels)
	// Each file its own field manager, so that two files setting one
	// object show as two managers.
	if _, err := res.Apply(ctx, u.GetName(), u, metav1.ApplyOptions{FieldManager: ManifestsComponent + ":" + cm.Name, Force: true}); err != nil {
		return ref, err
	}
	return ref, nil
}

// systemObject: what a manifest may not take over when it already exists
// (a manifest may create new objects there).
func systemObject(gvr schema.GroupVersionResource, ns, name string) bool {
	if ns == metav1.NamespaceSystem || ns == metav1.NamespacePublic {
		return true
	}
	if ns != "" {
		return false
	}
	return strings.HasPrefix(name, "system:") || strings.HasPrefix(name, "cloudless") ||
		gvr.Resource == "apiservices" || gvr.Resource == "customresourcedefinitions" || gvr.Resource == "namespaces" && (name == metav1.NamespaceDefault || strings.HasPrefix(name, "kube-"))
}

// prune deletes what before holds and keep does not, unless the object
// asks to be kept or another file took it over; it returns what it could
// not delete.
func (c *manifestApplier) prune(ctx context.Context, cm *corev1.ConfigMap, before, keep []objRef) []objRef {
	var left []objRef
	for _, r := range before {
		if slices.Contains(keep, r) {
			continue
		}
		gv, err := schema.ParseGroupVersion(r.APIVersion)
		if err != nil {
			continue
		}
		mapping, err := c.mapper.RESTMapping(schema.GroupKind{Group: gv.Group, Kind: r.Kind}, gv.Version)
		if err != nil {
			continue // the kind is gone, and its objects with it
		}
		res := c.dyn.Resource(mapping.Resource).Namespace(r.Namespace)
		cur, err := res.Get(ctx, r.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			continue
		} else if err != nil {
			left = append(left, r)
			continue
		}
		if cur.GetLabels()[manifests.OwnerLabel] != cm.Name || cur.GetAnnotations()[manifests.KeepAnnotation] == "true" {
			continue
		}
		if err := res.Delete(ctx, r.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			c.events.Eventf(cm, corev1.EventTypeWarning, ReasonManifestApplyErr, "%s: prune %s: %v", cm.Annotations[manifests.FileAnnotation], r, err)
			left = append(left, r)
		}
	}
	return left
}

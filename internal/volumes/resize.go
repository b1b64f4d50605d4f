package volumes

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/cloudless-dev/cloudless/internal/volumes/quota"
)

// resizer grows this node's volumes when their claims ask for more. For
// volumes that are neither CSI nor an expandable in-tree plugin, the
// controller-manager only says "waiting for an external controller to
// expand this PVC"; this is that controller. A directory needs no
// filesystem resize, so it finishes the claim's resize itself.
type resizer struct {
	p      *Provisioner
	cs     kubernetes.Interface
	claims corelisters.PersistentVolumeClaimLister
	pvs    corelisters.PersistentVolumeLister
	queue  workqueue.TypedRateLimitingInterface[string]
	synced []cache.InformerSynced
}

func newResizer(p *Provisioner, cs kubernetes.Interface, claims coreinformers.PersistentVolumeClaimInformer, pvs coreinformers.PersistentVolumeInformer) (*resizer, error) {
	r := &resizer{p: p, cs: cs, claims: claims.Lister(), pvs: pvs.Lister(),
		queue:  workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](), workqueue.TypedRateLimitingQueueConfig[string]{Name: "volume-resize"}),
		synced: []cache.InformerSynced{claims.Informer().HasSynced, pvs.Informer().HasSynced}}
	add := func(obj any) {
		if pvc, ok := obj.(*corev1.PersistentVolumeClaim); ok && pvc.Spec.VolumeName != "" {
			if key, err := cache.MetaNamespaceKeyFunc(pvc); err == nil {
				r.queue.Add(key)
			}
		}
	}
	_, err := claims.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: add, UpdateFunc: func(_, o any) { add(o) }})
	return r, err
}

func (r *resizer) run(ctx context.Context) {
	defer r.queue.ShutDown()
	if !cache.WaitForCacheSync(ctx.Done(), r.synced...) {
		return
	}
	go wait.UntilWithContext(ctx, func(ctx context.Context) {
		for r.next(ctx) {
		}
	}, time.Second)
	<-ctx.Done()
}

func (r *resizer) next(ctx context.Context) bool {
	key, quit := r.queue.Get()
	if quit {
		return false
	}
	defer r.queue.Done(key)
	if err := r.sync(ctx, key); err != nil {
		r.p.Log.Warn("resize volume", "claim", key, "err", err)
		r.queue.AddRateLimited(key)
		return true
	}
	r.queue.Forget(key)
	return true
}

func (r *resizer) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	pvc, err := r.claims.PersistentVolumeClaims(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	} else if err != nil {
		return err
	}
	pv, err := r.pvs.Get(pvc.Spec.VolumeName)
	if apierrors.IsNotFound(err) {
		return nil // not a volume of this node
	} else if err != nil {
		return err
	}
	if pv.Spec.Local == nil || pv.Labels[NodeLabel] != r.p.Node || pvc.Status.Phase != corev1.ClaimBound {
		return nil
	}
	want := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	have := pv.Spec.Capacity[corev1.ResourceStorage]
	if want.Cmp(have) > 0 {
		if !r.p.Roots.Within(pv.Spec.Local.Path) {
			return fmt.Errorf("volume %s: %s is not under node %s's roots", pv.Name, pv.Spec.Local.Path, r.p.Node)
		}
		err := quota.Resize(pv.Spec.Local.Path, want.Value())
		switch {
		case errors.Is(err, quota.ErrUnsupported):
			r.p.recorder.Event(pvc, corev1.EventTypeWarning, ReasonSizeNotEnforced, fmt.Sprintf("volume %s grows to %s, but that size is not enforced: %v", pv.Name, want.String(), err))
		case err != nil:
			r.p.recorder.Event(pvc, corev1.EventTypeWarning, ReasonResizeFailed, fmt.Sprintf("volume %s: %v", pv.Name, err))
			return err
		}
		pv = pv.DeepCopy()
		pv.Spec.Capacity[corev1.ResourceStorage] = want
		if _, err := r.cs.CoreV1().PersistentVolumes().Update(ctx, pv, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("update volume %s's capacity: %w", pv.Name, err)
		}
		r.p.Log.Info("resized volume", "pv", pv.Name, "claim", key, "size", want.String())
	} else {
		want = have
	}
	got := pvc.Status.Capacity[corev1.ResourceStorage]
	if got.Cmp(want) >= 0 && pvc.Status.AllocatedResourceStatuses == nil {
		return nil
	}
	return r.finish(ctx, pvc, want)
}

// finish records a done resize on the claim, as upstream's
// MarkFSResizeFinished does: its capacity, and no resize in progress.
func (r *resizer) finish(ctx context.Context, pvc *corev1.PersistentVolumeClaim, size resource.Quantity) error {
	pvc = pvc.DeepCopy()
	if pvc.Status.Capacity == nil {
		pvc.Status.Capacity = corev1.ResourceList{}
	}
	pvc.Status.Capacity[corev1.ResourceStorage] = size
	if pvc.Status.AllocatedResources == nil {
		pvc.Status.AllocatedResources = corev1.ResourceList{}
	}
	pvc.Status.AllocatedResources[corev1.ResourceStorage] = size
	delete(pvc.Status.AllocatedResourceStatuses, corev1.ResourceStorage)
	if len(pvc.Status.AllocatedResourceStatuses) == 0 {
		pvc.Status.AllocatedResourceStatuses = nil
	}
	var conds []corev1.PersistentVolumeClaimCondition
	for _, c := range pvc.Status.Conditions {
		if c.Type != corev1.PersistentVolumeClaimResizing && c.Type != corev1.PersistentVolumeClaimFileSystemResizePending {
			conds = append(conds, c)
		}
	}
	pvc.Status.Conditions = conds
	if _, err := r.cs.CoreV1().PersistentVolumeClaims(pvc.Namespace).UpdateStatus(ctx, pvc, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("record the resize on claim %s/%s: %w", pvc.Namespace, pvc.Name, err)
	}
	r.p.recorder.Event(pvc, corev1.EventTypeNormal, ReasonResized, fmt.Sprintf("volume is now %s", size.String()))
	return nil
}

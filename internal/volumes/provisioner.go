package volumes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"

	"github.com/cloudless-dev/cloudless/internal/volumes/quota"
)

// selectedNode is where the scheduler puts a WaitForFirstConsumer claim.
const selectedNode = "volume.kubernetes.io/selected-node"

// Provisioner provisions, grows and deletes the local volumes of one node.
type Provisioner struct {
	Node  string
	Roots Roots
	Log   *slog.Logger

	recorder record.EventRecorder
}

// Run serves the node's volumes until ctx ends, with the node's
// credentials (rc).
func (p *Provisioner) Run(ctx context.Context, rc *rest.Config) error {
	for name, dir := range p.Roots {
		if err := os.MkdirAll(dir, 0o711); err != nil {
			return fmt.Errorf("volume root %s: %w", name, err)
		}
		if err := quota.Check(dir); err != nil {
			p.Log.Warn("volume sizes are not enforced under this root", "root", name, "dir", dir, "why", err)
		}
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	p.recorder = broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: Component, Host: p.Node})

	all := informers.NewSharedInformerFactory(cs, 0)
	// Only this node's volumes: the node may not read the others' anyway
	// (see EnsureObjects), and needs none of them.
	mine := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.LabelSelector = NodeLabel + "=" + p.Node
	}))
	claims := all.Core().V1().PersistentVolumeClaims()
	pvs := mine.Core().V1().PersistentVolumes()
	classes := all.Storage().V1().StorageClasses()
	ctrl := controller.NewProvisionController(ctx, cs, ProvisionerName, p,
		controller.LeaderElection(false), // each node serves its own claims
		controller.AddFinalizer(true),
		controller.ClaimsInformer(claims.Informer()),
		controller.VolumesInformer(pvs.Informer()),
		controller.ClassesInformer(classes.Informer()),
		controller.Threadiness(2),
	)
	r, err := newResizer(p, cs, claims, pvs)
	if err != nil {
		return err
	}
	all.Start(ctx.Done())
	mine.Start(ctx.Done())
	go r.run(ctx)
	ctrl.Run(ctx)
	return ctx.Err()
}

// ShouldProvision takes the claims the scheduler put on this node.
func (p *Provisioner) ShouldProvision(_ context.Context, pvc *corev1.PersistentVolumeClaim) bool {
	return pvc.Annotations[selectedNode] == p.Node
}

// ShouldDelete takes this node's volumes only.
func (p *Provisioner) ShouldDelete(_ context.Context, pv *corev1.PersistentVolume) bool {
	return pv.Labels[NodeLabel] == p.Node
}

// SupportsBlock says no: volumes are directories.
func (p *Provisioner) SupportsBlock(context.Context) bool { return false }

// Provision makes the claim's directory, capped at its size where the
// filesystem can, and returns its PersistentVolume.
func (p *Provisioner) Provision(_ context.Context, o controller.ProvisionOptions) (*corev1.PersistentVolume, controller.ProvisioningState, error) {
	if o.SelectedNodeName != p.Node {
		return nil, controller.ProvisioningFinished, &controller.IgnoredError{Reason: "claim is for node " + o.SelectedNodeName}
	}
	if err := checkClaim(o.PVC); err != nil {
		return nil, controller.ProvisioningFinished, err
	}
	root, err := p.Roots.forClass(p.Node, o.StorageClass.Name, o.StorageClass.Parameters)
	if err != nil {
		return nil, controller.ProvisioningFinished, err
	}
	size := o.PVC.Spec.Resources.Requests[corev1.ResourceStorage]
	dir := filepath.Join(root, o.PVName)
	enforced := "true"
	err = quota.Create(dir, 0o777, size.Value())
	if errors.Is(err, os.ErrExist) {
		// An earlier try made it and failed later on: take it over.
		err = quota.Resize(dir, size.Value())
	}
	switch {
	case errors.Is(err, quota.ErrUnsupported):
		enforced = "false"
		p.recorder.Event(o.PVC, corev1.EventTypeWarning, ReasonSizeNotEnforced,
			fmt.Sprintf("volume %s on node %s is not capped at %s: %v", o.PVName, p.Node, size.String(), err))
	case err != nil:
		return nil, controller.ProvisioningNoChange, fmt.Errorf("make volume %s on node %s: %w", dir, p.Node, err)
	}
	p.Log.Info("provisioned volume", "pv", o.PVName, "claim", o.PVC.Namespace+"/"+o.PVC.Name, "dir", dir, "size", size.String(), "size-enforced", enforced)
	reclaim := corev1.PersistentVolumeReclaimDelete
	if o.StorageClass.ReclaimPolicy != nil {
		reclaim = *o.StorageClass.ReclaimPolicy
	}
	fs := corev1.PersistentVolumeFilesystem
	return &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{
			Name:        o.PVName,
			Labels:      map[string]string{NodeLabel: p.Node},
			Annotations: map[string]string{SizeEnforcedAnnotation: enforced},
		},
		Spec: corev1.PersistentVolumeSpec{
			PersistentVolumeReclaimPolicy: reclaim,
			AccessModes:                   o.PVC.Spec.AccessModes,
			VolumeMode:                    &fs,
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: size},
			MountOptions:                  o.StorageClass.MountOptions,
			PersistentVolumeSource:        corev1.PersistentVolumeSource{Local: &corev1.LocalVolumeSource{Path: dir}},
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: corev1.LabelHostname, Operator: corev1.NodeSelectorOpIn, Values: []string{p.Node}}},
			}}}},
		},
	}, controller.ProvisioningFinished, nil
}

// Delete removes a volume's directory and data; the library then deletes
// the PersistentVolume. It only ever removes a pvc-* directory directly
// under one of this node's roots.
func (p *Provisioner) Delete(_ context.Context, pv *corev1.PersistentVolume) error {
	if pv.Labels[NodeLabel] != p.Node {
		return &controller.IgnoredError{Reason: "volume of node " + pv.Labels[NodeLabel]}
	}
	if pv.Spec.Local == nil || !p.Roots.Within(pv.Spec.Local.Path) {
		return fmt.Errorf("volume %s: refusing to delete %v, which is not a volume directory under node %s's roots (%s)", pv.Name, pv.Spec.Local, p.Node, p.Roots)
	}
	if err := quota.Remove(pv.Spec.Local.Path); err != nil {
		return fmt.Errorf("delete volume %s: %w", pv.Name, err)
	}
	p.Log.Info("deleted volume", "pv", pv.Name, "dir", pv.Spec.Local.Path)
	return nil
}

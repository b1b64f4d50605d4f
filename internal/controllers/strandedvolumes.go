package controllers

// Local volumes live on one node (internal/volumes). When that node is
// deleted, its volumes are neither reused elsewhere nor deleted: this
// controller marks each one (volumes.NodeGoneAnnotation, the time it saw
// the node gone) and says so in a warning event on the volume and on its
// claim, with what the operator may do. If a node of that name comes back,
// the mark goes. Elected with the nodes group: one server reports.

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/cloudless-dev/cloudless/internal/volumes"
)

// StrandedVolumesComponent signs the events of this controller, as the
// nodes' provisioners sign theirs.
const StrandedVolumesComponent = volumes.Component

type strandedVolumes struct {
	*queue
	client kubernetes.Interface
	nodes  corelisters.NodeLister
	pvs    corelisters.PersistentVolumeLister
	events record.EventRecorder
}

func (c *strandedVolumes) patch(ctx context.Context, name string, patch []byte) error {
	_, err := c.client.CoreV1().PersistentVolumes().Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
	return err
}

// NewStrandedVolumes builds the controller that marks the local volumes of
// deleted nodes.
func NewStrandedVolumes(env Env) (Controller, error) {
	nodeInf := env.Informers.Core().V1().Nodes()
	pvInf := env.Informers.Core().V1().PersistentVolumes()
	c := &strandedVolumes{client: env.Client, nodes: nodeInf.Lister(), pvs: pvInf.Lister()}
	c.queue = newQueue("stranded-volumes", env.Log, c.reconcile)
	c.events = env.Recorder(StrandedVolumesComponent)
	if _, err := pvInf.Informer().AddEventHandler(c.handler(func(obj any) string {
		if pv, ok := obj.(*corev1.PersistentVolume); ok && pv.Labels[volumes.NodeLabel] != "" {
			return pv.Name
		}
		return ""
	})); err != nil {
		return nil, err
	}
	// A node added or deleted: revisit its volumes. Heartbeats change
	// nothing here.
	onNode := func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		n, ok := obj.(*corev1.Node)
		if !ok {
			return
		}
		pvs, _ := c.pvs.List(labels.SelectorFromSet(labels.Set{volumes.NodeLabel: n.Name}))
		for _, pv := range pvs {
			c.add(pv.Name)
		}
	}
	if _, err := nodeInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: onNode, DeleteFunc: onNode}); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *strandedVolumes) reconcile(ctx context.Context, name string) error {
	pv, err := c.pvs.Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	} else if err != nil {
		return err
	}
	node := pv.Labels[volumes.NodeLabel]
	_, err = c.nodes.Get(node)
	gone := apierrors.IsNotFound(err)
	if err != nil && !gone {
		return err
	}
	_, marked := pv.Annotations[volumes.NodeGoneAnnotation]
	switch {
	case gone && !marked:
		patch := fmt.Appendf(nil, `{"metadata":{"annotations":{%q:%q}}}`, volumes.NodeGoneAnnotation, time.Now().UTC().Format(time.RFC3339))
		if err := c.patch(ctx, name, patch); err != nil {
			return fmt.Errorf("mark volume %s of deleted node %s: %w", name, node, err)
		}
		msg := fmt.Sprintf("volume %s lives on node %s, which was deleted: its data stays there, and it is neither reused elsewhere nor deleted. "+
			"Rejoin the node under the same name to use it again; or, to give up the data, delete the claim (a new volume is made where its next pod runs) "+
			"and then this PersistentVolume", name, node)
		c.events.Event(pv, corev1.EventTypeWarning, volumes.ReasonNodeGone, msg)
		if ref := pv.Spec.ClaimRef; ref != nil {
			claim := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: ref.Name, Namespace: ref.Namespace, UID: ref.UID}}
			c.events.Event(claim, corev1.EventTypeWarning, volumes.ReasonNodeGone, msg)
		}
	case !gone && marked:
		patch := fmt.Appendf(nil, `{"metadata":{"annotations":{%q:null}}}`, volumes.NodeGoneAnnotation)
		if err := c.patch(ctx, name, patch); err != nil {
			return fmt.Errorf("unmark volume %s, whose node %s is back: %w", name, node, err)
		}
	}
	return nil
}

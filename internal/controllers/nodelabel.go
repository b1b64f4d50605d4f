package controllers

// Each server labels its own node as a control-plane node once the node
// registers (NodeRestriction forbids the kubelet to set that label on
// itself), and again if the label is removed. It runs on every server,
// unelected, with informers narrowed to that one node.

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
)

// ControlPlaneLabel marks the nodes that run a server.
const ControlPlaneLabel = "node-role.kubernetes.io/control-plane"

// OnlyNode narrows a group's informers to the node named name (and to
// objects with that name elsewhere, so a group using it should watch
// nodes only).
func OnlyNode(name string) informers.SharedInformerOption {
	return informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
	})
}

type controlPlaneLabel struct {
	*queue
	client kubernetes.Interface
	nodes  corelisters.NodeLister
}

// NewControlPlaneLabel returns the constructor of the controller that
// keeps ControlPlaneLabel on node; its group must use OnlyNode(node).
func NewControlPlaneLabel(node string) func(Env) (Controller, error) {
	return func(env Env) (Controller, error) {
		inf := env.Informers.Core().V1().Nodes()
		c := &controlPlaneLabel{client: env.Client, nodes: inf.Lister()}
		c.queue = newQueue("control-plane-label", env.Log, c.reconcile)
		if _, err := inf.Informer().AddEventHandler(c.handler(func(obj any) string {
			if o, ok := obj.(metav1.Object); ok && o.GetName() == node {
				return node
			}
			return ""
		})); err != nil {
			return nil, err
		}
		return c, nil
	}
}

func (c *controlPlaneLabel) reconcile(ctx context.Context, name string) error {
	node, err := c.nodes.Get(name)
	if apierrors.IsNotFound(err) {
		return nil // labelled when it registers
	}
	if err != nil {
		return err
	}
	if _, ok := node.Labels[ControlPlaneLabel]; ok {
		return nil
	}
	patch := fmt.Appendf(nil, `{"metadata":{"labels":{%q:""}}}`, ControlPlaneLabel)
	if _, err := c.client.CoreV1().Nodes().Patch(ctx, name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("label node %s %s: %w", name, ControlPlaneLabel, err)
	}
	return nil
}

package controllers

// The policy taint controller taints a node whose agent says it does not
// enforce NetworkPolicy (condition network.PolicyCondition True) with
// network.PolicyTaint, NoSchedule, and removes the taint once the node
// enforces it again. A node may not change its own taints (the
// NodeRestriction admission plugin forbids it), so this runs on the
// servers, elected, as upstream's node lifecycle controller does for its
// condition taints.

import (
	"context"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/utils/ptr"

	"github.com/cloudless-dev/cloudless/internal/network"
)

type policyTaint struct {
	*queue
	client kubernetes.Interface
	nodes  corelisters.NodeLister
}

// NewPolicyTaint builds the policy taint controller.
func NewPolicyTaint(env Env) (Controller, error) {
	inf := env.Informers.Core().V1().Nodes()
	c := &policyTaint{client: env.Client, nodes: inf.Lister()}
	c.queue = newQueue("policy-taint", env.Log, c.reconcile)
	if _, err := inf.Informer().AddEventHandler(c.handler(func(obj any) string {
		if n, ok := obj.(*corev1.Node); ok && wantsPolicyTaint(n) != hasPolicyTaint(n) {
			return n.Name
		}
		return ""
	})); err != nil {
		return nil, err
	}
	return c, nil
}

func wantsPolicyTaint(n *corev1.Node) bool {
	return slices.ContainsFunc(n.Status.Conditions, func(c corev1.NodeCondition) bool {
		return c.Type == network.PolicyCondition && c.Status == corev1.ConditionTrue
	})
}

func hasPolicyTaint(n *corev1.Node) bool {
	return slices.ContainsFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == network.PolicyTaint })
}

func (c *policyTaint) reconcile(ctx context.Context, name string) error {
	n, err := c.nodes.Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	want := wantsPolicyTaint(n)
	if want == hasPolicyTaint(n) {
		return nil
	}
	n = n.DeepCopy()
	n.Spec.Taints = slices.DeleteFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == network.PolicyTaint })
	if want {
		n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: network.PolicyTaint, Effect: corev1.TaintEffectNoSchedule, TimeAdded: ptr.To(metav1.Now())})
	}
	// Update, not patch: a conflict (the kubelet or another writer
	// changed the node) is retried from the fresh cache.
	if _, err := c.client.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("taint node %s %s=%v: %w", name, network.PolicyTaint, want, err)
	}
	c.log.Info("NetworkPolicy enforcement changed on a node", "node", name, "tainted", want)
	return nil
}

package network

import (
	"context"
	"encoding/json"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// PolicyCondition is the node condition saying whether this node enforces
// NetworkPolicy. True means it does not: the elected node controller then
// taints the node with PolicyTaint (a node may not taint itself), so no
// new pod lands where its policies would not hold, and doctor reports it.
const PolicyCondition corev1.NodeConditionType = "NetworkPolicyUnavailable"

// PolicyTaint keeps new pods off a node that does not enforce
// NetworkPolicy, while PolicyCondition is True.
const PolicyTaint = "cloudless.dev/network-policy-unavailable"

// Reasons of PolicyCondition.
const (
	ReasonPolicyEnforced    = "Enforced"
	ReasonPolicyStartFailed = "StartFailed"
)

// keepPolicy runs NetworkPolicy enforcement until ctx ends. When it
// cannot start, or stops, the node says so (PolicyCondition True) and it
// is tried again, after 5 s doubling to a minute; the condition turns
// False once the first rules are applied.
func (n *Network) keepPolicy(ctx context.Context, cs kubernetes.Interface) {
	backoff := 5 * time.Second
	for {
		started := time.Now()
		err := n.runPolicy(ctx, cs, func() {
			n.setPolicyCondition(ctx, cs, corev1.ConditionFalse, ReasonPolicyEnforced, "NetworkPolicy rules are applied on this node")
		})
		if ctx.Err() != nil {
			return
		}
		msg := "NetworkPolicy enforcement stopped"
		if err != nil {
			msg = "NetworkPolicy enforcement cannot run: " + err.Error()
		}
		n.log.Error("NetworkPolicy is not enforced on this node: the node is tainted "+PolicyTaint+" until it is; retrying", "err", err, "retry_in", backoff)
		n.setPolicyCondition(ctx, cs, corev1.ConditionTrue, ReasonPolicyStartFailed, msg+"; new pods are kept off this node (taint "+PolicyTaint+") until it is fixed; see the agent's log")
		if time.Since(started) > 2*time.Minute {
			backoff = 5 * time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Minute)
	}
}

// setPolicyCondition writes PolicyCondition on this node's status (the
// node's own credential may), logging a failure: the next attempt or
// change writes it again.
func (n *Network) setPolicyCondition(ctx context.Context, cs kubernetes.Interface, status corev1.ConditionStatus, reason, msg string) {
	now := metav1.Now()
	cond := corev1.NodeCondition{Type: PolicyCondition, Status: status, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: now}
	if node, err := cs.CoreV1().Nodes().Get(ctx, n.cfg.NodeName, metav1.GetOptions{}); err == nil {
		for _, c := range node.Status.Conditions {
			if c.Type == PolicyCondition && c.Status == status {
				cond.LastTransitionTime = c.LastTransitionTime
			}
		}
	}
	patch, _ := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.NodeCondition{cond}}})
	if _, err := cs.CoreV1().Nodes().PatchStatus(ctx, n.cfg.NodeName, patch); err != nil && ctx.Err() == nil {
		n.log.Warn("cannot record NetworkPolicy enforcement on the node", "condition", PolicyCondition, "status", status, "err", err)
	}
}

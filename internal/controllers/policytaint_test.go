package controllers

import (
	"context"
	"log/slog"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/cloudless-dev/cloudless/internal/network"
)

// TestPolicyTaint: a node that says it does not enforce NetworkPolicy is
// tainted NoSchedule, and untainted once it does; other taints stay.
func TestPolicyTaint(t *testing.T) {
	other := corev1.Taint{Key: "dedicated", Value: "db", Effect: corev1.TaintEffectNoSchedule}
	ours := corev1.Taint{Key: network.PolicyTaint, Effect: corev1.TaintEffectNoSchedule}
	node := func(cond corev1.ConditionStatus, taints ...corev1.Taint) *corev1.Node {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Spec: corev1.NodeSpec{Taints: taints}}
		if cond != "" {
			n.Status.Conditions = []corev1.NodeCondition{{Type: network.PolicyCondition, Status: cond}}
		}
		return n
	}
	for _, tc := range []struct {
		name      string
		node      *corev1.Node
		wantTaint bool
	}{
		{"not enforced", node(corev1.ConditionTrue, other), true},
		{"not enforced, already tainted", node(corev1.ConditionTrue, ours), true},
		{"enforced again", node(corev1.ConditionFalse, other, ours), false},
		{"no condition yet", node(""), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cs := fake.NewSimpleClientset(tc.node)
			f := informers.NewSharedInformerFactory(cs, 0)
			c, err := NewPolicyTaint(Env{Client: cs, Informers: f, Log: slog.Default()})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			f.Start(ctx.Done())
			f.WaitForCacheSync(ctx.Done())
			if err := c.(*policyTaint).reconcile(ctx, "n1"); err != nil {
				t.Fatal(err)
			}
			got, _ := cs.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
			if hasPolicyTaint(got) != tc.wantTaint {
				t.Errorf("taints %v, want %s: %v", got.Spec.Taints, network.PolicyTaint, tc.wantTaint)
			}
			for _, tt := range tc.node.Spec.Taints {
				if tt.Key != network.PolicyTaint && !containsTaint(got.Spec.Taints, tt.Key) {
					t.Errorf("taint %s was dropped", tt.Key)
				}
			}
		})
	}
}

func containsTaint(ts []corev1.Taint, key string) bool {
	for _, t := range ts {
		if t.Key == key {
			return true
		}
	}
	return false
}

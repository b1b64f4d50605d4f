package controllers

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"

	"github.com/cloudless-dev/cloudless/internal/volumes"
)

// TestStrandedVolumes: a local volume whose node is gone is marked and
// reported on itself and its claim; one whose node is there is left alone;
// a mark goes when the node comes back.
func TestStrandedVolumes(t *testing.T) {
	pv := func(name, node string, marked bool) *corev1.PersistentVolume {
		v := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{volumes.NodeLabel: node}, Annotations: map[string]string{}},
			Spec: corev1.PersistentVolumeSpec{ClaimRef: &corev1.ObjectReference{Namespace: "db", Name: "data-" + name}}}
		if marked {
			v.Annotations[volumes.NodeGoneAnnotation] = "2026-01-01T00:00:00Z"
		}
		return v
	}
	for _, tc := range []struct {
		name       string
		pv         *corev1.PersistentVolume
		wantMarked bool
		wantEvents int
	}{
		{"node gone", pv("pvc-1", "lost", false), true, 2},
		{"node there", pv("pvc-2", "n1", false), false, 0},
		{"node back", pv("pvc-3", "n1", true), false, 0},
		{"already marked", pv("pvc-4", "lost", true), true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cs := fake.NewSimpleClientset([]runtime.Object{node("n1"), tc.pv}...)
			f := informers.NewSharedInformerFactory(cs, 0)
			c := &strandedVolumes{client: cs, nodes: f.Core().V1().Nodes().Lister(), pvs: f.Core().V1().PersistentVolumes().Lister()}
			rec := record.NewFakeRecorder(10)
			c.events = rec
			c.queue = newQueue("test", slog.Default(), c.reconcile)
			ctx := context.Background()
			f.Start(ctx.Done())
			f.WaitForCacheSync(ctx.Done())
			if err := c.reconcile(ctx, tc.pv.Name); err != nil {
				t.Fatal(err)
			}
			got, err := cs.CoreV1().PersistentVolumes().Get(ctx, tc.pv.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if _, marked := got.Annotations[volumes.NodeGoneAnnotation]; marked != tc.wantMarked {
				t.Errorf("marked = %v, want %v (annotations %v)", marked, tc.wantMarked, got.Annotations)
			}
			if len(rec.Events) != tc.wantEvents {
				t.Fatalf("%d events, want %d", len(rec.Events), tc.wantEvents)
			}
			for range tc.wantEvents {
				if e := <-rec.Events; !strings.Contains(e, volumes.ReasonNodeGone) || !strings.Contains(e, "Rejoin the node") {
					t.Errorf("event %q, want %s with what to do", e, volumes.ReasonNodeGone)
				}
			}
		})
	}
}

package doctor

import (
	"context"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/cloudless-dev/cloudless/internal/lint"
	"github.com/cloudless-dev/cloudless/internal/pki"
)

func found(fs []lint.Finding) map[string]bool {
	m := map[string]bool{}
	for _, f := range fs {
		m[f.ID] = true
	}
	return m
}

// TestHostChecks reads fake /proc and /etc trees under testdata: broken/
// triggers each host check that reads them, healthy/ none.
func TestHostChecks(t *testing.T) {
	ids := []string{"CL-HOST-001", "CL-HOST-002", "CL-HOST-003", "CL-HOST-006", "CL-DNS-002"}
	for _, tt := range []struct {
		root string
		want bool
	}{{"testdata/broken", true}, {"testdata/healthy", false}} {
		res, err := Run(context.Background(), Config{Root: tt.root, DataDir: t.TempDir(), FsyncSamples: 5})
		if err != nil {
			t.Fatal(err)
		}
		got := found(res.Findings)
		for _, id := range ids {
			if got[id] != tt.want {
				t.Errorf("%s: %s reported = %v, want %v (%v)", tt.root, id, got[id], tt.want, res.Findings)
			}
		}
		if tt.want && (res.Facts.SwapTotalKB != 1048572 || res.Facts.IPForward != 0 || res.Facts.ConntrackCount != 250000) {
			t.Errorf("facts %+v do not match %s", res.Facts, tt.root)
		}
	}
}

func TestCertificateExpiry(t *testing.T) {
	for _, tt := range []struct {
		validity time.Duration
		want     bool
	}{{5 * 24 * time.Hour, true}, {365 * 24 * time.Hour, false}} {
		dir := t.TempDir()
		if _, err := pki.LoadOrCreateCA(dir, "ca", "test-ca", tt.validity); err != nil {
			t.Fatal(err)
		}
		var r reporter
		certChecks(dir, &r)
		if found(r.findings)["CL-HOST-007"] != tt.want {
			t.Errorf("validity %s: CL-HOST-007 = %v, want %v", tt.validity, !tt.want, tt.want)
		}
	}
}

func TestSurge(t *testing.T) {
	node := corev1.Node{Status: corev1.NodeStatus{Allocatable: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("4Gi")}}}
	dep := func(cpu string, surge int) appsv1.Deployment {
		d := appsv1.Deployment{}
		d.Name, d.Namespace = "web", "shop"
		d.Spec.Replicas = ptr.To[int32](4)
		d.Spec.Strategy.RollingUpdate = &appsv1.RollingUpdateDeployment{MaxSurge: ptr.To(intstr.FromInt32(int32(surge)))}
		d.Spec.Template.Spec.Containers = []corev1.Container{{Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu)}}}}
		return d
	}
	for _, tt := range []struct {
		d    appsv1.Deployment
		want bool
	}{{dep("1500m", 2), true}, {dep("500m", 1), false}} {
		var r reporter
		surgeChecks([]appsv1.Deployment{tt.d}, nil, []corev1.Node{node}, &r)
		if found(r.findings)["CL-ROLL-001"] != tt.want {
			t.Errorf("%v: CL-ROLL-001 = %v, want %v", tt.d.Spec.Template.Spec.Containers[0].Resources.Requests, !tt.want, tt.want)
		}
	}
}

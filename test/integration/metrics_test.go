package integration

import (
	"context"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// testMetrics: `kubectl top` shows both nodes and a pod, through the
// metrics API every server serves; an HPA on CPU scales a Deployment from
// 1 to 2 replicas while a pod burns a CPU, and back to 1 when it stops.
func testMetrics(t *testing.T, ctx context.Context, c *netCluster) {
	const ns = "metrics"
	if _, err := c.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.cs.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	labels := map[string]string{"app": "busy"}
	pod := appPod("", "", labels).Spec
	pod.NodeName = ""
	pod.Containers[0].Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m")}
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "busy", Namespace: ns},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](1), Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: pod}}}
	if _, err := c.cs.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var first string
	poll(t, ctx, "the Deployment's pod Ready", func() (bool, error) {
		l, err := c.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil || len(l.Items) != 1 {
			return false, err
		}
		for _, cond := range l.Items[0].Status.Conditions {
			if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
				first = l.Items[0].Name
				return true, nil
			}
		}
		return false, nil
	})

	poll(t, ctx, "kubectl top nodes lists both nodes", func() (bool, error) {
		out, err := c.tryIn(c.a, cloudlessBin, "kubectl", "top", "nodes", "--no-headers")
		return err == nil && strings.Contains(out, "node-a ") && strings.Contains(out, "node-b "), nil
	})
	poll(t, ctx, "kubectl top pods shows the pod", func() (bool, error) {
		out, err := c.tryIn(c.a, cloudlessBin, "kubectl", "top", "pods", "-n", ns, "--no-headers")
		return err == nil && strings.Contains(out, first+" "), nil
	})

	hpa := &autoscalingv2.HorizontalPodAutoscaler{ObjectMeta: metav1.ObjectMeta{Name: "busy", Namespace: ns},
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "busy"},
			MinReplicas:    ptr.To[int32](1), MaxReplicas: 2,
			Metrics: []autoscalingv2.MetricSpec{{Type: autoscalingv2.ResourceMetricSourceType, Resource: &autoscalingv2.ResourceMetricSource{
				Name: corev1.ResourceCPU, Target: autoscalingv2.MetricTarget{Type: autoscalingv2.UtilizationMetricType, AverageUtilization: ptr.To[int32](50)}}}},
			// Back down as soon as the load is gone (the default waits 5 min).
			Behavior: &autoscalingv2.HorizontalPodAutoscalerBehavior{ScaleDown: &autoscalingv2.HPAScalingRules{StabilizationWindowSeconds: ptr.To[int32](0)}},
		}}
	if _, err := c.cs.AutoscalingV2().HorizontalPodAutoscalers(ns).Create(ctx, hpa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "the HPA reads the pod's CPU", func() (bool, error) {
		h, err := c.cs.AutoscalingV2().HorizontalPodAutoscalers(ns).Get(ctx, "busy", metav1.GetOptions{})
		return err == nil && len(h.Status.CurrentMetrics) > 0, err
	})
	burn := func(seconds string) {
		if out, err := c.exec(ns+"/"+first, "get", "http://127.0.0.1:8080/burn?seconds="+seconds); err != nil {
			t.Fatalf("burn %s s in %s: %v %s", seconds, first, err, out)
		}
	}
	burn("900")
	replicas := func(want int32) func() (bool, error) {
		return func() (bool, error) {
			d, err := c.cs.AppsV1().Deployments(ns).Get(ctx, "busy", metav1.GetOptions{})
			return err == nil && d.Status.ReadyReplicas == want && *d.Spec.Replicas == want, err
		}
	}
	poll(t, ctx, "the HPA scales busy to 2 under load", replicas(2))
	burn("0")
	poll(t, ctx, "the HPA scales busy back to 1", replicas(1))
}

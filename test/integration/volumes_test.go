package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/cloudless-dev/cloudless/internal/agent"
	"github.com/cloudless-dev/cloudless/internal/testutil/loopfs"
	"github.com/cloudless-dev/cloudless/internal/volumes"
)

// loopBtrfs mounts a fresh btrfs, quotas on, at dir (on the host, before
// the node processes start, so that their private mount namespaces copy
// it) and unmounts it at cleanup.
func loopBtrfs(t *testing.T, dir string) string {
	t.Helper()
	if err := loopfs.Mount(t, dir, "btrfs", 256<<20, []string{"-q", "-f"}, "rw"); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("btrfs", "quota", "enable", dir).CombinedOutput(); err != nil {
		t.Fatalf("btrfs quota enable %s: %v\n%s", dir, err, out)
	}
	return dir
}

// testLocalVolumes: a StatefulSet with a pod on each node gets Bound local
// volumes there; data survives a pod's restart; node-b's btrfs caps a
// volume at its size, and growing the claim lets it write more; scale-down
// and delete follow the claims' retention policy, down to the
// directories; bad claims get events, and a node may not write another
// node's volumes.
func testLocalVolumes(t *testing.T, ctx context.Context, c *netCluster) {
	sc, err := c.cs.StorageV1().StorageClasses().Get(ctx, volumes.ClassName, metav1.GetOptions{})
	if err != nil || sc.Annotations["storageclass.kubernetes.io/is-default-class"] != "true" {
		t.Fatalf("StorageClass %s: %v, %v; want the default class", volumes.ClassName, sc, err)
	}
	const ns = "volumes"
	if _, err := c.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.cs.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })

	labels := map[string]string{"app": "db"}
	pod := appPod("", "", labels).Spec
	pod.NodeName = ""
	pod.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
	pod.Affinity = &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
		LabelSelector: &metav1.LabelSelector{MatchLabels: labels}, TopologyKey: corev1.LabelHostname}}}}
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: ns},
		Spec: appsv1.StatefulSetSpec{
			Replicas: ptr.To[int32](2), Selector: &metav1.LabelSelector{MatchLabels: labels},
			PodManagementPolicy: appsv1.ParallelPodManagement,
			Template:            corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: pod},
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{ObjectMeta: metav1.ObjectMeta{Name: "data"},
				Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
					Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("8Mi")}}}}},
			PersistentVolumeClaimRetentionPolicy: &appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{
				WhenScaled: appsv1.DeletePersistentVolumeClaimRetentionPolicyType, WhenDeleted: appsv1.DeletePersistentVolumeClaimRetentionPolicyType},
		},
	}
	if _, err := c.cs.AppsV1().StatefulSets(ns).Create(ctx, sts, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Each pod Ready on its own node, its claim Bound to a volume of that
	// node, in a directory that exists there.
	type vol struct{ node, pv, dir string }
	vols := map[string]vol{} // by pod
	podReady := func(name string, notUID types.UID) *corev1.Pod {
		var got *corev1.Pod
		poll(t, ctx, "pod "+ns+"/"+name+" Ready with its volume", func() (bool, error) {
			p, err := c.cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil || p.UID == notUID {
				return false, nil
			}
			for _, cond := range p.Status.Conditions {
				if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
					got = p
					return true, nil
				}
			}
			return false, nil
		})
		return got
	}
	for _, name := range []string{"db-0", "db-1"} {
		p := podReady(name, "")
		pvc, err := c.cs.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "data-"+name, metav1.GetOptions{})
		if err != nil || pvc.Status.Phase != corev1.ClaimBound {
			t.Fatalf("claim data-%s: %v, %v; want Bound", name, pvc.Status.Phase, err)
		}
		pv, err := c.cs.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if pv.Labels[volumes.NodeLabel] != p.Spec.NodeName || pv.Spec.Local == nil {
			t.Fatalf("volume %s of pod %s on %s: labels %v, source %+v; want a local volume of that node", pv.Name, name, p.Spec.NodeName, pv.Labels, pv.Spec.PersistentVolumeSource)
		}
		if _, err := os.Stat(pv.Spec.Local.Path); err != nil {
			t.Fatalf("volume %s's directory: %v", pv.Name, err)
		}
		vols[name] = vol{p.Spec.NodeName, pv.Name, pv.Spec.Local.Path}
	}
	if vols["db-0"].node == vols["db-1"].node {
		t.Fatalf("both pods on %s; the anti-affinity wants one per node", vols["db-0"].node)
	}
	onB, onA := "db-0", "db-1"
	if vols["db-1"].node == "node-b" {
		onB, onA = "db-1", "db-0"
	}
	if !strings.HasPrefix(vols[onB].dir, c.volumesB+"/") {
		t.Fatalf("node-b's volume in %s, want under its --volume-root %s", vols[onB].dir, c.volumesB)
	}
	// node-b's btrfs enforces sizes; whether node-a's filesystem does, its
	// volume's annotation and an event on its claim agree.
	pvB, _ := c.cs.CoreV1().PersistentVolumes().Get(ctx, vols[onB].pv, metav1.GetOptions{})
	if pvB.Annotations[volumes.SizeEnforcedAnnotation] != "true" {
		t.Errorf("node-b's volume: %s = %q, want true", volumes.SizeEnforcedAnnotation, pvB.Annotations[volumes.SizeEnforcedAnnotation])
	}
	pvA, _ := c.cs.CoreV1().PersistentVolumes().Get(ctx, vols[onA].pv, metav1.GetOptions{})
	if pvA.Annotations[volumes.SizeEnforcedAnnotation] == "false" {
		waitObjectEvent(t, ctx, c.cs, ns, "data-"+onA, volumes.ReasonSizeNotEnforced, "not capped")
	}

	// Data survives the pod's restart.
	if out, err := c.exec(ns+"/"+onA, "fill", "/data/keep", "1"); err != nil {
		t.Fatalf("write to %s's volume: %v %s", onA, err, out)
	}
	old, _ := c.cs.CoreV1().Pods(ns).Get(ctx, onA, metav1.GetOptions{})
	if err := c.cs.CoreV1().Pods(ns).Delete(ctx, onA, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	podReady(onA, old.UID)
	if out, err := c.exec(ns+"/"+onA, "size", "/data/keep"); err != nil || strings.TrimSpace(out) != fmt.Sprint(1<<20) {
		t.Errorf("after the pod's restart, /data/keep: %q, %v; want %d bytes", out, err, 1<<20)
	}

	// The cap: 16 MiB into an 8 MiB volume fails with EDQUOT.
	out, err := c.exec(ns+"/"+onB, "fill", "/data/big", "16")
	if err == nil || !strings.Contains(out, "disk quota exceeded") {
		t.Fatalf("writing 16 MiB into node-b's 8 MiB volume: %v %q; want disk quota exceeded", err, out)
	}
	// Growing the claim grows the volume: 12 MiB more fit in 32 MiB.
	patch := []byte(`{"spec":{"resources":{"requests":{"storage":"32Mi"}}}}`)
	if _, err := c.cs.CoreV1().PersistentVolumeClaims(ns).Patch(ctx, "data-"+onB, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatalf("grow claim data-%s: %v", onB, err)
	}
	poll(t, ctx, "claim data-"+onB+" at 32Mi", func() (bool, error) {
		pvc, err := c.cs.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "data-"+onB, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		got := pvc.Status.Capacity[corev1.ResourceStorage]
		return got.Cmp(resource.MustParse("32Mi")) == 0 && len(pvc.Status.Conditions) == 0, nil
	})
	pvB, _ = c.cs.CoreV1().PersistentVolumes().Get(ctx, vols[onB].pv, metav1.GetOptions{})
	if got := pvB.Spec.Capacity[corev1.ResourceStorage]; got.Cmp(resource.MustParse("32Mi")) != 0 {
		t.Errorf("node-b's volume capacity %s after the resize, want 32Mi", got.String())
	}
	if out, err := c.exec(ns+"/"+onB, "fill", "/data/more", "12"); err != nil {
		t.Errorf("writing 12 MiB more into the grown volume: %v %s", err, out)
	}

	// Retention: scaling to one deletes db-1's claim, then its volume and
	// directory; deleting the StatefulSet does the same for db-0's.
	gone := func(v vol) {
		poll(t, ctx, "volume "+v.pv+" and its directory deleted", func() (bool, error) {
			_, err := c.cs.CoreV1().PersistentVolumes().Get(ctx, v.pv, metav1.GetOptions{})
			_, serr := os.Stat(v.dir)
			return apierrors.IsNotFound(err) && errors.Is(serr, os.ErrNotExist), nil
		})
	}
	if _, err := c.cs.AppsV1().StatefulSets(ns).Patch(ctx, "db", types.MergePatchType, []byte(`{"spec":{"replicas":1}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	gone(vols["db-1"])
	if _, err := os.Stat(vols["db-0"].dir); err != nil {
		t.Errorf("db-0's volume after scaling to one: %v; want it kept", err)
	}
	if err := c.cs.AppsV1().StatefulSets(ns).Delete(ctx, "db", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	gone(vols["db-0"])

	// Bad input: a mode a directory cannot give, a class naming a path.
	bad := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "local-etc"}, Provisioner: volumes.ProvisionerName,
		Parameters: map[string]string{"path": "/etc"}, VolumeBindingMode: sc.VolumeBindingMode}
	if _, err := c.cs.StorageV1().StorageClasses().Create(ctx, bad, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.cs.StorageV1().StorageClasses().Delete(context.Background(), bad.Name, metav1.DeleteOptions{})
	})
	for _, tc := range []struct {
		name, class, want string
		mode              corev1.PersistentVolumeAccessMode
	}{
		{"shared", volumes.ClassName, "ReadWriteMany is not possible", corev1.ReadWriteMany},
		{"etc", bad.Name, `parameter "path" is refused`, corev1.ReadWriteOnce},
	} {
		pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: tc.name, Namespace: ns},
			Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{tc.mode}, StorageClassName: &tc.class,
				Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Mi")}}}}
		if _, err := c.cs.CoreV1().PersistentVolumeClaims(ns).Create(ctx, pvc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		p := appPod(tc.name, "", nil)
		p.Namespace = ns
		p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
		p.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: tc.name}}}}
		if _, err := c.cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitObjectEvent(t, ctx, c.cs, ns, tc.name, "ProvisioningFailed", tc.want)
		if got, _ := c.cs.CoreV1().PersistentVolumeClaims(ns).Get(ctx, tc.name, metav1.GetOptions{}); got.Status.Phase != corev1.ClaimPending {
			t.Errorf("claim %s: %s, want Pending", tc.name, got.Status.Phase)
		}
	}

	// A node may not write another node's volumes: node-b's own
	// credentials, creating a volume of node-a.
	rc, err := restConfig(agent.KubeletKubeconfig(filepath.Join(c.dir, "b")))
	if err != nil {
		t.Fatal(err)
	}
	rc.Host = "https://" + c.a.IP + ":6443"
	asB := kubernetes.NewForConfigOrDie(rc)
	forged := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "forged", Labels: map[string]string{volumes.NodeLabel: "node-a"}},
		Spec: corev1.PersistentVolumeSpec{Capacity: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Mi")},
			AccessModes:            []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}}}
	if _, err := asB.CoreV1().PersistentVolumes().Create(ctx, forged, metav1.CreateOptions{}); !apierrors.IsInvalid(err) && !apierrors.IsForbidden(err) {
		c.cs.CoreV1().PersistentVolumes().Delete(ctx, "forged", metav1.DeleteOptions{})
		t.Fatalf("node-b creating a hostPath volume labelled node-a: %v; want it refused", err)
	}
	forged.Labels[volumes.NodeLabel] = "node-b"
	if _, err := asB.CoreV1().PersistentVolumes().Create(ctx, forged, metav1.CreateOptions{}); !apierrors.IsInvalid(err) && !apierrors.IsForbidden(err) {
		c.cs.CoreV1().PersistentVolumes().Delete(ctx, "forged", metav1.DeleteOptions{})
		t.Fatalf("node-b creating a hostPath volume of its own: %v; want it refused (local volumes only)", err)
	}
}

// waitObjectEvent polls for an event on object name in ns with reason, whose
// message contains want.
func waitObjectEvent(t *testing.T, ctx context.Context, cs kubernetes.Interface, ns, name, reason, want string) {
	t.Helper()
	poll(t, ctx, fmt.Sprintf("event %s on %s/%s saying %q", reason, ns, name, want), func() (bool, error) {
		evs, err := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
		if err != nil {
			return false, err
		}
		for _, e := range evs.Items {
			if e.Reason == reason && strings.Contains(e.Message, want) {
				return true, nil
			}
		}
		return false, nil
	})
}

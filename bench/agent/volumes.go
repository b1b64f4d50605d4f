package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/cloudless-dev/cloudless/internal/volumes"
)

// volumeStarts times pods that mount a claim, from the first object
// created to the pod Running, alternating two kinds so that both see the
// same noise:
//   - static: a hostPath PersistentVolume made beforehand by hand, a claim
//     bound to it by name, the pod; nothing to provision;
//   - local-path: a claim of the default class and the pod; the scheduler
//     picks the node, the agent makes the directory and the volume.
func volumeStarts(ctx context.Context, cs *kubernetes.Clientset, staticDir string) (static, dynamic []time.Duration) {
	size := resource.MustParse("16Mi")
	claim := func(name, class, volume string) *corev1.PersistentVolumeClaim {
		return &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, StorageClassName: &class, VolumeName: volume,
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: size}}}}
	}
	pod := func(name string, scheduled bool) *corev1.Pod {
		p := appPod(name)
		if !scheduled {
			p.Spec.NodeName = "" // WaitForFirstConsumer: the scheduler picks the node
		}
		p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
		p.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: name}}}}
		return p
	}
	must := func(_ any, err error) {
		if err != nil {
			fatalf("%v", err)
		}
	}
	for i := range *vols {
		name := fmt.Sprintf("static-%d", i)
		t0 := time.Now()
		pv := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PersistentVolumeSpec{
			Capacity: corev1.ResourceList{corev1.ResourceStorage: size}, AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{
				Path: filepath.Join(staticDir, name), Type: ptr.To(corev1.HostPathDirectoryOrCreate)}}}}
		must(cs.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}))
		must(cs.CoreV1().PersistentVolumeClaims("default").Create(ctx, claim(name, "", name), metav1.CreateOptions{}))
		must(cs.CoreV1().Pods("default").Create(ctx, pod(name, true), metav1.CreateOptions{}))
		static = append(static, waitRunning(ctx, cs, name, t0))

		name = fmt.Sprintf("local-%d", i)
		t0 = time.Now()
		must(cs.CoreV1().PersistentVolumeClaims("default").Create(ctx, claim(name, volumes.ClassName, ""), metav1.CreateOptions{}))
		must(cs.CoreV1().Pods("default").Create(ctx, pod(name, false), metav1.CreateOptions{}))
		dynamic = append(dynamic, waitRunning(ctx, cs, name, t0))
	}
	// Clean up: pods, claims, the static volumes (the local ones go with
	// their claims, Delete policy).
	for i := range *vols {
		for _, name := range []string{fmt.Sprintf("static-%d", i), fmt.Sprintf("local-%d", i)} {
			cs.CoreV1().Pods("default").Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
			cs.CoreV1().PersistentVolumeClaims("default").Delete(ctx, name, metav1.DeleteOptions{})
		}
		cs.CoreV1().PersistentVolumes().Delete(ctx, fmt.Sprintf("static-%d", i), metav1.DeleteOptions{})
	}
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		p, err1 := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
		v, err2 := cs.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
		if err1 == nil && err2 == nil && len(p.Items) == 0 && len(v.Items) == 0 {
			break
		}
	}
	log.Printf("volumes: static median %s, local-path median %s", median(static), median(dynamic))
	return static, dynamic
}

func writeVolumes(static, dynamic []time.Duration) error {
	host, _ := os.Hostname()
	date := time.Now().UTC().Format("2006-01-02")
	path := filepath.Join(*out, fmt.Sprintf("volumes-%s-%s.md", date, *machine))
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	md := fmt.Sprintf("# Local volumes, %s, %s\n\n`ONLY_VOLUMES=1 sudo bench/agent/run.sh` (%d pods of each kind, alternating).\n\n", date, host, *vols) +
		"Pod start with a volume, from the first object created to the pod Running, on a one-machine cluster (`cloudless server`). " +
		"Static: a hostPath PersistentVolume (DirectoryOrCreate) created by hand, a claim bound to it by name, a pod pinned to the node. " +
		"local-path: a claim of the default class and a pod; the scheduler picks the node (WaitForFirstConsumer), the agent makes the directory and the PersistentVolume, the controller-manager binds it.\n\n" +
		"| Metric | local-path | static hostPath | Ratio | Added |\n|---|---|---|---|---|\n"
	for _, r := range []struct {
		name string
		a, b time.Duration
	}{
		{"median", median(dynamic), median(static)},
		{"p95", pct(dynamic, 95), pct(static, 95)},
	} {
		md += fmt.Sprintf("| %s | %.0f ms | %.0f ms | %.2f× | %+.0f ms |\n", r.name, ms(r.a), ms(r.b), float64(r.a)/float64(r.b), ms(r.a-r.b))
	}
	md += "\nTarget (issue 14): provisioning adds at most 1 s to pod start.\n"
	log.Printf("wrote %s", path)
	return os.WriteFile(path, []byte(md), 0o644)
}

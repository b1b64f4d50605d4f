package volumes

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestParseRoots(t *testing.T) {
	for _, tc := range []struct {
		name    string
		values  []string
		want    string
		wantErr string
	}{
		{name: "default only", want: "default=/data/agent/volumes"},
		{name: "default replaced", values: []string{"/mnt/disk"}, want: "default=/mnt/disk"},
		{name: "extra root", values: []string{"fast=/mnt/nvme/"}, want: "default=/data/agent/volumes, fast=/mnt/nvme"},
		{name: "relative", values: []string{"fast=mnt"}, wantErr: "not an absolute path"},
		{name: "twice", values: []string{"/a", "default=/b"}, wantErr: "given twice"},
		{name: "bad name", values: []string{"a b=/x"}, wantErr: "must be a word"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseRoots(tc.values, "/data/agent/volumes")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || r.String() != tc.want {
				t.Fatalf("ParseRoots = %q, %v; want %q", r, err, tc.want)
			}
		})
	}
}

func TestForClass(t *testing.T) {
	roots := Roots{DefaultRoot: "/v", "fast": "/nvme"}
	for _, tc := range []struct {
		name    string
		params  map[string]string
		want    string
		wantErr string
	}{
		{name: "no parameters", want: "/v"},
		{name: "named root", params: map[string]string{RootParameter: "fast"}, want: "/nvme"},
		{name: "root the node lacks", params: map[string]string{RootParameter: "slow"}, wantErr: `--volume-root slow=DIR`},
		{name: "a path is refused", params: map[string]string{"path": "/etc"}, wantErr: `parameter "path" is refused`},
		{name: "unknown parameter", params: map[string]string{"fsType": "xfs"}, wantErr: `unknown parameter "fsType"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := roots.forClass("n1", "sc", tc.params)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("forClass = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestWithin(t *testing.T) {
	roots := Roots{DefaultRoot: "/v", "fast": "/nvme"}
	for path, want := range map[string]bool{
		"/v/pvc-1":        true,
		"/nvme/pvc-2":     true,
		"/v":              false,
		"/v/other":        false,
		"/v/pvc-1/sub":    false,
		"/v/../etc/pvc-1": false,
		"/etc/pvc-1":      false,
	} {
		if got := roots.Within(path); got != want {
			t.Errorf("Within(%q) = %v, want %v", path, got, want)
		}
	}
}

func TestCheckClaim(t *testing.T) {
	block := corev1.PersistentVolumeBlock
	claim := func(mod func(*corev1.PersistentVolumeClaimSpec)) *corev1.PersistentVolumeClaim {
		c := &corev1.PersistentVolumeClaim{Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
		}}
		if mod != nil {
			mod(&c.Spec)
		}
		return c
	}
	for _, tc := range []struct {
		name    string
		claim   *corev1.PersistentVolumeClaim
		wantErr string
	}{
		{"ReadWriteOnce", claim(nil), ""},
		{"ReadWriteOncePod", claim(func(s *corev1.PersistentVolumeClaimSpec) {
			s.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOncePod}
		}), ""},
		{"ReadWriteMany", claim(func(s *corev1.PersistentVolumeClaimSpec) {
			s.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}
		}), "ReadWriteMany is not possible"},
		{"block", claim(func(s *corev1.PersistentVolumeClaimSpec) { s.VolumeMode = &block }), "volumeMode Block"},
		{"selector", claim(func(s *corev1.PersistentVolumeClaimSpec) { s.Selector = &metav1.LabelSelector{} }), "spec.selector"},
		{"clone", claim(func(s *corev1.PersistentVolumeClaimSpec) {
			s.DataSource = &corev1.TypedLocalObjectReference{Kind: "PersistentVolumeClaim", Name: "x"}
		}), "spec.dataSource"},
		{"no size", claim(func(s *corev1.PersistentVolumeClaimSpec) { s.Resources.Requests = nil }), "requests no storage"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkClaim(tc.claim)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("checkClaim = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

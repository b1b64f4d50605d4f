package main

import (
	"bytes"
	"testing"
	"time"
)

// The values must be near the sizes the benchmark promises, and start with
// kube-apiserver's protobuf storage magic.
func TestObjectSizes(t *testing.T) {
	now := time.Unix(1_700_000_000, 123_456_789)
	for _, tc := range []struct {
		name     string
		v        []byte
		min, max int
	}{
		{"lease", leaseObject("node-42", now, now), 330, 480},
		{"configmap", configMapObject("bench", "cm-7", now, 1024, 7), 950, 1100},
		{"pod", podObject("bench", "pod-00007", now, 1024, 7), 950, 1100},
	} {
		if len(tc.v) < tc.min || len(tc.v) > tc.max {
			t.Errorf("%s: %d bytes, want %d..%d", tc.name, len(tc.v), tc.min, tc.max)
		}
		if !bytes.HasPrefix(tc.v, k8sMagic) {
			t.Errorf("%s: no k8s magic", tc.name)
		}
	}
	if bytes.Equal(leaseObject("node-1", now, now), leaseObject("node-1", now, now.Add(10*time.Second))) {
		t.Error("a renewal must change the Lease's bytes")
	}
}

func TestQuantile(t *testing.T) {
	v := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	if got := quantile(v, 0.5); got != 5 {
		t.Errorf("p50 = %v", got)
	}
	if got := quantile(v, 0.99); got != 10 {
		t.Errorf("p99 = %v", got)
	}
}

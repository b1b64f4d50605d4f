package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestServerCrashSafety SIGKILLs the whole server (control plane, datastore
// and node agent in one process) under writers creating ConfigMaps, with a
// pod running on its node. After every restart each acknowledged ConfigMap
// is there with its data, resourceVersions never go back, and the pod kept
// running: same container, no restart.
func TestServerCrashSafety(t *testing.T) {
	dir, data := nodeDataDir(t, "cl-crash-")
	archive := filepath.Join(dir, "app.tar")
	if err := os.WriteFile(archive, appArchive(t), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	args := []string{"--node-name", "node-a"}
	p, cs, _ := startServerArgs(t, data, port, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	mustCLI(t, "images", "import", "--data-dir", data, archive)
	pod := appPod("survivor", "node-a", map[string]string{"app": "survivor"})
	poll(t, ctx, "the pod created (once the default ServiceAccount exists)", func() (bool, error) {
		_, err := cs.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{})
		return err == nil, err
	})
	var containerID string
	poll(t, ctx, "the pod Running", func() (bool, error) {
		got, err := cs.CoreV1().Pods("default").Get(ctx, "survivor", metav1.GetOptions{})
		if err != nil || got.Status.Phase != corev1.PodRunning || len(got.Status.ContainerStatuses) != 1 {
			return false, err
		}
		containerID = got.Status.ContainerStatuses[0].ContainerID
		return containerID != "", nil
	})

	acked := map[string]string{} // ConfigMap name → its value
	var lastRV int64
	const rounds = 3
	for round := 0; round <= rounds; round++ {
		if round > 0 {
			p, cs, _ = startServerArgs(t, data, port, args...)
		}
		// Everything acknowledged is there, and resourceVersions went on.
		list, err := cs.CoreV1().ConfigMaps("default").List(ctx, metav1.ListOptions{LabelSelector: "crash=test"})
		if err != nil {
			t.Fatalf("round %d: list: %v", round, err)
		}
		rv := mustRV(t, list.ResourceVersion)
		if rv < lastRV {
			t.Fatalf("round %d: resourceVersion went back from %d to %d", round, lastRV, rv)
		}
		lastRV = rv
		have := map[string]string{}
		for _, cm := range list.Items {
			have[cm.Name] = cm.Data["v"]
		}
		for name, v := range acked {
			if have[name] != v {
				t.Fatalf("round %d: acknowledged ConfigMap %s = %q after the crash, want %q", round, name, have[name], v)
			}
		}
		// The pod ran on through every crash.
		poll(t, ctx, "the pod Running after the restart", func() (bool, error) {
			got, err := cs.CoreV1().Pods("default").Get(ctx, "survivor", metav1.GetOptions{})
			if err != nil || got.Status.Phase != corev1.PodRunning || len(got.Status.ContainerStatuses) != 1 {
				return false, err
			}
			st := got.Status.ContainerStatuses[0]
			if st.RestartCount != 0 || st.ContainerID != containerID {
				return false, fmt.Errorf("container %s restarted %d times, want %s never restarted", st.ContainerID, st.RestartCount, containerID)
			}
			return st.Ready, nil
		})
		if round == rounds {
			break
		}

		// Writers until the kill.
		var mu sync.Mutex
		var wg sync.WaitGroup
		count := 0
		stop := make(chan struct{})
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					name, v := fmt.Sprintf("cm-%d-%d-%d", round, w, i), strconv.Itoa(rand.Int())
					cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"crash": "test"}}, Data: map[string]string{"v": v}}
					wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
					got, err := cs.CoreV1().ConfigMaps("default").Create(wctx, cm, metav1.CreateOptions{})
					cancel()
					if err != nil {
						return // the server is gone: unacknowledged
					}
					mu.Lock()
					acked[name] = v
					lastRV = max(lastRV, mustRV(t, got.ResourceVersion))
					count++
					mu.Unlock()
				}
			}()
		}
		target := 100 + rand.IntN(300)
		poll(t, ctx, fmt.Sprintf("round %d: %d ConfigMaps acknowledged", round, target), func() (bool, error) {
			if p.exited() {
				t.Fatalf("server exited:\n%s", tail(p.stderr.Bytes(), 40))
			}
			mu.Lock()
			defer mu.Unlock()
			return count >= target, nil
		})
		p.kill()
		close(stop)
		wg.Wait()
	}
	t.Logf("%d crashes, %d ConfigMaps acknowledged, all present; the pod never restarted", rounds, len(acked))
}

func mustRV(t *testing.T, rv string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(rv, 10, 64)
	if err != nil {
		t.Fatalf("resourceVersion %q: %v", rv, err)
	}
	return n
}

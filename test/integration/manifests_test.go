package integration

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/cloudless-dev/cloudless/internal/controllers"
	"github.com/cloudless-dev/cloudless/internal/datadir"
	"github.com/cloudless-dev/cloudless/internal/manifests"
)

// TestManifests drives the manifests directory and `cloudless manifests`
// on a real server: files create, edits prune, removal prunes the rest;
// a broken file is reported with its line while others apply; a system
// object is refused; a .skip marker leaves a file alone.
func TestManifests(t *testing.T) {
	dir, err := os.MkdirTemp("", "cl-manifests-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	_, cs, _ := startServer(t, dir, freePort(t))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	mdir := datadir.Of(dir).Manifests()
	write := func(name, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(mdir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	exists := func(ns, name string) func() (bool, error) {
		return func() (bool, error) {
			_, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
			return err == nil, nil
		}
	}
	gone := func(ns, name string) func() (bool, error) {
		return func() (bool, error) {
			_, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
			return apierrors.IsNotFound(err), nil
		}
	}
	poll(t, ctx, "the manifests directory", func() (bool, error) { _, err := os.Stat(mdir); return err == nil, nil })

	cm := func(name, extra string) string {
		return "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: " + name + "\n  namespace: mf\n" + extra + "data: {k: v}\n"
	}
	app := "apiVersion: v1\nkind: Namespace\nmetadata: {name: mf}\n" + cm("a", "") + cm("b", "") + cm("kept", "  annotations: {"+manifests.KeepAnnotation+": \"true\"}\n")
	write("app.yaml", app)
	for _, n := range []string{"a", "b", "kept"} {
		poll(t, ctx, "ConfigMap mf/"+n+" from app.yaml", exists("mf", n))
	}
	// Editing: b and kept leave the file; b is pruned, kept is kept.
	write("app.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: mf}\n"+cm("a", ""))
	poll(t, ctx, "mf/b pruned after it left app.yaml", gone("mf", "b"))
	if _, err := cs.CoreV1().ConfigMaps("mf").Get(ctx, "kept", metav1.GetOptions{}); err != nil {
		t.Errorf("mf/kept, annotated %s, after it left the file: %v", manifests.KeepAnnotation, err)
	}

	// A broken file (line 11) and a good one: the event names the line,
	// and the good file's object and the broken file's other document
	// are applied.
	write("broken.yaml", cm("ok-in-broken", "")+"---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: bad\n")
	write("good.yaml", cm("good", ""))
	poll(t, ctx, "mf/good", exists("mf", "good"))
	poll(t, ctx, "mf/ok-in-broken", exists("mf", "ok-in-broken"))
	manifestEvent(t, ctx, cs, "broken.yaml", controllers.ReasonManifestInvalid, "broken.yaml:11: not YAML")

	// A system object that exists is refused, with the reason.
	write("system.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: extension-apiserver-authentication, namespace: kube-system}\ndata: {k: v}\n")
	manifestEvent(t, ctx, cs, "system.yaml", controllers.ReasonManifestRefused, "system object")

	// Subdirectories count, named by their relative path.
	if err := os.MkdirAll(filepath.Join(mdir, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	write("sub/nested.yaml", cm("nested", ""))
	poll(t, ctx, "mf/nested from sub/nested.yaml", exists("mf", "nested"))

	// A huge file and a binary one are reported and skipped.
	write("huge.yaml", strings.Repeat("# padding\n", 60<<10))
	manifestEvent(t, ctx, cs, "huge.yaml", controllers.ReasonManifestInvalid, "over the 512 KiB limit")
	write("binary.yaml", "\x00\x01\x02 not text")
	manifestEvent(t, ctx, cs, "binary.yaml", controllers.ReasonManifestInvalid, "binary data")

	// A .skip marker: not applied.
	write("skipped.yaml.skip", "")
	write("skipped.yaml", cm("skipped", ""))
	poll(t, ctx, "skipped.yaml stored, marked skip", func() (bool, error) {
		files, err := manifests.List(ctx, cs)
		for _, f := range files {
			if f.Name == "skipped.yaml" {
				return f.Skip, err
			}
		}
		return false, err
	})

	// Removing the file prunes the rest of what it made.
	if err := os.Remove(filepath.Join(mdir, "app.yaml")); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "mf/a pruned with app.yaml", gone("mf", "a"))
	poll(t, ctx, "namespace mf pruned with app.yaml", func() (bool, error) {
		ns, err := cs.CoreV1().Namespaces().Get(ctx, "mf", metav1.GetOptions{})
		return apierrors.IsNotFound(err) || err == nil && ns.DeletionTimestamp != nil, nil
	})
	if _, err := cs.CoreV1().ConfigMaps("mf").Get(ctx, "skipped", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("mf/skipped from a skipped file: %v, want it never created", err)
	}

	// The CLI: put, ls -o json, rm.
	f := filepath.Join(dir, "cli.yaml")
	if err := os.WriteFile(f, []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: from-cli, namespace: default}\ndata: {k: v}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cli := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(cloudlessBin, append(append([]string{"manifests"}, args...), "--data-dir", dir)...).CombinedOutput()
		if err != nil {
			t.Fatalf("cloudless manifests %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	cli("put", f)
	poll(t, ctx, "default/from-cli", exists("default", "from-cli"))
	var files []manifests.File
	if err := json.Unmarshal([]byte(cli("ls", "-o", "json")), &files); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, f := range files {
		found = found || f.Name == "cli.yaml" && f.Source == manifests.SourceCLI
	}
	if !found {
		t.Errorf("manifests ls: %+v, want cli.yaml from the CLI", files)
	}
	cli("rm", "cli.yaml")
	poll(t, ctx, "default/from-cli pruned after manifests rm", gone("default", "from-cli"))
	if out, err := exec.Command(cloudlessBin, "manifests", "rm", "nope.yaml", "--data-dir", dir).CombinedOutput(); err == nil || !strings.Contains(string(out), "no manifest named nope.yaml") {
		t.Errorf("manifests rm of an unknown file: %v %s", err, out)
	}
}

// manifestEvent polls for an event on the ConfigMap of manifest file with
// reason, whose message contains want.
func manifestEvent(t *testing.T, ctx context.Context, cs kubernetes.Interface, file, reason, want string) {
	t.Helper()
	waitObjectEvent(t, ctx, cs, manifests.Namespace, manifests.ConfigMapName(file), reason, want)
}

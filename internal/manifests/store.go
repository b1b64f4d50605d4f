// Package manifests keeps a set of manifest files applied to the cluster,
// as an operator's GitOps-lite: add a file and its objects are created,
// edit it and what it no longer holds is deleted, remove it and all it
// created goes.
//
// The files live in the datastore, not on one server's disk: each is a
// ConfigMap in kube-system (label FileLabel), so every server sees the
// same set and one applies it (internal/controllers, manifests.go,
// elected). They get there two ways:
//   - `cloudless manifests put|ls|rm` (the CLI, Put/List/Remove here);
//   - the manifests directory of each server (<data-dir>/server/manifests),
//     mirrored as files appear, change and go (Mirror, dir.go).
//
// A file NAME with a marker NAME.skip next to it is left alone: not
// applied, and nothing it created is deleted.
package manifests

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

const (
	// Namespace holds the manifest ConfigMaps.
	Namespace = metav1.NamespaceSystem
	// FileLabel marks a ConfigMap as a manifest file.
	FileLabel = "manifests.cloudless.dev/file"
	// FileAnnotation is the file's name.
	FileAnnotation = "manifests.cloudless.dev/name"
	// SourceAnnotation says where it came from: "cli", or "dir:<server>".
	SourceAnnotation = "manifests.cloudless.dev/source"
	// SkipAnnotation ("true") leaves the file alone (a .skip marker).
	SkipAnnotation = "manifests.cloudless.dev/skip"
	// ErrorAnnotation holds why the file could not be stored (too big).
	ErrorAnnotation = "manifests.cloudless.dev/error"
	// AppliedAnnotation lists what the file's last apply created, for
	// pruning (JSON).
	AppliedAnnotation = "manifests.cloudless.dev/applied"
	// Finalizer keeps a removed file's ConfigMap until what it created is
	// deleted.
	Finalizer = "manifests.cloudless.dev/prune"
	// OwnerLabel, on an applied object, names the ConfigMap of its file.
	OwnerLabel = "manifests.cloudless.dev/owner"
	// KeepAnnotation ("true"), on an object in a manifest, keeps it
	// when it leaves the file or the file goes.
	KeepAnnotation = "manifests.cloudless.dev/keep"
	// DataKey holds the file's content in the ConfigMap.
	DataKey = "manifest"
	// MaxSize is the largest file stored (a ConfigMap holds at most 1 MiB).
	MaxSize = 512 << 10
	// SourceCLI marks files put with the CLI.
	SourceCLI = "cli"
)

var unsafeChars = regexp.MustCompile(`[^a-z0-9-]+`)

// ConfigMapName is the ConfigMap of file name: readable, and unique by a
// hash of the exact name.
func ConfigMapName(name string) string {
	base := strings.Trim(unsafeChars.ReplaceAllString(strings.ToLower(name), "-"), "-")
	if len(base) > 40 {
		base = base[:40]
	}
	sum := sha256.Sum256([]byte(name))
	return "manifest-" + base + "-" + hex.EncodeToString(sum[:4])
}

// File is a stored manifest file.
type File struct {
	Name      string `json:"name"`
	Source    string `json:"source"`
	Error     string `json:"error,omitempty"`
	Skip      bool   `json:"skip,omitempty"`
	Size      int    `json:"bytes"`
	ConfigMap string `json:"configMap"`
}

// Put stores (or replaces) file name with data. A file over MaxSize is
// stored empty with an error saying so, so that the applier reports it.
func Put(ctx context.Context, cs kubernetes.Interface, name string, data []byte, source string, skip bool) error {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: ConfigMapName(name), Namespace: Namespace,
		Labels:      map[string]string{FileLabel: "true"},
		Annotations: map[string]string{FileAnnotation: name, SourceAnnotation: source}}}
	switch {
	case len(data) > MaxSize:
		cm.Annotations[ErrorAnnotation] = fmt.Sprintf("the file is %d KiB, over the %d KiB limit: split it", len(data)>>10, MaxSize>>10)
	default:
		cm.Data = map[string]string{DataKey: string(data)}
	}
	if skip {
		cm.Annotations[SkipAnnotation] = "true"
	}
	cur, err := cs.CoreV1().ConfigMaps(Namespace).Get(ctx, cm.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = cs.CoreV1().ConfigMaps(Namespace).Create(ctx, cm, metav1.CreateOptions{})
		return wrap(err, "store manifest %s", name)
	} else if err != nil {
		return wrap(err, "read manifest %s", name)
	}
	if cur.DeletionTimestamp != nil {
		return fmt.Errorf("manifest %s is being removed (its objects pruned); put it again in a moment", name)
	}
	if cur.Data[DataKey] == cm.Data[DataKey] && cur.Annotations[SkipAnnotation] == cm.Annotations[SkipAnnotation] &&
		cur.Annotations[ErrorAnnotation] == cm.Annotations[ErrorAnnotation] && cur.Annotations[SourceAnnotation] == source {
		return nil
	}
	cur = cur.DeepCopy()
	cur.Data = cm.Data
	for _, k := range []string{ErrorAnnotation, SkipAnnotation} {
		delete(cur.Annotations, k)
	}
	for k, v := range cm.Annotations {
		cur.Annotations[k] = v
	}
	_, err = cs.CoreV1().ConfigMaps(Namespace).Update(ctx, cur, metav1.UpdateOptions{})
	return wrap(err, "update manifest %s", name)
}

// List returns the stored files, by name.
func List(ctx context.Context, cs kubernetes.Interface) ([]File, error) {
	l, err := cs.CoreV1().ConfigMaps(Namespace).List(ctx, metav1.ListOptions{LabelSelector: FileLabel + "=true"})
	if err != nil {
		return nil, fmt.Errorf("list manifests: %w", err)
	}
	var files []File
	for _, cm := range l.Items {
		files = append(files, File{Name: cm.Annotations[FileAnnotation], Source: cm.Annotations[SourceAnnotation], Error: cm.Annotations[ErrorAnnotation],
			Skip: cm.Annotations[SkipAnnotation] == "true", Size: len(cm.Data[DataKey]), ConfigMap: cm.Name})
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Name < files[j].Name })
	return files, nil
}

// Remove deletes file name; the applier then deletes what it created.
func Remove(ctx context.Context, cs kubernetes.Interface, name string) error {
	err := cs.CoreV1().ConfigMaps(Namespace).Delete(ctx, ConfigMapName(name), metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("no manifest named %s (see `cloudless manifests ls`)", name)
	}
	return wrap(err, "remove manifest %s", name)
}

func wrap(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf(format+": %w", append(args, err)...)
}

// Package volumes is Cloudless's local volumes: the `local-path`
// StorageClass and its provisioner, which every node agent runs for the
// claims that the scheduler puts on its node. No helper pods: the agent
// makes and removes the volume directories itself, under the node's volume
// roots (--volume-root), and caps their size where the filesystem can
// (package quota).
//
// Flow, for a claim of class local-path (WaitForFirstConsumer):
//  1. the scheduler picks a node for the claim's first pod and writes it
//     on the claim (volume.kubernetes.io/selected-node);
//  2. that node's agent (Provisioner, on sigs.k8s.io/sig-storage-lib-
//     external-provisioner) makes the directory, sets its cap, and
//     creates a `local` PersistentVolume bound to the claim, with node
//     affinity to itself and the label NodeLabel;
//  3. growing the claim raises the cap and the sizes on both objects
//     (resize.go); upstream leaves this to an external resizer for local
//     volumes;
//  4. a Delete-policy volume whose claim is gone is removed with its data;
//     a finalizer keeps the PersistentVolume until then.
//
// The server side (EnsureObjects) installs the StorageClass, the nodes'
// RBAC for volumes and an admission policy that lets a node write only
// its own volumes; the controllers package reports volumes stranded on a
// deleted node (never reused, never deleted).
package volumes

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

const (
	// Component signs the events about local volumes.
	Component = "cloudless-volumes"
	// ProvisionerName is the provisioner name in StorageClasses.
	ProvisionerName = "cloudless.dev/local-path"
	// ClassName is the StorageClass Cloudless installs, the default one
	// unless another class is already default.
	ClassName = "local-path"
	// NodeLabel, on a PersistentVolume, names the node holding it.
	NodeLabel = "volumes.cloudless.dev/node"
	// SizeEnforcedAnnotation, on a PersistentVolume, is "true" when the
	// filesystem caps the volume at its capacity.
	SizeEnforcedAnnotation = "volumes.cloudless.dev/size-enforced"
	// NodeGoneAnnotation marks the volumes of a deleted node.
	NodeGoneAnnotation = "volumes.cloudless.dev/node-gone"
	// RootParameter, a StorageClass parameter, names which of the node's
	// volume roots holds its volumes (default DefaultRoot).
	RootParameter = "volumeRoot"
	// DefaultRoot names the root given without a name.
	DefaultRoot = "default"
)

// DisableName is the name `cloudless server --disable` takes for local
// volumes (and cluster-info lists for joining agents).
const DisableName = "local-storage"

// RootHelp is the --volume-root flag's help.
const RootHelp = "directory holding this node's local volumes, DIR or NAME=DIR for an extra root that a StorageClass picks with parameter " + RootParameter + ": NAME (repeatable; default: <data-dir>/agent/volumes; sizes are enforced on btrfs with quotas on, and ext4/XFS mounted with prjquota)"

// Event reasons on claims and volumes.
const (
	ReasonSizeNotEnforced = "SizeNotEnforced"
	ReasonResized         = "Resized"
	ReasonResizeFailed    = "ResizeFailed"
	ReasonNodeGone        = "NodeGone"
)

// Roots are a node's volume roots by name.
type Roots map[string]string

// ParseRoots reads --volume-root values, each DIR (the default root) or
// NAME=DIR. Directories must be absolute and names unique.
func ParseRoots(values []string, defaultDir string) (Roots, error) {
	roots := Roots{}
	for _, v := range values {
		name, dir, ok := strings.Cut(v, "=")
		if !ok {
			name, dir = DefaultRoot, v
		}
		if name == "" || strings.ContainsAny(name, "/ ") {
			return nil, fmt.Errorf("--volume-root %q: the name before = must be a word, like fast=/mnt/nvme/volumes", v)
		}
		if !filepath.IsAbs(dir) {
			return nil, fmt.Errorf("--volume-root %q: %q is not an absolute path", v, dir)
		}
		if _, dup := roots[name]; dup {
			return nil, fmt.Errorf("--volume-root %q: root %q is given twice", v, name)
		}
		roots[name] = filepath.Clean(dir)
	}
	if _, ok := roots[DefaultRoot]; !ok && defaultDir != "" {
		roots[DefaultRoot] = defaultDir
	}
	return roots, nil
}

func (r Roots) String() string {
	var s []string
	for name, dir := range r {
		s = append(s, name+"="+dir)
	}
	sort.Strings(s)
	return strings.Join(s, ", ")
}

// forClass returns the root a StorageClass's parameters ask for.
func (r Roots) forClass(node, class string, params map[string]string) (string, error) {
	name := DefaultRoot
	for k, v := range params {
		switch k {
		case RootParameter:
			name = v
		case "path", "nodePath", "pathPattern":
			return "", fmt.Errorf("StorageClass %s: parameter %q is refused: volumes live only under the nodes' volume roots; name one with %s (node %s has %s)", class, k, RootParameter, node, r)
		default:
			return "", fmt.Errorf("StorageClass %s: unknown parameter %q (known: %s)", class, k, RootParameter)
		}
	}
	dir, ok := r[name]
	if !ok {
		return "", fmt.Errorf("StorageClass %s asks for volume root %q, which node %s does not have (it has %s); start its agent with --volume-root %s=DIR", class, name, node, r, name)
	}
	return dir, nil
}

// Within reports whether path is a volume directly under one of the roots,
// the only paths the provisioner ever deletes.
func (r Roots) Within(path string) bool {
	for _, dir := range r {
		if filepath.Dir(filepath.Clean(path)) == dir && strings.HasPrefix(filepath.Base(path), "pvc-") {
			return true
		}
	}
	return false
}

// checkClaim refuses what a directory on one node cannot be.
func checkClaim(pvc *corev1.PersistentVolumeClaim) error {
	for _, m := range pvc.Spec.AccessModes {
		if m == corev1.ReadWriteMany {
			return fmt.Errorf("access mode ReadWriteMany is not possible with local volumes: a local volume lives on one node; use ReadWriteOnce, or shared storage (NFS, Ceph) for ReadWriteMany")
		}
	}
	if pvc.Spec.VolumeMode != nil && *pvc.Spec.VolumeMode == corev1.PersistentVolumeBlock {
		return fmt.Errorf("volumeMode Block is not possible with local volumes, which are directories; use volumeMode Filesystem")
	}
	if pvc.Spec.Selector != nil {
		return fmt.Errorf("a claim with spec.selector cannot be provisioned (it selects existing volumes); remove the selector")
	}
	if pvc.Spec.DataSource != nil || pvc.Spec.DataSourceRef != nil {
		return fmt.Errorf("cloning and snapshots (spec.dataSource) are not supported by local volumes; remove the data source")
	}
	if q, ok := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; !ok || q.Sign() <= 0 {
		return fmt.Errorf("the claim requests no storage size; set spec.resources.requests.storage")
	}
	return nil
}

package integration

import (
	"context"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"

	"github.com/cloudless-dev/cloudless/internal/apply"
	"github.com/cloudless-dev/cloudless/internal/lint"
	"github.com/cloudless-dev/cloudless/internal/volumes"
)

// checkLintScopes holds lint's table of cluster-scoped kinds (it reads
// manifests without a cluster) to what the API server serves, kind by
// kind.
func checkLintScopes(t *testing.T, ctx context.Context, cs kubernetes.Interface) {
	t.Helper()
	// Every group, the aggregated metrics API included, which answers
	// discovery a few seconds after /readyz.
	var lists []*metav1.APIResourceList
	poll(t, ctx, "complete API discovery", func() (bool, error) {
		var err error
		_, lists, err = cs.Discovery().ServerGroupsAndResources()
		return err == nil, nil
	})
	n := 0
	for _, l := range lists {
		gv, err := schema.ParseGroupVersion(l.GroupVersion)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range l.APIResources {
			if r.Kind == "" || strings.Contains(r.Name, "/") {
				continue // subresources
			}
			n++
			gk := schema.GroupKind{Group: gv.Group, Kind: r.Kind}
			if got := lint.Namespaced(gk); got != r.Namespaced {
				t.Errorf("lint takes %s as namespaced=%v; the API server serves it namespaced=%v (internal/lint/scope.go)", gk, got, r.Namespaced)
			}
		}
	}
	if n < 50 {
		t.Errorf("discovery served %d kinds, want the built-in ones", n)
	}
}

// owned is what a server applies (internal/apply) and what an operator
// may change; editOwned changes it, checkOwned (after a restart) wants
// the applied fields back and the operator's own edits kept.
const ownedRole = "cloudless:node-network"

func editOwned(t *testing.T, ctx context.Context, cs kubernetes.Interface) {
	t.Helper()
	// The server writes them once its API is up, in the background.
	var role *rbacv1.ClusterRole
	var sc *storagev1.StorageClass
	poll(t, ctx, "the server's own ClusterRole and StorageClass", func() (bool, error) {
		var err error
		if role, err = cs.RbacV1().ClusterRoles().Get(ctx, ownedRole, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			return false, nil
		} else if err != nil {
			return false, err
		}
		sc, err = cs.StorageV1().StorageClasses().Get(ctx, volumes.ClassName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil, err
	})
	applied := false
	for _, m := range role.ManagedFields {
		applied = applied || m.Manager == apply.FieldManager && m.Operation == metav1.ManagedFieldsOperationApply
	}
	if !applied {
		t.Errorf("ClusterRole %s is not applied by %q: %+v", ownedRole, apply.FieldManager, role.ManagedFields)
	}
	role.Rules = role.Rules[:1]
	if role.Labels == nil {
		role.Labels = map[string]string{}
	}
	role.Labels["team"] = "network"
	if _, err := cs.RbacV1().ClusterRoles().Update(ctx, role, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	sc.Annotations = nil // the operator no longer wants it as the default
	if _, err := cs.StorageV1().StorageClasses().Update(ctx, sc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func checkOwned(t *testing.T, ctx context.Context, cs kubernetes.Interface) {
	t.Helper()
	poll(t, ctx, "the applied ClusterRole's rules back after a restart", func() (bool, error) {
		role, err := cs.RbacV1().ClusterRoles().Get(ctx, ownedRole, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if role.Labels["team"] != "network" {
			t.Fatalf("the operator's label on %s is gone: %v", ownedRole, role.Labels)
		}
		return len(role.Rules) > 1, nil
	})
	sc, err := cs.StorageV1().StorageClasses().Get(ctx, volumes.ClassName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("StorageClass %s: %v", volumes.ClassName, err)
	}
	if len(sc.Annotations) != 0 {
		t.Errorf("StorageClass %s: the operator's edit was overwritten: %v", volumes.ClassName, sc.Annotations)
	}
}

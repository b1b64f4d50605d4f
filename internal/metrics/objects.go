package metrics

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	apiregv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
	aggregator "k8s.io/kube-aggregator/pkg/client/clientset_generated/clientset"
	"k8s.io/utils/ptr"
)

const (
	// User is the metrics server's identity (its client certificate's CN).
	User = "system:cloudless-metrics"
	// Service is the ExternalName Service (kube-system) the APIService
	// names; it points at localhost, so each kube-apiserver reaches the
	// metrics server of its own server.
	Service = "metrics-server"
	// ServiceHost is the name the aggregator checks the serving
	// certificate against.
	ServiceHost = Service + "." + metav1.NamespaceSystem + ".svc"
	apiService  = "v1beta1.metrics.k8s.io"
	readerRole  = "system:aggregated-metrics-reader"
)

// EnsureObjects registers the metrics API with the aggregator (caBundle:
// the CA that signs the serving certificate) and grants what the metrics
// server and readers need. Objects are updated to what this version
// wants.
func EnsureObjects(ctx context.Context, cs kubernetes.Interface, agg aggregator.Interface, caBundle []byte) error {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: Service, Namespace: metav1.NamespaceSystem},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "localhost"}}
	if _, err := cs.CoreV1().Services(svc.Namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create Service %s/%s: %w", svc.Namespace, svc.Name, err)
	}
	roles := []*rbacv1.ClusterRole{
		{ObjectMeta: metav1.ObjectMeta{Name: "cloudless:metrics"}, Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"nodes", "pods"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{""}, Resources: []string{"nodes/metrics"}, Verbs: []string{"get"}},
		}},
		// Readers of the metrics: aggregated into view, edit and admin,
		// as upstream's manifests do.
		{ObjectMeta: metav1.ObjectMeta{Name: readerRole, Labels: map[string]string{
			"rbac.authorization.k8s.io/aggregate-to-view": "true", "rbac.authorization.k8s.io/aggregate-to-edit": "true", "rbac.authorization.k8s.io/aggregate-to-admin": "true"}},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{"metrics.k8s.io"}, Resources: []string{"pods", "nodes"}, Verbs: []string{"get", "list", "watch"}}}},
	}
	for _, r := range roles {
		if _, err := cs.RbacV1().ClusterRoles().Create(ctx, r, metav1.CreateOptions{}); apierrors.IsAlreadyExists(err) {
			if _, err := cs.RbacV1().ClusterRoles().Update(ctx, r, metav1.UpdateOptions{}); err != nil {
				return fmt.Errorf("update ClusterRole %s: %w", r.Name, err)
			}
		} else if err != nil {
			return fmt.Errorf("create ClusterRole %s: %w", r.Name, err)
		}
	}
	user := []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: User}}
	for name, role := range map[string]string{
		"cloudless:metrics":                "cloudless:metrics",
		"cloudless:metrics:auth-delegator": "system:auth-delegator", // TokenReviews and SubjectAccessReviews
	} {
		b := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role}, Subjects: user}
		if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, b, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create ClusterRoleBinding %s: %w", name, err)
		}
	}
	as := &apiregv1.APIService{ObjectMeta: metav1.ObjectMeta{Name: apiService},
		Spec: apiregv1.APIServiceSpec{
			Service: &apiregv1.ServiceReference{Namespace: metav1.NamespaceSystem, Name: Service, Port: ptr.To[int32](Port)},
			Group:   "metrics.k8s.io", Version: "v1beta1", CABundle: caBundle,
			GroupPriorityMinimum: 100, VersionPriority: 100,
		}}
	cur, err := agg.ApiregistrationV1().APIServices().Get(ctx, apiService, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = agg.ApiregistrationV1().APIServices().Create(ctx, as, metav1.CreateOptions{})
	case err == nil:
		as.ResourceVersion = cur.ResourceVersion
		_, err = agg.ApiregistrationV1().APIServices().Update(ctx, as, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("register APIService %s: %w", apiService, err)
	}
	return nil
}

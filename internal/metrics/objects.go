package metrics

import (
	"context"

	"github.com/cloudless-dev/cloudless/internal/apply"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	apiregv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
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
// server and readers need, applied (internal/apply) so that each start
// brings them to what this version wants.
func EnsureObjects(ctx context.Context, ap *apply.Client, caBundle []byte) error {
	objs := []runtime.Object{
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: Service, Namespace: metav1.NamespaceSystem},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "localhost"}},
		&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "cloudless:metrics"}, Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"nodes", "pods"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{""}, Resources: []string{"nodes/metrics"}, Verbs: []string{"get"}},
		}},
		// Readers of the metrics: aggregated into view, edit and admin,
		// as upstream's manifests do.
		&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: readerRole, Labels: map[string]string{
			"rbac.authorization.k8s.io/aggregate-to-view": "true", "rbac.authorization.k8s.io/aggregate-to-edit": "true", "rbac.authorization.k8s.io/aggregate-to-admin": "true"}},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{"metrics.k8s.io"}, Resources: []string{"pods", "nodes"}, Verbs: []string{"get", "list", "watch"}}}},
	}
	user := []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: User}}
	for _, b := range [][2]string{
		{"cloudless:metrics", "cloudless:metrics"},
		{"cloudless:metrics:auth-delegator", "system:auth-delegator"}, // TokenReviews and SubjectAccessReviews
	} {
		objs = append(objs, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: b[0]},
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: b[1]}, Subjects: user})
	}
	objs = append(objs, &apiregv1.APIService{ObjectMeta: metav1.ObjectMeta{Name: apiService},
		Spec: apiregv1.APIServiceSpec{
			Service: &apiregv1.ServiceReference{Namespace: metav1.NamespaceSystem, Name: Service, Port: ptr.To[int32](Port)},
			Group:   "metrics.k8s.io", Version: "v1beta1", CABundle: caBundle,
			GroupPriorityMinimum: 100, VersionPriority: 100,
		}})
	return ap.Apply(ctx, objs...)
}

package volumes

import (
	"context"
	"fmt"

	"github.com/cloudless-dev/cloudless/internal/apply"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// defaultClassAnnotation marks the cluster's default StorageClass.
const defaultClassAnnotation = "storageclass.kubernetes.io/is-default-class"

// nodeRole lets node agents provision: PersistentVolumes, claims and their
// status (for resizes), StorageClasses. The admission policy below narrows
// the writes to each node's own volumes.
const nodeRole = "cloudless:node-volumes"

// policyName is the ValidatingAdmissionPolicy (and its binding) that
// confines a node's writes to its own volumes.
const policyName = "cloudless-node-volumes"

// Class is the local-path StorageClass, default when isDefault.
func Class(isDefault bool) *storagev1.StorageClass {
	wffc := storagev1.VolumeBindingWaitForFirstConsumer
	sc := &storagev1.StorageClass{
		ObjectMeta:           metav1.ObjectMeta{Name: ClassName},
		Provisioner:          ProvisionerName,
		ReclaimPolicy:        ptr.To(corev1.PersistentVolumeReclaimDelete),
		VolumeBindingMode:    &wffc,
		AllowVolumeExpansion: ptr.To(true),
	}
	if isDefault {
		sc.Annotations = map[string]string{defaultClassAnnotation: "true"}
	}
	return sc
}

// EnsureObjects installs what local volumes need cluster-side. The
// StorageClass is created once and never overwritten, so an operator's
// edits (or its deletion of the default mark) stay; it is the default
// only if no other class is. The node role, its binding and the
// admission policy confining it are applied (internal/apply).
func EnsureObjects(ctx context.Context, cs kubernetes.Interface, ap *apply.Client) error {
	classes, err := cs.StorageV1().StorageClasses().List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list StorageClasses: %w", err)
	}
	isDefault := true
	for _, c := range classes.Items {
		if c.Name != ClassName && c.Annotations[defaultClassAnnotation] == "true" {
			isDefault = false
		}
	}
	if err := ap.Create(ctx, Class(isDefault)); err != nil {
		return err
	}
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: nodeRole}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"persistentvolumes"}, Verbs: []string{"get", "list", "watch", "create", "update", "patch", "delete"}},
		{APIGroups: []string{""}, Resources: []string{"persistentvolumeclaims"}, Verbs: []string{"get", "list", "watch", "update", "patch"}},
		{APIGroups: []string{""}, Resources: []string{"persistentvolumeclaims/status"}, Verbs: []string{"update", "patch"}},
		{APIGroups: []string{"storage.k8s.io"}, Resources: []string{"storageclasses"}, Verbs: []string{"get", "list", "watch"}},
	}}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: nodeRole},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: nodeRole},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: "system:nodes"}}}
	policy, policyBinding := nodePolicy()
	return ap.Apply(ctx, role, binding, policy, policyBinding)
}

// nodePolicy confines what a node (system:node:NAME) may write with
// nodeRole: PersistentVolumes labelled as its own, `local`, with node
// affinity to itself only; claims the scheduler put on it.
func nodePolicy() (*admissionv1.ValidatingAdmissionPolicy, *admissionv1.ValidatingAdmissionPolicyBinding) {
	all := []admissionv1.OperationType{admissionv1.Create, admissionv1.Update, admissionv1.Delete}
	rule := func(ops []admissionv1.OperationType, resources ...string) admissionv1.NamedRuleWithOperations {
		return admissionv1.NamedRuleWithOperations{RuleWithOperations: admissionv1.RuleWithOperations{Operations: ops,
			Rule: admissionv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: resources}}}
	}
	pv := `request.resource.resource == 'persistentvolumes'`
	policy := &admissionv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: policyName},
		Spec: admissionv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: ptr.To(admissionv1.Fail),
			MatchConstraints: &admissionv1.MatchResources{ResourceRules: []admissionv1.NamedRuleWithOperations{
				rule(all, "persistentvolumes"),
				rule([]admissionv1.OperationType{admissionv1.Update}, "persistentvolumeclaims", "persistentvolumeclaims/status"),
			}},
			MatchConditions: []admissionv1.MatchCondition{{Name: "nodes", Expression: `request.userInfo.username.startsWith('system:node:')`}},
			Variables: []admissionv1.Variable{
				{Name: "node", Expression: `request.userInfo.username.substring(12)`},
				{Name: "obj", Expression: `request.operation == 'DELETE' ? oldObject : object`},
			},
			Validations: []admissionv1.Validation{
				{Expression: `!(` + pv + `) || variables.obj.metadata.?labels[?'` + NodeLabel + `'].orValue('') == variables.node`,
					Message: "a node may write only the PersistentVolumes labelled " + NodeLabel + " with its own name"},
				{Expression: `!(` + pv + `) || request.operation == 'DELETE' || (has(object.spec.local) && ` +
					`object.spec.nodeAffinity.required.nodeSelectorTerms.all(t, t.matchExpressions.all(e, e.key == '` + corev1.LabelHostname + `' && e.values.all(v, v == variables.node))))`,
					Message: "a node may create only `local` PersistentVolumes with node affinity to itself"},
				{Expression: pv + ` || oldObject.metadata.?annotations[?'` + selectedNode + `'].orValue('') == variables.node`,
					Message: "a node may update only the claims the scheduler put on it"},
			},
		},
	}
	binding := &admissionv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: policyName},
		Spec: admissionv1.ValidatingAdmissionPolicyBindingSpec{PolicyName: policyName,
			ValidationActions: []admissionv1.ValidationAction{admissionv1.Deny}},
	}
	return policy, binding
}

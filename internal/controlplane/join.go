package controlplane

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	certsv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/cloudless-dev/cloudless/internal/token"
)

// What other machines need to join, kept in the cluster:
//   - kube-public/cluster-info: a kubeconfig with the CA and this server's
//     address, readable anonymously (the only anonymous API path); the
//     joiner checks the CA against the hash in its token before trusting it;
//   - RBAC letting bootstrap-token holders ask for a node client
//     certificate, which the controller-manager then approves, and nodes
//     renew theirs;
//   - approval of kubelet serving certificates for known nodes only: the
//     requester is system:node:<name>, the node exists, and every name in
//     the request is one of the node's addresses or its name.

// ClusterInfoKubeconfig is the key of the cluster-info ConfigMap.
const ClusterInfoKubeconfig = "kubeconfig"

func (s *Server) runJoinSupport(ctx context.Context) error {
	rc, err := clientcmd.BuildConfigFromFlags("", s.paths.cred("admin.kubeconfig"))
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	if err := s.ensureJoinObjects(ctx, cs); err != nil {
		return err
	}
	go s.runClusterDNS(ctx, cs)
	for {
		if err := s.approveServingCSRs(ctx, cs); err != nil && ctx.Err() == nil {
			s.log.Warn("approve kubelet serving certificates", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(2 * time.Second):
		}
	}
}

func (s *Server) ensureJoinObjects(ctx context.Context, cs kubernetes.Interface) error {
	server := fmt.Sprintf("https://%s", net.JoinHostPort(s.cfg.AdvertiseAddress, fmt.Sprint(s.cfg.HTTPSPort)))
	kubeconfig := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: cloudless
  cluster:
    server: %s
    certificate-authority-data: %s
`, server, base64.StdEncoding.EncodeToString(s.certs.ca.PEM))
	objs := []runtime.Object{
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cluster-info", Namespace: metav1.NamespacePublic},
			Data: map[string]string{ClusterInfoKubeconfig: kubeconfig, "clusterDNS": s.cfg.ClusterDNS, "clusterDomain": s.cfg.ClusterDomain,
				"clusterCIDR": s.cfg.ClusterCIDR, "serviceCIDR": s.cfg.ServiceCIDR, "networkBackend": s.cfg.NetworkBackend, "proxyMode": s.cfg.ProxyMode}},
		// Every node runs kube-proxy, the NetworkPolicy controller, its
		// routes and cluster DNS with its own credential: they read
		// Services, EndpointSlices, pods, namespaces, policies and nodes,
		// and kube-proxy watches ServiceCIDRs (upstream's
		// system:node-proxier grants the same).
		&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "cloudless:node-network"},
			Rules: []rbacv1.PolicyRule{
				{APIGroups: []string{""}, Resources: []string{"pods", "namespaces", "services", "endpoints", "nodes"}, Verbs: []string{"get", "list", "watch"}},
				{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"get", "list", "watch"}},
				{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"networkpolicies", "servicecidrs"}, Verbs: []string{"get", "list", "watch"}},
				{APIGroups: []string{"", "events.k8s.io"}, Resources: []string{"events"}, Verbs: []string{"create", "patch", "update"}},
			}},
		&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "cloudless:cluster-info-reader", Namespace: metav1.NamespacePublic},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{"cluster-info"}, Verbs: []string{"get"}}}},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "cloudless:cluster-info-reader", Namespace: metav1.NamespacePublic},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "cloudless:cluster-info-reader"},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "system:anonymous"}}},
	}
	for name, binding := range map[string][2]string{
		"cloudless:node-bootstrapper":          {"system:node-bootstrapper", token.NodeGroup},
		"cloudless:node-autoapprove-bootstrap": {"system:certificates.k8s.io:certificatesigningrequests:nodeclient", token.NodeGroup},
		"cloudless:node-autoapprove-renewal":   {"system:certificates.k8s.io:certificatesigningrequests:selfnodeclient", "system:nodes"},
		"cloudless:node-network":               {"cloudless:node-network", "system:nodes"},
	} {
		objs = append(objs, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: binding[0]},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: binding[1]}}})
	}
	for _, o := range objs {
		var err error
		switch o := o.(type) {
		case *corev1.ConfigMap:
			_, err = cs.CoreV1().ConfigMaps(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				_, err = cs.CoreV1().ConfigMaps(o.Namespace).Update(ctx, o, metav1.UpdateOptions{})
			}
		case *rbacv1.Role:
			_, err = cs.RbacV1().Roles(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.RoleBinding:
			_, err = cs.RbacV1().RoleBindings(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRole:
			_, err = cs.RbacV1().ClusterRoles().Create(ctx, o, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				_, err = cs.RbacV1().ClusterRoles().Update(ctx, o, metav1.UpdateOptions{})
			}
		case *rbacv1.ClusterRoleBinding:
			_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, o, metav1.CreateOptions{})
		}
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create %T: %w", o, err)
		}
	}
	return nil
}

// approveServingCSRs decides the pending kubelet serving CSRs: those of
// known nodes for their own names and addresses are approved, others
// denied; one from a node not registered yet waits.
func (s *Server) approveServingCSRs(ctx context.Context, cs kubernetes.Interface) error {
	list, err := cs.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{FieldSelector: "spec.signerName=" + certsv1.KubeletServingSignerName})
	if err != nil {
		return err
	}
	for i := range list.Items {
		csr := &list.Items[i]
		if len(csr.Status.Conditions) > 0 {
			continue
		}
		verdict, reason := s.servingCSRAllowed(ctx, cs, csr)
		if verdict == wait {
			continue
		}
		cond := certsv1.CertificateSigningRequestCondition{Type: certsv1.CertificateApproved, Status: corev1.ConditionTrue, Reason: "CloudlessKnownNode", Message: reason}
		if verdict == deny {
			cond.Type, cond.Reason = certsv1.CertificateDenied, "CloudlessUnknownName"
			s.log.Warn("denied kubelet serving certificate", "csr", csr.Name, "user", csr.Spec.Username, "reason", reason)
		}
		csr.Status.Conditions = append(csr.Status.Conditions, cond)
		if _, err := cs.CertificatesV1().CertificateSigningRequests().UpdateApproval(ctx, csr.Name, csr, metav1.UpdateOptions{}); err != nil {
			return err
		}
	}
	return nil
}

type verdict int

const (
	wait verdict = iota
	approve
	deny
)

func (s *Server) servingCSRAllowed(ctx context.Context, cs kubernetes.Interface, csr *certsv1.CertificateSigningRequest) (verdict, string) {
	nodeName, ok := strings.CutPrefix(csr.Spec.Username, "system:node:")
	if !ok || !slices.Contains(csr.Spec.Groups, "system:nodes") {
		return deny, "not requested by a node"
	}
	node, err := cs.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) || (err == nil && len(node.Status.Addresses) == 0) {
		return wait, "node not registered yet"
	}
	if err != nil {
		return wait, err.Error()
	}
	block, _ := pem.Decode(csr.Spec.Request)
	if block == nil {
		return deny, "no PEM request"
	}
	req, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil || req.CheckSignature() != nil {
		return deny, "bad certificate request"
	}
	if req.Subject.CommonName != csr.Spec.Username {
		return deny, "subject is not the requesting node"
	}
	known := map[string]bool{nodeName: true}
	for _, a := range node.Status.Addresses {
		known[a.Address] = true
	}
	for _, d := range req.DNSNames {
		if !known[d] {
			return deny, fmt.Sprintf("name %s is not one of node %s's", d, nodeName)
		}
	}
	for _, ip := range req.IPAddresses {
		if !known[ip.String()] {
			return deny, fmt.Sprintf("address %s is not one of node %s's", ip, nodeName)
		}
	}
	if len(req.EmailAddresses) > 0 || len(req.URIs) > 0 {
		return deny, "unexpected email or URI names"
	}
	return approve, "names match node " + nodeName
}

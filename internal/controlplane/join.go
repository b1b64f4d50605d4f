package controlplane

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensions "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/cloudless-dev/cloudless/internal/apply"
	"github.com/cloudless-dev/cloudless/internal/clusterinfo"
	"github.com/cloudless-dev/cloudless/internal/datadir"
	authdns "github.com/cloudless-dev/cloudless/internal/dns"
	"github.com/cloudless-dev/cloudless/internal/lb"
	"github.com/cloudless-dev/cloudless/internal/lb/speaker"
	"github.com/cloudless-dev/cloudless/internal/manifests"
	"github.com/cloudless-dev/cloudless/internal/metrics"
	"github.com/cloudless-dev/cloudless/internal/token"
	"github.com/cloudless-dev/cloudless/internal/volumes"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"time"
)

// What other machines need to join, kept in the cluster:
//   - kube-public/cluster-info: a kubeconfig with the CA and this server's
//     address, readable anonymously (the only anonymous API path); the
//     joiner checks the CA against the hash in its token before trusting it;
//   - RBAC letting bootstrap-token holders ask for a node client
//     certificate, which the controller-manager then approves, and nodes
//     renew theirs;
//   - approval of kubelet serving certificates for known nodes only
//     (internal/controllers, csr.go).

// ensureLBObjects installs the metallb.io CRDs and their namespace, so
// that MetalLB's manifests apply unchanged, and waits until the API
// serves the CRDs.
func (s *Server) ensureLBObjects(ctx context.Context, rc *rest.Config, ap *apply.Client) error {
	ext, err := apiextensions.NewForConfig(rc)
	if err != nil {
		return err
	}
	objs := []runtime.Object{&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: lb.Namespace}}}
	for _, crd := range lb.CRDs() {
		objs = append(objs, crd)
	}
	// Nodes read the speakers' gossip key in kube-system, and the BGP
	// peers' password Secrets in metallb-system (MetalLB's speaker reads
	// the same).
	for _, role := range []*rbacv1.Role{
		{ObjectMeta: metav1.ObjectMeta{Name: "cloudless:lb-memberlist", Namespace: metav1.NamespaceSystem},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{speaker.MemberlistSecret}, Verbs: []string{"get"}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "cloudless:lb-bgp-passwords", Namespace: lb.Namespace},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get", "list", "watch"}}}},
	} {
		objs = append(objs, role, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: role.Name, Namespace: role.Namespace},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: "system:nodes"}}})
	}
	if err := ap.Apply(ctx, objs...); err != nil {
		return err
	}
	// The speakers' gossip key: made once, kept across restarts.
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	if err := ap.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: speaker.MemberlistSecret, Namespace: metav1.NamespaceSystem},
		Data: map[string][]byte{speaker.MemberlistKey: key}}); err != nil {
		return err
	}
	for _, crd := range lb.CRDs() {
		if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			got, err := ext.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, crd.Name, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			for _, c := range got.Status.Conditions {
				if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
					return true, nil
				}
			}
			return false, nil
		}); err != nil {
			return fmt.Errorf("CRD %s not established: %w", crd.Name, err)
		}
	}
	return nil
}

func lbPlurals() []string {
	var out []string
	for _, r := range lb.Resources {
		out = append(out, r.Plural)
	}
	return out
}

func (s *Server) runJoinSupport(ctx context.Context) error {
	rc, err := clientcmd.BuildConfigFromFlags("", s.paths.cred("admin.kubeconfig"))
	if err != nil {
		return err
	}
	// One client serves every controller group of this server.
	// client-go's default (5 requests/s, burst 10) made a busy minute
	// queue each write for 200 ms, which bench/dns saw as 200 ms steps
	// in change to visible; kube-controller-manager runs its
	// controllers with 20/s, burst 30 each, and the API server is local.
	rc.QPS, rc.Burst = controllersQPS, controllersBurst
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	ap, err := apply.New(rc)
	if err != nil {
		return err
	}
	if err := s.ensureJoinObjects(ctx, ap); err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return err
	}
	if err := s.ensureLBObjects(ctx, rc, ap); err != nil {
		return err
	}
	if s.dns != nil {
		// DNSEndpoint objects written for external-dns are served as they
		// are; an installed external-dns CRD is left alone. The TSIG key
		// that signs transfers and NOTIFY is made once, for every server.
		key, err := authdns.NewTSIGSecret()
		if err != nil {
			return err
		}
		if err := ap.Create(ctx, authdns.EndpointCRD(), key); err != nil {
			return err
		}
		for _, z := range s.cfg.DNSZones {
			cm, err := authdns.ConfigZone(z) // checked at start; read again for its current text
			if err != nil {
				return err
			}
			if err := ap.Apply(ctx, cm); err != nil {
				return err
			}
		}
	}
	if !s.cfg.Disabled(ComponentLocalStorage) {
		if err := volumes.EnsureObjects(ctx, cs, ap); err != nil {
			return err
		}
	}
	if !s.cfg.Disabled(ComponentMetrics) {
		if err := metrics.EnsureObjects(ctx, ap, s.certs.ca.PEM); err != nil {
			return err
		}
	}
	go func() {
		dir := s.cfg.ManifestsDir
		if dir == "" {
			dir = datadir.Dir(s.cfg.DataDir).Manifests()
		}
		if err := manifests.Mirror(ctx, cs, dir, s.cfg.NodeName, s.log.With("subsystem", "manifests")); err != nil && ctx.Err() == nil {
			s.log.Error("the manifests directory is not mirrored; `cloudless manifests put` still works", "dir", dir, "err", err)
		}
	}()
	s.runControllers(ctx, cs, dyn)
	return nil
}

func (s *Server) ensureJoinObjects(ctx context.Context, ap *apply.Client) error {
	server := fmt.Sprintf("https://%s", net.JoinHostPort(s.cfg.AdvertiseAddress, fmt.Sprint(s.cfg.HTTPSPort)))
	info, err := clusterinfo.Info{Server: server, CAPEM: s.certs.ca.PEM, ClusterDNS: s.cfg.ClusterDNS, ClusterDomain: s.cfg.ClusterDomain,
		ClusterCIDR: s.cfg.ClusterCIDR, ServiceCIDR: s.cfg.ServiceCIDR, NetworkBackend: s.cfg.NetworkBackend, ProxyMode: s.cfg.ProxyMode,
		Disabled: s.cfg.Disable}.ConfigMap()
	if err != nil {
		return err
	}
	objs := []runtime.Object{
		info,
		// Every node runs kube-proxy, the NetworkPolicy controller, its
		// routes and cluster DNS with its own credential: they read
		// Services, EndpointSlices, pods, namespaces, policies and nodes,
		// and kube-proxy watches ServiceCIDRs (upstream's
		// system:node-proxier grants the same); the load balancer's
		// speaker reads the metallb.io pools and advertisements.
		&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "cloudless:node-network"},
			Rules: []rbacv1.PolicyRule{
				{APIGroups: []string{""}, Resources: []string{"pods", "namespaces", "services", "endpoints", "nodes"}, Verbs: []string{"get", "list", "watch"}},
				{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"get", "list", "watch"}},
				{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"networkpolicies", "servicecidrs"}, Verbs: []string{"get", "list", "watch"}},
				{APIGroups: []string{"", "events.k8s.io"}, Resources: []string{"events"}, Verbs: []string{"create", "patch", "update"}},
				{APIGroups: []string{lb.Group}, Resources: lbPlurals(), Verbs: []string{"get", "list", "watch"}},
			}},
		&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "cloudless:cluster-info-reader", Namespace: metav1.NamespacePublic},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{clusterinfo.Name}, Verbs: []string{"get"}}}},
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
	return ap.Apply(ctx, objs...)
}

package controlplane

import (
	"context"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	componentbaseconfig "k8s.io/component-base/config"

	"github.com/cloudless-dev/cloudless/internal/controllers"
	authdns "github.com/cloudless-dev/cloudless/internal/dns"
	"github.com/cloudless-dev/cloudless/internal/lb"
)

// LBLease is the Lease (in kube-system) of the load-balancer address
// allocator: with several servers, exactly one allocates.
const LBLease = "cloudless-lb"

// NodesLease is the Lease (in kube-system) of the controllers that keep
// node-related objects: the serving CSR approver and cluster DNS.
const NodesLease = "cloudless-nodes"

// ManifestsLease is the Lease (in kube-system) of the manifests applier.
const ManifestsLease = "cloudless-manifests"

// controllerGroups are the cluster-side controllers this server runs
// (internal/controllers): the node group under its Lease, so that with
// several servers one acts, and this server's own node label unelected.
func (s *Server) controllerGroups() []controllers.Group {
	groups := []controllers.Group{{
		Name:  "nodes",
		Lease: NodesLease,
		New:   []func(controllers.Env) (controllers.Controller, error){controllers.NewServingCSRApprover, controllers.NewClusterDNS(s.cfg.ClusterDNS), controllers.NewStrandedVolumes, controllers.NewPolicyTaint},
	}, {
		Name:  "load-balancer",
		Lease: LBLease,
		New:   []func(controllers.Env) (controllers.Controller, error){controllers.NewLBAllocator(s.lbReserved())},
	}, {
		Name:    "manifests",
		Lease:   ManifestsLease,
		Options: controllers.ManifestsOnly,
		New:     []func(controllers.Env) (controllers.Controller, error){controllers.NewManifests},
	}}
	if s.dns != nil {
		groups = append(groups, controllers.Group{
			Name: "dns-serve",
			New:  []func(controllers.Env) (controllers.Controller, error){controllers.NewDNSServe(s.dns, authdns.Replica{Name: s.cfg.NodeName, Addr: authdns.ReplicaAddr(s.cfg.DNSListen, s.cfg.AdvertiseAddress)})},
		}, controllers.Group{
			Name:  "dns-serials",
			Lease: authdns.Lease,
			New:   []func(controllers.Env) (controllers.Controller, error){controllers.NewDNSSerials},
		})
	}
	if !s.cfg.DisableAgent {
		groups = append(groups, controllers.Group{
			Name:    "this-node",
			Options: []informers.SharedInformerOption{controllers.OnlyNode(s.cfg.NodeName)},
			New:     []func(controllers.Env) (controllers.Controller, error){controllers.NewControlPlaneLabel(s.cfg.NodeName)},
		})
	}
	for i := range groups {
		groups[i].Host = s.cfg.NodeName
	}
	return groups
}

// The rate limit of the client all controller groups share.
const (
	controllersQPS   = 100
	controllersBurst = 200
)

// controllersLease is the election of every elected group: upstream's
// defaults for kube-controller-manager (15 s lease, renewed every 2 s,
// given up after 10 s without renewal).
func controllersLease(name string) componentbaseconfig.LeaderElectionConfiguration {
	return componentbaseconfig.LeaderElectionConfiguration{
		LeaderElect: true, ResourceLock: "leases", ResourceNamespace: metav1.NamespaceSystem, ResourceName: name,
		LeaseDuration: metav1.Duration{Duration: 15 * time.Second},
		RenewDeadline: metav1.Duration{Duration: 10 * time.Second},
		RetryPeriod:   metav1.Duration{Duration: 2 * time.Second},
	}
}

// runControllers runs every group until ctx ends, each under the
// restarter, the elected ones while this server holds their Lease.
func (s *Server) runControllers(ctx context.Context, cs kubernetes.Interface, dyn dynamic.Interface) {
	restart := newRestarter(s.log)
	kubeconfig := s.paths.cred("admin.kubeconfig")
	var wg sync.WaitGroup
	for _, g := range s.controllerGroups() {
		run := func(ctx context.Context) error { return g.Run(ctx, cs, dyn, s.log) }
		if g.Lease != "" {
			run = func(ctx context.Context) error {
				return whileLeading(ctx, g.Lease, s.cfg.NodeName, controllersLease(g.Lease), kubeconfig, func(ctx context.Context) error { return g.Run(ctx, cs, dyn, s.log) })
			}
		}
		wg.Go(func() { restart.run(ctx, "controllers "+g.Name, run) })
	}
	if s.dns != nil {
		wg.Go(func() { restart.run(ctx, "authoritative DNS", s.dns.Run) })
	}
	wg.Wait()
}

// lbReserved are the ranges no address pool may overlap, besides node
// addresses (which the allocator reads from the Nodes).
func (s *Server) lbReserved() []lb.Reserved {
	return lb.ReservedCIDRs(s.cfg.ClusterCIDR, s.cfg.ServiceCIDR)
}

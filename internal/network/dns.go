package network

// The only file that imports CoreDNS. Every node runs it in this process
// and serves cluster DNS on its pod gateway address (reachable from pods
// on any node through the pod network, never from the LAN); the server
// lists the Ready nodes' addresses as the endpoints of the cluster DNS
// Service, so losing a node loses one endpoint, not DNS.
//
// CoreDNS's loop plugin is left out: it halts the whole process when it
// sees a loop, which here would take the node down. The loop is prevented
// where it starts instead: the upstreams (the agent's resolv.conf) never
// include a loopback address, and nothing outside the node can reach
// this server to forward back to it.
//
// Names under the pseudo-TLD svc. are answered here as the same names
// under svc.<cluster domain>, and never forwarded. With ndots 2 a pod's
// resolver asks for a partial name such as web.default.svc as an
// absolute name first (dig and other resolvers that treat a name with
// ndots dots as absolute ask for nothing else); forwarded, that query
// would leak the cluster's names to the upstream and wait on it, and
// answered NXDOMAIN it would fail for dig. No public name ends in svc.

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/rewrite"

	"github.com/cloudless-dev/cloudless/internal/klogslog"
)

const (
	// DNSPort is where each node's cluster DNS listens, on its pod
	// gateway address; the Service's port 53 maps to it.
	DNSPort = 10053
	// AnnotationDNS carries the address of the node's cluster DNS once
	// it answers.
	AnnotationDNS = "cloudless.dev/dns-address"
	dnsHealthAddr = "127.0.0.1:10054"
	dnsReadyAddr  = "127.0.0.1:10055"
	// pseudoTLD is the last label of the partial Service names pods
	// look up (name.namespace.svc); cluster DNS owns it.
	pseudoTLD = "svc"
	// dnsTTL is the TTL of cluster DNS answers.
	dnsTTL = 30
)

func init() { dnsserver.Quiet = true }

// corefile is the node's CoreDNS configuration.
func (n *Network) corefile(gw netip.Addr) string {
	return fmt.Sprintf(`.:%[1]d {
    bind %[2]s
    errors
    health %[3]s
    ready %[4]s
    rewrite name suffix .%[8]s. .%[8]s.%[5]s. answer auto
    kubernetes %[5]s in-addr.arpa ip6.arpa {
        kubeconfig %[6]s
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl %[9]d
    }
    cache %[9]d
    forward . %[7]s {
        max_concurrent 1000
    }
}
`, DNSPort, gw, dnsHealthAddr, dnsReadyAddr, n.cfg.ClusterDomain, n.cfg.Kubeconfig, n.cfg.ResolvConf, pseudoTLD, dnsTTL)
}

// runDNS serves cluster DNS on gw until ctx ends, and announces it on the
// node once it answers.
func (n *Network) runDNS(ctx context.Context, cs kubernetes.Interface, gw netip.Addr) error {
	inst, err := caddy.Start(caddy.CaddyfileInput{Contents: []byte(n.corefile(gw)), Filepath: "Corefile", ServerTypeName: "dns"})
	// The kubernetes plugin's setup made klog write every component's
	// lines as its own; route them by component again.
	klogslog.Reclaim()
	if err != nil {
		return fmt.Errorf("cluster DNS: %w", err)
	}
	defer inst.Stop()
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, AnnotationDNS, netip.AddrPortFrom(gw, DNSPort).String())
	if _, err := cs.CoreV1().Nodes().Patch(ctx, n.cfg.NodeName, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("cluster DNS: announce on node %s: %w", n.cfg.NodeName, err)
	}
	n.log.Info("cluster DNS serving", "address", netip.AddrPortFrom(gw, DNSPort), "upstreams", strings.TrimSpace(n.cfg.ResolvConf))
	<-ctx.Done()
	return nil
}

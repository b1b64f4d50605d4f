package doctor

import (
	"context"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	authdns "github.com/cloudless-dev/cloudless/internal/dns"
	"github.com/cloudless-dev/cloudless/internal/lint"
)

// dnsChecks asks every server that answers the cluster's authoritative
// DNS (the replicas registry) for each zone's SOA: one that does not
// answer (CL-DNS-001), or answers under another serial than the one
// recorded for the zone's current content (CL-DNS-002), answers
// differently from the others. No registry: no authoritative DNS, no
// check.
func dnsChecks(ctx context.Context, cs kubernetes.Interface, timeout time.Duration, r *reporter) {
	reg, err := cs.CoreV1().ConfigMaps(metav1.NamespaceSystem).Get(ctx, authdns.ReplicasConfigMap, metav1.GetOptions{})
	if err != nil {
		return
	}
	replicas := authdns.Replicas(reg)
	if len(replicas) == 0 {
		return
	}
	cms, err := cs.CoreV1().ConfigMaps(metav1.NamespaceSystem).List(ctx, metav1.ListOptions{LabelSelector: authdns.ZoneLabel})
	if err != nil {
		return
	}
	var recorded map[string]authdns.Record
	var origins []string
	for i := range cms.Items {
		cm := &cms.Items[i]
		if cm.Name == authdns.SerialsConfigMap {
			recorded = authdns.Recorded(cm)
			continue
		}
		if origin, _, err := authdns.ZoneText(cm); err == nil {
			origins = append(origins, origin)
		}
	}
	addrs := make([]string, len(replicas))
	for i, rep := range replicas {
		addrs[i] = rep.Addr
	}
	for _, origin := range origins {
		want, ok := recorded[origin]
		if !ok {
			continue // not served anywhere yet
		}
		answers, _ := authdns.CheckSerials(origin, addrs, timeout)
		for i, a := range answers {
			object := fmt.Sprintf("DNS server %s (%s)", replicas[i].Name, a.Addr)
			switch {
			case a.Error != "":
				r.add("CL-DNS-001", lint.Error, object, fmt.Sprintf("does not answer for zone %s (%s): clients and secondaries that ask it get no answer", origin, a.Error),
					"is `cloudless server` running there, with its --dns-listen reachable from here? For a server removed for good, delete its key from ConfigMap kube-system/"+authdns.ReplicasConfigMap)
			case a.Serial != want.Serial:
				r.add("CL-DNS-002", lint.Warning, object, fmt.Sprintf("serves zone %s under serial %d; the serial recorded for the zone's current content is %d: it answers differently from the servers that have it", origin, a.Serial, want.Serial),
					"a change made in the last seconds may still be on its way: run doctor again; if it stays, read that server's log (its informers or its API connection)")
			}
		}
	}
}

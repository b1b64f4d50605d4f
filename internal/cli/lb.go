package cli

import (
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"

	"github.com/cloudless-dev/cloudless/internal/datadir"
	"github.com/cloudless-dev/cloudless/internal/lb"
)

// lbService is one row of `cloudless lb status`.
type lbService struct {
	Service   string   `json:"service"`
	Addresses []string `json:"addresses"`
	Pool      string   `json:"pool,omitempty"`
	Allocated bool     `json:"allocated"`
	Reason    string   `json:"reason,omitempty"`
	Message   string   `json:"message,omitempty"`
	// Announcer is the newest AnnouncingL2 event's node and its words.
	Announcer string `json:"announcer,omitempty"`
	Announced string `json:"announced,omitempty"`
	// BGPNodes are the nodes whose newest BGP event for the Service is
	// AnnouncingBGP, not WithdrawnBGP.
	BGPNodes []string `json:"bgpNodes,omitempty"`
}

func newLBCmd() *cobra.Command {
	dataDir := datadir.Default
	var output string
	cmd := &cobra.Command{Use: "lb", Short: "The built-in load balancer: LoadBalancer Services' addresses"}
	status := &cobra.Command{
		Use:   "status",
		Short: "Every LoadBalancer Service: its address, pool, and the node announcing it",
		Long: `List every LoadBalancer Service of the built-in load balancer (no other
loadBalancerClass): its addresses, the IPAddressPool they came from, why it
has none (the allocator's condition cloudless.dev/LoadBalancerAllocated),
which node announces it by ARP (the newest AnnouncingL2 event), and which
nodes advertise it to BGP routers (each node's newest AnnouncingBGP or
WithdrawnBGP event). Events expire after an hour, so an address announced
longer by the same node may show none.

Run on a server; it uses <data-dir>/server/cred/admin.kubeconfig.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := configure(cmd, false); err != nil {
				return err
			}
			cs, _, err := adminClient(dataDir)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			svcs, err := cs.CoreV1().Services("").List(ctx, metav1.ListOptions{})
			if err != nil {
				return fmt.Errorf("list Services: %w", err)
			}
			newest := map[string]corev1.Event{}               // Service -> newest L2 event
			bgpNewest := map[string]map[string]corev1.Event{} // Service -> node -> newest BGP event
			for _, reason := range []string{lb.ReasonAnnouncingL2, lb.ReasonAnnouncingBGP, lb.ReasonWithdrawnBGP} {
				evs, err := cs.CoreV1().Events("").List(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("reason", reason).String()})
				if err != nil {
					return fmt.Errorf("list events: %w", err)
				}
				for _, e := range evs.Items {
					if e.Source.Component != lb.SpeakerComponent {
						continue
					}
					k := e.InvolvedObject.Namespace + "/" + e.InvolvedObject.Name
					m := newest
					if reason != lb.ReasonAnnouncingL2 {
						if bgpNewest[k] == nil {
							bgpNewest[k] = map[string]corev1.Event{}
						}
						m, k = bgpNewest[k], e.Source.Host
					}
					if cur, ok := m[k]; !ok || lb.EventTime(&e).After(lb.EventTime(&cur)) {
						m[k] = e
					}
				}
			}
			var rows []lbService
			for _, s := range svcs.Items {
				if s.Spec.Type != corev1.ServiceTypeLoadBalancer || s.Spec.LoadBalancerClass != nil {
					continue
				}
				r := lbService{Service: s.Namespace + "/" + s.Name, Pool: s.Annotations[lb.AnnotationPrefix+lb.AllocatedFromPool], Addresses: []string{}}
				for _, in := range s.Status.LoadBalancer.Ingress {
					r.Addresses = append(r.Addresses, in.IP)
				}
				if c := meta.FindStatusCondition(s.Status.Conditions, lb.ConditionAllocated); c != nil {
					r.Allocated, r.Reason, r.Message = c.Status == metav1.ConditionTrue, c.Reason, c.Message
				} else {
					r.Reason, r.Message = "Pending", "the allocator has not looked at it yet (is a server running?)"
				}
				if e, ok := newest[r.Service]; ok && len(r.Addresses) > 0 {
					r.Announcer, r.Announced = e.Source.Host, e.Message
				}
				for node, e := range bgpNewest[r.Service] {
					if e.Reason == lb.ReasonAnnouncingBGP && len(r.Addresses) > 0 {
						r.BGPNodes = append(r.BGPNodes, node)
					}
				}
				slices.Sort(r.BGPNodes)
				rows = append(rows, r)
			}
			slices.SortFunc(rows, func(a, b lbService) int { return strings.Compare(a.Service, b.Service) })
			switch output {
			case "json":
				return writeJSON(cmd.OutOrStdout(), rows)
			case "", "table":
				w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "SERVICE\tADDRESSES\tPOOL\tANNOUNCED BY\tSTATUS")
				for _, r := range rows {
					status := "allocated"
					if !r.Allocated {
						status = r.Reason + ": " + r.Message
					}
					by := r.Announcer
					if len(r.BGPNodes) > 0 {
						by = strings.TrimPrefix(by+" bgp:"+strings.Join(r.BGPNodes, ","), " ")
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", r.Service, dash(strings.Join(r.Addresses, ",")), dash(r.Pool), dash(by), status)
				}
				if len(rows) == 0 {
					fmt.Fprintln(w, "(no LoadBalancer Services)")
				}
				return w.Flush()
			}
			return fmt.Errorf("-o %q: want table or json", output)
		},
	}
	addConfigFlag(status)
	datadir.AddFlag(status.Flags(), &dataDir, "")
	status.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	cmd.AddCommand(status)
	return cmd
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

package cli

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/spf13/cobra"

	"github.com/cloudless-dev/cloudless/internal/datadir"
	"github.com/cloudless-dev/cloudless/internal/dns"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
)

// dnsRecord is one row of `cloudless dns records`.
type dnsRecord struct {
	Zone   string `json:"zone"`
	Serial uint32 `json:"serial"`
	Name   string `json:"name"`
	TTL    uint32 `json:"ttl"`
	Type   string `json:"type"`
	Data   string `json:"data"`
	Source string `json:"source"`
}

func newDNSCmd() *cobra.Command {
	dataDir := datadir.Default
	var output string
	cmd := &cobra.Command{Use: "dns", Short: "The authoritative DNS for the cluster's public names (server --dns-listen)"}
	records := &cobra.Command{
		Use:   "records [ZONE]",
		Short: "What the authoritative DNS serves, and where each record came from",
		Long: `List the records of every zone (or of ZONE), as the servers build them
from the Kubernetes API: the zone ConfigMaps (kube-system, labelled
` + dns.ZoneLabel + `, and those --dns-zone made), LoadBalancer Services
annotated with external-dns.kubernetes.io/hostname (or the older
external-dns.alpha.kubernetes.io/hostname), Ingresses, Gateway API
HTTPRoutes, GRPCRoutes and TLSRoutes accepted by their Gateways, and
external-dns's DNSEndpoint objects. Each record names its source object
("Ingress shop/web"); the serial is the one recorded for the zone's
current content (0 until the elected writer has recorded it).

Run on a server; it uses <data-dir>/server/cred/admin.kubeconfig.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := configure(cmd, false); err != nil {
				return err
			}
			rc, err := adminConfig(dataDir)
			if err != nil {
				return err
			}
			cs, err := kubernetes.NewForConfig(rc)
			if err != nil {
				return err
			}
			dyn, err := dynamic.NewForConfig(rc)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			objs, serials, err := dns.List(ctx, cs, dyn)
			if err != nil {
				return err
			}
			zones, problems := dns.NewBuilder().Build(objs)
			rec := dns.Recorded(serials)
			want := ""
			if len(args) == 1 {
				want = mdns.CanonicalName(args[0])
				if zones[want] == nil {
					return fmt.Errorf("no zone %s: the zones are %s", want, strings.Join(slices.Sorted(maps.Keys(zones)), ", "))
				}
			}
			var rows []dnsRecord
			for _, origin := range slices.Sorted(maps.Keys(zones)) {
				if want != "" && origin != want {
					continue
				}
				z := zones[origin]
				serial := uint32(0)
				if r, ok := rec[origin]; ok && r.Hash == z.Hash {
					serial = r.Serial
				}
				for _, r := range z.Records {
					h := r.RR.Header()
					data := strings.TrimPrefix(r.RR.String(), h.String())
					if soa, ok := r.RR.(*mdns.SOA); ok {
						c := *soa
						c.Serial = serial
						data = strings.TrimPrefix(c.String(), h.String())
					}
					rows = append(rows, dnsRecord{Zone: origin, Serial: serial, Name: h.Name, TTL: h.Ttl, Type: mdns.TypeToString[h.Rrtype], Data: data, Source: r.Source})
				}
			}
			if output == "json" {
				return writeJSON(cmd.OutOrStdout(), rows)
			}
			if output != "table" {
				return fmt.Errorf("-o %q: want table or json", output)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ZONE\tSERIAL\tNAME\tTTL\tTYPE\tDATA\tSOURCE")
			for _, r := range rows {
				fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%s\t%s\t%s\n", r.Zone, r.Serial, r.Name, r.TTL, r.Type, r.Data, r.Source)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			for _, p := range problems {
				fmt.Fprintf(cmd.ErrOrStderr(), "%s: %s: %s\n", p.Ref, p.Reason, p.Message)
			}
			return nil
		},
	}
	datadir.AddFlag(records.Flags(), &dataDir, "")
	records.Flags().StringVarP(&output, "output", "o", "table", "table or json")

	var timeout time.Duration
	check := &cobra.Command{
		Use:   "check ZONE [ADDR...]",
		Short: "Ask every replica for a zone's SOA and compare their serials",
		Long: `Query each server that answers DNS for ZONE's SOA and report the serial
each answers. The servers are those listed in ConfigMap
kube-system/` + dns.ReplicasConfigMap + ` (each server adds itself), or the ADDRs
given (host:port of a server's --dns-listen). Exits 1 when a replica does
not answer or the serials differ; doctor reports the same (CL-DNS-001,
CL-DNS-002).`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := configure(cmd, false); err != nil {
				return err
			}
			zone := mdns.CanonicalName(args[0])
			addrs := args[1:]
			if len(addrs) == 0 {
				cs, _, err := adminClient(dataDir)
				if err != nil {
					return fmt.Errorf("%w (or give the servers' addresses: dns check ZONE ADDR...)", err)
				}
				reg, err := cs.CoreV1().ConfigMaps(metav1.NamespaceSystem).Get(cmd.Context(), dns.ReplicasConfigMap, metav1.GetOptions{})
				if err != nil {
					return fmt.Errorf("read the servers answering DNS: %w (no server runs with --dns-listen?)", err)
				}
				for _, r := range dns.Replicas(reg) {
					addrs = append(addrs, r.Addr)
				}
				if len(addrs) == 0 {
					return fmt.Errorf("no server lists itself in ConfigMap kube-system/%s: none runs with --dns-listen", dns.ReplicasConfigMap)
				}
			}
			answers, agree := dns.CheckSerials(zone, addrs, timeout)
			if output == "json" {
				if err := writeJSON(cmd.OutOrStdout(), answers); err != nil {
					return err
				}
			} else {
				for _, a := range answers {
					if a.Error != "" {
						fmt.Fprintf(cmd.OutOrStdout(), "%s\t%s\t%s\n", a.Addr, zone, a.Error)
					} else {
						fmt.Fprintf(cmd.OutOrStdout(), "%s\t%s\tserial %d\n", a.Addr, zone, a.Serial)
					}
				}
			}
			if !agree {
				return fmt.Errorf("%s: the replicas disagree or do not answer: one with an older serial has not seen the latest change yet, or cannot reach the API", zone)
			}
			return nil
		},
	}
	datadir.AddFlag(check.Flags(), &dataDir, "")
	check.Flags().DurationVar(&timeout, "timeout", 2*time.Second, "per query")
	check.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	var tsigOutput string
	tsig := &cobra.Command{
		Use:   "tsig",
		Short: "The TSIG key secondaries sign zone transfers with, in nsd's and BIND's syntax",
		Long: `Print the TSIG key (RFC 8945) that every server requires on zone transfers
and signs NOTIFY with. The first server made it, at random, in Secret
kube-system/` + dns.TSIGSecret + ` (data "algorithm" and "secret"); replace the
Secret's data to rotate it, then update the secondaries.

A secondary names the key on both directions, e.g. for nsd:
  zone:
    name: example.com
    request-xfr: SERVER-ADDR ` + dns.TSIGSecret + `
    allow-notify: SERVER-ADDR ` + dns.TSIGSecret + `

Run on a server; it uses <data-dir>/server/cred/admin.kubeconfig.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := configure(cmd, false); err != nil {
				return err
			}
			cs, _, err := adminClient(dataDir)
			if err != nil {
				return err
			}
			sec, err := cs.CoreV1().Secrets(metav1.NamespaceSystem).Get(cmd.Context(), dns.TSIGSecret, metav1.GetOptions{})
			if err != nil {
				return fmt.Errorf("read the TSIG key: %w (a server started with --dns-listen makes it)", err)
			}
			key, err := dns.TSIGKeyOf(sec)
			if err != nil {
				return err
			}
			switch tsigOutput {
			case "json":
				return writeJSON(cmd.OutOrStdout(), map[string]string{"name": strings.TrimSuffix(key.Name, "."), "algorithm": key.Algorithm, "secret": key.Secret})
			case "nsd":
				fmt.Fprint(cmd.OutOrStdout(), key.NSDConfig())
			case "bind":
				fmt.Fprint(cmd.OutOrStdout(), key.BINDConfig())
			default:
				return fmt.Errorf("-o %q: want nsd, bind or json", tsigOutput)
			}
			return nil
		},
	}
	tsig.Flags().StringVarP(&tsigOutput, "output", "o", "nsd", "nsd, bind or json")
	datadir.AddFlag(tsig.Flags(), &dataDir, "")
	cmd.AddCommand(records, check, tsig)
	return cmd
}

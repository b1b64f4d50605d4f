package network

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os/exec"
	"strings"
	"time"

	"sigs.k8s.io/knftables"

	"github.com/cloudless-dev/cloudless/internal/footprint"
)

// Table is the nftables table (family ip) this package owns.
const Table = "cloudless"

// masquerader keeps the rule that rewrites the source of pod traffic
// leaving the cluster network to the node's address, so that the world
// outside (which has no route to pod CIDRs) can answer, and the DNS guard:
// the node's cluster DNS (DNSPort, on the pod gateway) answers sources in
// the cluster CIDR (pods, and other nodes through the overlay) and this
// node's own addresses only, never a LAN host that routes the pod CIDR
// through the node (an open resolver).
type masquerader interface {
	ensure(ctx context.Context) error
	keep(ctx context.Context, log *slog.Logger)
}

func keep(ctx context.Context, log *slog.Logger, ensure func(context.Context) error) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Minute): // repairs a flushed ruleset
		}
		if err := ensure(ctx); err != nil && ctx.Err() == nil {
			log.Warn("restore masquerade rules", "err", err)
		}
	}
}

type nftMasq struct {
	cluster netip.Prefix
	rec     *footprint.Recorder
}

func (m *nftMasq) ensure(ctx context.Context) error {
	nft, err := knftables.New(knftables.IPv4Family, Table)
	if err != nil {
		return err
	}
	if err := m.rec.AddNFTable("ip", Table); err != nil {
		return err
	}
	tx := nft.NewTransaction()
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("cloudless: pod network masquerade")})
	chain := &knftables.Chain{Name: "postrouting", Type: knftables.PtrTo(knftables.NATType),
		Hook: knftables.PtrTo(knftables.PostroutingHook), Priority: knftables.PtrTo(knftables.SNATPriority)}
	tx.Add(chain)
	tx.Flush(chain)
	c := m.cluster.String()
	tx.Add(&knftables.Rule{Chain: "postrouting",
		Rule: knftables.Concat("ip saddr", c, "ip daddr !=", c, "ip daddr != 224.0.0.0/4", "masquerade fully-random")})
	guard := &knftables.Chain{Name: "dns-guard", Type: knftables.PtrTo(knftables.FilterType),
		Hook: knftables.PtrTo(knftables.InputHook), Priority: knftables.PtrTo(knftables.FilterPriority)}
	tx.Add(guard)
	tx.Flush(guard)
	tx.Add(&knftables.Rule{Chain: "dns-guard", Rule: dnsGuardRule(m.cluster),
		Comment: knftables.PtrTo("cloudless: cluster DNS answers pods and this node only")})
	return nft.Run(ctx, tx)
}

// dnsGuardRule drops queries to the cluster DNS port from sources that are
// neither in the cluster CIDR nor addresses of this node.
func dnsGuardRule(cluster netip.Prefix) string {
	return knftables.Concat("meta l4proto { tcp, udp } th dport", DNSPort, "ip saddr !=", cluster.String(), "fib saddr type != local drop")
}

func (m *nftMasq) keep(ctx context.Context, log *slog.Logger) { keep(ctx, log, m.ensure) }

type iptMasq struct {
	cluster netip.Prefix
	rec     *footprint.Recorder
}

const (
	iptChain      = "CLOUDLESS-POSTROUTING"
	iptGuardChain = "CLOUDLESS-DNS-GUARD" // in the filter table, from INPUT
)

func (m *iptMasq) ensure(ctx context.Context) error {
	ipt := iptables(ctx, "nat")
	if err := m.rec.AddIPTChain("nat", iptChain, "POSTROUTING"); err != nil {
		return err
	}
	_ = ipt("-N", iptChain) // exists already after a restart
	if ipt("-C", "POSTROUTING", "-j", iptChain) != nil {
		if err := ipt("-A", "POSTROUTING", "-j", iptChain); err != nil {
			return err
		}
	}
	c := m.cluster.String()
	rule := []string{iptChain, "-s", c, "!", "-d", c, "-m", "comment", "--comment", "cloudless: pod network masquerade", "-j", "MASQUERADE", "--random-fully"}
	if ipt(append([]string{"-C"}, rule...)...) != nil {
		if err := ipt(append([]string{"-A"}, rule...)...); err != nil {
			return err
		}
	}
	return m.ensureGuard(ctx)
}

// ensureGuard is dnsGuardRule in iptables: the filter table's INPUT jumps
// to a chain of our own.
func (m *iptMasq) ensureGuard(ctx context.Context) error {
	ipt := iptables(ctx, "filter")
	if err := m.rec.AddIPTChain("filter", iptGuardChain, "INPUT"); err != nil {
		return err
	}
	_ = ipt("-N", iptGuardChain)
	if ipt("-C", "INPUT", "-j", iptGuardChain) != nil {
		if err := ipt("-I", "INPUT", "-j", iptGuardChain); err != nil {
			return err
		}
	}
	for _, proto := range []string{"udp", "tcp"} {
		rule := []string{iptGuardChain, "-p", proto, "--dport", fmt.Sprint(DNSPort), "!", "-s", m.cluster.String(),
			"-m", "addrtype", "!", "--src-type", "LOCAL", "-m", "comment", "--comment", "cloudless: cluster DNS answers pods and this node only", "-j", "DROP"}
		if ipt(append([]string{"-C"}, rule...)...) != nil {
			if err := ipt(append([]string{"-A"}, rule...)...); err != nil {
				return err
			}
		}
	}
	return nil
}

// iptables runs iptables on table.
func iptables(ctx context.Context, table string) func(args ...string) error {
	return func(args ...string) error {
		out, err := exec.CommandContext(ctx, "iptables", append([]string{"-w", "-t", table}, args...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("iptables -t %s %s: %v: %s", table, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
		return nil
	}
}

func (m *iptMasq) keep(ctx context.Context, log *slog.Logger) { keep(ctx, log, m.ensure) }

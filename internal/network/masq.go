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
// outside (which has no route to pod CIDRs) can answer.
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
	return nft.Run(ctx, tx)
}

func (m *nftMasq) keep(ctx context.Context, log *slog.Logger) { keep(ctx, log, m.ensure) }

type iptMasq struct {
	cluster netip.Prefix
	rec     *footprint.Recorder
}

const iptChain = "CLOUDLESS-POSTROUTING"

func (m *iptMasq) ensure(ctx context.Context) error {
	ipt := func(args ...string) error {
		out, err := exec.CommandContext(ctx, "iptables", append([]string{"-w", "-t", "nat"}, args...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("iptables %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
		return nil
	}
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
		return ipt(append([]string{"-A"}, rule...)...)
	}
	return nil
}

func (m *iptMasq) keep(ctx context.Context, log *slog.Logger) { keep(ctx, log, m.ensure) }

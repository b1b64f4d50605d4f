package main

import (
	"fmt"
	"log"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// quantile of sorted samples (nearest rank).
func quantile(s []time.Duration, q float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	i := int(q*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

func report(profiles []string, samples map[string][]time.Duration, create []time.Duration) {
	date := time.Now().Format("2006-01-02")
	base := filepath.Join(*out, fmt.Sprintf("lb-%s-%s", date, *machine))
	var md strings.Builder
	fmt.Fprintf(&md, "# Load balancer, %s, %s\n\n", date, *machine)
	fmt.Fprintf(&md, "`sudo bench/lb/run.sh` (%d failovers per profile, %d Services created; %d CPUs). Two nodes (server + agent) and a client in network namespaces on one bridge. A failover: SIGKILL node-b's agent (it announces the address), take its LAN link down, and time until the client, polling every 10 ms with a 200 ms timeout, is served through node-a. Then node-b is restarted and takes its address back before the next one.\n\n", *failovers, *creates, runtime.NumCPU())
	md.WriteString("| failure detection | failovers | median | p95 | min | max |\n|---|---|---|---|---|---|\n")
	var csv strings.Builder
	csv.WriteString("profile,kind,i,seconds\n")
	med := map[string]time.Duration{}
	for _, p := range profiles {
		s := slices.Clone(samples[p])
		slices.Sort(s)
		med[p] = quantile(s, 0.5)
		fmt.Fprintf(&md, "| %s | %d | %s | %s | %s | %s |\n", label(p), len(s), secs(med[p]), secs(quantile(s, 0.95)), secs(s[0]), secs(s[len(s)-1]))
		for i, d := range samples[p] {
			fmt.Fprintf(&csv, "%s,failover,%d,%.4f\n", p, i, d.Seconds())
		}
	}
	if b := med[profiles[1]]; b > 0 {
		fmt.Fprintf(&md, "\nMedian failover, Cloudless (%s) / memberlist's stock LAN timings (%s, MetalLB's): **%.2f×**.\n", profiles[0], profiles[1], med[profiles[0]].Seconds()/b.Seconds())
	}
	c := slices.Clone(create)
	slices.Sort(c)
	fmt.Fprintf(&md, "\n| Service create → first successful request | n | median | p95 | max |\n|---|---|---|---|---|\n| %s | %d | %s | %s | %s |\n", label(profiles[0]), len(c), secs(quantile(c, 0.5)), secs(quantile(c, 0.95)), secs(c[len(c)-1]))
	for i, d := range create {
		fmt.Fprintf(&csv, "%s,create,%d,%.4f\n", profiles[0], i, d.Seconds())
	}
	fmt.Fprintf(&md, "\nTargets (issue 13): failover median ≤ 1 s, create-to-reachable ≤ 2 s. Samples in `%s.csv`.\n", filepath.Base(base))
	for ext, body := range map[string]string{".md": md.String(), ".csv": csv.String()} {
		if err := os.WriteFile(base+ext, []byte(body), 0o644); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Print(md.String())
}

func label(p string) string {
	if p == "tolerant" {
		return p + " (memberlist LAN defaults)"
	}
	return p
}

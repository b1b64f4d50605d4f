// Command dns benchmarks Cloudless's authoritative DNS (internal/dns)
// against PowerDNS (Debian's pdns-server with the gsqlite3 backend), the
// server external-dns users run, in the same run on the same machine:
//
//   - queries per second for a zone of -records A records, dnsperf (from
//     Debian) against each server in turn, the same query file;
//   - change to visible: `cloudless server --dns-listen` with its
//     allocator; an annotated LoadBalancer Service is created and the
//     name is asked for every 5 ms until the allocated address answers.
//     The peer's figure is external-dns's poll interval (1 min by
//     default), not measured.
//
// Cloudless's server is run in this process from internal/dns (the code
// cloudless server runs, without the informers that feed it); PowerDNS as
// its own process. Run it through bench/dns/run.sh.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"

	authdns "github.com/cloudless-dev/cloudless/internal/dns"
	"github.com/cloudless-dev/cloudless/internal/dns/zone"
	"slices"
)

var (
	records  = flag.Int("records", 10000, "A records in the zone")
	seconds  = flag.Int("seconds", 10, "dnsperf run length per server")
	runs     = flag.Int("runs", 5, "measured dnsperf runs per server")
	clients  = flag.Int("clients", 20, "dnsperf clients")
	changes  = flag.Int("changes", 20, "Services created for change-to-visible")
	bin      = flag.String("cloudless", "", "cloudless binary (change-to-visible; empty skips it)")
	out      = flag.String("out", "bench/results", "results directory")
	machine  = flag.String("machine", "vm", "machine name for the result file")
	profile  = flag.String("cpuprofile", "", "write a CPU profile of one dnsperf run against Cloudless's server")
	origin   = "bench.test."
	freePort = func() int {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			log.Fatal(err)
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port
	}
)

func zoneText(n int) string {
	var b strings.Builder
	b.WriteString("$TTL 300\n@ SOA ns1 hostmaster 1 3600 600 604800 60\n@ NS ns1\nns1 A 192.0.2.1\n")
	for i := range n {
		fmt.Fprintf(&b, "host-%d A 10.%d.%d.%d\n", i, i>>16&255, i>>8&255, i&255)
	}
	return b.String()
}

func queryFile(dir string, n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "host-%d.%s A\n", (i*7919)%n, origin)
	}
	p := filepath.Join(dir, "queries.txt")
	must(os.WriteFile(p, []byte(b.String()), 0o644))
	return p
}

var qpsRe = regexp.MustCompile(`Queries per second:\s+([0-9.]+)`)
var lostRe = regexp.MustCompile(`Queries lost:\s+(\d+)`)

func dnsperf(port int, queries string) (qps float64, lost int) {
	outb, err := exec.Command("dnsperf", "-s", "127.0.0.1", "-p", strconv.Itoa(port), "-d", queries,
		"-l", strconv.Itoa(*seconds), "-c", strconv.Itoa(*clients), "-q", "200").CombinedOutput()
	if err != nil {
		log.Fatalf("dnsperf: %v\n%s", err, outb)
	}
	m := qpsRe.FindSubmatch(outb)
	if m == nil {
		log.Fatalf("dnsperf printed no rate:\n%s", outb)
	}
	qps, _ = strconv.ParseFloat(string(m[1]), 64)
	if l := lostRe.FindSubmatch(outb); l != nil {
		lost, _ = strconv.Atoi(string(l[1]))
	}
	return qps, lost
}

func waitAnswer(addr, name string) {
	c := &dns.Client{Timeout: 500 * time.Millisecond}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		r, _, err := c.Exchange(new(dns.Msg).SetQuestion(name, dns.TypeA), addr)
		if err == nil && r.Rcode == dns.RcodeSuccess && len(r.Answer) > 0 {
			return
		}
		time.Sleep(50 * time.Millisecond) // polling for the server to come up
	}
	log.Fatalf("%s does not answer %s", addr, name)
}

// ours serves the zone from internal/dns in this process.
func ours(ctx context.Context, text string) int {
	recs, err := zone.Parse(origin, text, "bench")
	must(err)
	zones, problems := zone.Build(map[string][]zone.Record{origin: recs}, nil)
	if len(problems) > 0 {
		log.Fatal(problems)
	}
	port := freePort()
	// No rate limit: the load generator is one source.
	s := authdns.NewServer(authdns.Config{Listen: fmt.Sprintf("127.0.0.1:%d", port)}, slog.New(slog.DiscardHandler))
	s.Set(map[string]authdns.Served{origin: {Zone: zones[origin], Serial: 1}})
	go func() { must(s.Run(ctx)) }()
	waitAnswer(fmt.Sprintf("127.0.0.1:%d", port), "host-1."+origin)
	return port
}

// powerDNS loads the zone into a fresh sqlite database and runs
// pdns_server on it, with Debian's defaults otherwise (packet cache on).
func powerDNS(dir, text string) (int, func()) {
	db := filepath.Join(dir, "pdns.sqlite3")
	schema, err := os.ReadFile("/usr/share/doc/pdns-backend-sqlite3/schema.sqlite3.sql")
	must(err)
	cfgDir := filepath.Join(dir, "pdns")
	must(os.MkdirAll(cfgDir, 0o755))
	port := freePort()
	conf := fmt.Sprintf("launch=gsqlite3\ngsqlite3-database=%s\nlocal-address=127.0.0.1\nlocal-port=%d\nsocket-dir=%s\ndaemon=no\nguardian=no\nsetuid=\nsetgid=\nloglevel=3\n", db, port, cfgDir)
	must(os.WriteFile(filepath.Join(cfgDir, "pdns.conf"), []byte(conf), 0o644))
	sq := exec.Command("sqlite3", db)
	sq.Stdin = strings.NewReader(string(schema))
	if b, err := sq.CombinedOutput(); err != nil {
		log.Fatalf("sqlite3 schema: %v\n%s", err, b)
	}
	zf := filepath.Join(dir, "zone.txt")
	must(os.WriteFile(zf, []byte("$ORIGIN "+origin+"\n"+text), 0o644))
	if b, err := exec.Command("pdnsutil", "--config-dir", cfgDir, "load-zone", origin, zf).CombinedOutput(); err != nil {
		log.Fatalf("pdnsutil load-zone: %v\n%s", err, b)
	}
	cmd := exec.Command("pdns_server", "--config-dir="+cfgDir)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	must(cmd.Start())
	waitAnswer(fmt.Sprintf("127.0.0.1:%d", port), "host-1."+origin)
	return port, func() { cmd.Process.Kill(); cmd.Wait() }
}

func main() {
	flag.Parse()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir, err := os.MkdirTemp("", "bench-dns-")
	must(err)
	defer os.RemoveAll(dir)
	text := zoneText(*records)
	queries := queryFile(dir, *records)

	pdnsPort, stop := powerDNS(dir, text)
	ourPort := ours(ctx, text)
	if *profile != "" {
		f, err := os.Create(*profile)
		must(err)
		must(pprof.StartCPUProfile(f))
		dnsperf(ourPort, queries)
		pprof.StopCPUProfile()
	}
	// Warm both, then measure each -runs times, alternating, so that a
	// slow moment of the machine hits both; the ratio is the median of
	// the pairs' ratios, each side's figure its median.
	dnsperf(ourPort, queries)
	dnsperf(pdnsPort, queries)
	var r qpsRuns
	for range *runs {
		q, l := dnsperf(ourPort, queries)
		r.ours, r.ourLost = append(r.ours, q), r.ourLost+l
		q, l = dnsperf(pdnsPort, queries)
		r.pdns, r.pdnsLost = append(r.pdns, q), r.pdnsLost+l
	}
	stop()

	var lat []time.Duration
	if *bin != "" {
		lat = changeToVisible(ctx, dir)
	}
	write(r, lat)
}

// qpsRuns are the alternating dnsperf runs: queries per second, and
// queries lost over all runs.
type qpsRuns struct {
	ours, pdns        []float64
	ourLost, pdnsLost int
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func (r qpsRuns) ratio() float64 {
	var rs []float64
	for i := range r.ours {
		rs = append(rs, r.ours[i]/r.pdns[i])
	}
	return median(rs)
}

func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(p*float64(len(s)-1) + 0.5)
	return s[i]
}

func write(r qpsRuns, lat []time.Duration) {
	ourQPS, pdnsQPS, ratio := median(r.ours), median(r.pdns), r.ratio()
	date := time.Now().UTC().Format("2006-01-02")
	name := filepath.Join(*out, fmt.Sprintf("dns-%s-%s.md", date, *machine))
	var b strings.Builder
	fmt.Fprintf(&b, "# Authoritative DNS, %s, %s\n\n", date, *machine)
	fmt.Fprintf(&b, "`sudo bench/dns/run.sh`: a zone of %d A records; dnsperf %d s per run, %d clients; after a warm-up, %d runs of each, alternating: medians, and the median of the pairs' ratios; %d CPUs.\n\n", *records, *seconds, *clients, *runs, cpus())
	b.WriteString("| | Cloudless (internal/dns) | PowerDNS 4.7 (gsqlite3) | Ratio | Target |\n|---|---|---|---|---|\n")
	verdict := "met"
	if ratio < 1 {
		verdict = "not met"
	}
	fmt.Fprintf(&b, "| queries per second | %.0f | %.0f | %.2f× | ≥ PowerDNS: %s |\n", ourQPS, pdnsQPS, ratio, verdict)
	fmt.Fprintf(&b, "| queries lost, all runs | %d | %d | | |\n", r.ourLost, r.pdnsLost)
	if len(lat) > 0 {
		v := "met"
		if pct(lat, 0.99) > time.Second {
			v = "not met"
		}
		fmt.Fprintf(&b, "| change to visible, median | %d ms | 60000 ms (external-dns's poll interval, not measured) | | |\n", pct(lat, 0.5).Milliseconds())
		fmt.Fprintf(&b, "| change to visible, p99 | %d ms | | | ≤ 1000 ms: %s |\n", pct(lat, 0.99).Milliseconds(), v)
	}
	b.WriteString("\nCloudless's server runs in the benchmark's process from internal/dns, the code `cloudless server --dns-listen` runs (without the informers that feed it); PowerDNS runs as its own process with Debian's defaults (packet cache on). dnsperf shares the 2 CPUs with the server under test.\n")
	runs := func(v []float64) string {
		var out []string
		for _, q := range v {
			out = append(out, fmt.Sprintf("%.0f", q))
		}
		return strings.Join(out, ", ")
	}
	fmt.Fprintf(&b, "\nQueries per second, run by run: Cloudless %s; PowerDNS %s.\n", runs(r.ours), runs(r.pdns))
	if len(lat) > 0 {
		fmt.Fprintf(&b, "\nChange to visible: `cloudless server --disable-agent --dns-listen` (real binary, embedded datastore); %d LoadBalancer Services created one after another, each annotated `external-dns.kubernetes.io/hostname`; time from the create call's return to the first answer with the allocated address, asked every 5 ms. It includes the allocator's allocation, both informers and the serial writer's update.\n", len(lat))
		var ms []string
		for _, d := range lat {
			ms = append(ms, strconv.FormatInt(d.Milliseconds(), 10))
		}
		fmt.Fprintf(&b, "\nEvery change, ms: %s\n", strings.Join(ms, ", "))
	}
	must(os.WriteFile(name, []byte(b.String()), 0o644))
	fmt.Print(b.String())
}

func cpus() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(b), "processor\t:")
}

func must(err error) {
	if err != nil {
		log.Fatal(err)
	}
}

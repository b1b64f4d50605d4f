package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Store names the targets refer to (run.sh uses the same).
const (
	storeEtcd       = "etcd"
	storeKinePG     = "kine-postgres"
	storeOursEmbed  = "cloudless-embedded"
	storeOursPG     = "cloudless-postgres"
	watchTargetMs   = 10.0
	bytesRatioLimit = 0.25
)

type reportConfig struct {
	results  string
	stores   []string
	md, png  string
	csv      string
	date     string
	host     string
	nproc    string
	versions string
	backing  string
	notes    string
}

func cmdReport(args []string) error {
	var c reportConfig
	var stores string
	fs := flag.NewFlagSet("report", flag.ExitOnError)
	fs.StringVar(&c.results, "results", "", "directory of STORE.json results")
	fs.StringVar(&stores, "stores", "", "stores in table order, space-separated")
	fs.StringVar(&c.md, "md", "", "Markdown report to write")
	fs.StringVar(&c.png, "png", "", "PNG plot to write")
	fs.StringVar(&c.csv, "csv", "", "CSV of the database size series to write (store,t_s,bytes)")
	fs.StringVar(&c.date, "date", "", "date of the run")
	fs.StringVar(&c.host, "host", "", "host name")
	fs.StringVar(&c.nproc, "nproc", "", "output of nproc")
	fs.StringVar(&c.versions, "versions", "", "versions of the stores, one 'name: version' a line")
	fs.StringVar(&c.backing, "backing", "", "where the loop images live")
	fs.StringVar(&c.notes, "notes", "", "extra lines for the report's header")
	_ = fs.Parse(args)
	if c.results == "" || c.md == "" {
		return errors.New("report: --results and --md are required")
	}
	c.stores = strings.Fields(stores)
	var rs []*Result
	for _, s := range c.stores {
		r, err := readResult(filepath.Join(c.results, s+".json"))
		if err != nil {
			r = &Result{Store: s, Status: "no result", Detail: err.Error()}
		}
		rs = append(rs, r)
	}
	if c.png != "" {
		if err := plotResults(c.png, rs); err != nil {
			return fmt.Errorf("plot: %w", err)
		}
	}
	if c.csv != "" {
		var b strings.Builder
		b.WriteString("store,t_s,bytes\n")
		for _, r := range rs {
			for _, p := range r.DBSize {
				fmt.Fprintf(&b, "%s,%.1f,%d\n", r.Store, p.T, p.Bytes)
			}
		}
		if err := os.WriteFile(c.csv, []byte(b.String()), 0o644); err != nil {
			return err
		}
	}
	return os.WriteFile(c.md, []byte(markdown(c, rs)), 0o644)
}

func ok(r *Result) bool { return r != nil && r.Status == "ok" }

func num(v float64, prec int) string {
	if v < 0 || math.IsNaN(v) {
		return "n/a"
	}
	return fmt.Sprintf("%.*f", prec, v)
}

func mib(b int64) string { return fmt.Sprintf("%.1f", float64(b)/(1<<20)) }

func machine() (cpu, mem, kernel string) {
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		kernel = unix.ByteSliceToString(u.Release[:])
	}
	mem = fmt.Sprintf("%.1f GiB", float64(kbField("/proc/meminfo", "MemTotal"))/(1<<30))
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	return cpu, mem, kernel
}

func markdown(c reportConfig, rs []*Result) string {
	byName := map[string]*Result{}
	for _, r := range rs {
		byName[r.Store] = r
	}
	var ref *Result
	for _, r := range rs {
		if ok(r) {
			ref = r
			break
		}
	}
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }

	p("# Datastore benchmark, %s, %s\n\n", c.date, c.host)
	cpu, mem, kernel := machine()
	p("- **Machine:** `%s`; `nproc` = %s (%s); memory %s; kernel %s.\n", c.host, c.nproc, cpu, mem, kernel)
	if c.backing != "" {
		p("- **Disks:** every store on its own freshly made 2 GiB ext4 file system on a loop device; %s.\n", c.backing)
	}
	if c.versions != "" {
		p("- **Versions:** %s.\n", strings.Join(strings.Split(strings.TrimSpace(c.versions), "\n"), "; "))
	}
	if ref != nil {
		p("- **Workload** (etcd v3 API, requests shaped like kube-apiserver's): a %.0f s timed phase in which 100 nodes renew their Lease every 10 s "+
			"(GuaranteedUpdate: `Txn If(ModRevision==rev) Then(Put) Else(Get)`, ~400 B), 5 ConfigMaps/s are created (`If(ModRevision==0) Then(Put)`, ~1 KiB) "+
			"and 5/s deleted (`If(ModRevision==rev) Then(DeleteRange) Else(Get)`), and the apiserver's compactor runs every %.0f s "+
			"(**shortened from kube-apiserver's default of 5 min** so that the run compacts). "+
			"Then %s pods of ~1 KiB are created under `/registry/pods/` and listed %d times whole (limit 0) and %d times in pages of %d.\n",
			ref.DurationS, ref.CompactIntervalS, thousands(ref.ListObjects), len(ref.ListFullMs), len(ref.ListPagedMs), ref.PageSize)
	}
	for _, l := range strings.Split(strings.TrimSpace(c.notes), "\n") {
		if l != "" {
			p("- %s\n", l)
		}
	}
	busiest := -1.0
	for _, r := range rs {
		if ok(r) {
			busiest = math.Max(busiest, r.LoadAvg)
		}
	}
	if cpus, err := strconv.Atoi(strings.TrimSpace(c.nproc)); err == nil && busiest > float64(cpus)+0.5 {
		p("- **Warning: the machine was busy.** The 1-minute load average reached %.1f on %d CPUs during a timed phase (per store in the details); "+
			"the benchmark itself accounts for about 1–2. Latencies, and the comparisons of them, are unreliable; byte counts are not affected.\n", busiest, cpus)
	}
	p("\n## Results\n\n")
	n := "10k"
	if ref != nil {
		n = short(ref.ListObjects)
	}
	p("| Store | Status | API writes | writes/s | device bytes/write | write p50 ms | write p99 ms | list %s full ms | list %s paged ms | watch p50 ms | watch p99 ms | CPU s | peak memory MiB | DB size MiB (end / +%s pods) |\n", n, n, n)
	p("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rs {
		if !ok(r) {
			p("| %s | **%s** | | | | | | | | | | | | |\n", r.Store, r.Status)
			continue
		}
		cpuS := num(r.CPUSeconds, 1)
		memS := mib(r.ServerHWM)
		if r.PGCPUSeconds > 0 || r.PGPeakPSS > 0 {
			cpuS = fmt.Sprintf("%.1f (%.1f + %.1f pg)", r.CPUSeconds+r.PGCPUSeconds, r.CPUSeconds, r.PGCPUSeconds)
			memS = fmt.Sprintf("%s + %s pg", mib(r.ServerHWM), mib(r.PGPeakPSS))
		}
		watch := ""
		if r.WatchCrossServer {
			watch = " (cross-server)"
		}
		listFull, listPaged := num(r.ListFullMedMs, 1), num(r.ListPagedMedMs, 1)
		if r.ListError != "" {
			listFull, listPaged = "error", "error"
		}
		p("| %s | ok | %d | %.1f | %.0f | %s | %s | %s | %s | %s | %s%s | %s | %s | %s / %s |\n",
			r.Store, r.Writes, r.WritesPerS, r.BytesPerWrite, num(r.WriteP50Ms, 2), num(r.WriteP99Ms, 2),
			listFull, listPaged, num(r.WatchP50Ms, 2), num(r.WatchP99Ms, 2), watch,
			cpuS, memS, mib(r.DBSizeEnd), mib(r.DBSizeAfterList))
	}

	p("\n## Targets\n\n| Target | Measured | Result |\n|---|---|---|\n")
	target := func(name string, a, b *Result, an, bn string, f func(a, b *Result) (string, bool)) {
		switch {
		case !ok(a):
			p("| %s | %s: %s | n/a |\n", name, an, status(a))
		case b != nil && !ok(b):
			p("| %s | %s: %s | n/a |\n", name, bn, status(b))
		default:
			m, pass := f(a, b)
			p("| %s | %s | %s |\n", name, m, passFail(pass))
		}
	}
	et, kp, oe, op := byName[storeEtcd], byName[storeKinePG], byName[storeOursEmbed], byName[storeOursPG]
	target("cloudless-embedded device bytes/write ≤ 0.25 × etcd", oe, orMissing(et, storeEtcd), storeOursEmbed, storeEtcd, func(a, b *Result) (string, bool) {
		return fmt.Sprintf("%.0f vs %.0f (%.2f×)", a.BytesPerWrite, b.BytesPerWrite, a.BytesPerWrite/b.BytesPerWrite), a.BytesPerWrite <= bytesRatioLimit*b.BytesPerWrite
	})
	target("cloudless-postgres device bytes/write ≤ kine-postgres", op, orMissing(kp, storeKinePG), storeOursPG, storeKinePG, func(a, b *Result) (string, bool) {
		return fmt.Sprintf("%.0f vs %.0f (%.2f×)", a.BytesPerWrite, b.BytesPerWrite, a.BytesPerWrite/b.BytesPerWrite), a.BytesPerWrite <= b.BytesPerWrite
	})
	for _, o := range []struct {
		r    *Result
		name string
	}{{oe, storeOursEmbed}, {op, storeOursPG}} {
		target(o.name+" API write p99 ≤ etcd", o.r, orMissing(et, storeEtcd), o.name, storeEtcd, func(a, b *Result) (string, bool) {
			return fmt.Sprintf("%.2f ms vs %.2f ms", a.WriteP99Ms, b.WriteP99Ms), a.WriteP99Ms <= b.WriteP99Ms
		})
	}
	for _, o := range []struct {
		r    *Result
		name string
	}{{oe, storeOursEmbed}, {op, storeOursPG}} {
		target(o.name+" list "+n+" (full, median) ≤ etcd", o.r, orMissing(et, storeEtcd), o.name, storeEtcd, func(a, b *Result) (string, bool) {
			if a.ListError != "" || b.ListError != "" || a.ListFullMedMs < 0 || b.ListFullMedMs < 0 {
				return "list failed", false
			}
			return fmt.Sprintf("%.1f ms vs %.1f ms", a.ListFullMedMs, b.ListFullMedMs), a.ListFullMedMs <= b.ListFullMedMs
		})
	}
	target("cloudless-postgres cross-server watch p99 ≤ 10 ms", op, nil, storeOursPG, "", func(a, _ *Result) (string, bool) {
		if !a.WatchCrossServer {
			return fmt.Sprintf("%.2f ms (not cross-server)", a.WatchP99Ms), false
		}
		return fmt.Sprintf("%.2f ms", a.WatchP99Ms), a.WatchP99Ms >= 0 && a.WatchP99Ms <= watchTargetMs && a.WatchMissed == 0
	})

	p("\n## Details\n\n")
	for _, r := range rs {
		if !ok(r) {
			p("- **%s**: %s", r.Store, r.Status)
			if r.Detail != "" {
				p(":\n\n  ```\n%s\n  ```\n", indent(strings.TrimSpace(r.Detail), "  "))
			} else {
				p("\n")
			}
			continue
		}
		p("- **%s**: %d writes, %d errors, %d compare conflicts, %d compactions; ", r.Store, r.Writes, r.WriteErrors, r.Conflicts, r.Compactions)
		p("%s MiB written to the device; ", mib(r.DeviceBytes))
		for _, k := range []string{"lease-update", "configmap-create", "configmap-delete", "compact-txn", "compact"} {
			if s, has := r.ByKind[k]; has {
				p("%s p50/p99/max %.2f/%.2f/%.2f ms (n=%d); ", k, s.P50Ms, s.P99Ms, s.MaxMs, s.N)
			}
		}
		p("watch: %d events, %d acknowledged writes not delivered; ", r.WatchEvents, r.WatchMissed)
		p("creating %s pods took %.1f s; load average %.1f at the end of the timed phase", thousands(r.ListObjects), r.ListLoadS, r.LoadAvg)
		if r.ListError != "" {
			p("; list error: %s", r.ListError)
		}
		if r.Detail != "" {
			p("; %s", r.Detail)
		}
		p(".\n")
	}

	p("\n## Columns\n\n")
	p("- **API writes**: successful mutating requests in the timed phase (Lease updates, ConfigMap creates and deletes, compactor `compact_rev_key` updates; a `Compact` call is not counted).\n")
	p("- **device bytes/write**: sectors written to the store's loop device (`/sys/block/loopN/stat` field 7 × 512) during the timed phase, after `syncfs` at both ends, divided by API writes. For PostgreSQL-backed stores the device holds the PostgreSQL cluster (data and WAL) and the servers' data directories.\n")
	p("- **write p50/p99**: latency of every write request of the timed phase as the client saw it.\n")
	p("- **list %s full / paged**: median of %s timed lists of the pods: one Range with limit 0, and kube-apiserver's paging (limit %s, continuing from the last key at the first page's revision).\n", n, listRepeats(ref), pageSize(ref))
	p("- **watch p50/p99**: from the writer's acknowledgement to the watcher's receipt of the event (0 if the event came first), over all timed-phase writes to the watched prefixes. Cross-server: written through one server process, watched through another on the same database.\n")
	p("- **CPU s**: user+system CPU of the datastore process(es) during the timed phase, plus PostgreSQL's (postmaster and backends, exited ones included) where it is the backend.\n")
	p("- **peak memory**: VmHWM of the datastore process(es); for PostgreSQL, the peak sampled (1 s) proportional set size of the postmaster and its backends, so that shared buffers count once.\n")
	p("- **DB size**: `du` of the store's file system at the end of the timed phase, and after the pods for the list measurement were added; the plot shows it every 10 s")
	if c.csv != "" {
		p(", and `%s` lists it", filepath.Base(c.csv))
	}
	p(".\n")
	if c.png != "" {
		p("\n![database size and write latency](%s)\n", filepath.Base(c.png))
	}
	return b.String()
}

// short writes 10000 as 10k.
func short(n int) string {
	if n >= 1000 && n%1000 == 0 {
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

// thousands writes 10000 as 10,000.
func thousands(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func pageSize(r *Result) string {
	if r == nil {
		return "500"
	}
	return fmt.Sprint(r.PageSize)
}

func listRepeats(r *Result) string {
	if r == nil {
		return "the"
	}
	return fmt.Sprint(len(r.ListFullMs))
}

func indent(s, pre string) string {
	return pre + strings.ReplaceAll(s, "\n", "\n"+pre)
}

func status(r *Result) string {
	if r == nil {
		return "not run"
	}
	return r.Status
}

// orMissing turns an absent comparison store into one marked not run, so
// that the target reads n/a rather than comparing against nothing.
func orMissing(r *Result, name string) *Result {
	if r == nil {
		return &Result{Store: name, Status: "not run"}
	}
	return r
}

func passFail(pass bool) string {
	if pass {
		return "**PASS**"
	}
	return "**FAIL**"
}

// plotResults draws the database size over time and the write latency
// distribution of every measured store, side by side.
func plotResults(path string, rs []*Result) error {
	size := plot.New()
	size.Title.Text = "Database size (du of the store's file system)"
	size.X.Label.Text = "time into the timed phase (s)"
	size.Y.Label.Text = "MiB"
	size.Legend.Top = true
	size.Legend.Left = true
	size.Add(plotter.NewGrid())

	lat := plot.New()
	lat.Title.Text = "API write latency, timed phase"
	lat.X.Label.Text = "latency (ms, log scale)"
	lat.Y.Label.Text = "fraction of writes ≤ latency"
	lat.X.Scale = plot.LogScale{}
	lat.X.Tick.Marker = plot.LogTicks{Prec: -1}
	lat.Y.Min, lat.Y.Max = 0, 1
	lat.Legend.Top = false
	lat.Legend.Left = false
	lat.Add(plotter.NewGrid())

	var sizeArgs, latArgs []any
	var sizeMax float64
	for _, r := range rs {
		if !ok(r) {
			continue
		}
		pts := make(plotter.XYs, len(r.DBSize))
		for i, s := range r.DBSize {
			pts[i] = plotter.XY{X: s.T, Y: float64(s.Bytes) / (1 << 20)}
			sizeMax = math.Max(sizeMax, pts[i].Y)
		}
		if len(pts) > 0 {
			sizeArgs = append(sizeArgs, r.Store, pts)
		}
		if len(r.WriteCDF) > 0 {
			c := make(plotter.XYs, len(r.WriteCDF))
			for i, v := range r.WriteCDF {
				c[i] = plotter.XY{X: math.Max(v, 0.01), Y: float64(i+1) / float64(len(r.WriteCDF))}
			}
			latArgs = append(latArgs, r.Store, c)
		}
	}
	// From zero, with room above the lines for the legend.
	size.Y.Min, size.Y.Max = 0, math.Max(sizeMax*1.35, 1)
	if len(sizeArgs) > 0 {
		if err := plotutil.AddLinePoints(size, sizeArgs...); err != nil {
			return err
		}
	}
	if len(latArgs) > 0 {
		if err := plotutil.AddLines(lat, latArgs...); err != nil {
			return err
		}
	} else {
		// An empty log axis cannot be drawn.
		lat.X.Scale = plot.LinearScale{}
		lat.X.Tick.Marker = plot.DefaultTicks{}
	}
	if len(sizeArgs) == 0 {
		size.Title.Text += ": no store measured"
	}

	const w, h = 13 * vg.Inch, 5 * vg.Inch
	img := vgimg.New(w, h)
	dc := draw.New(img)
	dc.SetColor(color.White)
	dc.Fill(dc.Rectangle.Path())
	tiles := draw.Tiles{Rows: 1, Cols: 2, PadX: vg.Inch / 2, PadTop: vg.Inch / 8, PadBottom: vg.Inch / 8, PadLeft: vg.Inch / 8, PadRight: vg.Inch / 4}
	plots := [][]*plot.Plot{{size, lat}}
	canvases := plot.Align(plots, tiles, dc)
	size.Draw(canvases[0][0])
	lat.Draw(canvases[0][1])

	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

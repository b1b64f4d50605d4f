package controlplane

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloudless-dev/cloudless/internal/footprint"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// TestPlanReset plans the reset of data dirs of each kind and compares
// what it would remove and leave, or its refusal, with
// testdata/reset/<case>.golden (-update rewrites them). Records name this
// boot and network namespace unless the case changes them; nothing is
// removed.
func TestPlanReset(t *testing.T) {
	boot, here, err := footprint.Here()
	if err != nil {
		t.Fatal(err)
	}
	record := func(change func(*footprint.Record)) *footprint.Record {
		r := footprint.Record{Version: footprint.Version, BootID: boot, Netns: here,
			RunDir: "/run/cloudless-test", Cgroups: []string{"/sys/fs/cgroup/cloudless-test"},
			Links: []string{"cl-vxlan", "cl0"}, NFTables: []footprint.NFTable{{Family: "ip", Name: "cloudless"}, {Family: "ip", Name: "cloudless-policy"}},
			RouteProtocol: 193, KubeProxy: "nftables"}
		change(&r)
		return &r
	}
	for _, tc := range []struct {
		name   string
		files  []string // created empty; a trailing / makes a directory
		record *footprint.Record
	}{
		{name: "not-a-data-dir", files: []string{"notes.txt", "photos/"}},
		{name: "empty-dir"},
		{name: "layout-version-only", files: []string{"layout-version"}},
		{name: "joined-agent-no-record", files: []string{"agent/pki/"}},
		{name: "joined-agent", files: []string{"agent/pki/"}, record: record(func(*footprint.Record) {})},
		{name: "server", files: []string{"layout-version", "server/", "datastore/"}, record: record(func(*footprint.Record) {})},
		{name: "earlier-boot", files: []string{"agent/"}, record: record(func(r *footprint.Record) { r.BootID = "earlier" })},
		{name: "netns-gone", files: []string{"agent/"}, record: record(func(r *footprint.Record) { r.Netns = footprint.Netns{Inode: 1, Dev: 1, Cookie: 1} })},
		{name: "run-dir-outside-run", files: []string{"agent/"}, record: record(func(r *footprint.Record) { r.RunDir = "/" })},
		{name: "cgroup-outside-sysfs", files: []string{"agent/"}, record: record(func(r *footprint.Record) { r.Cgroups = []string{"/etc"} })},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			os.MkdirAll(dir, 0o700)
			for _, f := range tc.files {
				p := filepath.Join(dir, f)
				if strings.HasSuffix(f, "/") {
					os.MkdirAll(p, 0o700)
				} else {
					os.MkdirAll(filepath.Dir(p), 0o700)
					os.WriteFile(p, nil, 0o600)
				}
			}
			if tc.record != nil {
				b, _ := footprint.Marshal(*tc.record)
				os.MkdirAll(filepath.Dir(footprint.Path(dir)), 0o700)
				os.WriteFile(footprint.Path(dir), b, 0o600)
			}
			before := listDir(t, dir)
			// A relative path with a trailing slash plans the same dir.
			rel, err := filepath.Rel(mustGetwd(t), dir)
			if err != nil {
				t.Fatal(err)
			}
			p, err := PlanReset(rel + "/")
			var got strings.Builder
			if err != nil {
				fmt.Fprintf(&got, "refused: %v\n", err)
			} else {
				if p.DataDir != dir {
					t.Errorf("PlanReset(%q).DataDir = %q, want %q", rel+"/", p.DataDir, dir)
				}
				fmt.Fprintf(&got, "network here: %v\n", p.Network)
				for _, o := range p.Outside {
					fmt.Fprintf(&got, "remove: %s\n", o)
				}
				for _, n := range p.Notes {
					fmt.Fprintf(&got, "note: %s\n", n)
				}
			}
			out := strings.ReplaceAll(got.String(), dir, "$DATA")
			out = strings.ReplaceAll(out, here.String(), "net:[HERE]")
			golden := filepath.Join("testdata", "reset", tc.name+".golden")
			if *update {
				os.WriteFile(golden, []byte(out), 0o644)
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if out != string(want) {
				t.Errorf("plan differs from %s:\ngot:\n%s\nwant:\n%s", golden, out, want)
			}
			if after := listDir(t, dir); after != before {
				t.Errorf("planning changed the dir:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
}

func listDir(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil {
			fmt.Fprintf(&b, "%s %v\n", p, info.Mode())
		}
		return nil
	})
	return b.String()
}

func mustGetwd(t *testing.T) string {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return wd
}

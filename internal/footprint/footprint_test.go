package footprint

import (
	"errors"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// full is a record with every field set, as testdata/record.json holds it.
var full = Record{
	Version: Version, BootID: "8c1f0a52-3b2e-4f7d-9a61-0d7c5e4b9f10",
	Netns:  Netns{Inode: 4026531840, Dev: 4, Cookie: 1},
	RunDir: "/run/cloudless-1a2b3c4d", Cgroups: []string{"/sys/fs/cgroup/cloudless-1a2b3c4d"},
	Links:         []string{"cl-vxlan", "cl0"},
	NFTables:      []NFTable{{"ip", "cloudless"}, {"ip", "cloudless-policy"}, {"ip", "kube-proxy"}, {"ip6", "kube-proxy"}},
	IPTables:      []IPTChain{{"nat", "CLOUDLESS-POSTROUTING", "POSTROUTING"}},
	RouteProtocol: 193, KubeProxy: "nftables",
}

// TestFormat compares the record as written with testdata/record.json
// (-update rewrites it), and reads it back.
func TestFormat(t *testing.T) {
	got, err := Marshal(full)
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "record.json")
	if *update {
		os.WriteFile(golden, got, 0o644)
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("record differs from %s:\ngot:\n%s\nwant:\n%s", golden, got, want)
	}
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "agent"), 0o700)
	os.WriteFile(Path(dir), want, 0o600)
	back, err := Load(dir)
	if err != nil || !reflect.DeepEqual(back, full) {
		t.Errorf("Load(%s) = %+v, %v, want %+v", golden, back, err, full)
	}
	outside := strings.Join(full.Outside(), "\n")
	goldenOut := filepath.Join("testdata", "record.outside")
	if *update {
		os.WriteFile(goldenOut, []byte(outside+"\n"), 0o644)
	}
	if want, _ := os.ReadFile(goldenOut); outside+"\n" != string(want) {
		t.Errorf("Outside() differs from %s:\ngot:\n%s\nwant:\n%s", goldenOut, outside, want)
	}
}

func TestLoadRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, content, wantErr string
	}{
		{name: "damaged", content: "{not json", wantErr: "is damaged"},
		{name: "newer format", content: `{"version": 99}`, wantErr: "format version 99"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			os.MkdirAll(filepath.Join(dir, "agent"), 0o700)
			os.WriteFile(Path(dir), []byte(tc.content), 0o600)
			if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Load(%q) = %v, want an error with %q", tc.content, err, tc.wantErr)
			}
		})
	}
	if _, err := Load(t.TempDir()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load(no record) = %v, want fs.ErrNotExist", err)
	}
}

// TestRecorder: each Add is on disk at once (0600, no temporary left),
// duplicates are recorded once, and Begin keeps what a previous run in
// this boot and namespace recorded, drops the network objects of another
// namespace and everything of another boot.
func TestRecorder(t *testing.T) {
	boot, here, err := Here()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	r := NewRecorder(dir)
	if err := r.AddLink("cl0"); err == nil {
		t.Error("Add before Begin succeeded")
	}
	if err := r.Begin(); err != nil {
		t.Fatal(err)
	}
	steps := []func() error{
		func() error { return r.Add(func(rec *Record) { rec.RunDir = "/run/x" }) },
		func() error { return r.AddLink("cl0") },
		func() error { return r.AddLink("cl0") },
		func() error { return r.AddNFTable("ip", "cloudless") },
		func() error { return r.AddIPTChain("nat", "C", "POSTROUTING") },
		func() error {
			return r.Add(func(rec *Record) { rec.Cgroups = append(rec.Cgroups, "/sys/fs/cgroup/x") })
		},
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	want := Record{Version: Version, BootID: boot, Netns: here, RunDir: "/run/x", Cgroups: []string{"/sys/fs/cgroup/x"},
		Links: []string{"cl0"}, NFTables: []NFTable{{"ip", "cloudless"}}, IPTables: []IPTChain{{"nat", "C", "POSTROUTING"}}}
	got, err := Load(dir)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("Load = %+v, %v, want %+v", got, err, want)
	}
	if info, err := os.Stat(Path(dir)); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("record mode %v, %v, want 0600", info.Mode(), err)
	}
	if _, err := os.Stat(Path(dir) + ".tmp"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("temporary file left: %v", err)
	}

	for _, tc := range []struct {
		name string
		prev func(*Record)
		want Record
	}{
		{name: "same boot and namespace", prev: func(*Record) {}, want: want},
		{name: "another namespace", prev: func(r *Record) { r.Netns.Inode++ },
			want: Record{Version: Version, BootID: boot, Netns: here, RunDir: "/run/x", Cgroups: []string{"/sys/fs/cgroup/x"}}},
		{name: "another boot", prev: func(r *Record) { r.BootID = "earlier" },
			want: Record{Version: Version, BootID: boot, Netns: here}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			prev := want
			tc.prev(&prev)
			b, _ := Marshal(prev)
			os.MkdirAll(filepath.Join(dir, "agent"), 0o700)
			os.WriteFile(Path(dir), b, 0o600)
			if err := NewRecorder(dir).Begin(); err != nil {
				t.Fatal(err)
			}
			if got, err := Load(dir); err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("after Begin: %+v, %v, want %+v", got, err, tc.want)
			}
		})
	}

	var none *Recorder
	if err := none.Begin(); err != nil {
		t.Error(err)
	}
	if err := none.AddLink("cl0"); err != nil {
		t.Error(err)
	}
}

func TestNetnsSame(t *testing.T) {
	a := Netns{Inode: 10, Dev: 4, Cookie: 7}
	for _, tc := range []struct {
		name string
		b    Netns
		want bool
	}{
		{name: "same", b: a, want: true},
		{name: "no cookie known", b: Netns{Inode: 10, Dev: 4}, want: true},
		{name: "inode reused", b: Netns{Inode: 10, Dev: 4, Cookie: 8}, want: false},
		{name: "other inode", b: Netns{Inode: 11, Dev: 4, Cookie: 7}, want: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := a.Same(tc.b); got != tc.want {
				t.Errorf("%v.Same(%v) = %v, want %v", a, tc.b, got, tc.want)
			}
		})
	}
}

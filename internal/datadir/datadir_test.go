package datadir

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func TestNew(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, in string
		want     Dir
		wantErr  string
	}{
		{name: "absolute", in: "/var/lib/cloudless", want: Default},
		{name: "trailing slash", in: "/var/lib/cloudless/", want: Default},
		{name: "dots", in: "/var/lib/../lib/cloudless/.", want: Default},
		{name: "relative", in: "data", want: Dir(filepath.Join(wd, "data"))},
		{name: "dot relative with slash", in: "./data/", want: Dir(filepath.Join(wd, "data"))},
		{name: "empty", in: "", wantErr: "--data-dir is empty"},
		{name: "blank", in: "  ", wantErr: "--data-dir is empty"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := New(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("New(%q) = %v, %v; want error containing %q", tc.in, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("New(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestRunDir(t *testing.T) {
	if got := Dir(Default).RunDir(); got != DefaultRunDir {
		t.Errorf("RunDir of the default = %s, want %s", got, DefaultRunDir)
	}
	a, b := Of("/srv/a/").RunDir(), Of("/srv/a").RunDir()
	if a != b || a == DefaultRunDir || !strings.HasPrefix(a, DefaultRunDir+"-") {
		t.Errorf("RunDir(/srv/a/) = %s, RunDir(/srv/a) = %s; want one dir of their own", a, b)
	}
	if Of("/srv/b").RunDir() == a {
		t.Error("two data dirs share a run dir")
	}
}

func TestFlag(t *testing.T) {
	wd, _ := os.Getwd()
	var p string
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	AddFlag(fs, &p, "")
	if p != Default {
		t.Fatalf("default %q, want %q", p, Default)
	}
	if err := fs.Parse([]string{"--data-dir", "x/"}); err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(wd, "x"); p != want {
		t.Errorf("--data-dir x/ gave %q, want %q", p, want)
	}
	if err := fs.Parse([]string{"--data-dir="}); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("--data-dir= gave %v, want an error naming the empty value", err)
	}
}

func TestIsDataDir(t *testing.T) {
	for _, marker := range []string{"layout-version", "server", "datastore", "server.lock", "agent"} {
		t.Run(marker, func(t *testing.T) {
			d := Of(t.TempDir())
			if ok, _ := d.IsDataDir(); ok {
				t.Fatal("an empty dir is a data dir")
			}
			if err := os.WriteFile(filepath.Join(string(d), marker), nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if ok, names := d.IsDataDir(); !ok {
				t.Errorf("a dir with %s is not a data dir (looked for %v)", marker, names)
			}
		})
	}
	if ok, _ := Dir("/").IsDataDir(); ok {
		t.Error("/ is a data dir")
	}
}

func TestLocks(t *testing.T) {
	d := Of(t.TempDir())
	if d.ServerRunning() || d.NodeRunning() {
		t.Fatal("locks held before anyone took them")
	}
	release, err := d.LockNode()
	if err != nil {
		t.Fatal(err)
	}
	if !d.NodeRunning() || d.ServerRunning() {
		t.Errorf("node lock taken: NodeRunning %v, ServerRunning %v", d.NodeRunning(), d.ServerRunning())
	}
	if _, err := d.LockNode(); err == nil || !strings.Contains(err.Error(), "stop it first") {
		t.Errorf("second LockNode = %v, want refusal naming the fix", err)
	}
	release()
	if d.NodeRunning() {
		t.Error("node lock still held after release")
	}
	rs, err := d.LockServer()
	if err != nil {
		t.Fatal(err)
	}
	defer rs()
	if !d.ServerRunning() {
		t.Error("server lock not seen")
	}
}

func TestCheckLayout(t *testing.T) {
	tests := []struct {
		name, content, wantErr string
	}{
		{name: "new data dir"},
		{name: "current", content: "1\n"},
		{name: "newer", content: "2\n", wantErr: "written by a newer Cloudless"},
		{name: "damaged", content: "x", wantErr: "is damaged"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := Of(t.TempDir())
			if tc.content != "" {
				os.WriteFile(d.LayoutFile(), []byte(tc.content), 0o600)
			}
			err := d.CheckLayout()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("CheckLayout = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if b, _ := os.ReadFile(d.LayoutFile()); strings.TrimSpace(string(b)) != "1" {
				t.Errorf("layout file holds %q, want 1", b)
			}
		})
	}
}

package agent

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"testing"

	srvconfig "github.com/containerd/containerd/v2/cmd/containerd/server/config"
	"github.com/pelletier/go-toml/v2"
)

// TestContainerdConfig: the node's containerd config decodes strictly
// into containerd's server config, and every key it sets comes back,
// with its value, from containerd's own `config dump`, which decodes each
// plugin section into that plugin's type and drops keys it does not know.
func TestContainerdConfig(t *testing.T) {
	dir := t.TempDir()
	a := &Agent{cfg: Config{HelpersDir: "/opt/cloudless"}, paths: paths{filepath.Join(dir, "agent"), filepath.Join(dir, "run")}, cgroupDriver: "systemd"}
	b, err := a.containerdConfig().marshal()
	if err != nil {
		t.Fatal(err)
	}
	var top srvconfig.Config
	if err := toml.NewDecoder(bytes.NewReader(b)).DisallowUnknownFields().Decode(&top); err != nil {
		t.Fatalf("containerd's server config rejects ours: %v\n%s", err, b)
	}
	path := filepath.Join(dir, "containerd.toml")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	dump := containerdDump(t, path)

	var ours, theirs map[string]any
	if err := toml.Unmarshal(b, &ours); err != nil {
		t.Fatal(err)
	}
	if err := toml.Unmarshal(dump, &theirs); err != nil {
		t.Fatalf("containerd's dump: %v\n%s", err, dump)
	}
	leaves := map[string]any{}
	flatten("", ours, leaves)
	keys := make([]string, 0, len(leaves))
	for k := range leaves {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	got := map[string]any{}
	flatten("", theirs, got)
	for _, k := range keys {
		v, ok := got[k]
		if !ok {
			t.Errorf("containerd drops %s: not a key of its config", k)
			continue
		}
		if !reflect.DeepEqual(v, leaves[k]) {
			t.Errorf("%s: we write %v, containerd reads %v", k, leaves[k], v)
		}
	}
	// Spot checks that the test saw the sections at all.
	for k, want := range map[string]any{
		"plugins." + pluginCRIRuntime + ".containerd.runtimes.runc.options.SystemdCgroup": true,
		"plugins." + pluginCRIImages + ".pinned_images.sandbox":                           PauseImage,
		"plugins." + pluginNRI + ".socket_path":                                           a.paths.nriSocket(),
	} {
		if !reflect.DeepEqual(got[k], want) {
			t.Errorf("%s = %v, want %v", k, got[k], want)
		}
	}
}

// containerdDump runs containerd's `config dump` in this process.
func containerdDump(t *testing.T, path string) []byte {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = w
	out := make(chan []byte)
	go func() { b, _ := io.ReadAll(r); out <- b }()
	err = RunContainerd([]string{"--config", path, "config", "dump"})
	os.Stdout = stdout
	w.Close()
	b := <-out
	if err != nil {
		t.Fatalf("containerd config dump: %v", err)
	}
	return b
}

// flatten maps every leaf of a decoded TOML document to its dotted path;
// lists compare whole.
func flatten(prefix string, v any, out map[string]any) {
	m, ok := v.(map[string]any)
	if !ok {
		out[prefix] = v
		return
	}
	for k, child := range m {
		p := k
		if prefix != "" {
			p = fmt.Sprintf("%s.%s", prefix, k)
		}
		flatten(p, child, out)
	}
}

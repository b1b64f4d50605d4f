package conformance

// The Aggregator spec's two images: the sample-apiserver and the etcd it
// stores in, in one pod. Both are built from Go modules that this
// module's go.mod pins (e2e/deps.go imports them); run.sh builds the
// binaries into CONFORMANCE_BIN.

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// The binaries' names in CONFORMANCE_BIN (run.sh's go build -o).
const (
	sampleAPIServerBin = "sample-apiserver" // k8s.io/sample-apiserver's main package
	etcdBin            = "etcd"             // go.etcd.io/etcd/server/v3's main package
)

// Where the images keep them. The spec gives the sample-apiserver only
// arguments, so the binary is the image's entrypoint, as in upstream's
// test/images/sample-apiserver/Dockerfile; it runs etcd by this path.
const (
	sampleAPIServerPath = "/sample-apiserver"
	etcdPath            = "/usr/local/bin/etcd"
)

// sampleAPIServerImage is upstream's sample-apiserver image (the binary
// on Alpine): the binary as entrypoint, busybox applets, bash as sh.
func sampleAPIServerImage(t *testing.T, bin []byte) (*rootfs, v1.Config) {
	t.Helper()
	fs := newRootfs()
	fs.busybox(t)
	fs.hostBinaryAs(t, hostShell, "/bin/sh")
	fs.file(sampleAPIServerPath, bin, 0o755)
	return fs, v1.Config{Entrypoint: []string{sampleAPIServerPath}}
}

// etcdImage is upstream's etcd image (distroless, a static /bin/sh, the
// etcd binaries in /usr/local/bin, working directory /): etcd, bash as
// sh and the base files. etcd keeps its data in ./default.etcd, so in /.
func etcdImage(t *testing.T, bin []byte) (*rootfs, v1.Config) {
	t.Helper()
	fs := newRootfs()
	fs.base()
	fs.hostBinaryAs(t, hostShell, "/bin/sh")
	fs.file(etcdPath, bin, 0o755)
	return fs, v1.Config{WorkingDir: "/"}
}

// TestAggregatorImages checks the two images against the spec that runs
// them: the paths it starts are executables in the images.
func TestAggregatorImages(t *testing.T) {
	spec := filepath.Join(upstreamModuleDir(t), "test", "e2e", "apimachinery", "aggregator.go")
	src, err := os.ReadFile(spec)
	if err != nil {
		t.Fatalf("the Aggregator spec's source: %v (run `go mod download` in test/conformance)", err)
	}
	if !strings.Contains(string(src), strconv.Quote(etcdPath)) {
		t.Errorf("%s does not run %s any more: move etcd where it now runs it", spec, etcdPath)
	}
	stub := []byte("#!/bin/sh\n")
	for _, c := range []struct {
		name  string
		build func(*testing.T, []byte) (*rootfs, v1.Config)
		runs  string // the path the pod starts
	}{
		{"sample-apiserver", sampleAPIServerImage, sampleAPIServerPath},
		{"etcd", etcdImage, etcdPath},
	} {
		t.Run(c.name, func(t *testing.T) {
			fs, cfg := c.build(t, stub)
			if c.name == "sample-apiserver" && (len(cfg.Entrypoint) != 1 || cfg.Entrypoint[0] != c.runs) {
				t.Errorf("entrypoint = %q, want [%q]: the spec passes only arguments", cfg.Entrypoint, c.runs)
			}
			e, ok := fs.files[strings.TrimPrefix(c.runs, "/")]
			if !ok || e.mode&0o111 == 0 || string(e.data) != string(stub) {
				t.Errorf("%s in the image: present %v, mode %o; want the built binary, executable", c.runs, ok, e.mode)
			}
			if _, ok := fs.files["bin/sh"]; !ok {
				t.Errorf("no /bin/sh in the image; upstream's has one")
			}
		})
	}
}

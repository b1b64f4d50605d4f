package conformance

// The images the suite runs, built on this machine: there is no registry
// to pull from. Names and tags come from upstream's image manifest
// (k8s.io/kubernetes/test/utils/image), never retyped here. What each
// image is made of is in README.md's table.

import (
	"archive/tar"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	imageutils "k8s.io/kubernetes/test/utils/image"

	"github.com/cloudless-dev/cloudless/internal/agent"
)

// rootfs is an image's one layer: files by path (no leading slash).
type rootfs struct {
	files map[string]fsEntry
}

type fsEntry struct {
	data []byte
	mode int64
	link string // symlink target
	dir  bool
}

func newRootfs() *rootfs { return &rootfs{files: map[string]fsEntry{}} }

func (r *rootfs) file(path string, data []byte, mode int64) {
	r.files[strings.TrimPrefix(path, "/")] = fsEntry{data: data, mode: mode}
}
func (r *rootfs) symlink(path, target string) {
	r.files[strings.TrimPrefix(path, "/")] = fsEntry{link: target, mode: 0o777}
}
func (r *rootfs) dir(path string, mode int64) {
	r.files[strings.TrimPrefix(path, "/")] = fsEntry{dir: true, mode: mode}
}

var lddPath = regexp.MustCompile(`(/[^\s]+) \(0x`)

// hostBinary copies the host's executable at path into the image at the
// same path, with the shared libraries ldd lists for it.
func (r *rootfs) hostBinary(t *testing.T, path string) { r.hostBinaryAs(t, path, path) }

// hostBinaryAs is hostBinary, with the executable at dest in the image.
func (r *rootfs) hostBinaryAs(t *testing.T, path, dest string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("image content: %v (install the Debian package that has %s; run.sh lists them)", err, path)
	}
	r.file(dest, data, 0o755)
	out, _ := exec.Command("ldd", path).Output() // a static binary makes ldd fail
	for _, m := range lddPath.FindAllStringSubmatch(string(out), -1) {
		lib, err := filepath.EvalSymlinks(m[1])
		if err != nil {
			t.Fatalf("library %s of %s: %v", m[1], path, err)
		}
		b, err := os.ReadFile(lib)
		if err != nil {
			t.Fatal(err)
		}
		r.file(m[1], b, 0o755)
	}
}

// busybox adds Debian's static busybox with a link per applet, as the
// busybox image has them, and the base files.
func (r *rootfs) busybox(t *testing.T) {
	t.Helper()
	bb, err := os.ReadFile(busyboxPath)
	if err != nil {
		t.Fatalf("busybox: %v (apt-get install busybox-static)", err)
	}
	r.file("bin/busybox", bb, 0o755)
	out, err := exec.Command(busyboxPath, "--list-full").Output()
	if err != nil {
		t.Fatalf("busybox --list-full: %v", err)
	}
	// The busybox image has every applet in /bin (specs run /bin/sysctl);
	// Debian's list puts some in sbin and usr/bin: link both places.
	for _, p := range strings.Fields(string(out)) {
		for _, at := range []string{p, "bin/" + path.Base(p)} {
			if _, taken := r.files[at]; !taken && at != "bin/busybox" {
				r.symlink(at, "/bin/busybox")
			}
		}
	}
	r.base()
}

// base adds the files every image here shares: /tmp, /root, and
// /etc's users, groups and name service order.
func (r *rootfs) base() {
	r.dir("tmp", 0o1777)
	r.dir("root", 0o700)
	r.dir("etc", 0o755)
	r.dir("var", 0o755)
	r.file("etc/passwd", []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n"), 0o644)
	r.file("etc/group", []byte("root:x:0:\nnobody:x:65534:\n"), 0o644)
	r.file("etc/nsswitch.conf", []byte("hosts: files dns\n"), 0o644)
}

// busyboxPath is Debian's busybox-static.
const busyboxPath = "/usr/bin/busybox"

// hostTools are the host binaries the agnhost image gets besides
// busybox: its Alpine base has bash, curl, dig (bind-tools), OpenBSD nc
// and getent, and specs exec them. (glibc 2.36's getent needs no NSS
// modules for files and dns: they are in libc.)
var hostTools = []string{"/usr/bin/bash", "/usr/bin/curl", "/usr/bin/dig", "/usr/bin/nslookup", "/usr/bin/nc", "/usr/bin/getent"}

// hostShell becomes /bin/sh in every image built here. Debian's busybox
// is 1.35, whose sh differs from the images' in two ways specs notice:
// it prefers its own applets to PATH (so `nc -u` would run busybox's nc,
// which has no -u, where a spec means OpenBSD nc), and it drops
// environment variables whose names are not shell names (data-1) from
// the commands it runs, which busybox 1.37 keeps. Bash, run as sh, does
// neither; dash drops such variables too.
const hostShell = "/usr/bin/bash"

func (r *rootfs) layer() ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	paths := make([]string, 0, len(r.files))
	for p := range r.files {
		paths = append(paths, p)
	}
	// Parents first: every directory on the way is created explicitly.
	dirs := map[string]bool{}
	for _, p := range paths {
		for d := filepath.Dir(p); d != "."; d = filepath.Dir(d) {
			if _, explicit := r.files[d]; !explicit {
				dirs[d] = true
			}
		}
	}
	for d := range dirs {
		paths = append(paths, d)
	}
	sort.Strings(paths)
	for _, p := range paths {
		e, ok := r.files[p]
		if !ok {
			e = fsEntry{dir: true, mode: 0o755}
		}
		h := &tar.Header{Name: p, Mode: e.mode}
		switch {
		case e.dir:
			h.Typeflag, h.Name = tar.TypeDir, p+"/"
		case e.link != "":
			h.Typeflag, h.Linkname = tar.TypeSymlink, e.link
		default:
			h.Typeflag, h.Size = tar.TypeReg, int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(e.data); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// writeImage writes a docker-archive of one image to path.
func writeImage(path, ref string, fs *rootfs, cfg v1.Config) error {
	layer, err := fs.layer()
	if err != nil {
		return err
	}
	if cfg.Env == nil {
		cfg.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	}
	archive, err := agent.ImageArchive(ref, layer, cfg)
	if err != nil {
		return err
	}
	return os.WriteFile(path, archive, 0o600)
}

// standInEffects are the specs a stand-in here is known to fail, and
// why (README.md's table): the report attributes them to the image.
var standInEffects = []struct{ spec, why string }{
	{"should not write to root filesystem", "image stand-in: bash, the busybox image's sh, says `line 1: /file: Read-only file system` where the spec expects ash's `can't create /file: …`"},
}

// imagePlan says how each image of upstream's manifest is made here:
// "" means not built (the specs that need it fail, and the report says
// why).
type imagePlan struct {
	id     imageutils.ImageID
	ref    string
	name   string // the last element of the repository: agnhost, nginx, ...
	kind   string // agnhost, busybox, pause, nginx, pages, dnsutils, nonroot, nonewprivs, sample-apiserver, etcd, or ""
	reason string // for kind "": why it is not built
}

// plans maps every image in upstream's manifest to how it is made.
func plans() []imagePlan {
	kinds := map[string]string{
		"agnhost": "agnhost", "busybox": "busybox", "pause": "pause",
		"nginx": "nginx", "kitten": "pages", "nautilus": "pages",
		"jessie-dnsutils": "dnsutils", "nonroot": "nonroot", "nonewprivs": "nonewprivs",
		"sample-apiserver": "sample-apiserver", "etcd": "etcd",
	}
	var out []imagePlan
	for id, c := range imageutils.GetOriginalImageConfigs() {
		ref := c.GetE2EImage()
		name := path.Base(ref[:strings.LastIndex(ref, ":")])
		p := imagePlan{id: id, ref: ref, name: name, kind: kinds[name]}
		if p.kind == "" {
			p.reason = "no registry here, and no Go module or Debian package carries its content"
		}
		if id == imageutils.AgnhostPrivate || id == imageutils.InvalidRegistryImage {
			p.kind, p.reason = "", "unpullable on purpose in the suite"
		}
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ref < out[j].ref })
	return out
}

// imageBinaries are the binaries run.sh builds for the images, in
// CONFORMANCE_BIN.
var imageBinaries = []string{"agnhost", "pause", "nnp", sampleAPIServerBin, etcdBin}

// buildImages writes an archive per buildable image into dir and returns
// the plans. bin holds imageBinaries.
func buildImages(t *testing.T, dir, bin string) []imagePlan {
	t.Helper()
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(bin, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	agnhost, pause, nnp := read("agnhost"), read("pause"), read("nnp")
	porter := filepath.Join(upstreamImagesDir(t), "agnhost", "porter")
	withAgnhost := func() *rootfs {
		fs := newRootfs()
		fs.busybox(t)
		for _, tool := range hostTools {
			fs.hostBinary(t, tool)
		}
		fs.hostBinaryAs(t, hostShell, "/bin/sh")
		fs.file("agnhost", agnhost, 0o755)
		fs.symlink("agnhost-2", "agnhost")
		fs.dir("uploads", 0o755)
		// porter's certificate and key, which specs pass to netexec --http-tls.
		fs.copyFrom(t, filepath.Join(porter, "localhost.crt"), "localhost.crt", 0o644)
		fs.copyFrom(t, filepath.Join(porter, "localhost.key"), "localhost.key", 0o644)
		// As upstream's Dockerfile adds them.
		fs.file("etc/passwd", []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\nuser-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh\n"), 0o644)
		fs.file("etc/group", []byte("root:x:0:\nnobody:x:65534:\nuser-defined-in-image:x:1000:\ngroup-defined-in-image:x:50000:user-defined-in-image\n"), 0o644)
		return fs
	}
	plans := plans()
	for _, p := range plans {
		var fs *rootfs
		var cfg v1.Config
		switch p.kind {
		case "":
			continue
		case "agnhost":
			fs, cfg = withAgnhost(), v1.Config{Entrypoint: []string{"/agnhost"}, Cmd: []string{"pause"}}
		case "nginx":
			fs, cfg = nginxImage(t)
		case "pages":
			fs, cfg = pagesImage(t, withAgnhost, p.name)
		case "nonewprivs":
			// Upstream: Alpine with nnp setuid root, which prints its effective uid.
			fs = newRootfs()
			fs.busybox(t)
			fs.hostBinaryAs(t, hostShell, "/bin/sh")
			fs.file("usr/local/bin/nnp", nnp, 0o4755)
			cfg = v1.Config{Cmd: []string{"nnp"}}
		case "dnsutils":
			fs, cfg = withAgnhost(), v1.Config{Cmd: []string{"sh"}}
		case "nonroot":
			// Upstream: a pause-like image whose USER is 1234.
			fs, cfg = withAgnhost(), v1.Config{Entrypoint: []string{"/agnhost", "pause"}, User: "1234"}
		case "busybox":
			fs = newRootfs()
			fs.busybox(t)
			fs.hostBinaryAs(t, hostShell, "/bin/sh")
			cfg = v1.Config{Cmd: []string{"sh"}}
		case "sample-apiserver":
			fs, cfg = sampleAPIServerImage(t, read(sampleAPIServerBin))
		case "etcd":
			fs, cfg = etcdImage(t, read(etcdBin))
		case "pause":
			fs = newRootfs()
			fs.file("pause", pause, 0o755)
			cfg = v1.Config{Entrypoint: []string{"/pause"}, User: "65535:65535"}
		}
		name := strings.NewReplacer("/", "_", ":", "_").Replace(p.ref) + ".tar"
		if err := writeImage(filepath.Join(dir, name), p.ref, fs, cfg); err != nil {
			t.Fatalf("image %s: %v", p.ref, err)
		}
	}
	return plans
}

func (p imagePlan) String() string { return fmt.Sprintf("%s (%s)", p.ref, p.kind) }

package conformance

// The web server images: nginx, and the kitten/nautilus pages, made of
// Debian's nginx and of upstream's own content in the module cache.

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Debian's nginx (apt-get install nginx).
const (
	nginxBin      = "/usr/sbin/nginx"
	nginxMimeType = "/etc/nginx/mime.types"
)

// webTools are the host files the nginx image needs; run.sh and
// checkPrerequisites check them.
var webTools = []string{nginxBin, nginxMimeType}

// upstreamImagesDir is k8s.io/kubernetes's test/images in the module
// cache: the content some images copy (agnhost's porter certificates,
// kitten's and nautilus's pages).
func upstreamImagesDir(t *testing.T) string {
	t.Helper()
	return filepath.Join(upstreamModuleDir(t), "test", "images")
}

// upstreamModuleDir is the pinned k8s.io/kubernetes in the module cache.
func upstreamModuleDir(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "k8s.io/kubernetes").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" {
		t.Fatalf("go list -m k8s.io/kubernetes: %v (run `go mod download` in test/conformance)", err)
	}
	return strings.TrimSpace(string(out))
}

// copyFrom adds the file at src on the host to the image at dest.
func (r *rootfs) copyFrom(t *testing.T, src, dest string, mode int64) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatalf("image content: %v", err)
	}
	r.file(dest, data, mode)
}

// nginxImage is upstream's nginx image (nginx on Alpine) as far as specs
// see it: nginx serving /usr/share/nginx/html on port 80, workers as
// user nginx (101), stopped with SIGQUIT. Debian's nginx 1.22 instead of
// 1.27, with its compiled-in paths.
func nginxImage(t *testing.T) (*rootfs, v1.Config) {
	t.Helper()
	fs := newRootfs()
	fs.busybox(t)
	fs.hostBinaryAs(t, hostShell, "/bin/sh")
	fs.hostBinary(t, nginxBin)
	fs.copyFrom(t, nginxMimeType, nginxMimeType, 0o644)
	fs.file("etc/nginx/nginx.conf", []byte(`user nginx;
worker_processes auto;
error_log stderr notice;
pid /run/nginx.pid;
events {
    worker_connections 1024;
}
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log /dev/stdout;
    sendfile on;
    keepalive_timeout 65;
    server {
        listen 80;
        listen [::]:80;
        server_name localhost;
        location / {
            root /usr/share/nginx/html;
            index index.html index.htm;
        }
    }
}
`), 0o644)
	for _, d := range []string{"body", "fastcgi", "proxy", "scgi", "uwsgi"} {
		fs.dir("var/lib/nginx/"+d, 0o755)
	}
	fs.dir("var/log/nginx", 0o755)
	fs.dir("run", 0o755)
	fs.file("usr/share/nginx/html/index.html", []byte("<html><body><h1>nginx works</h1></body></html>\n"), 0o644)
	fs.file("etc/passwd", []byte("root:x:0:0:root:/root:/bin/sh\nnginx:x:101:101:nginx:/var/cache/nginx:/sbin/nologin\nnobody:x:65534:65534:nobody:/home:/bin/false\n"), 0o644)
	fs.file("etc/group", []byte("root:x:0:\nnginx:x:101:nginx\nnobody:x:65534:\n"), 0o644)
	return fs, v1.Config{Cmd: []string{"nginx", "-g", "daemon off;"}, StopSignal: "SIGQUIT"}
}

// pagesImage is kitten or nautilus: the agnhost image with upstream's
// pages (data.json and a picture) in /, served by agnhost test-webserver
// on port 80, as upstream's Dockerfile has it.
func pagesImage(t *testing.T, agnhost func() *rootfs, name string) (*rootfs, v1.Config) {
	t.Helper()
	fs := agnhost()
	html := filepath.Join(upstreamImagesDir(t), name, "html")
	entries, err := os.ReadDir(html)
	if err != nil || len(entries) == 0 {
		t.Fatalf("%s's pages: %v (want upstream's test/images/%s/html in the module cache)", name, err, name)
	}
	for _, e := range entries {
		fs.copyFrom(t, filepath.Join(html, e.Name()), e.Name(), 0o644)
	}
	return fs, v1.Config{Entrypoint: []string{"/agnhost"}, Cmd: []string{"test-webserver"}}
}

package agent

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cloudless-dev/cloudless/internal/datadir"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/platforms"
	gcrname "github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// PauseImage is the sandbox image, built at start from the pause helper.
const PauseImage = "registry.cloudless.local/pause:1"

// criNamespace is the containerd namespace the CRI plugin uses.
const criNamespace = "k8s.io"

// importImages imports the pause image and every archive in the images
// dir.
func (a *Agent) importImages(ctx context.Context) error {
	c, err := client.New(a.paths.containerdSocket(), client.WithDefaultNamespace(criNamespace))
	if err != nil {
		return err
	}
	defer c.Close()
	pause, err := pauseArchive(a.helper("pause"))
	if err != nil {
		return fmt.Errorf("build the pause image: %w", err)
	}
	if _, err := importArchive(ctx, c, bytes.NewReader(pause)); err != nil {
		return fmt.Errorf("import the pause image: %w", err)
	}
	dir := datadir.Of(a.cfg.DataDir).Images()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	_, err = a.importDir(ctx, c, dir, nil)
	return err
}

// watchImages imports archives that appear in, or change in, the images
// dir while the agent runs.
func (a *Agent) watchImages(ctx context.Context) error {
	c, err := client.New(a.paths.containerdSocket(), client.WithDefaultNamespace(criNamespace))
	if err != nil {
		return err
	}
	defer c.Close()
	seen := map[string]time.Time{}
	for {
		seen, err = a.importDir(ctx, c, datadir.Of(a.cfg.DataDir).Images(), seen)
		if err != nil {
			a.log.Error("import images", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(5 * time.Second):
		}
	}
}

// importDir imports the archives (*.tar) in dir not in seen at the same
// modification time, and returns the updated seen.
func (a *Agent) importDir(ctx context.Context, c *client.Client, dir string, seen map[string]time.Time) (map[string]time.Time, error) {
	if seen == nil {
		seen = map[string]time.Time{}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return seen, err
	}
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".tar") {
			continue
		}
		info, err := e.Info()
		if err != nil || seen[e.Name()].Equal(info.ModTime()) {
			continue
		}
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			return seen, err
		}
		names, err := importArchive(ctx, c, f)
		f.Close()
		if err != nil {
			return seen, fmt.Errorf("import %s: %w", e.Name(), err)
		}
		seen[e.Name()] = info.ModTime()
		a.log.Info("imported images", "file", e.Name(), "images", names)
	}
	return seen, nil
}

// ImportArchive imports an OCI or docker-archive tarball into the CRI
// namespace and unpacks it, returning the image names.
func importArchive(ctx context.Context, c *client.Client, r io.Reader) ([]string, error) {
	ctx = namespaces.WithNamespace(ctx, criNamespace)
	imgs, err := c.Import(ctx, r, client.WithImportPlatform(platforms.Default()))
	if err != nil {
		return nil, err
	}
	var names []string
	for _, img := range imgs {
		if err := client.NewImageWithPlatform(c, img, platforms.Default()).Unpack(ctx, "overlayfs"); err != nil {
			return nil, fmt.Errorf("unpack %s: %w", img.Name, err)
		}
		names = append(names, img.Name)
	}
	return names, nil
}

// pauseArchive packs the pause binary into a one-layer image archive.
func pauseArchive(bin string) ([]byte, error) {
	data, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	return BinaryImageArchive(PauseImage, "pause", data, "65535:65535")
}

// BinaryImageArchive returns a docker-archive tarball of a one-layer image
// named ref that holds one static executable at /name and runs it as
// user (uid:gid). It is how images are made without a registry or a
// container builder: the pause image, and test workloads.
func BinaryImageArchive(ref, name string, data []byte, user string) ([]byte, error) {
	var layerTar bytes.Buffer
	tw := tar.NewWriter(&layerTar)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
		return nil, err
	}
	tw.Write(data)
	tw.Close()
	return ImageArchive(ref, layerTar.Bytes(), v1.Config{Entrypoint: []string{"/" + name}, User: user})
}

// ImageArchive returns a docker-archive tarball of a one-layer image
// named ref, for this machine's platform: layer is the layer's tar, cfg
// its entrypoint, user and environment.
func ImageArchive(ref string, layer []byte, cfg v1.Config) ([]byte, error) {
	// From an opener, not LayerFromReader: that one buffers the layer in
	// a temporary file it never removes (one per agent start, for pause).
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layer)), nil })
	if err != nil {
		return nil, err
	}
	// Config first: AppendLayers then records the layer's diff ID in it.
	img, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{
		Architecture: platforms.DefaultSpec().Architecture, OS: "linux", Config: cfg,
	})
	if err != nil {
		return nil, err
	}
	img, err = mutate.AppendLayers(img, l)
	if err != nil {
		return nil, err
	}
	tag, err := gcrname.NewTag(ref)
	if err != nil {
		return nil, fmt.Errorf("image name %q: %w", ref, err)
	}
	var out bytes.Buffer
	if err := tarball.Write(tag, img, &out); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// ImportFiles imports image archives into the running agent's containerd
// for dataDir, returning the image names.
func ImportFiles(ctx context.Context, dataDir string, files []string) ([]string, error) {
	sock := filepath.Join(datadir.Of(dataDir).RunDir(), "containerd", "containerd.sock")
	if _, err := os.Stat(sock); err != nil {
		return nil, fmt.Errorf("no agent runs with --data-dir %s (no %s): start it, or copy the archives into %s to import them at its next start", dataDir, sock, datadir.Of(dataDir).Images())
	}
	c, err := client.New(sock, client.WithDefaultNamespace(criNamespace), client.WithTimeout(10*time.Second))
	if err != nil {
		return nil, fmt.Errorf("connect to containerd: %w", err)
	}
	defer c.Close()
	var names []string
	for _, f := range files {
		r, err := os.Open(f)
		if err != nil {
			return names, err
		}
		n, err := importArchive(ctx, c, r)
		r.Close()
		if err != nil {
			return names, fmt.Errorf("import %s (want an OCI or docker-archive tarball): %w", f, err)
		}
		names = append(names, n...)
	}
	return names, nil
}

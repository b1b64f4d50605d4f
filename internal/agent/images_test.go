package agent

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"testing"
)

// TestBinaryImageArchive: the archive is a docker-archive with the
// binary in a layer, and making it leaves nothing in the temp dir (the
// agent makes the pause image at every start).
func TestBinaryImageArchive(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	archive, err := BinaryImageArchive("example.test/app:1", "app", []byte("#!binary"), "65534:65534")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
	}
	want := map[string]bool{"manifest.json": false}
	for _, n := range names {
		if _, ok := want[n]; ok {
			want[n] = true
		}
	}
	if !want["manifest.json"] || len(names) < 3 {
		t.Errorf("archive entries %v: want manifest.json, a config and a layer", names)
	}
	left, err := os.ReadDir(tmp)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Errorf("making an archive left %d file(s) in TMPDIR, e.g. %s", len(left), left[0].Name())
	}
}

package manifests

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	"k8s.io/client-go/kubernetes"
)

// SkipSuffix marks a file to leave alone: NAME.skip next to NAME.
const SkipSuffix = ".skip"

// Mirror keeps the files of dir and its subdirectories stored as
// manifests, with source "dir:<server>", until ctx ends: a file added or changed is put, a file
// removed is removed (only if this server's directory put it). Changes
// are picked up as the directory reports them (inotify), within a second.
func Mirror(ctx context.Context, cs kubernetes.Interface, dir, server string, log *slog.Logger) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch %s: %w", dir, err)
	}
	defer w.Close()
	source := "dir:" + server
	sync := func() {
		if err := syncDir(ctx, cs, w, dir, source, log); err != nil {
			log.Warn("mirror the manifests directory", "dir", dir, "err", err)
		}
	}
	sync()
	var debounce <-chan time.Time
	resync := time.NewTicker(time.Minute) // in case an event or a write was lost
	defer resync.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.Events:
			debounce = time.After(200 * time.Millisecond) // an editor writes in steps
		case err := <-w.Errors:
			log.Warn("watch the manifests directory", "dir", dir, "err", err)
		case <-debounce:
			sync()
		case <-resync.C:
			sync()
		}
	}
}

// manifestFile reports whether name is a manifest file by its extension.
func manifestFile(name string) bool {
	if strings.HasPrefix(name, ".") {
		return false
	}
	switch filepath.Ext(name) {
	case ".yaml", ".yml", ".json":
		return true
	}
	return false
}

// syncDir stores every manifest file under dir (subdirectories included,
// named by their path relative to dir) and removes the stored files of
// this source that are gone; it watches every directory it walks.
func syncDir(ctx context.Context, cs kubernetes.Interface, w *fsnotify.Watcher, dir, source string, log *slog.Logger) error {
	present := map[string]bool{}
	skip := map[string]bool{}
	var files []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		switch {
		case d.IsDir():
			if rel != "." && strings.HasPrefix(d.Name(), ".") {
				return filepath.SkipDir
			}
			return w.Add(path) // a no-op for a directory already watched
		case !d.Type().IsRegular():
		case strings.HasSuffix(rel, SkipSuffix):
			skip[strings.TrimSuffix(rel, SkipSuffix)] = true
		case manifestFile(d.Name()):
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, rel := range files {
		present[rel] = true
		data, err := os.ReadFile(filepath.Join(dir, rel))
		if err != nil {
			return err
		}
		if err := Put(ctx, cs, rel, data, source, skip[rel]); err != nil {
			return err
		}
	}
	stored, err := List(ctx, cs)
	if err != nil {
		return err
	}
	for _, f := range stored {
		if f.Source == source && !present[f.Name] {
			log.Info("manifest file removed from the directory: removing it", "file", f.Name)
			if err := Remove(ctx, cs, f.Name); err != nil {
				return err
			}
		}
	}
	return nil
}

package manifests

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	"k8s.io/client-go/kubernetes"
)

// DirName is the manifests directory in a server's data dir.
const DirName = "manifests"

// SkipSuffix marks a file to leave alone: NAME.skip next to NAME.
const SkipSuffix = ".skip"

// Mirror keeps the files of dir stored as manifests, with source
// "dir:<server>", until ctx ends: a file added or changed is put, a file
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
	if err := w.Add(dir); err != nil {
		return fmt.Errorf("watch %s: %w", dir, err)
	}
	source := "dir:" + server
	sync := func() {
		if err := syncDir(ctx, cs, dir, source, log); err != nil {
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

func syncDir(ctx context.Context, cs kubernetes.Interface, dir, source string, log *slog.Logger) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	present := map[string]bool{}
	skip := map[string]bool{}
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), SkipSuffix); ok {
			skip[n] = true
		}
	}
	for _, e := range entries {
		if !e.Type().IsRegular() || !manifestFile(e.Name()) {
			continue
		}
		present[e.Name()] = true
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return err
		}
		if err := Put(ctx, cs, e.Name(), data, source, skip[e.Name()]); err != nil {
			return err
		}
	}
	files, err := List(ctx, cs)
	if err != nil {
		return err
	}
	for _, f := range files {
		if f.Source == source && !present[f.Name] {
			log.Info("manifest file removed from the directory: removing it", "file", f.Name)
			if err := Remove(ctx, cs, f.Name); err != nil {
				return err
			}
		}
	}
	return nil
}

package datastore

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/cloudless-dev/cloudless/internal/datadir"
	"github.com/cloudless-dev/cloudless/internal/datastore/engine/pebble"
)

// EngineDir is where the embedded engine keeps its files under the data dir.
func (c Config) EngineDir() string { return datadir.Of(c.DataDir).Engine() }

// Repair makes a damaged embedded engine open again: see pebble.Repair.
// The datastore (and any server on the data dir) must be stopped.
func Repair(cfg Config, dryRun bool, log *slog.Logger) (pebble.RepairReport, error) {
	if cfg.Endpoint != "" {
		return pebble.RepairReport{}, fmt.Errorf("datastore repair works on the embedded engine; PostgreSQL has its own recovery (--datastore-endpoint is set)")
	}
	dir := cfg.EngineDir()
	if _, err := os.Stat(filepath.Join(dir, "db")); err != nil {
		return pebble.RepairReport{}, fmt.Errorf("no embedded datastore in %s (%v): check --data-dir", dir, err)
	}
	return pebble.Repair(dir, pebble.Options{}, dryRun, log)
}

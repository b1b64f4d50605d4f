package datastore_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/cloudless-dev/cloudless/internal/datastore"
	"github.com/cloudless-dev/cloudless/internal/testutil/pgtest"
)

// engines every datastore test runs against.
var engines = []string{"pebble", "postgres"}

// pg serves the postgres engine's tests; pgErr is why it did not start.
// Without it the embedded engine's tests still run, and each postgres
// test fails naming pgErr.
var (
	pg    *pgtest.Server
	pgErr error
)

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	pg, pgErr = pgtest.Start(ctx, 25432+os.Getpid()%1000)
	cancel()
	if pgErr != nil {
		fmt.Fprintf(os.Stderr, "start PostgreSQL for the postgres engine tests: %v (they fail; the embedded engine's run)\n", pgErr)
	}
	code := m.Run()
	if pg != nil {
		pg.Stop()
	}
	os.Exit(code)
}

// startDatastore runs a fresh in-process datastore on engine and returns
// its unix socket path. It stops when the test ends.
func startDatastore(t testing.TB, engine string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "cl-ds-") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	cfg := datastore.DefaultConfig()
	cfg.DataDir = dir
	cfg.ProgressNotifyInterval = time.Second
	if engine == "postgres" {
		if pg == nil {
			t.Fatalf("PostgreSQL did not start: %v (apt-get install postgresql)", pgErr)
		}
		if cfg.Endpoint, err = pg.NewDatabase(context.Background()); err != nil {
			t.Fatalf("create database: %v", err)
		}
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithCancel(context.Background())
	ds, err := datastore.Open(ctx, cfg, log)
	if err != nil {
		cancel()
		t.Fatalf("open datastore: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- ds.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("datastore: %v", err)
		}
		os.RemoveAll(dir)
	})
	select {
	case <-ds.Ready():
	case err := <-done:
		t.Fatalf("datastore stopped before ready: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("datastore not ready after 30s")
	}
	return cfg.SocketPath()
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

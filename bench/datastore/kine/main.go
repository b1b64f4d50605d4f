// Command kine serves kine v0.17.5 (github.com/k3s-io/kine) for the
// datastore benchmark: the etcd v3 API on --listen-address over the
// --endpoint backend (sqlite://FILE or postgres://...), with the settings of
// kine's own command line defaults. It is built from the module proxy as a
// dependency; no kine code is copied here.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/k3s-io/kine/pkg/drivers/generic"
	"github.com/k3s-io/kine/pkg/drivers/sqlite"
	"github.com/k3s-io/kine/pkg/endpoint"
	"github.com/sirupsen/logrus"
)

func main() {
	listen := flag.String("listen-address", "unix://kine.sock", "where to serve the etcd API: unix://PATH or HOST:PORT")
	ep := flag.String("endpoint", "", "backend: sqlite://FILE or postgres://USER@HOST:PORT/DB")
	level := flag.String("log-level", "warn", "logrus level")
	flag.Parse()

	lvl, err := logrus.ParseLevel(*level)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	logrus.SetLevel(lvl)

	dsn := *ep
	// kine's sqlite driver takes the DSN as given; k3s appends the
	// driver's default parameters (WAL, busy timeout, ...), so do the same.
	if strings.HasPrefix(dsn, "sqlite://") && !strings.Contains(dsn, "?") {
		dsn += "?" + sqlite.DefaultParams
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var wg sync.WaitGroup
	// The same values as kine's command line defaults (pkg/app).
	cfg := endpoint.Config{
		WaitGroup: &wg,
		Listener:  *listen,
		Endpoint:  dsn,
		ConnectionPoolConfig: generic.ConnectionPoolConfig{
			MaxIdle:     20,
			MaxIdleTime: 2 * time.Minute,
		},
		NotifyInterval:      5 * time.Second,
		EmulatedETCDVersion: "3.6.11",
		CompactTimeout:      5 * time.Second,
		CompactMinRetain:    1000,
		CompactBatchSize:    1000,
		PollBatchSize:       500,
		PollInterval:        time.Second,
		LogFormat:           "plain",
	}
	etcd, err := endpoint.Listen(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kine:", err)
		os.Exit(1)
	}
	fmt.Fprintln(os.Stderr, "kine: serving on", strings.Join(etcd.Endpoints, ","))
	<-ctx.Done()
	wg.Wait()
}

// Command load is the workload driver of the datastore benchmark
// (bench/datastore/run.sh). It speaks the etcd v3 API with the requests
// kube-apiserver sends for a small cluster's steady state, and measures the
// store while it does.
//
//	load wait   --endpoint E [--pid N] [--timeout 60s]  wait until E answers
//	load run    --store S --endpoint E --out F.json ...  the workload; see load run -h
//	load mark   --store S --status "failed to start" --detail TEXT --out F.json
//	load report --results DIR --stores "a b c" --md OUT.md --png OUT.png ...
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: load wait|run|mark|report [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "wait":
		err = cmdWait(os.Args[2:])
	case "run":
		err = cmdRun(os.Args[2:])
	case "mark":
		err = cmdMark(os.Args[2:])
	case "report":
		err = cmdReport(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

// cmdWait polls the endpoint with a Get until it answers, the process with
// --pid exits, or the deadline passes.
func cmdWait(args []string) error {
	fs := flag.NewFlagSet("wait", flag.ExitOnError)
	ep := fs.String("endpoint", "", "etcd API endpoint")
	pid := fs.Int("pid", 0, "give up as soon as this process has exited")
	timeout := fs.Duration("timeout", 60*time.Second, "deadline")
	_ = fs.Parse(args)
	if *ep == "" {
		return errors.New("wait: --endpoint is required")
	}
	deadline := time.Now().Add(*timeout)
	var last error
	for time.Now().Before(deadline) {
		if *pid != 0 && !alive(*pid) {
			return fmt.Errorf("process %d exited before %s answered", *pid, *ep)
		}
		cli, err := newClient(*ep)
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err = cli.Get(ctx, "/registry/health")
			cancel()
			cli.Close()
			if err == nil {
				return nil
			}
		}
		last = err
		time.Sleep(50 * time.Millisecond) // polling for readiness
	}
	return fmt.Errorf("%s did not answer within %v: %v", *ep, *timeout, last)
}

// cmdMark writes the result of a store that could not be measured.
func cmdMark(args []string) error {
	fs := flag.NewFlagSet("mark", flag.ExitOnError)
	store := fs.String("store", "", "store name")
	status := fs.String("status", "failed to start", "status for the table")
	detail := fs.String("detail", "", "details (e.g. the end of the store's log)")
	out := fs.String("out", "", "result JSON file")
	_ = fs.Parse(args)
	if *store == "" || *out == "" {
		return errors.New("mark: --store and --out are required")
	}
	return writeResult(*out, &Result{Store: *store, Status: *status, Detail: *detail})
}

// Package conformance runs the upstream Kubernetes conformance suite
// against a two-node Cloudless cluster on this machine. It is a module of
// its own, so that the suite's dependencies stay out of the main module;
// run it through run.sh (README.md), which builds the binaries and passes
// them in CONFORMANCE_* variables.
package conformance

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The runner's settings, from run.sh.
type settings struct {
	bin, work, results, machine string
	focus, skip                 string
	procs                       int
	parallel                    bool // run the parallel pass (PARALLEL=0: only the serial one)
	serial                      bool // also run the [Serial] and [Disruptive] conformance specs
	name                        string
}

func loadSettings(t *testing.T) settings {
	s := settings{
		bin: os.Getenv("CONFORMANCE_BIN"), work: os.Getenv("CONFORMANCE_WORK"), results: os.Getenv("CONFORMANCE_RESULTS"),
		machine: os.Getenv("MACHINE"), focus: os.Getenv("FOCUS"), skip: os.Getenv("SKIP"), procs: 4, serial: os.Getenv("SERIAL") != "0",
		parallel: os.Getenv("PARALLEL") != "0",
		name:     os.Getenv("CONFORMANCE_NAME"),
	}
	if s.bin == "" || s.work == "" {
		t.Skip("run through test/conformance/run.sh, which builds the suite and sets CONFORMANCE_BIN and CONFORMANCE_WORK")
	}
	if v := os.Getenv("PROCS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("PROCS=%q: want a number of parallel processes, 1 or more", v)
		}
		s.procs = n
	}
	if !s.parallel && !s.serial {
		t.Fatal("PARALLEL=0 and SERIAL=0 leave no pass to run: drop one")
	}
	if s.machine == "" {
		s.machine = "vm"
	}
	if s.name == "" {
		s.name = "conformance"
	}
	return s
}

// checkPrerequisites fails, naming what is missing and the fix, before
// anything is started. run.sh has checked root, Go and disk space.
func checkPrerequisites(t *testing.T, s settings) {
	t.Helper()
	var missing []string
	for _, f := range append([]string{"cloudless", "e2e.test", "ginkgo"}, imageBinaries...) {
		if _, err := os.Stat(filepath.Join(s.bin, f)); err != nil {
			missing = append(missing, fmt.Sprintf("%s is not in %s: run.sh builds it", f, s.bin))
		}
	}
	for _, f := range append(append([]string{busyboxPath, hostShell}, hostTools...), webTools...) {
		if _, err := os.Stat(f); err != nil {
			missing = append(missing, fmt.Sprintf("%s is missing: apt-get install busybox-static bind9-dnsutils netcat-openbsd curl nginx", f))
		}
	}
	na, nb := nodeNumbers(t)
	for _, n := range []int{na, nb} {
		if _, err := os.Stat(fmt.Sprintf("/sys/class/net/cln%d", n)); err == nil {
			missing = append(missing, fmt.Sprintf("interface cln%d exists: another test run (or a crashed one) holds 10.250.%d.0/24; stop it, or `ip link delete cln%d`", n, n, n))
		}
	}
	var st unix.Statfs_t
	if err := unix.Statfs(s.work, &st); err == nil && st.Bavail*uint64(st.Bsize) < 10<<30 {
		missing = append(missing, fmt.Sprintf("%s has %d GiB free, the run needs 10 GiB (images, two nodes' containers): free some space or set CONFORMANCE_WORK", s.work, st.Bavail*uint64(st.Bsize)>>30))
	}
	if len(missing) > 0 {
		t.Fatalf("prerequisites:\n  %s", strings.Join(missing, "\n  "))
	}
}

// pass is one ginkgo run of the suite.
type pass struct {
	name   string
	labels string // ginkgo --label-filter
	procs  int
}

func TestConformance(t *testing.T) {
	s := loadSettings(t)
	checkPrerequisites(t, s)
	// Ctrl-C or SIGTERM (run.sh forwards both) ends the suite early; the
	// report is written for what ran and everything started is cleaned up.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(stop)
	started := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	t.Log("building images")
	images := filepath.Join(s.work, "images")
	if err := os.MkdirAll(images, 0o700); err != nil {
		t.Fatal(err)
	}
	plans := buildImages(t, images, s.bin)

	t.Log("starting a two-node cluster")
	c := startCluster(t, ctx, s.work, s.bin, images)
	logs := filepath.Join(s.work, "logs")
	os.MkdirAll(logs, 0o755)
	defer c.writeLogs(logs)

	// The suite runs kubectl for its kubectl specs: cloudless kubectl.
	path := filepath.Join(s.work, "path")
	os.MkdirAll(path, 0o755)
	wrapper := fmt.Sprintf("#!/bin/sh\nexec %s kubectl \"$@\"\n", filepath.Join(s.bin, "cloudless"))
	if err := os.WriteFile(filepath.Join(path, "kubectl"), []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}

	var passes []pass
	if s.parallel {
		passes = append(passes, pass{name: "parallel", labels: "Conformance && !Serial && !Disruptive", procs: s.procs})
	}
	if s.serial {
		passes = append(passes, pass{name: "serial", labels: "Conformance && (Serial || Disruptive)", procs: 1})
	}
	reports := filepath.Join(s.work, "reports")
	var results []passResult
	var md string
	for _, p := range passes {
		t.Logf("running the %s pass (%d processes)", p.name, p.procs)
		r, interrupted := runPass(t, s, p, c.kubeconfig, path, reports, stop, c.dead)
		results = append(results, r)
		t.Logf("%s pass: %d ran, %d passed, %d failed in %s", p.name, r.ran, r.passed, len(r.failed), r.took.Round(time.Second))
		// After every pass, so a long run leaves results as it goes.
		md = writeReport(t, s, results, plans, reports, time.Since(started))
		t.Logf("wrote %s", md)
		if interrupted {
			c.checkAlive(t) // a node that died: its command and the end of its log
			t.Fatalf("interrupted during the %s pass; the report has what ran; cleaning up", p.name)
		}
	}
	for _, r := range results {
		if len(r.failed) > 0 {
			t.Errorf("%s pass: %d failures (see %s)", r.name, len(r.failed), md)
		}
	}
}

// runPass runs one pass; a signal on stop, or a node process exiting
// (dead), interrupts ginkgo, which ends the running specs (their own
// cleanup included) and writes its report: without a node, the rest of
// the pass would only time out.
func runPass(t *testing.T, s settings, p pass, kubeconfig, path, reports string, stop <-chan os.Signal, dead <-chan struct{}) (passResult, bool) {
	t.Helper()
	dir := filepath.Join(reports, p.name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	args := []string{"--nodes=" + strconv.Itoa(p.procs), "--label-filter=" + p.labels, "--timeout=5h", "--no-color", "--poll-progress-after=10m"}
	if s.focus != "" {
		args = append(args, "--focus="+s.focus)
	}
	if s.skip != "" {
		args = append(args, "--skip="+s.skip)
	}
	args = append(args, filepath.Join(s.bin, "e2e.test"), "--",
		"--kubeconfig="+kubeconfig, "--provider=skeleton", "--report-dir="+dir,
		"--kubectl-path="+filepath.Join(path, "kubectl"), "--dns-domain=cluster.local",
		"--non-blocking-taints=node-role.kubernetes.io/control-plane")
	cmd := exec.Command(filepath.Join(s.bin, "ginkgo"), args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig, "PATH="+path+":"+os.Getenv("PATH"))
	logf, err := os.Create(filepath.Join(dir, "ginkgo.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so that an interrupt reaches ginkgo and its
	// e2e.test processes together, as Ctrl-C in a terminal does.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("ginkgo: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	interrupted := false
	why := ""
	select {
	case err = <-done:
	case sig := <-stop:
		why = sig.String()
	case <-dead:
		why = "a node process exited"
	}
	if why != "" {
		interrupted = true
		t.Logf("%s: interrupting ginkgo (it ends the running specs and reports them)", why)
		syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
		select {
		case err = <-done:
		case <-time.After(3 * time.Minute):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			err = <-done
		}
	}
	r := readJUnit(t, dir)
	r.name, r.took = p.name, time.Since(start)
	if err != nil && len(r.failed) == 0 && !interrupted {
		t.Errorf("%s pass: ginkgo %v with no failure in its report; see %s", p.name, err, logf.Name())
	}
	return r, interrupted
}

package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// clockTicks is USER_HZ, the unit of /proc/PID/stat times: 100 on every
// Linux architecture Go supports (sysconf needs cgo).
const clockTicks = 100

// procStat is what the benchmark reads of one process in /proc/PID/stat.
type procStat struct {
	ppid int
	// cpu is utime+stime+cutime+cstime in ticks: the process's own CPU and
	// that of its children it has already reaped (PostgreSQL backends that
	// exited are counted in the postmaster's cutime).
	cpu uint64
}

func readProcStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	// The command name is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): field n is f[n-3].
	if len(f) < 15 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	var s procStat
	s.ppid, _ = strconv.Atoi(f[1])
	for _, n := range []int{14, 15, 16, 17} {
		v, _ := strconv.ParseUint(f[n-3], 10, 64)
		s.cpu += v
	}
	return s, nil
}

// descendants returns pid and every live process below it.
func descendants(pid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return []int{pid}
	}
	children := map[int][]int{}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		s, err := readProcStat(p)
		if err != nil {
			continue
		}
		children[s.ppid] = append(children[s.ppid], p)
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// treeCPUSeconds is the CPU time of the process trees rooted at pids, with
// exited children included through their parents' cutime/cstime. The
// difference of two readings is the CPU the trees used in between.
func treeCPUSeconds(pids []int) float64 {
	var ticks uint64
	for _, root := range pids {
		for _, p := range descendants(root) {
			if s, err := readProcStat(p); err == nil {
				ticks += s.cpu
			}
		}
	}
	return float64(ticks) / clockTicks
}

// statusKB returns a "Name:   N kB" field of /proc/PID/status in bytes.
func statusKB(pid int, name string) int64 {
	return kbField(fmt.Sprintf("/proc/%d/status", pid), name)
}

func kbField(path, name string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || k != name {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		return n * 1024
	}
	return 0
}

// treePSS is the proportional set size of the process trees rooted at pids:
// shared memory (PostgreSQL's shared buffers) is counted once in all, not
// once per process as RSS would.
func treePSS(pids []int) int64 {
	var sum int64
	for _, root := range pids {
		for _, p := range descendants(root) {
			sum += kbField(fmt.Sprintf("/proc/%d/smaps_rollup", p), "Pss")
		}
	}
	return sum
}

func alive(pid int) bool {
	return unix.Kill(pid, 0) == nil
}

// sectorsWritten is field 7 of /sys/block/DEV/stat: 512-byte sectors written
// to the device since it was set up.
func sectorsWritten(dev string) (uint64, error) {
	b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "stat"))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) < 7 {
		return 0, fmt.Errorf("%s: short stat %q", dev, b)
	}
	return strconv.ParseUint(f[6], 10, 64)
}

func deviceBytes(devs []string) (int64, error) {
	var sum uint64
	for _, d := range devs {
		s, err := sectorsWritten(d)
		if err != nil {
			return 0, err
		}
		sum += s
	}
	return int64(sum) * 512, nil
}

// syncFS flushes the file system mounted at dir (syncfs(2)): dirty pages,
// metadata and the ext4 journal reach the device, so a device counter read
// afterwards includes everything the store has written so far.
func syncFS(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Syncfs(fd)
}

// diskUsage is `du -s` of dir in bytes: allocated blocks of every file.
func diskUsage(dir string) int64 {
	var sum int64
	seen := map[uint64]bool{}
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // files come and go while the store runs
		}
		var st unix.Stat_t
		if unix.Lstat(path, &st) != nil {
			return nil
		}
		if st.Nlink > 1 {
			if seen[st.Ino] {
				return nil
			}
			seen[st.Ino] = true
		}
		sum += st.Blocks * 512
		return nil
	})
	return sum
}

// loadAvg is the 1-minute load average: how busy the machine was, the
// benchmark included, at the end of a timed phase.
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return -1
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return -1
	}
	return v
}

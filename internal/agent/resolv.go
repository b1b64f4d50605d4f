package agent

import (
	"bufio"
	"bytes"
	"fmt"
	"github.com/cloudless-dev/cloudless/internal/atomicfile"
	"log/slog"
	"net/netip"
	"os"
	"strings"
)

// resolvSources are read in order; the first with a usable nameserver
// wins. systemd-resolved's stub (127.0.0.53) in /etc/resolv.conf is why
// the second exists.
var resolvSources = []string{"/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"}

// writeResolvConf writes the resolv.conf pods with dnsPolicy Default (and
// cluster DNS's upstream) get: the host's real upstream resolvers, never a
// loopback stub (which, inside a pod, is the pod itself: a DNS loop), and
// none of the host's search domains (each one multiplies every lookup).
func writeResolvConf(path, source string, log *slog.Logger) error {
	sources := resolvSources
	if source != "" {
		sources = []string{source}
	}
	for _, src := range sources {
		b, err := os.ReadFile(src)
		if err != nil {
			continue
		}
		servers := upstreamNameservers(b)
		if len(servers) == 0 {
			continue
		}
		var out bytes.Buffer
		fmt.Fprintf(&out, "# Written by cloudless from %s: upstream resolvers only, no search domains.\n", src)
		for _, s := range servers {
			fmt.Fprintf(&out, "nameserver %s\n", s)
		}
		return atomicfile.Write(path, out.Bytes(), 0o644)
	}
	log.Warn("no upstream DNS resolver found (only loopback stubs or none); pods will resolve cluster names only", "read", strings.Join(sources, ", "))
	return atomicfile.Write(path, []byte("# Written by cloudless: the host has no non-loopback resolver.\n"), 0o644)
}

// upstreamNameservers returns the nameserver lines of a resolv.conf that
// are not loopback, at most three (the resolver ignores the rest).
func upstreamNameservers(resolv []byte) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(resolv))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		ip, err := netip.ParseAddr(f[1])
		if err != nil || ip.IsLoopback() || ip.IsUnspecified() {
			continue
		}
		if len(out) < 3 {
			out = append(out, ip.String())
		}
	}
	return out
}

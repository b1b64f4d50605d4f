// Package nodens gives tests extra "machines" on this one: each Node is a
// network namespace joined to the host by a veth pair, in which a
// process runs with its own mount namespace too. The agent tests run a
// second kubelet and containerd in one; the networking and load-balancer
// tests reuse it.
//
// Processes enter the network namespace with nsenter --net plus unshare
// -m, not `ip netns exec`: that remounts /sys, which hides the cgroup
// mounts the kubelet needs.
package nodens

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Node is a network namespace with a veth link to the host.
type Node struct {
	Name   string // the namespace's name (ip netns list)
	IP     string // the node's address, on its eth0
	HostIP string // the host's end of the link: reach the host here
	hostIf string
}

// New makes node number n (1–250): namespace cl-<name>-<pid>, host side
// 10.250.n.1/24 on cln<n>, node side 10.250.n.2/24 on eth0 with the
// default route to the host. The test's cleanup removes both.
func New(t *testing.T, name string, n int) *Node {
	t.Helper()
	if n < 1 || n > 250 {
		t.Fatalf("nodens: node number %d out of 1–250", n)
	}
	node := &Node{
		Name:   fmt.Sprintf("cl-%s-%d", name, os.Getpid()),
		IP:     fmt.Sprintf("10.250.%d.2", n),
		HostIP: fmt.Sprintf("10.250.%d.1", n),
		hostIf: fmt.Sprintf("cln%d", n),
	}
	t.Cleanup(func() {
		run(t, false, "ip", "netns", "delete", node.Name)
		run(t, false, "ip", "link", "delete", node.hostIf)
	})
	steps := [][]string{
		{"ip", "netns", "add", node.Name},
		{"ip", "link", "add", node.hostIf, "type", "veth", "peer", "name", "eth0", "netns", node.Name},
		{"ip", "addr", "add", node.HostIP + "/24", "dev", node.hostIf},
		{"ip", "link", "set", node.hostIf, "up"},
		{"ip", "-n", node.Name, "addr", "add", node.IP + "/24", "dev", "eth0"},
		{"ip", "-n", node.Name, "link", "set", "eth0", "up"},
		{"ip", "-n", node.Name, "link", "set", "lo", "up"},
		{"ip", "-n", node.Name, "route", "add", "default", "via", node.HostIP},
	}
	for _, s := range steps {
		run(t, true, s...)
	}
	return node
}

// Command returns a command that runs bin in the node's network
// namespace and a private mount namespace.
func (n *Node) Command(bin string, args ...string) *exec.Cmd {
	full := append([]string{"--net=/var/run/netns/" + n.Name, "unshare", "-m", "--propagation", "private", bin}, args...)
	return exec.Command("nsenter", full...)
}

func run(t *testing.T, must bool, args ...string) {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil && must {
		t.Fatalf("nodens: %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

package lb

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
)

func TestAnnouncer(t *testing.T) {
	nodes := []string{"node-a", "node-b", "node-c"}
	wins := map[string]int{}
	moved := 0
	for i := range 300 {
		ip := netip.AddrFrom4([4]byte{192, 168, byte(i / 250), byte(i % 250)})
		w := Announcer(ip, nodes)
		if w2 := Announcer(ip, []string{"node-c", "node-a", "node-b"}); w2 != w {
			t.Fatalf("%s: %s, or %s with the nodes in another order", ip, w, w2)
		}
		wins[w]++
		// A node that did not win leaving changes nothing; the winner
		// leaving moves the address to another node.
		others := slices.DeleteFunc(slices.Clone(nodes), func(n string) bool { return n == w })
		for _, gone := range others {
			if got := Announcer(ip, slices.DeleteFunc(slices.Clone(nodes), func(n string) bool { return n == gone })); got != w {
				moved++
			}
		}
		if got := Announcer(ip, others); got == w || got == "" {
			t.Fatalf("%s: the winner %s left, then %q", ip, w, got)
		}
	}
	if moved != 0 {
		t.Errorf("%d addresses moved when a node that did not announce them left", moved)
	}
	for _, n := range nodes {
		if wins[n] < 60 {
			t.Errorf("node %s announces %d of 300 addresses: the spread is uneven %v", n, wins[n], fmt.Sprint(wins))
		}
	}
	if Announcer(netip.MustParseAddr("10.0.0.1"), nil) != "" {
		t.Error("an announcer with no nodes")
	}
}

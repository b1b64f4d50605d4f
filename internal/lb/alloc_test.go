package lb

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"k8s.io/utils/ptr"
)

func pool(t *testing.T, name string, spec IPAddressPoolSpec) *Pool {
	t.Helper()
	p := &IPAddressPool{Spec: spec}
	p.Name, p.Namespace = name, "metallb-system"
	out, err := ParsePool(p)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func svc(key string, ports ...Port) Service {
	ns, _, _ := strings.Cut(key, "/")
	return Service{Key: key, Namespace: ns, IPv6: []bool{false}, Ports: ports}
}

var (
	tcp80 = Port{"TCP", 80}
	tcp53 = Port{"TCP", 53}
	udp53 = Port{"UDP", 53}
)

func TestAllocate(t *testing.T) {
	type step struct {
		s      Service
		want   string // address, or "" for a refusal
		reason string // the refusal's reason
	}
	shared := func(s Service, key string) Service { s.SharingKey = key; return s }
	local := func(s Service, sel string) Service {
		s.Local, s.Selector = true, map[string]string{"app": sel}
		return s
	}
	wantIP := func(s Service, ip string) Service { s.Want = []netip.Addr{netip.MustParseAddr(ip)}; return s }
	inPool := func(s Service, p string) Service { s.Pool = p; return s }
	for _, tc := range []struct {
		name  string
		pools func(t *testing.T) []*Pool
		steps []step
	}{
		{
			name: "first free address, .0 and .255 avoided",
			pools: func(t *testing.T) []*Pool {
				return []*Pool{pool(t, "lan", IPAddressPoolSpec{Addresses: []string{"10.9.0.255-10.9.1.1"}, AvoidBuggyIPs: true})}
			},
			steps: []step{{s: svc("a/one", tcp80), want: "10.9.1.1"}, {s: svc("a/two", tcp80), reason: ReasonExhausted}},
		},
		{
			name:  "no pool",
			pools: func(t *testing.T) []*Pool { return nil },
			steps: []step{{s: svc("a/one", tcp80), reason: ReasonNoPool}},
		},
		{
			name: "autoAssign false: only when asked for",
			pools: func(t *testing.T) []*Pool {
				return []*Pool{pool(t, "reserved", IPAddressPoolSpec{Addresses: []string{"10.9.0.10/32"}, AutoAssign: ptr.To(false)})}
			},
			steps: []step{{s: svc("a/one", tcp80), reason: ReasonNoPool}, {s: inPool(svc("a/two", tcp80), "reserved"), want: "10.9.0.10"}, {s: inPool(svc("a/three", tcp80), "missing"), reason: ReasonNoPool}},
		},
		{
			name: "an address asked for: in a pool, free, or refused",
			pools: func(t *testing.T) []*Pool {
				return []*Pool{pool(t, "lan", IPAddressPoolSpec{Addresses: []string{"10.9.0.0/29"}})}
			},
			steps: []step{
				{s: wantIP(svc("a/one", tcp80), "10.9.0.5"), want: "10.9.0.5"},
				{s: wantIP(svc("a/two", tcp80), "10.9.0.5"), reason: ReasonUnavailable},
				{s: wantIP(svc("a/three", tcp80), "10.9.1.5"), reason: ReasonUnavailable},
				{s: svc("a/four", tcp80), want: "10.9.0.0"},
			},
		},
		{
			name: "sharing: same key, TCP and UDP of one port; not the same port twice, not another key",
			pools: func(t *testing.T) []*Pool {
				return []*Pool{pool(t, "lan", IPAddressPoolSpec{Addresses: []string{"10.9.0.0/30"}})}
			},
			steps: []step{
				{s: shared(svc("a/dns-tcp", tcp53), "dns"), want: "10.9.0.0"},
				{s: shared(svc("a/dns-udp", udp53), "dns"), want: "10.9.0.0"},
				{s: shared(wantIP(svc("a/dns-udp2", udp53), "10.9.0.0"), "dns"), reason: ReasonSharing},
				{s: shared(wantIP(svc("a/other", tcp80), "10.9.0.0"), "other"), reason: ReasonSharing},
				{s: wantIP(svc("a/nokey", tcp80), "10.9.0.0"), reason: ReasonUnavailable},
				{s: shared(svc("a/web", tcp80), "dns"), want: "10.9.0.0"},
			},
		},
		{
			name: "sharing with Local: the same pods only",
			pools: func(t *testing.T) []*Pool {
				return []*Pool{pool(t, "lan", IPAddressPoolSpec{Addresses: []string{"10.9.0.0/30"}})}
			},
			steps: []step{
				{s: local(shared(svc("a/one", tcp80), "k"), "web"), want: "10.9.0.0"},
				{s: local(shared(wantIP(svc("a/two", udp53), "10.9.0.0"), "k"), "db"), reason: ReasonSharing},
				{s: shared(wantIP(svc("a/three", udp53), "10.9.0.0"), "k"), reason: ReasonSharing},
				{s: local(shared(svc("a/four", udp53), "k"), "web"), want: "10.9.0.0"},
			},
		},
		{
			name: "priority and namespaces",
			pools: func(t *testing.T) []*Pool {
				return []*Pool{
					pool(t, "general", IPAddressPoolSpec{Addresses: []string{"10.9.0.0/30"}}),
					pool(t, "prod", IPAddressPoolSpec{Addresses: []string{"10.9.1.0/30"}, ServiceAllocation: &ServiceAllocation{Priority: 2, Namespaces: []string{"prod"}}}),
					pool(t, "prod-first", IPAddressPoolSpec{Addresses: []string{"10.9.2.0/32"}, ServiceAllocation: &ServiceAllocation{Priority: 1, Namespaces: []string{"prod"}}}),
				}
			},
			steps: []step{
				{s: svc("prod/one", tcp80), want: "10.9.2.0"},
				{s: svc("prod/two", tcp80), want: "10.9.1.0"},
				{s: svc("dev/one", tcp80), want: "10.9.0.0"},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := NewAllocator()
			a.SetPools(tc.pools(t))
			for i, st := range tc.steps {
				as, r := a.Allocate(st.s)
				switch {
				case st.want != "" && r != nil:
					t.Fatalf("step %d (%s): refused (%s): %s", i, st.s.Key, r.Reason, r.Message)
				case st.want != "" && !slices.Equal(as.Addrs, []netip.Addr{netip.MustParseAddr(st.want)}):
					t.Fatalf("step %d (%s): got %v, want %s", i, st.s.Key, as.Addrs, st.want)
				case st.want == "" && r == nil:
					t.Fatalf("step %d (%s): got %v, want a refusal %s", i, st.s.Key, as.Addrs, st.reason)
				case st.want == "" && r.Reason != st.reason:
					t.Fatalf("step %d (%s): refused %s (%s), want %s", i, st.s.Key, r.Reason, r.Message, st.reason)
				}
			}
		})
	}
}

func TestAllocateKeepsAndReleases(t *testing.T) {
	a := NewAllocator()
	a.SetPools([]*Pool{pool(t, "lan", IPAddressPoolSpec{Addresses: []string{"10.9.0.0/31"}})})
	one, _ := a.Allocate(svc("a/one", tcp80))
	// The pool goes: the assignment stays.
	a.SetPools(nil)
	again, r := a.Allocate(svc("a/one", tcp80))
	if r != nil || !slices.Equal(again.Addrs, one.Addrs) {
		t.Fatalf("after the pool went: %v %v, want %v kept", again, r, one.Addrs)
	}
	if a.PoolOf(one.Addrs[0]) != nil {
		t.Error("PoolOf finds a removed pool")
	}
	a.SetPools([]*Pool{pool(t, "lan", IPAddressPoolSpec{Addresses: []string{"10.9.0.0/32"}})})
	if _, r := a.Allocate(svc("a/two", tcp80)); r == nil || r.Reason != ReasonExhausted {
		t.Fatalf("a/two: %v, want exhausted while a/one holds the address", r)
	}
	a.Release("a/one")
	if as, r := a.Allocate(svc("a/two", tcp80)); r != nil || as.Addrs[0] != one.Addrs[0] {
		t.Fatalf("a/two after release: %v %v", as, r)
	}
}

func TestValidate(t *testing.T) {
	reserved := []Reserved{{"the cluster CIDR", RangeOfPrefix(netip.MustParsePrefix("10.42.0.0/16"))}, {"node node-a's address", RangeOfPrefix(netip.MustParsePrefix("192.168.1.10/32"))}}
	for _, tc := range []struct {
		name    string
		addrs   []string
		refused string // substring of the error, "" for valid
	}{
		{"valid", []string{"192.168.1.240/28"}, ""},
		{"overlaps the cluster CIDR", []string{"10.42.3.0/24"}, "overlaps the cluster CIDR"},
		{"holds a node's address", []string{"192.168.1.1-192.168.1.20"}, "node node-a's address"},
		{"overlaps another pool", []string{"192.168.1.250-192.168.1.251"}, "overlaps IPAddressPool a-first"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			first := pool(t, "a-first", IPAddressPoolSpec{Addresses: []string{"192.168.1.250/32"}})
			p := pool(t, "b-"+strings.ReplaceAll(tc.name, " ", "-"), IPAddressPoolSpec{Addresses: tc.addrs})
			if tc.name == "valid" {
				first = pool(t, "a-first", IPAddressPoolSpec{Addresses: []string{"192.168.2.0/32"}})
			}
			ok, refused := Validate([]*Pool{p, first}, reserved)
			err := refused[p.Name]
			switch {
			case tc.refused == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.refused == "" && len(ok) != 2:
				t.Fatalf("valid pools %d, want 2", len(ok))
			case tc.refused != "" && (err == nil || !strings.Contains(err.Error(), tc.refused)):
				t.Fatalf("error %v, want one naming %q", err, tc.refused)
			}
		})
	}
}

func TestParseRange(t *testing.T) {
	for in, want := range map[string]string{
		"192.168.1.0/30":          "192.168.1.0-192.168.1.3",
		"192.168.1.5-192.168.1.7": "192.168.1.5-192.168.1.7",
		"fd00::/126":              "fd00::-fd00::3",
		"192.168.1.1/24":          "error: host bits",
		"192.168.1.9-192.168.1.7": "error: after the last",
		"192.168.1.1-fd00::1":     "error: mixes",
		"nonsense":                "error: want a CIDR",
	} {
		r, err := ParseRange(in)
		got := r.String()
		if err != nil {
			got = "error: " + err.Error()
		}
		if !strings.HasPrefix(want, "error: ") && got != want || strings.HasPrefix(want, "error: ") && !strings.Contains(got, strings.TrimPrefix(want, "error: ")) {
			t.Errorf("ParseRange(%q) = %q, want %q", in, got, want)
		}
	}
}

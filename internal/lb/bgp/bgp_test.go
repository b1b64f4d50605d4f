package bgp

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
)

// router is a GoBGP instance on 127.0.0.2 that accepts the Speaker's
// session from 127.0.0.1 and lists what it learnt.
func router(t *testing.T) (*server.BgpServer, uint16) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("no 127.0.0.2 here: %v", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	srv := server.NewBgpServer(server.LoggerOption(&logger{log: slog.New(slog.DiscardHandler)}))
	go srv.Serve()
	ctx := context.Background()
	if err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{Asn: 64500, RouterId: "127.0.0.2", ListenPort: int32(port), ListenAddresses: []string{"127.0.0.2"}}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.StopBgp(context.Background(), &api.StopBgpRequest{}) })
	if err := srv.AddPeer(ctx, &api.AddPeerRequest{Peer: &api.Peer{Conf: &api.PeerConf{NeighborAddress: "127.0.0.1", PeerAsn: 64512},
		Transport: &api.Transport{PassiveMode: true}}}); err != nil {
		t.Fatal(err)
	}
	return srv, uint16(port)
}

// learnt is the router's table: prefix -> its communities.
func learnt(t *testing.T, srv *server.BgpServer) map[string][]uint32 {
	t.Helper()
	out := map[string][]uint32{}
	err := srv.ListPath(context.Background(), &api.ListPathRequest{TableType: api.TableType_GLOBAL, Family: family(netip.IPv4Unspecified())}, func(d *api.Destination) {
		var cs []uint32
		for _, p := range d.Paths {
			for _, a := range p.Pattrs {
				var c api.CommunitiesAttribute
				if a.UnmarshalTo(&c) == nil {
					cs = append(cs, c.Communities...)
				}
			}
		}
		out[d.Prefix] = cs
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSpeaker: routes reach the router with their communities, are
// withdrawn when no longer wanted, and all go when the Speaker closes
// (a Cease, not the hold time, which is 90 s here).
func TestSpeaker(t *testing.T) {
	rt, port := router(t)
	s := &Speaker{NodeIP: "127.0.0.1", Log: slog.New(slog.DiscardHandler)}
	defer s.Close()
	peer := Peer{MyASN: 64512, PeerASN: 64500, Address: netip.MustParseAddr("127.0.0.2"), Port: port, Source: netip.MustParseAddr("127.0.0.1"), ConnectRetry: time.Second}
	ctx := context.Background()
	a := Route{Prefix: netip.MustParsePrefix("192.168.79.10/32"), Communities: []string{"64512:100"}}
	b := Route{Prefix: netip.MustParsePrefix("192.168.79.0/24")}
	s.Set(ctx, map[string]Peer{"r": peer}, map[string][]Route{"r": {a, b}})
	waitFor(t, "both routes at the router", func() bool {
		got := learnt(t, rt)
		return len(got) == 2 && slices.Equal(got["192.168.79.10/32"], []uint32{64512<<16 | 100})
	})
	if !s.Established(ctx)["r"] {
		t.Error("Established does not report the session up")
	}
	s.Set(ctx, map[string]Peer{"r": peer}, map[string][]Route{"r": {b}})
	waitFor(t, "192.168.79.10/32 withdrawn", func() bool {
		_, ok := learnt(t, rt)["192.168.79.10/32"]
		return !ok
	})
	s.Close()
	waitFor(t, "every route withdrawn on Close", func() bool { return len(learnt(t, rt)) == 0 })
}

func TestParseCommunity(t *testing.T) {
	for _, tc := range []struct {
		in    string
		std   uint32
		large bool
		ok    bool
	}{
		{"65535:65282", 0xFFFFFF02, false, true},
		{"64512:100", 64512<<16 | 100, false, true},
		{"large:4200000000:1:2", 0, true, true},
		{"65536:1", 0, false, false},
		{"no-advertise", 0, false, false},
		{"large:1:2", 0, false, false},
	} {
		std, large, err := ParseCommunity(tc.in)
		if (err == nil) != tc.ok || std != tc.std || (large != nil) != tc.large {
			t.Errorf("ParseCommunity(%q) = %d, %v, %v", tc.in, std, large, err)
		}
	}
}

// Package bgp advertises a node's LoadBalancer prefixes to BGP routers,
// with GoBGP (github.com/osrg/gobgp/v3) as a library. It only speaks:
// which peers and which routes are decided by the speaker
// (internal/lb/speaker) from the metallb.io resources; Set makes the
// sessions match.
//
// Each peer gets a GoBGP instance of its own, so that a route goes only
// to the peers its BGPAdvertisement names and each peer may have its
// own local ASN, as in MetalLB. Sessions are outgoing only (nothing
// listens on port 179). Close ends every session with a NOTIFICATION
// (Cease), so routers withdraw the routes at once rather than after the
// hold time.
package bgp

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
	"github.com/osrg/gobgp/v3/pkg/server"
	"google.golang.org/protobuf/types/known/anypb"
)

// Defaults for a BGPPeer's timers, MetalLB's (hold 90 s, keepalive a
// third of it); ConnectRetry is shorter than GoBGP's 120 s so that a
// router that comes up late is reached within seconds.
const (
	DefaultHold         = 90 * time.Second
	DefaultConnectRetry = 5 * time.Second
	Port                = 179
)

// Peer is one BGP session's settings.
type Peer struct {
	MyASN, PeerASN uint32
	Address        netip.Addr
	Port           uint16 // 0: 179
	Source         netip.Addr
	RouterID       string // "": the node's address
	Hold           time.Duration
	Keepalive      time.Duration
	ConnectRetry   time.Duration
	Password       string
	EBGPMultiHop   bool
}

// Route is a prefix and the attributes it is advertised with.
type Route struct {
	Prefix      netip.Prefix
	LocalPref   uint32   // iBGP only; 0: none
	Communities []string // "65535:65282" or "large:1:2:3"
}

func (r Route) key() string {
	return fmt.Sprintf("%s|%d|%s", r.Prefix, r.LocalPref, strings.Join(r.Communities, ","))
}

// ParseCommunity parses a standard ("64512:100") or large
// ("large:64512:1:2") community.
func ParseCommunity(s string) (std uint32, large *api.LargeCommunity, err error) {
	parts := strings.Split(s, ":")
	num := func(p string, bits int) (uint64, error) { return strconv.ParseUint(p, 10, bits) }
	switch {
	case len(parts) == 2:
		hi, err1 := num(parts[0], 16)
		lo, err2 := num(parts[1], 16)
		if err1 == nil && err2 == nil {
			return uint32(hi<<16 | lo), nil, nil
		}
	case len(parts) == 4 && parts[0] == "large":
		g, err1 := num(parts[1], 32)
		a, err2 := num(parts[2], 32)
		b, err3 := num(parts[3], 32)
		if err1 == nil && err2 == nil && err3 == nil {
			return 0, &api.LargeCommunity{GlobalAdmin: uint32(g), LocalData1: uint32(a), LocalData2: uint32(b)}, nil
		}
	}
	return 0, nil, fmt.Errorf("community %q: want two 16-bit numbers (64512:100) or large:<32-bit>:<32-bit>:<32-bit>", s)
}

// Speaker holds this node's sessions.
type Speaker struct {
	NodeIP string // router ID when a Peer has none
	Log    *slog.Logger

	mu       sync.Mutex
	sessions map[string]*session // by peer name
}

type session struct {
	peer   Peer
	srv    *server.BgpServer
	paths  map[string][]byte // route key -> path UUID
	cancel context.CancelFunc
}

// Set makes the sessions and their routes match: routes[name] are
// advertised to peers[name]. A session whose Peer changed is restarted.
func (s *Speaker) Set(ctx context.Context, peers map[string]Peer, routes map[string][]Route) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sessions == nil {
		s.sessions = map[string]*session{}
	}
	for name, ss := range s.sessions {
		if p, ok := peers[name]; !ok || p != ss.peer {
			ss.stop()
			delete(s.sessions, name)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(peers)) {
		ss := s.sessions[name]
		if ss == nil {
			var err error
			if ss, err = s.start(name, peers[name]); err != nil {
				s.Log.Warn("BGP peer not started", "peer", name, "err", err)
				continue
			}
			s.sessions[name] = ss
		}
		ss.set(ctx, s.Log.With("peer", name), routes[name])
	}
}

// Established reports, per peer, whether its session is up.
func (s *Speaker) Established(ctx context.Context) map[string]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]bool{}
	for name, ss := range s.sessions {
		out[name] = false
		_ = ss.srv.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
			out[name] = p.GetState().GetSessionState() == api.PeerState_ESTABLISHED
		})
	}
	return out
}

// Close ends every session, telling the routers (Cease).
func (s *Speaker) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, ss := range s.sessions {
		ss.stop()
		delete(s.sessions, name)
	}
}

func (s *Speaker) start(name string, p Peer) (*session, error) {
	log := s.Log.With("peer", name, "address", p.Address)
	srv := server.NewBgpServer(server.LoggerOption(&logger{log: log}))
	go srv.Serve()
	ctx, cancel := context.WithCancel(context.Background())
	ss := &session{peer: p, srv: srv, paths: map[string][]byte{}, cancel: cancel}
	routerID := p.RouterID
	if routerID == "" {
		routerID = s.NodeIP
	}
	if err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{Asn: p.MyASN, RouterId: routerID, ListenPort: -1}}); err != nil {
		ss.stop()
		return nil, fmt.Errorf("start BGP (AS %d, router ID %s): %w", p.MyASN, routerID, err)
	}
	hold := p.Hold
	if hold == 0 {
		hold = DefaultHold
	}
	keepalive := p.Keepalive
	if keepalive == 0 {
		keepalive = hold / 3
	}
	retry := p.ConnectRetry
	if retry == 0 {
		retry = DefaultConnectRetry
	}
	port := uint32(p.Port)
	if port == 0 {
		port = Port
	}
	fam := family(p.Address)
	np := &api.Peer{
		Conf:      &api.PeerConf{NeighborAddress: p.Address.String(), PeerAsn: p.PeerASN, AuthPassword: p.Password},
		Timers:    &api.Timers{Config: &api.TimersConfig{ConnectRetry: secs(retry), HoldTime: secs(hold), KeepaliveInterval: secs(keepalive), IdleHoldTimeAfterReset: 1}},
		Transport: &api.Transport{RemotePort: port},
		AfiSafis: []*api.AfiSafi{
			{Config: &api.AfiSafiConfig{Family: fam, Enabled: true}},
		},
	}
	if p.Source.IsValid() {
		np.Transport.LocalAddress = p.Source.String()
	}
	if p.EBGPMultiHop {
		np.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: 255}
	}
	if err := srv.AddPeer(ctx, &api.AddPeerRequest{Peer: np}); err != nil {
		ss.stop()
		return nil, fmt.Errorf("add BGP peer %s (AS %d): %w", p.Address, p.PeerASN, err)
	}
	go func() {
		_ = srv.WatchEvent(ctx, &api.WatchEventRequest{Peer: &api.WatchEventRequest_Peer{}}, func(r *api.WatchEventResponse) {
			if pe := r.GetPeer(); pe != nil && pe.Type == api.WatchEventResponse_PeerEvent_STATE {
				log.Info("BGP session", "state", pe.GetPeer().GetState().GetSessionState().String())
			}
		})
	}()
	log.Info("BGP peer configured", "my-asn", p.MyASN, "peer-asn", p.PeerASN)
	return ss, nil
}

func secs(d time.Duration) uint64 { return uint64((d + time.Second - 1) / time.Second) }

func family(a netip.Addr) *api.Family {
	if a.Is4() {
		return &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	}
	return &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
}

// set adds and withdraws routes so that the session advertises want.
// Only routes of the peer's address family are advertised.
func (ss *session) set(ctx context.Context, log *slog.Logger, want []Route) {
	keep := map[string]bool{}
	for _, r := range want {
		if r.Prefix.Addr().Is4() != ss.peer.Address.Is4() {
			continue
		}
		k := r.key()
		keep[k] = true
		if ss.paths[k] != nil {
			continue
		}
		path, err := ss.path(r)
		if err == nil {
			var resp *api.AddPathResponse
			if resp, err = ss.srv.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: path}); err == nil {
				ss.paths[k] = resp.Uuid
				log.Info("BGP route advertised", "prefix", r.Prefix, "local-pref", r.LocalPref, "communities", r.Communities)
				continue
			}
		}
		log.Warn("BGP route not advertised", "prefix", r.Prefix, "err", err)
	}
	for k, id := range ss.paths {
		if keep[k] {
			continue
		}
		if err := ss.srv.DeletePath(ctx, &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Uuid: id}); err != nil {
			log.Warn("BGP route not withdrawn", "route", k, "err", err)
			continue
		}
		delete(ss.paths, k)
		log.Info("BGP route withdrawn", "route", k)
	}
}

// path builds the GoBGP path for r. The next hop is left unspecified:
// GoBGP puts the session's own address there.
func (ss *session) path(r Route) (*api.Path, error) {
	nlri, err := anypb.New(&api.IPAddressPrefix{Prefix: r.Prefix.Addr().String(), PrefixLen: uint32(r.Prefix.Bits())})
	if err != nil {
		return nil, err
	}
	attrs := []*anypb.Any{}
	origin, _ := anypb.New(&api.OriginAttribute{Origin: 0}) // IGP
	attrs = append(attrs, origin)
	fam := family(r.Prefix.Addr())
	if r.Prefix.Addr().Is4() {
		nh, _ := anypb.New(&api.NextHopAttribute{NextHop: "0.0.0.0"})
		attrs = append(attrs, nh)
	} else {
		mp, _ := anypb.New(&api.MpReachNLRIAttribute{Family: fam, NextHops: []string{"::"}, Nlris: []*anypb.Any{nlri}})
		attrs = append(attrs, mp)
	}
	if r.LocalPref != 0 && ss.peer.MyASN == ss.peer.PeerASN {
		lp, _ := anypb.New(&api.LocalPrefAttribute{LocalPref: r.LocalPref})
		attrs = append(attrs, lp)
	}
	var std []uint32
	var large []*api.LargeCommunity
	for _, c := range r.Communities {
		v, l, err := ParseCommunity(c)
		if err != nil {
			return nil, err
		}
		if l != nil {
			large = append(large, l)
		} else {
			std = append(std, v)
		}
	}
	if len(std) > 0 {
		a, _ := anypb.New(&api.CommunitiesAttribute{Communities: std})
		attrs = append(attrs, a)
	}
	if len(large) > 0 {
		a, _ := anypb.New(&api.LargeCommunitiesAttribute{Communities: large})
		attrs = append(attrs, a)
	}
	return &api.Path{Family: fam, Nlri: nlri, Pattrs: attrs}, nil
}

func (ss *session) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = ss.srv.StopBgp(ctx, &api.StopBgpRequest{})
	ss.cancel()
}

// logger sends GoBGP's logs to slog, one level down: its Info is
// chatty (every FSM step), so it goes to Debug.
type logger struct {
	log   *slog.Logger
	level gobgplog.LogLevel
}

func (l *logger) attrs(f gobgplog.Fields) []any {
	out := make([]any, 0, 2*len(f))
	for _, k := range slices.Sorted(maps.Keys(f)) {
		out = append(out, k, f[k])
	}
	return out
}

func (l *logger) Panic(msg string, f gobgplog.Fields) { l.log.Error(msg, l.attrs(f)...); panic(msg) }
func (l *logger) Fatal(msg string, f gobgplog.Fields) { l.log.Error(msg, l.attrs(f)...) }
func (l *logger) Error(msg string, f gobgplog.Fields) { l.log.Warn(msg, l.attrs(f)...) }
func (l *logger) Warn(msg string, f gobgplog.Fields)  { l.log.Info(msg, l.attrs(f)...) }
func (l *logger) Info(msg string, f gobgplog.Fields)  { l.log.Debug(msg, l.attrs(f)...) }
func (l *logger) Debug(msg string, f gobgplog.Fields) {}
func (l *logger) SetLevel(level gobgplog.LogLevel)    { l.level = level }
func (l *logger) GetLevel() gobgplog.LogLevel         { return l.level }

package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"hash/fnv"
	"math"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imapguard/imapguard/limits"
)

// Routing to several upstreams (issue 13). With Options.Route "single"
// (or "") the proxy dials Options.UpstreamAddr as it always has. With
// "hash" or "map" it picks one of Options.Backends per user, at login:
//
//   - hash: weighted rendezvous (highest random weight) hashing of the
//     user name as the per-user cap counts it (limits.UserKey), over the
//     backends that are up. A user stays on one backend while it is up;
//     taking a backend out moves only its users, each to their next
//     choice, and they come back when it returns.
//   - map: Options.RouteMap names the user's backend (by name or
//     address), "*" the one for users it does not list. A user's mailbox
//     is on that backend only: there is no next choice, and the backend
//     is dialled whatever its health.
//
// A dial that fails (connect, TLS handshake, greeting) tries the user's
// next choice once, within what is left of connect_timeout. Health
// checks (health.go) take backends out and bring them back.

// Route names.
const (
	RouteSingle = "single"
	RouteHash   = "hash"
	RouteMap    = "map"
)

// RouteDefault is the RouteMap key for users the map does not list.
const RouteDefault = "*"

// Backend is one of several upstreams (Options.Backends).
type Backend struct {
	// Name identifies the backend in the map file, the admin API and
	// metrics; "" is Addr.
	Name string
	Addr string // host:port
	// Weight scales the backend's share of users under "hash"; <= 0 is 1.
	Weight float64
	// TLS and TLSConfig are as Options.UpstreamTLS and
	// UpstreamTLSConfig, which they default to ("" and nil).
	TLS       string
	TLSConfig *tls.Config
}

// key identifies a backend across reloads: health state and session
// counts stay with a backend whose name and address are unchanged.
func (b Backend) key() string { return b.Name + "\x00" + b.Addr }

// backendDefaults fills in a backend's name, weight and TLS settings
// from o (before o's own TLS defaults).
func (o *Options) backendDefaults() {
	bs := slices.Clone(o.Backends)
	for i := range bs {
		b := &bs[i]
		if b.Name == "" {
			b.Name = b.Addr
		}
		if b.Weight <= 0 {
			b.Weight = 1
		}
		if b.TLS == "" {
			b.TLS = o.UpstreamTLS
		}
		if b.TLSConfig == nil {
			b.TLSConfig = o.UpstreamTLSConfig
		}
		if b.TLS != "" && b.TLS != "none" {
			cfg := &tls.Config{MinVersion: tls.VersionTLS12}
			if b.TLSConfig != nil {
				cfg = b.TLSConfig.Clone()
			}
			if cfg.ServerName == "" {
				if host, _, err := net.SplitHostPort(b.Addr); err == nil {
					cfg.ServerName = host
				}
			}
			b.TLSConfig = cfg
		}
	}
	o.Backends = bs
}

// routed reports whether o routes among Backends.
func (o *Options) routed() bool {
	return (o.Route == RouteHash || o.Route == RouteMap) && len(o.Backends) > 0
}

// forBackend returns o as it dials b: dialUpstream and the capability
// cache (keyed by address and TLS mode) then work per backend.
func (o *Options) forBackend(b Backend) *Options {
	bo := *o
	bo.UpstreamAddr, bo.UpstreamTLS, bo.UpstreamTLSConfig = b.Addr, b.TLS, b.TLSConfig
	return &bo
}

// hashScore is the weighted rendezvous score of user on a backend
// named name: -weight / ln(h), with h the 64-bit hash of both mapped into
// (0, 1). The highest score wins; for each backend the score depends only
// on the user and that backend, which is what moves only a removed
// backend's users.
func hashScore(user, name string, weight float64) float64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	h.Write([]byte{0})
	h.Write([]byte(user))
	x := mix64(h.Sum64())
	// (x+0.5)/2^64 is strictly inside (0, 1): ln never sees 0 or 1.
	u := (float64(x>>11) + 0.5) / (1 << 53)
	return -weight / math.Log(u)
}

// mix64 is SplitMix64's finaliser: FNV alone spreads similar names
// poorly in the high bits.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// HashOrder returns the indices of backends in user's order of
// preference under "hash" (weighted rendezvous hashing of
// limits.UserKey(user)), health aside. Backends need Name set.
func HashOrder(user string, backends []Backend) []int {
	key := limits.UserKey(user)
	scores := make([]float64, len(backends))
	idx := make([]int, len(backends))
	for i, b := range backends {
		w := b.Weight
		if w <= 0 {
			w = 1
		}
		scores[i], idx[i] = hashScore(key, b.Name, w), i
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		switch {
		case scores[a] > scores[b]:
			return -1
		case scores[a] < scores[b]:
			return 1
		}
		return 0
	})
	return idx
}

// lookupMap returns the index in o.Backends of the backend the map m
// names for user (by name, else by address), or of its "*" entry; -1
// when neither names a backend.
func (o *Options) lookupMap(m map[string]string, user string) int {
	name, ok := m[limits.UserKey(user)]
	if !ok {
		name, ok = m[RouteDefault]
	}
	if !ok {
		return -1
	}
	for i, b := range o.Backends {
		if b.Name == name {
			return i
		}
	}
	for i, b := range o.Backends {
		if b.Addr == name {
			return i
		}
	}
	return -1
}

// errNoBackend is a login under "map" for a user the map does not route.
var errNoBackend = errors.New("proxy: no backend for the user in the route map")

// choices returns the backends user may be dialled on, best first: under
// "hash" the ones up in rendezvous order, then the ones down (in that
// order too: with all down, a dial is still worth a try); under "map" the
// one the map names.
func (s *Server) choices(o *Options, user string) []Backend {
	if o.Route == RouteMap {
		if i := o.lookupMap(s.routeMap(o), user); i >= 0 {
			return []Backend{o.Backends[i]}
		}
		return nil
	}
	var up, down []Backend
	for _, i := range HashOrder(user, o.Backends) {
		b := o.Backends[i]
		if s.health.isUp(b) {
			up = append(up, b)
		} else {
			down = append(down, b)
		}
	}
	return append(up, down...)
}

// dialRoute dials the upstream for user: Options.UpstreamAddr with
// "single", else the user's backend, and the next choice once when that
// dial fails, within what is left of connect_timeout. It returns the
// options the dial used (the backend's address and TLS).
func (s *Server) dialRoute(ctx context.Context, o *Options, user string, fwd *forwarding) (*upstream, *Options, error) {
	if !o.routed() {
		up, err := dialUpstream(ctx, o, fwd)
		return up, o, err
	}
	cs := s.choices(o, user)
	if len(cs) == 0 {
		return nil, o, &loginError{kind: loginUnavailable, err: errNoBackend}
	}
	start := time.Now()
	var firstErr error
	for i, b := range cs[:min(len(cs), 2)] {
		bo := o.forBackend(b)
		if i > 0 {
			left := o.ConnectTimeout - time.Since(start)
			if left <= 0 {
				break
			}
			bo.ConnectTimeout = left
			s.log.Warn("upstream dial failed; trying the user's next backend",
				"backend", cs[0].Name, "next", b.Name, "err", firstErr)
		}
		up, err := dialUpstream(ctx, bo, fwd)
		if err == nil {
			up.backend, up.backendName = s.health.state(b), b.Name
			return up, bo, nil
		}
		if firstErr == nil {
			firstErr = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, o, firstErr
}

// countSession counts a session on up's backend (BackendInfo.Sessions)
// until release, which also runs releaseUser; both run once.
func countSession(up *upstream, releaseUser func()) func() {
	b := up.backend
	if b == nil {
		return releaseUser
	}
	b.sessions.Add(1)
	var once sync.Once
	return func() {
		once.Do(func() {
			b.sessions.Add(-1)
			releaseUser()
		})
	}
}

// backendState is what the proxy knows of one backend: its health and
// its sessions. It outlives reloads that keep the backend (Backend.key).
type backendState struct {
	sessions atomic.Int64

	// Under health.mu.
	up        bool
	fails     int // consecutive failed probes
	goods     int // consecutive good probes while down
	lastProbe time.Time
	lastErr   string
}

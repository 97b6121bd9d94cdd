package proxy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy/imapwire"
)

// This file is what the Server offers its operator: the live connections
// (Conns, Select), Kick, Listening and CheckUpstream, for the admin API.

// ConnInfo describes one live connection.
type ConnInfo struct {
	ID     uint64
	Client string // client address, host:port (a PROXY header's, if any)
	// Via is the load balancer the connection came through, host:port,
	// when a trusted PROXY header gave the client's address; else "".
	Via      string
	Listener string // local address of the listener it came in on
	User     string // empty before authentication
	// Backend is the name of the backend the session relays to, with
	// several upstreams (Options.Route "hash" or "map"); else "".
	Backend string
	// Instance is the imapguard instance holding the session, in a
	// fleet-wide listing (package proxy/fleet); "" from the Server.
	Instance      string `json:",omitempty"`
	Authenticated bool
	TLS           bool // the client connection is TLS
	Since         time.Time
	// Bytes relayed since login, each way; zero before authentication.
	BytesToUpstream int64
	BytesToClient   int64
}

// State is "authenticated" or "preauth".
func (i ConnInfo) State() string {
	if i.Authenticated {
		return "authenticated"
	}
	return "preauth"
}

// Conns returns the live connections, oldest first.
func (s *Server) Conns() []ConnInfo {
	s.mu.Lock()
	out := make([]ConnInfo, 0, len(s.conns))
	for c := range s.conns {
		out = append(out, c.info())
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b ConnInfo) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// Match selects connections by user, client address or both; an empty
// field matches anything. User compares as the per-user cap counts
// (case-insensitively); Address is an IP address ("192.0.2.7"), a prefix
// ("192.0.2.0/24") or an exact host:port.
type Match struct {
	User    string
	Address string
}

// matcher compiles m; an Address that is none of the accepted forms is
// an error.
func (m Match) matcher() (func(ConnInfo) bool, error) {
	var match func(netip.AddrPort) bool
	if a := strings.TrimSpace(m.Address); a != "" {
		if p, err := netip.ParsePrefix(a); err == nil {
			match = func(ap netip.AddrPort) bool { return p.Contains(ap.Addr().Unmap()) }
		} else if ip, err := netip.ParseAddr(a); err == nil {
			match = func(ap netip.AddrPort) bool { return ap.Addr().Unmap() == ip.Unmap() }
		} else if want, err := netip.ParseAddrPort(a); err == nil {
			match = func(ap netip.AddrPort) bool { return ap == want }
		} else {
			return nil, fmt.Errorf("address %q is not an IP address, a prefix or host:port", m.Address)
		}
	}
	user := limits.UserKey(m.User)
	return func(i ConnInfo) bool {
		if user != "" && limits.UserKey(i.User) != user {
			return false
		}
		if match != nil {
			ap, err := netip.ParseAddrPort(i.Client)
			if err != nil || !match(ap) {
				return false
			}
		}
		return true
	}, nil
}

// Select returns the live connections m matches, oldest first.
func (s *Server) Select(m Match) ([]ConnInfo, error) {
	ok, err := m.matcher()
	if err != nil {
		return nil, err
	}
	var out []ConnInfo
	for _, i := range s.Conns() {
		if ok(i) {
			out = append(out, i)
		}
	}
	return out, nil
}

// ErrEmptyMatch is returned by Kick for a Match with neither field set:
// kicking everyone is Shutdown.
var ErrEmptyMatch = errors.New("proxy: kick needs a user or an address")

// Kick closes the connections m matches, as doveadm kick does: each
// client is told "* BYE [UNAVAILABLE] text" (an authenticated session at
// a response boundary, so a response is never cut) and disconnected. It
// returns what it kicked.
func (s *Server) Kick(m Match, text string) ([]ConnInfo, error) {
	if strings.TrimSpace(m.User) == "" && strings.TrimSpace(m.Address) == "" {
		return nil, ErrEmptyMatch
	}
	ok, err := m.matcher()
	if err != nil {
		return nil, err
	}
	// The text goes into a response line: no CR, LF or NUL.
	if text = strings.TrimSpace(imapwire.SanitizeText(text)); text == "" {
		text = "Session closed by the administrator"
	}
	s.mu.Lock()
	var hit []*conn
	for c := range s.conns {
		if ok(c.info()) {
			hit = append(hit, c)
		}
	}
	s.mu.Unlock()
	out := make([]ConnInfo, 0, len(hit))
	for _, c := range hit {
		out = append(out, c.info())
		c.kick(text)
	}
	slices.SortFunc(out, func(a, b ConnInfo) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// Listening returns the addresses the server accepts on.
func (s *Server) Listening() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for ln := range s.listeners {
		out = append(out, ln.Addr().String())
	}
	slices.Sort(out)
	return out
}

// CheckUpstream connects to the upstream as a login would (TCP, TLS as
// configured, greeting) and logs out, bounded by connect_timeout and
// login_timeout; nil means the upstream is reachable. With several
// backends (Options.Route "hash" or "map") it dials nothing and answers
// from the health checks (health.go): nil while at least one is up.
func (s *Server) CheckUpstream(ctx context.Context) error {
	// With proxy_v1/v2 the header names no client (forwarding.proxyHeader).
	o := s.options()
	if o.routed() {
		if !s.BackendsReady() {
			return ErrNoBackendUp
		}
		return nil
	}
	up, err := dialUpstream(ctx, o, nil)
	if err != nil {
		return err
	}
	// A greeting's capabilities (not after STARTTLS: stale) tell
	// whether OAuth can pass through (upstream_caps.go).
	s.learnUpstreamCaps(o, up.caps)
	up.logout()
	return nil
}

// clientAddr returns the address a connection is counted under.
func clientAddr(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort().Addr()
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr()
}

package proxy

import (
	"context"
	"crypto/tls"
	"net"
	"net/netip"
	"time"

	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy/clock"
	"github.com/imapguard/imapguard/proxy/park"
)

// Options configure a Server. Zero fields take the defaults in package
// limits (limits.Default*).
type Options struct {
	UpstreamAddr    string
	ConnectTimeout  time.Duration
	LoginTimeout    time.Duration
	MaxCommandSize  int
	PreauthTimeout  time.Duration
	IdleTimeout     time.Duration
	MaxBadCommands  int
	MaxAuthFailures int
	// KeepUnauthenticated refuses new connections at max_connections
	// instead of closing the oldest connection that has not logged in to
	// make room for them.
	KeepUnauthenticated bool
	// ProxyProtocol makes both listeners take a PROXY protocol header (v1
	// or v2) from the peers in TrustedProxies, and use the client address
	// it carries (proxyheader.go). Peers outside TrustedProxies are served
	// under their own address and closed if they send a header.
	ProxyProtocol  bool
	TrustedProxies []netip.Prefix

	// Dial, when set, replaces the TCP dial to the upstream (tests).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// UpstreamKeepAlive turns TCP keep-alive on for the connections to
	// the upstream (with the default Dial): probes after this long without
	// traffic, at this interval, 9 of them. Zero leaves it off, which
	// saves four system calls per login (see [performance]
	// upstream_keepalive in package config for why off is the default).
	// Keep-alive towards clients is set on the listener (Listen).
	UpstreamKeepAlive time.Duration

	// TLSConfig enables TLS towards clients: implicit TLS (RFC 8314) on
	// listeners given to ServeTLS, and STARTTLS on those given to Serve.
	// nil: no TLS, and plaintext login is allowed.
	TLSConfig *tls.Config
	// AllowPlaintextAuth permits LOGIN and AUTHENTICATE before STARTTLS
	// while TLSConfig is set (trusted networks). Without it such a
	// connection advertises LOGINDISABLED and gets NO [PRIVACYREQUIRED].
	AllowPlaintextAuth bool
	// UpstreamTLS is how the proxy talks to the upstream: "" or "none",
	// "starttls" or "implicit", with UpstreamTLSConfig (its ServerName
	// defaults to the host of UpstreamAddr).
	UpstreamTLS       string
	UpstreamTLSConfig *tls.Config
	// ForwardClient is how the upstream learns the client's address:
	// ForwardID (the default, ""), ForwardNone, ForwardProxyV1 or
	// ForwardProxyV2 (forward.go). Any other value fails every login,
	// as an unknown UpstreamTLS does.
	ForwardClient string

	// Route is how the upstream is chosen at login (route.go):
	// RouteSingle ("" too) dials UpstreamAddr; RouteHash and RouteMap
	// pick one of Backends per user, RouteMap with RouteMap's entries
	// (user as limits.UserKey → backend name or address, RouteDefault
	// for the others).
	// RouteMapFile, when set, replaces RouteMap with the contents of a
	// map file (routemap.go), read at SetOptions and when it changes.
	Route        string
	Backends     []Backend
	RouteMap     map[string]string
	RouteMapFile string
	// HealthInterval, UnhealthyAfter and HealthyAfter run the health
	// checks of Backends (health.go); zero takes limits.Default*.
	HealthInterval time.Duration
	UnhealthyAfter int
	HealthyAfter   int

	// ProbeUpstream lets the proxy connect to the upstream on its own to
	// learn its pre-login capabilities (at Serve, and again when they are
	// older than 10 minutes), so that it can offer AUTH=OAUTHBEARER and
	// AUTH=XOAUTH2 before anyone logs in (upstream_caps.go). Off, it
	// learns them only from logins.
	ProbeUpstream bool

	// RecordUser puts the user name on spans as enduser.id (see
	// Instrument). Off, no span carries it.
	RecordUser bool

	// Clock runs the protocol timers (preauth_timeout, idle_timeout and
	// the proxy's own graces); nil is the wall clock. Tests pass a
	// clock.Fake. Only New reads it.
	Clock clock.Clock
	// AuthTracker is the brute-force defence across connections (see
	// limits.Tracker): logins are checked against it before the upstream
	// is asked, delayed or refused, and their results recorded. nil: no
	// such defence (max_auth_failures per connection still applies).
	// Only New reads it; its own SetOptions changes its settings.
	AuthTracker *limits.Tracker
	// Parker holds idle relay directions without a goroutine; nil makes
	// the Server its own (park.New: epoll on Linux, none elsewhere),
	// closed by Shutdown. Only New reads it.
	Parker park.Parker

	// Relay is how authenticated sessions are relayed: RelayLoop (event
	// loops over the raw sockets, for sessions without TLS, on Linux),
	// RelayGoroutines (a goroutine per direction), or RelayAuto ("" too):
	// the environment variable IMAPGUARD_RELAY if it names one, else
	// RelayLoop where it is supported. EventLoops is the number of loops
	// (0: one per four CPUs, at least one). Only New reads them.
	Relay      string
	EventLoops int
}

// The relays Options.Relay names.
const (
	RelayAuto       = "auto"
	RelayLoop       = "loop"
	RelayGoroutines = "goroutines"
)

// The proxy's own timeouts, each keyed to the protocol state it bounds.
// The configurable ones are in Options.
const (
	// writeTimeout bounds one write to the client before authentication
	// and for injected responses (BYE) at the end.
	writeTimeout = 10 * time.Second
	// byeGrace is how long a kicked or shut-down connection has to reach
	// a response boundary and get its BYE out before it is closed without.
	byeGrace = 10 * time.Second
	// lingerTimeout is how long the second direction of a relay may go on
	// after the first has ended (half-close), before both are closed.
	lingerTimeout = 5 * time.Second
	// parkAfter is how long a relay direction waits without traffic
	// before it parks and gives up its goroutine; sweepEvery is how often
	// the sweeper looks.
	parkAfter  = 500 * time.Millisecond
	sweepEvery = 250 * time.Millisecond
)

func (o Options) withDefaults() Options {
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = limits.DefaultConnectTimeout
	}
	if o.LoginTimeout <= 0 {
		o.LoginTimeout = limits.DefaultLoginTimeout
	}
	if o.MaxCommandSize <= 0 {
		o.MaxCommandSize = limits.DefaultMaxCommandSize
	}
	if o.PreauthTimeout <= 0 {
		o.PreauthTimeout = limits.DefaultPreauthTimeout
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = limits.DefaultIdleTimeout
	}
	if o.MaxBadCommands <= 0 {
		o.MaxBadCommands = limits.DefaultMaxBadCommands
	}
	if o.MaxAuthFailures <= 0 {
		o.MaxAuthFailures = limits.DefaultMaxAuthFailures
	}
	if o.ForwardClient == "" {
		o.ForwardClient = ForwardID
	}
	if o.Dial == nil {
		o.Dial = upstreamDialer(o.UpstreamKeepAlive).DialContext
	}
	if o.HealthInterval <= 0 {
		o.HealthInterval = limits.DefaultHealthInterval
	}
	if o.UnhealthyAfter <= 0 {
		o.UnhealthyAfter = limits.DefaultUnhealthyAfter
	}
	if o.HealthyAfter <= 0 {
		o.HealthyAfter = limits.DefaultHealthyAfter
	}
	o.backendDefaults()
	if o.UpstreamTLS != "" && o.UpstreamTLS != "none" {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if o.UpstreamTLSConfig != nil {
			cfg = o.UpstreamTLSConfig.Clone()
		}
		if cfg.ServerName == "" {
			if host, _, err := net.SplitHostPort(o.UpstreamAddr); err == nil {
				cfg.ServerName = host
			}
		}
		o.UpstreamTLSConfig = cfg
	}
	return o
}

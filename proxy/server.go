// Package proxy is imapguard's IMAP-aware reverse proxy. A Server accepts
// client connections, is the IMAP server until the client authenticates
// (greeting, CAPABILITY, NOOP, LOGOUT, ID, LOGIN, AUTHENTICATE), logs in to
// the upstream with the client's credentials, and then relays the session
// while still framing client commands to enforce max_command_size.
//
// Directions are named the same everywhere: "client" is the connection we
// accepted, "upstream" the one we dialled.
package proxy

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imapguard/imapguard/limits"
)

// Timeouts of the proxy's own, each keyed to the protocol state it
// bounds. The configurable ones default to limits.Default*.
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
	// Dial, when set, replaces the TCP dial to the upstream (tests).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)

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

	// RecordUser puts the user name on spans as enduser.id (see
	// Instrument). Off, no span carries it.
	RecordUser bool
}

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
	if o.Dial == nil {
		var d net.Dialer
		o.Dial = d.DialContext
	}
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

// Server is the proxy. Create it with New.
type Server struct {
	limiter *limits.Limiter
	log     *slog.Logger
	opts    atomic.Pointer[Options]

	nextID atomic.Uint64
	tel    atomic.Pointer[telemetry]

	sweeper sweeper

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	bytesDone [2]int64 // relayed by finished sessions: to upstream, to client
	closing   bool
	wg        sync.WaitGroup // live connection handlers
}

// New returns a Server that counts connections with limiter and logs to
// logger (nil: discard).
func New(opts Options, limiter *limits.Limiter, logger *slog.Logger) *Server {
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := &Server{
		limiter:   limiter,
		log:       logger,
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*conn]struct{}),
	}
	s.SetOptions(opts)
	s.tel.Store(noopTelemetry())
	return s
}

// SetOptions replaces the options in force, without a restart: new
// connections take the new values at once; a session already relaying
// keeps the command size cap and idle timeout it started with.
func (s *Server) SetOptions(opts Options) {
	o := opts.withDefaults()
	s.opts.Store(&o)
}

func (s *Server) options() *Options { return s.opts.Load() }

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("proxy: server closed")

// Serve accepts plaintext IMAP connections on ln (with STARTTLS when
// Options.TLSConfig is set) until the listener is closed. After Shutdown
// it returns ErrServerClosed. Temporary accept errors (such as EMFILE)
// are retried with a growing delay.
func (s *Server) Serve(ln net.Listener) error { return s.serve(ln, false) }

// ServeTLS is Serve for implicit TLS (imaps, RFC 8314): each connection
// starts with a TLS handshake under Options.TLSConfig, which must be set.
// The handshake counts toward the connection caps and preauth_timeout.
func (s *Server) ServeTLS(ln net.Listener) error {
	if s.options().TLSConfig == nil {
		return errors.New("proxy: ServeTLS without Options.TLSConfig")
	}
	return s.serve(ln, true)
}

func (s *Server) serve(ln net.Listener, implicitTLS bool) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()

	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing || errors.Is(err, net.ErrClosed) {
				if closing {
					return ErrServerClosed
				}
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed; retrying", "err", err, "delay", backoff)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		s.startConn(nc, ln.Addr().String(), implicitTLS)
	}
}

// isTemporary reports accept errors that pass by themselves (EMFILE,
// ENFILE, ECONNABORTED); net no longer exposes Temporary() reliably, so
// anything not known to be fatal is retried.
func isTemporary(err error) bool {
	var se interface{ Temporary() bool }
	return errors.As(err, &se) && se.Temporary()
}

func (s *Server) startConn(nc net.Conn, listener string, implicitTLS bool) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		nc.Close()
		return
	}
	c := newConn(s, nc, listener, implicitTLS)
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		handedOff := false
		defer func() {
			if v := recover(); v != nil {
				c.logPanic(v)
			}
			if !handedOff {
				c.finish()
			}
		}()
		handedOff = c.serve()
	}()
}

// forget takes a finished connection off the registry.
func (s *Server) forget(c *conn) {
	_, up, down := c.relayed()
	s.mu.Lock()
	// With the connection's removal, under the same lock, so that the
	// bytes metric never counts a session twice or goes back.
	s.bytesDone[0] += up
	s.bytesDone[1] += down
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

// Shutdown stops accepting, tells every client "* BYE" (authenticated
// sessions at a response boundary) and closes their connections, then
// waits for the handlers to unwind until ctx is done, when it closes what
// is left at once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for ln := range s.listeners {
		ln.Close()
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()

	for _, c := range conns {
		c.shutdown("Server shutting down")
	}
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		// Closed outside the lock: a closed session may finish on this
		// goroutine, and finishing takes the lock (forget).
		s.mu.Lock()
		left := make([]*conn, 0, len(s.conns))
		for c := range s.conns {
			left = append(left, c)
		}
		s.mu.Unlock()
		for _, c := range left {
			c.close()
		}
		<-done
		return ctx.Err()
	}
}

// ConnInfo describes one live connection.
type ConnInfo struct {
	ID            uint64
	Client        string // client address, host:port
	Listener      string // local address of the listener it came in on
	User          string // empty before authentication
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
	if text = strings.TrimSpace(sanitizeText(text)); text == "" {
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
// login_timeout; nil means the upstream is reachable.
func (s *Server) CheckUpstream(ctx context.Context) error {
	up, err := dialUpstream(ctx, s.options())
	if err != nil {
		return err
	}
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

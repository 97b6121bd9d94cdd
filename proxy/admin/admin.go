// Package admin is imapguard's HTTP admin API: what doveadm who/kick and
// Exchange's Get-ImapSettings give operators, as JSON.
//
//	GET  /healthz        the process is up (no token)
//	GET  /readyz         listeners are up and the upstream answers (no token)
//	GET  /settings       the effective configuration, secrets redacted
//	GET  /sessions       live connections; ?user=U&address=A filter
//	                     (the fleet's, with Options.Fleet)
//	POST /sessions/kick  close the connections matching user and/or address
//	                     (on every instance, with Options.Fleet)
//	GET  /penalties      the brute-force defence's failed logins and blocks
//	POST /penalties/clear  forget them: all, or an address and/or a user
//	POST /drain          start a drain (Options.Drain), when set
//	POST /reload         re-read the configuration file, as SIGHUP does
//	GET  /metrics        Options.Metrics (Prometheus), when set
//
// Every endpoint but /healthz and /readyz requires "Authorization: Bearer
// TOKEN" when Options.Token is set, and Serve refuses a listener that is
// not on a loopback address without one. Without a token, what keeps web
// pages the operator visits away from the API is checked per request
// instead (see localOnly): a Host that is not loopback or localhost, and
// an Origin that is not, are refused, and the endpoints that change
// anything (the POSTs: the kick, clearing penalties, the drain, the
// reload) take only a JSON body, which a cross-origin page cannot send
// without a CORS preflight that this API never grants. Errors
// are {"error": "..."} with a 4xx or 5xx status. The bodies are the types
// in wire.go.
//
// The package reads no configuration file and does not import config: it
// takes the live settings as a function returning []Setting, secrets
// already redacted, which cmd/imapguard builds from the configuration.
package admin

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imapguard/imapguard/proxy"
)

// Bounds of the HTTP server. The API's answers are small; only /readyz
// may wait, for at most readyTimeout, so writeTimeout leaves room for it.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 2 * readyTimeout
	idleTimeout       = 60 * time.Second
	maxHeaderBytes    = 16 << 10
	// maxBodyBytes bounds a request body (POST /sessions/kick).
	maxBodyBytes = 64 << 10
	// maxReasonLen bounds the text a kick sends after "* BYE [UNAVAILABLE] ".
	maxReasonLen = 200
)

// Sessions is what the API needs of the proxy; *proxy.Server implements
// it. An error from Select or Kick is taken to be a bad match (400).
type Sessions interface {
	Select(proxy.Match) ([]proxy.ConnInfo, error)
	Kick(proxy.Match, string) ([]proxy.ConnInfo, error)
	Listening() []string
	CheckUpstream(ctx context.Context) error
}

var _ Sessions = (*proxy.Server)(nil)

// Fleet lists and kicks sessions across a fleet of instances (package
// proxy/fleet). The note is "" for a fleet-wide answer, else says what
// is missing (Redis unreachable: this instance only). An error is a bad
// match (400).
type Fleet interface {
	Sessions(ctx context.Context, m proxy.Match) (infos []proxy.ConnInfo, note string, err error)
	Kick(ctx context.Context, m proxy.Match, reason string) (infos []proxy.ConnInfo, note string, err error)
}

// Options configure a Server.
type Options struct {
	// Token is the bearer token required on every endpoint but /healthz
	// and /readyz; "" requires none, and then Serve accepts only loopback
	// listeners.
	Token string
	// Sessions is the proxy.
	Sessions Sessions
	// Settings returns the live effective settings, in order, secrets
	// already redacted; nil: an empty list.
	Settings func() []Setting
	// Penalties is the brute-force defence, for /penalties; nil: those
	// endpoints answer 404.
	Penalties Penalties
	// Metrics is served at /metrics when non-nil; otherwise /metrics is 404.
	Metrics http.Handler
	// Drain starts a drain of the proxy (POST /drain) and reports whether
	// it started one (false: one is under way already); nil: /drain
	// answers 404. cmd/imapguard passes a function that calls
	// proxy.Server.Drain with the [shutdown] settings in force.
	Drain func() bool
	// Draining reports whether the proxy is draining or shutting down:
	// /readyz then answers 503 at once, without an upstream check; nil
	// is never.
	Draining func() bool
	// Listeners is how many listeners /readyz expects the proxy to have;
	// it is never ready with none.
	Listeners int
	// Reload re-reads the configuration and applies it, for POST
	// /reload; nil: that endpoint answers 404. See ReloadResult and
	// ReloadError.
	Reload func(context.Context) (ReloadResult, error)
	// Backends returns the upstream route in force and its backends'
	// state, for GET /backends (cmd/imapguard passes
	// proxy.Server.Route and Backends); nil: that endpoint answers 404.
	Backends func() (route string, backends []proxy.BackendInfo)
	// Fleet, when set ([cluster] store = "redis"; cmd/imapguard passes a
	// *fleet.Fleet), answers GET /sessions and POST /sessions/kick for
	// the whole fleet instead of Sessions: each session then names its
	// instance, and the answer's note says when only part of the fleet
	// could be reached. nil: this instance only.
	Fleet Fleet
	// Logger receives kicks, refused tokens and HTTP server errors; nil
	// discards them.
	Logger *slog.Logger
}

// ErrPublicWithoutToken is returned by Serve for a listener that is not on
// a loopback address when Options.Token is empty.
var ErrPublicWithoutToken = errors.New("admin: refusing to serve on a non-loopback address without a token")

// Server is the admin API. Create it with New.
type Server struct {
	opts   Options
	log    *slog.Logger
	token  atomic.Pointer[tokenSum] // of Options.Token or SetToken's, compared in constant time
	routes map[string]route
	ready  *upstreamCheck
	http   *http.Server
	now    func() time.Time

	ctx    context.Context // cancelled by Shutdown; bounds upstream checks
	cancel context.CancelFunc

	started     chan struct{} // closed by the first Serve that serves
	startedOnce sync.Once
}

// route is one endpoint.
type route struct {
	method string
	public bool // served without the token
	serve  func(http.ResponseWriter, *http.Request)
}

// New returns a Server; it serves nothing until Serve.
func New(o Options) *Server {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{opts: o, log: log, now: time.Now, started: make(chan struct{})}
	s.SetToken(o.Token)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.ready = &upstreamCheck{check: o.Sessions.CheckUpstream, now: func() time.Time { return s.now() }, base: s.ctx, log: log}
	s.routes = map[string]route{
		"/healthz":         {http.MethodGet, true, s.healthz},
		"/readyz":          {http.MethodGet, true, s.readyz},
		"/settings":        {http.MethodGet, false, s.settings},
		"/sessions":        {http.MethodGet, false, s.sessions},
		"/sessions/kick":   {http.MethodPost, false, s.kick},
		"/penalties":       {http.MethodGet, false, s.penalties},
		"/penalties/clear": {http.MethodPost, false, s.clearPenalties},
		"/drain":           {http.MethodPost, false, s.drain},
		"/metrics":         {http.MethodGet, false, s.metrics},
		"/reload":          {http.MethodPost, false, s.reload},
		"/backends":        {http.MethodGet, false, s.backends},
	}
	s.http = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return s
}

// Handler returns the API as an http.Handler, for tests and for serving it
// some other way; it checks the token, Host and Origin but not the
// listener.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

// Serve serves the API on ln until Shutdown, and then returns
// http.ErrServerClosed. Without a token it serves only on a loopback
// address (127.0.0.0/8, ::1); for any other listener, the unspecified
// addresses 0.0.0.0 and :: included, it closes ln and returns
// ErrPublicWithoutToken.
func (s *Server) Serve(ln net.Listener) error {
	if !s.token.Load().set && !isLoopback(ln.Addr()) {
		ln.Close()
		return fmt.Errorf("%w (listening on %s)", ErrPublicWithoutToken, ln.Addr())
	}
	s.startedOnce.Do(func() { close(s.started) })
	return s.http.Serve(ln)
}

// Started is closed once a Serve has passed its checks and serves (the
// listener is bound already, so requests are answered from then on). A
// caller that starts Serve in a goroutine waits for either this or
// Serve's error, to learn at once of ErrPublicWithoutToken.
func (s *Server) Started() <-chan struct{} { return s.started }

// tokenSum is the token in force: its SHA-256 sum, and whether there is
// one.
type tokenSum struct {
	sum [sha256.Size]byte
	set bool
}

// SetToken replaces the bearer token (a reload's new admin.token): the
// next request is checked against it. "" requires none; the caller must
// not remove the token of a server that listens on a non-loopback
// address, which Serve would have refused.
func (s *Server) SetToken(token string) {
	s.token.Store(&tokenSum{sum: sha256.Sum256([]byte(token)), set: token != ""})
}

// Shutdown stops the listeners, waits for requests under way until ctx is
// done, and abandons an upstream check under way.
func (s *Server) Shutdown(ctx context.Context) error {
	defer s.cancel()
	return s.http.Shutdown(ctx)
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	rt, ok := s.routes[r.URL.Path]
	if !s.localOnly(w, r, ok && rt.public) {
		return
	}
	if !ok {
		writeError(w, http.StatusNotFound, "no such endpoint: "+r.URL.Path)
		return
	}
	if !rt.public && !s.authorized(w, r) {
		return
	}
	if r.Method != rt.method {
		w.Header().Set("Allow", rt.method)
		writeError(w, http.StatusMethodNotAllowed, r.Method+" not allowed on "+r.URL.Path+"; use "+rt.method)
		return
	}
	rt.serve(w, r)
}

// Package admin is imapguard's HTTP admin API: what doveadm who/kick and
// Exchange's Get-ImapSettings give operators, as JSON.
//
//	GET  /healthz        the process is up (no token)
//	GET  /readyz         listeners are up and the upstream answers (no token)
//	GET  /settings       the effective configuration, secrets redacted
//	GET  /sessions       live connections; ?user=U&address=A filter
//	POST /sessions/kick  close the connections matching user and/or address
//	GET  /metrics        Options.Metrics (Prometheus), when set
//
// Every endpoint but /healthz and /readyz requires "Authorization: Bearer
// TOKEN" when Options.Token is set, and Serve refuses a listener that is
// not on a loopback address without one. Without a token, what keeps web
// pages the operator visits away from the API is checked per request
// instead (see localOnly): a Host that is not loopback or localhost, and
// an Origin that is not, are refused, and the one endpoint that changes
// anything, the kick, takes only a JSON body, which a cross-origin page
// cannot send without a CORS preflight that this API never grants. Errors
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
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
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
	// Metrics is served at /metrics when non-nil; otherwise /metrics is 404.
	Metrics http.Handler
	// Listeners is how many listeners /readyz expects the proxy to have;
	// it is never ready with none.
	Listeners int
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
	token  [sha256.Size]byte // of Options.Token, compared in constant time
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
	s := &Server{opts: o, log: log, token: sha256.Sum256([]byte(o.Token)), now: time.Now, started: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.ready = &upstreamCheck{check: o.Sessions.CheckUpstream, now: func() time.Time { return s.now() }, base: s.ctx, log: log}
	s.routes = map[string]route{
		"/healthz":       {http.MethodGet, true, s.healthz},
		"/readyz":        {http.MethodGet, true, s.readyz},
		"/settings":      {http.MethodGet, false, s.settings},
		"/sessions":      {http.MethodGet, false, s.sessions},
		"/sessions/kick": {http.MethodPost, false, s.kick},
		"/metrics":       {http.MethodGet, false, s.metrics},
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
	if s.opts.Token == "" && !isLoopback(ln.Addr()) {
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

// isLoopback reports whether a is a TCP address on a loopback IP. Any
// other kind of address counts as public.
func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
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

// authorized checks the bearer token (RFC 6750 §2.1), answering 401 when
// it is missing or wrong. The comparison is of SHA-256 sums, in constant
// time, so that it leaks neither the token nor its length.
func (s *Server) authorized(w http.ResponseWriter, r *http.Request) bool {
	if s.opts.Token == "" {
		return true
	}
	auth := r.Header.Get("Authorization")
	scheme, presented, found := strings.Cut(auth, " ")
	if found && strings.EqualFold(scheme, "Bearer") {
		sum := sha256.Sum256([]byte(strings.TrimSpace(presented)))
		if subtle.ConstantTimeCompare(sum[:], s.token[:]) == 1 {
			return true
		}
	}
	challenge, msg := `Bearer realm="imapguard"`, "this endpoint needs a bearer token"
	if auth != "" {
		challenge, msg = `Bearer realm="imapguard", error="invalid_token"`, "wrong token"
	}
	// The presented token is never logged: it may be a mistyped real one.
	s.log.Warn("admin API: refused", "remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path,
		"token_presented", auth != "")
	w.Header().Set("WWW-Authenticate", challenge)
	writeError(w, http.StatusUnauthorized, msg)
	return false
}

// localOnly refuses, with 403, what a web page in the operator's browser
// could send when there is no token to stop it, and answers true for
// everything else (and for everything when Options.Token is set: a page
// cannot add the token):
//
//   - A Host header that is not a loopback literal or localhost, except
//     on the probes /healthz and /readyz, which tell nothing secret: DNS
//     rebinding points a name the attacker controls at 127.0.0.1, and the
//     page of that name may then read the API's answers as its own
//     (RFC 9110 §7.2: the Host names the authority the client meant).
//   - An Origin header (RFC 6454 §7) whose host is not loopback or
//     localhost, on any endpoint: the browser sends it on cross-origin
//     requests, which no client of this API makes.
func (s *Server) localOnly(w http.ResponseWriter, r *http.Request, probe bool) bool {
	if s.opts.Token != "" {
		return true
	}
	var msg string
	if !probe && !loopbackAuthority(r.Host) {
		msg = fmt.Sprintf("Host %q is not a loopback address or localhost; without admin.token the API answers no other", r.Host)
	} else if o, ok := foreignOrigin(r.Header); ok {
		msg = fmt.Sprintf("Origin %q is not on a loopback address or localhost; without admin.token the API refuses cross-origin requests", o)
	} else {
		return true
	}
	s.log.Warn("admin API: refused", "remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path,
		"host", r.Host, "origin", r.Header.Get("Origin"))
	writeError(w, http.StatusForbidden, msg)
	return false
}

// loopbackAuthority reports whether hostport, a Host header or the
// authority of an origin (RFC 3986 §3.2.2: host [":" port]), names a
// loopback address as an IP literal (127.0.0.0/8; ::1, in brackets) or
// "localhost", which browsers never send to DNS. Anything else, a name
// that resolves to loopback included, is not.
func loopbackAuthority(hostport string) bool {
	host := hostport
	if h, port, err := net.SplitHostPort(hostport); err == nil {
		if strings.Trim(port, "0123456789") != "" {
			return false
		}
		host = h
	} else if strings.HasPrefix(hostport, "[") && strings.HasSuffix(hostport, "]") {
		host = hostport[1 : len(hostport)-1]
	}
	// An IPv6 literal, and only it, comes in brackets.
	bracketed := strings.HasPrefix(hostport, "[")
	if ip := net.ParseIP(host); ip != nil {
		return ip.IsLoopback() && bracketed == strings.Contains(host, ":")
	}
	return !bracketed && strings.EqualFold(host, "localhost")
}

// foreignOrigin returns the first Origin in h that is not loopbackOrigin,
// an empty one included.
func foreignOrigin(h http.Header) (string, bool) {
	for _, o := range h.Values("Origin") {
		if !loopbackOrigin(o) {
			return o, true
		}
	}
	return "", false
}

// loopbackOrigin reports whether origin, the value of an Origin header
// (RFC 6454 §7: scheme "://" host [":" port], or "null"), is an http or
// https origin on a loopback host.
func loopbackOrigin(origin string) bool {
	scheme, authority, ok := strings.Cut(origin, "://")
	if !ok || (!strings.EqualFold(scheme, "http") && !strings.EqualFold(scheme, "https")) ||
		strings.ContainsAny(authority, "/?#@") {
		return false
	}
	return loopbackAuthority(authority)
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, Health{Status: "ok"})
}

// readyz is ready when the proxy listens on at least Options.Listeners
// addresses (and on one at least) and the upstream answers a check, which
// is shared and cached (see upstreamCheck).
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ln := s.opts.Sessions.Listening()
	if ln == nil {
		ln = []string{}
	}
	body := Readiness{Status: "ready", Listeners: ln, Upstream: "ok"}
	status := http.StatusOK
	if err := s.ready.result(r.Context()); err != nil {
		// The error names the upstream's address and TLS details, which are
		// no business of an endpoint without a token; the check logs it.
		body.Upstream = upstreamUnreachable
		status = http.StatusServiceUnavailable
	}
	if len(ln) == 0 || len(ln) < s.opts.Listeners {
		status = http.StatusServiceUnavailable
	}
	if status != http.StatusOK {
		body.Status = "not ready"
	}
	writeJSON(w, status, body)
}

func (s *Server) settings(w http.ResponseWriter, r *http.Request) {
	out := SettingList{Settings: []Setting{}} // [], not null, when there are none
	if s.opts.Settings != nil {
		out.Settings = append(out.Settings, s.opts.Settings()...)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) sessions(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if err := onlyKeys(q, "user", "address"); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	infos, err := s.opts.Sessions.Select(proxy.Match{User: q.Get("user"), Address: q.Get("address")})
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	list := sessions(infos, s.now())
	writeJSON(w, http.StatusOK, SessionList{Count: len(list), Sessions: list})
}

// kick closes the matching connections. The match comes as a JSON body
// with Content-Type application/json, and no other way: that type is not
// one a cross-origin page may send without a CORS preflight (Fetch
// standard, "CORS-safelisted request-header"), and the API answers no
// preflight, so a page the operator visits cannot kick anyone, as it
// could with a form. Unknown fields are refused, lest a misspelt "user"
// widen a kick by address to everyone there.
func (s *Server) kick(w http.ResponseWriter, r *http.Request) {
	if ct, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || ct != "application/json" {
		writeError(w, http.StatusUnsupportedMediaType,
			`POST /sessions/kick takes a JSON body with Content-Type: application/json, such as {"user":"alice"}`)
		return
	}
	if r.URL.RawQuery != "" {
		writeError(w, http.StatusBadRequest,
			`POST /sessions/kick takes no query parameters; give the match in the JSON body, such as {"user":"alice"}`)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
	req, err := kickRequest(r.Body)
	if err != nil {
		status := http.StatusBadRequest
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			status = http.StatusRequestEntityTooLarge
		}
		writeError(w, status, err.Error())
		return
	}
	m := proxy.Match{User: strings.TrimSpace(req.User), Address: strings.TrimSpace(req.Address)}
	if m.User == "" && m.Address == "" {
		writeError(w, http.StatusBadRequest, "kick needs a user, an address or both")
		return
	}
	reason := sanitizeReason(req.Reason)
	infos, err := s.opts.Sessions.Kick(m, reason)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	list := sessions(infos, s.now())
	ids := make([]uint64, len(list))
	for i, c := range list {
		ids[i] = c.ID
	}
	s.log.Info("admin API: kick", "count", len(list), "user", m.User, "address", m.Address,
		"reason", reason, "ids", ids, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, KickResult{Count: len(list), Kicked: list})
}

// kickRequest decodes the JSON body of a kick: one object, no unknown
// fields.
func kickRequest(body io.Reader) (KickRequest, error) {
	var req KickRequest
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, fmt.Errorf("bad JSON body: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return req, errors.New("bad JSON body: more than one value")
	}
	return req, nil
}

// onlyKeys refuses parameters other than keys, and repeated ones.
func onlyKeys(v url.Values, keys ...string) error {
	for k, vs := range v {
		known := false
		for _, want := range keys {
			known = known || k == want
		}
		if !known {
			return fmt.Errorf("unknown parameter %q (known: %s)", k, strings.Join(keys, ", "))
		}
		if len(vs) > 1 {
			return fmt.Errorf("parameter %q given %d times", k, len(vs))
		}
	}
	return nil
}

// sanitizeReason makes text fit an IMAP resp-text (RFC 9051 §9: TEXT-CHAR
// excludes CR and LF): printable ASCII only, runs of anything else and of
// spaces become one space, at most maxReasonLen characters.
func sanitizeReason(text string) string {
	var b strings.Builder
	space := false
	for _, r := range text {
		if r <= ' ' || r > '~' {
			space = b.Len() > 0
			continue
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		b.WriteRune(r)
	}
	s := b.String()
	if len(s) > maxReasonLen {
		s = strings.TrimRight(s[:maxReasonLen], " ")
	}
	return s
}

func (s *Server) metrics(w http.ResponseWriter, r *http.Request) {
	if s.opts.Metrics == nil {
		writeError(w, http.StatusNotFound, "metrics are not enabled")
		return
	}
	s.opts.Metrics.ServeHTTP(w, r)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil { // only the types of this package are written
		status, body = http.StatusInternalServerError, []byte(`{"error":"encoding the answer failed"}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(append(body, '\n'))
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, ErrorBody{Error: msg})
}

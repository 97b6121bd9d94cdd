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
// not on a loopback address without one. Errors are {"error": "..."} with
// a 4xx or 5xx status. The bodies are the types in wire.go.
//
// The package takes the live settings as []config.Setting, which config
// already redacts, rather than defining a copy of that type; it reads no
// configuration file.
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

	"github.com/imapguard/imapguard/config"
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
	// Settings returns the live effective settings, secrets already
	// redacted (config.Config.Settings); nil: an empty list.
	Settings func() []config.Setting
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
// some other way; it checks the token but not the listener.
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
		body.Upstream = err.Error()
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
	out := SettingList{Settings: []Setting{}}
	if s.opts.Settings != nil {
		for _, st := range s.opts.Settings() {
			out.Settings = append(out.Settings, Setting{Name: st.Name, Value: st.Value})
		}
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
// (Content-Type application/json) or as form values, in the query or an
// urlencoded body; unknown fields are refused, lest a misspelt "user"
// widen a kick by address to everyone there.
func (s *Server) kick(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
	req, err := kickRequest(r)
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

// kickRequest reads the match of a kick from r.
func kickRequest(r *http.Request) (KickRequest, error) {
	var req KickRequest
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct == "application/json" {
		if len(r.URL.RawQuery) > 0 {
			return req, errors.New("give the match either as a JSON body or as form values, not both")
		}
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			return req, fmt.Errorf("bad JSON body: %w", err)
		}
		if _, err := dec.Token(); err != io.EOF {
			return req, errors.New("bad JSON body: more than one value")
		}
		return req, nil
	}
	if err := r.ParseForm(); err != nil {
		return req, err
	}
	if err := onlyKeys(r.Form, "user", "address", "reason"); err != nil {
		return req, err
	}
	return KickRequest{User: r.Form.Get("user"), Address: r.Form.Get("address"), Reason: r.Form.Get("reason")}, nil
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

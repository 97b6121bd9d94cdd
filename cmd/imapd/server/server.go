// Package server implements imapd, the small in-memory IMAP server that
// imapguard uses as its upstream in demos and end-to-end tests.
//
// It is a thin wrapper around go-imap v2's imapserver and imapmemserver:
// every configured user gets an INBOX filled with generated seed messages,
// and all state lives in memory and is lost on exit.
//
// This is a test fixture, not a mail server. With Options.TLSConfig it
// offers STARTTLS on the listeners given to Serve and implicit TLS (imaps)
// on those given to ServeTLS; with Options.InsecureAuth it accepts LOGIN
// and AUTHENTICATE PLAIN with the password in plain text on an
// unencrypted connection. A user with a test token (User.Token) may log
// in with AUTHENTICATE OAUTHBEARER (RFC 7628) or XOAUTH2 (oauth.go), which
// the server then advertises. Only listen on loopback.
package server

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
	"github.com/emersion/go-sasl"
)

// User is an account on the server.
type User struct {
	// Username is matched exactly (case-sensitively) at login.
	Username string
	// Password is the plain-text password.
	Password string
	// Token, when set, is a test bearer token the user may log in with
	// through AUTHENTICATE OAUTHBEARER (RFC 7628) or XOAUTH2; a server
	// with any user holding one advertises both mechanisms. It stands for
	// an OAuth access token, checked as it is: no issuer, no expiry.
	Token string
	// Messages is the number of seed messages generated into INBOX.
	Messages int
	// MessageSize is the approximate size in bytes of each seed message
	// body; 0 means a one-line body.
	MessageSize int
}

// Options configures a Server.
type Options struct {
	// Users are the accounts. Usernames must be non-empty and unique.
	Users []User
	// Logger receives connection, login and server error logs. nil
	// discards them.
	Logger *slog.Logger
	// InsecureAuth allows LOGIN and AUTHENTICATE without TLS. Without it
	// (and without TLSConfig) nobody can log in.
	InsecureAuth bool
	// TLSConfig, if set, enables TLS: STARTTLS is offered on listeners
	// given to Serve, and ServeTLS serves implicit TLS. It needs a
	// certificate (Certificates or GetCertificate). nil: no TLS, and
	// ServeTLS fails.
	TLSConfig *tls.Config
	// Debug, if non-nil, receives a raw trace of everything read from and
	// written to every connection, credentials included. Writes are
	// serialised, so it need not be safe for concurrent use.
	Debug io.Writer
}

// Server is an in-memory IMAP server. Create it with New.
type Server struct {
	imap   *imapserver.Server
	users  map[string]*imapmemserver.User // read-only after New
	tokens map[string]string              // User.Token by username; read-only after New
	logger *slog.Logger
	tls    *tls.Config // nil: no TLS

	mu     sync.Mutex
	ln     net.Listener // first listener passed to Serve
	closed bool
}

// New validates opts, creates every user with a seeded INBOX and returns
// a server that is ready to Serve.
func New(opts Options) (*Server, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		users:  make(map[string]*imapmemserver.User, len(opts.Users)),
		tokens: make(map[string]string),
		logger: logger,
	}
	if opts.TLSConfig != nil {
		if len(opts.TLSConfig.Certificates) == 0 && opts.TLSConfig.GetCertificate == nil &&
			opts.TLSConfig.GetConfigForClient == nil {
			return nil, errors.New("imapd: TLSConfig has no certificate")
		}
		s.tls = opts.TLSConfig.Clone()
	}

	bodies := make(map[int][]byte) // seed bodies by size, shared between users
	for i, u := range opts.Users {
		if err := validateUser(u); err != nil {
			return nil, fmt.Errorf("imapd: user %d: %w", i+1, err)
		}
		if _, dup := s.users[u.Username]; dup {
			return nil, fmt.Errorf("imapd: user %q: configured twice", u.Username)
		}
		body, ok := bodies[u.MessageSize]
		if !ok {
			body = seedBody(u.MessageSize)
			bodies[u.MessageSize] = body
		}
		mu, err := newMemUser(u, i, body)
		if err != nil {
			return nil, fmt.Errorf("imapd: user %q: %w", u.Username, err)
		}
		s.users[u.Username] = mu
		if u.Token != "" {
			s.tokens[u.Username] = u.Token
		}
	}

	var debug io.Writer
	if opts.Debug != nil {
		debug = &syncWriter{w: opts.Debug}
	}
	s.imap = imapserver.New(&imapserver.Options{
		NewSession:   s.newSession,
		Caps:         capabilities(),
		Logger:       slogPrinter{logger},
		InsecureAuth: opts.InsecureAuth,
		TLSConfig:    s.tls, // STARTTLS; nil leaves it out
		DebugWriter:  debug,
	})
	return s, nil
}

// capabilities returns the capability set handed to imapserver. imapserver
// adds SASL-IR, LITERAL-, AUTH=PLAIN and, after login, the IMAP4rev2
// extensions (IDLE, MOVE, UIDPLUS, NAMESPACE, ...) on its own. LITERAL+ is
// implemented by imapserver's decoder but only advertised when listed here.
func capabilities() imap.CapSet {
	return imap.CapSet{
		imap.CapIMAP4rev1:   {},
		imap.CapIMAP4rev2:   {},
		imap.CapLiteralPlus: {},
	}
}

func validateUser(u User) error {
	switch {
	case u.Username == "":
		return errors.New("empty username")
	case u.Messages < 0:
		return fmt.Errorf("negative message count %d", u.Messages)
	case u.MessageSize < 0:
		return fmt.Errorf("negative message size %d", u.MessageSize)
	}
	return nil
}

// newMemUser creates the imapmemserver user for u with u.Messages seed
// messages in INBOX. idx distinguishes users in Message-IDs.
func newMemUser(u User, idx int, body []byte) (*imapmemserver.User, error) {
	mu := imapmemserver.NewUser(u.Username, u.Password)
	if err := mu.Create("INBOX", nil); err != nil {
		return nil, fmt.Errorf("create INBOX: %w", err)
	}
	for n := 1; n <= u.Messages; n++ {
		header := seedHeader(u.Username, idx, n)
		lit := literal{
			Reader: io.MultiReader(bytes.NewReader(header), bytes.NewReader(body)),
			size:   int64(len(header) + len(body)),
		}
		opts := &imap.AppendOptions{Time: seedDate(n)}
		if _, err := mu.Append("INBOX", lit, opts); err != nil {
			return nil, fmt.Errorf("append seed message %d: %w", n, err)
		}
	}
	return mu, nil
}

// Serve accepts IMAP connections on ln until Close is called, then returns
// nil. Serve takes ownership of ln and closes it.
func (s *Server) Serve(ln net.Listener) error {
	defer ln.Close()
	s.mu.Lock()
	closed := s.closed
	if s.ln == nil {
		s.ln = ln
	}
	s.mu.Unlock()
	if closed {
		return nil
	}
	s.logger.Info("serving IMAP", "addr", ln.Addr().String())
	err := s.imap.Serve(ln)
	if err == nil || s.isClosed() {
		return nil
	}
	return fmt.Errorf("imapd: serve: %w", err)
}

// ErrNoTLS is returned by ServeTLS on a server without Options.TLSConfig.
var ErrNoTLS = errors.New("imapd: ServeTLS without Options.TLSConfig")

// ServeTLS is Serve for implicit TLS (imaps, RFC 8314): every connection
// accepted on ln starts with a TLS handshake under Options.TLSConfig. A
// client there may log in even without InsecureAuth. Like Serve, it takes
// ownership of ln and closes it (also when it returns ErrNoTLS).
func (s *Server) ServeTLS(ln net.Listener) error {
	if s.tls == nil {
		ln.Close()
		return ErrNoTLS
	}
	return s.Serve(tls.NewListener(ln, s.tls))
}

// Addr returns the address of the first listener passed to Serve, or nil
// if Serve has not been called yet.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Close stops all listeners and closes all open connections. Serve then
// returns nil. Calling Close more than once is harmless.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	if err := s.imap.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("imapd: close: %w", err)
	}
	return nil
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// newSession is imapserver's NewSession hook, called for each connection.
func (s *Server) newSession(c *imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
	remote := c.NetConn().RemoteAddr().String()
	s.logger.Debug("connection", "remote", remote)
	return &session{srv: s, remote: remote}, nil, nil
}

// session is one IMAP connection. Before login UserSession is nil;
// imapserver only calls Login and Close in that state.
type session struct {
	*imapmemserver.UserSession

	srv    *Server
	remote string
}

var (
	_ imapserver.SessionIMAP4rev2 = (*session)(nil)
	_ imapserver.SessionSASL      = (*session)(nil)
)

// Login implements imapserver.Session; AUTHENTICATE PLAIN ends up here
// too. Failures return imapserver.ErrAuthFailed, which becomes
// "NO [AUTHENTICATIONFAILED]".
func (sess *session) Login(username, password string) error {
	u, ok := sess.srv.users[username]
	if !ok {
		sess.srv.logger.Info("login failed", "user", username, "remote", sess.remote, "reason", "unknown user")
		return imapserver.ErrAuthFailed
	}
	if err := u.Login(username, password); err != nil {
		sess.srv.logger.Info("login failed", "user", username, "remote", sess.remote, "reason", "bad password")
		return err
	}
	sess.UserSession = imapmemserver.NewUserSession(u)
	sess.srv.logger.Info("login", "user", username, "remote", sess.remote)
	return nil
}

// Close implements imapserver.Session.
func (sess *session) Close() error {
	sess.srv.logger.Debug("connection closed", "remote", sess.remote)
	if sess.UserSession == nil {
		return nil
	}
	return sess.UserSession.Close()
}

// AuthenticateMechanisms implements imapserver.SessionSASL: PLAIN, and
// OAUTHBEARER and XOAUTH2 when some user has a test token.
func (sess *session) AuthenticateMechanisms() []string {
	if len(sess.srv.tokens) > 0 {
		return []string{sasl.Plain, mechOAuthBearer, mechXOAuth2}
	}
	return []string{sasl.Plain}
}

// Authenticate implements imapserver.SessionSASL. It does what imapserver
// does for PLAIN on its own, but through plainServer; OAUTHBEARER and
// XOAUTH2 go to oauthServer.
func (sess *session) Authenticate(mech string) (sasl.Server, error) {
	if (mech == mechOAuthBearer || mech == mechXOAuth2) && len(sess.srv.tokens) > 0 {
		return &oauthServer{sess: sess, mech: mech}, nil
	}
	if mech != sasl.Plain {
		return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Text: "SASL mechanism not supported"}
	}
	return plainServer{sasl.NewPlainServer(func(identity, username, password string) error {
		if identity != "" && identity != username {
			return &imap.Error{
				Type: imap.StatusResponseTypeNo,
				Code: imap.ResponseCodeAuthorizationFailed,
				Text: "SASL identity not supported",
			}
		}
		return sess.Login(username, password)
	})}, nil
}

// plainServer smooths two rough edges of go-sasl's PLAIN server under
// imapserver (go-imap v2.0.0-beta.8):
//   - its empty challenge is sent as "+ =" instead of the usual "+ ",
//     which go-imap's own imapclient rejects; a nil challenge gives "+ ";
//   - a malformed response is a plain Go error, which imapserver reports
//     as "NO [SERVERBUG]"; it becomes a BAD here.
type plainServer struct{ sasl.Server }

// Next implements sasl.Server.
func (p plainServer) Next(response []byte) ([]byte, bool, error) {
	challenge, done, err := p.Server.Next(response)
	var imapErr *imap.Error
	if err != nil && !errors.As(err, &imapErr) {
		return nil, false, &imap.Error{Type: imap.StatusResponseTypeBad, Text: "Malformed SASL PLAIN response"}
	}
	if len(challenge) == 0 {
		challenge = nil
	}
	return challenge, done, err
}

// slogPrinter adapts a slog.Logger to imapserver.Logger.
type slogPrinter struct{ l *slog.Logger }

// Printf logs imapserver's internal errors at warning level.
func (p slogPrinter) Printf(format string, args ...any) {
	p.l.Warn("imapserver: " + fmt.Sprintf(format, args...))
}

// syncWriter serialises writes to w.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

// Write writes p to the underlying writer while holding the lock.
func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

// TB is the part of testing.TB that Start and StartTLS use.
type TB interface {
	Cleanup(func())
	Fatalf(string, ...any)
}

// Start creates a server from opts, serves it on a fresh 127.0.0.1 port in
// a goroutine and returns the address. The server is closed by t.Cleanup.
// It is meant for tests (t is a *testing.T or *testing.B). With
// opts.TLSConfig the port offers STARTTLS.
func Start(t TB, opts Options) string {
	addrs := start(t, opts, false)
	if len(addrs) == 0 {
		return ""
	}
	return addrs[0]
}

// StartTLS is Start for a server with TLS (opts.TLSConfig must be set):
// addr is a plaintext port that offers STARTTLS, tlsAddr an imaps port
// (implicit TLS), both on 127.0.0.1 and served by the same server (same
// users, same mailboxes).
func StartTLS(t TB, opts Options) (addr, tlsAddr string) {
	if opts.TLSConfig == nil {
		t.Fatalf("imapd: StartTLS without Options.TLSConfig")
		return "", ""
	}
	addrs := start(t, opts, true)
	if len(addrs) < 2 {
		return "", ""
	}
	return addrs[0], addrs[1]
}

// start serves a new server on one plaintext port and, withTLS, a second
// port with implicit TLS, and returns their addresses in that order.
func start(t TB, opts Options, withTLS bool) []string {
	s, err := New(opts)
	if err != nil {
		t.Fatalf("imapd: %v", err)
		return nil
	}
	n := 1
	if withTLS {
		n = 2
	}
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			t.Fatalf("imapd: listen: %v", err)
			return nil
		}
		lns = append(lns, ln)
	}
	done := make(chan error, n)
	addrs := make([]string, n)
	for i, ln := range lns {
		addrs[i] = ln.Addr().String()
		serve := s.Serve
		if i == 1 {
			serve = s.ServeTLS
		}
		go func() { done <- serve(ln) }()
	}
	t.Cleanup(func() {
		errs := []error{s.Close()}
		for range n {
			errs = append(errs, <-done)
		}
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("imapd: %v", err)
		}
	})
	return addrs
}

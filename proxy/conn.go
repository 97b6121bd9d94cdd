package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/imapguard/imapguard/limits"
)

// capabilities is the pre-authentication list for this connection's
// state (RFC 9051 §6.1.1). LITERAL+ (RFC 7888) lets clients send
// credentials as non-synchronizing literals; the size cap applies all the
// same. After login the client gets the upstream's own list. It has
// STARTTLS while TLS is possible and not active, and LOGINDISABLED instead
// of AUTH= mechanisms while login must wait for TLS (RFC 9051 §6.2.3,
// §7.2.2).
func (c *conn) capabilities() string {
	caps := "IMAP4rev1 SASL-IR LITERAL+ ID"
	if c.opts.TLSConfig != nil && !c.tlsActive {
		caps += " STARTTLS"
	}
	if c.authAllowed() {
		return caps + " AUTH=PLAIN AUTH=LOGIN"
	}
	return caps + " LOGINDISABLED"
}

// authAllowed reports whether credentials may be sent on this connection.
func (c *conn) authAllowed() bool {
	return c.tlsActive || c.opts.TLSConfig == nil || c.opts.AllowPlaintextAuth
}

// conn is one client connection.
type conn struct {
	srv      *Server
	id       uint64
	nc       net.Conn
	listener string
	log      *slog.Logger
	opts     *Options
	w        *clientWriter
	br       *bufio.Reader
	since    time.Time
	ctx      context.Context
	cancel   context.CancelFunc

	badCommands  int
	authFailures int
	release      func() // the connection's slot
	finishOnce   sync.Once
	implicitTLS  bool // accepted on an imaps listener
	tlsActive    bool // the client connection is TLS (implicit or STARTTLS)
	r            *preauthReader

	ready *session // logged in, to be relayed once the pre-auth loop ends

	tel       *telemetry
	span      trace.Span // the connection's root span
	sessSpan  trace.Span // the relayed session's, once logged in
	sessStart time.Time

	mu           sync.Mutex
	user         string
	sess         *session
	shuttingDown bool
	byeTimer     *time.Timer // closes a connection whose BYE is held up
	outcome      string
	refusedBy    string // the cap that refused the connection
}

func newConn(s *Server, nc net.Conn, listener string, implicitTLS bool) *conn {
	c := &conn{
		srv:         s,
		id:          s.nextID.Add(1),
		nc:          nc,
		listener:    listener,
		implicitTLS: implicitTLS,
		opts:        s.options(),
		since:       time.Now(),
		tel:         s.telemetry(),
		ctx:         context.Background(),
	}
	c.log = s.log.With("conn", c.id, "client", nc.RemoteAddr().String())
	c.startConnSpan()
	c.ctx, c.cancel = context.WithCancel(c.ctx)
	c.w = newClientWriter(nc, c.close)
	return c
}

// close closes the client connection and, if relaying, the upstream one.
func (c *conn) close() {
	c.cancel()
	c.mu.Lock()
	sess := c.sess
	c.mu.Unlock()
	if sess != nil {
		sess.closeBoth()
		return
	}
	c.clientConn().Close()
}

// clientConn is the client connection: the TCP connection, or the TLS
// connection over it once TLS is active.
func (c *conn) clientConn() net.Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nc
}

// startTLS makes the client connection TLS, with a handshake bounded by
// the pre-authentication deadline already set on it.
func (c *conn) startTLS() error {
	tc := tls.Server(c.nc, c.opts.TLSConfig)
	c.w.mute()
	_, span := c.tel.tracer.Start(c.ctx, spanTLSHandshake, trace.WithAttributes(attribute.Bool("imapguard.implicit_tls", c.implicitTLS)))
	if err := tc.HandshakeContext(c.ctx); err != nil {
		endSpan(span, err)
		if c.ctx.Err() != nil {
			return err // kicked or shut down: the outcome says so
		}
		c.setOutcome("tls handshake failed")
		c.refuse(reasonTLSHandshake)
		c.log.Info("client TLS handshake failed", "err", err)
		return err
	}
	st := tc.ConnectionState()
	span.SetAttributes(tlsAttrs(st)...)
	span.End()
	c.span.SetAttributes(tlsAttrs(st)...)
	c.mu.Lock()
	c.nc = tc
	c.tlsActive = true
	c.mu.Unlock()
	c.w.setConn(tc)
	c.br = bufio.NewReaderSize(tc, 4096)
	c.r = c.newReader()
	c.log.Debug("client TLS established", "version", tls.VersionName(st.Version), "alpn", st.NegotiatedProtocol)
	return nil
}

func (c *conn) newReader() *preauthReader {
	return newPreauthReader(c.br, c.opts.MaxCommandSize, func() error {
		return c.w.line("+ Ready for literal data", false)
	})
}

func (c *conn) logPanic(v any) {
	c.log.Error("panic in connection handler", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
}

func (c *conn) setOutcome(s string) {
	c.mu.Lock()
	c.outcome = s
	c.mu.Unlock()
}

func (c *conn) setOutcomeIfEmpty(s string) {
	c.mu.Lock()
	if c.outcome == "" {
		c.outcome = s
	}
	c.mu.Unlock()
}

func (c *conn) info() ConnInfo {
	c.mu.Lock()
	i := ConnInfo{ID: c.id, Client: c.nc.RemoteAddr().String(), Listener: c.listener,
		User: c.user, TLS: c.tlsActive, Since: c.since}
	c.mu.Unlock()
	i.Authenticated, i.BytesToUpstream, i.BytesToClient = c.relayed()
	return i
}

// relayed reports whether the connection is an authenticated session and
// the bytes relayed each way; without the allocations of info, for the
// metrics.
func (c *conn) relayed() (authenticated bool, toUpstream, toClient int64) {
	c.mu.Lock()
	sess := c.sess
	c.mu.Unlock()
	if sess == nil {
		return false, 0, 0
	}
	return true, sess.bytesToUpstream.Load(), sess.bytesToClient.Load()
}

// shutdown tells the client BYE (at a response boundary when relaying)
// and closes the connection.
func (c *conn) shutdown(text string) { c.closeWithBye("proxy shutdown", text) }

// kick is shutdown on an administrator's request.
func (c *conn) kick(text string) { c.closeWithBye("kicked", text) }

// closeWithBye says BYE and closes without waiting: the caller (Kick,
// Shutdown) may be closing many connections, and one whose client has
// stopped reading must not hold it up. The BYE goes out at the next
// response boundary; if that does not come within byeGrace, the
// connection is closed without it.
func (c *conn) closeWithBye(outcome, text string) {
	c.mu.Lock()
	if c.shuttingDown {
		c.mu.Unlock()
		return
	}
	c.shuttingDown = true
	c.outcome = outcome
	sess := c.sess
	c.byeTimer = time.AfterFunc(byeGrace, c.close)
	c.mu.Unlock()
	go func() {
		if sess != nil {
			sess.shutdown(text)
			return
		}
		// The closing line closes the connection and cancels its context,
		// which abandons an upstream login under way; the BYE goes first.
		c.w.line("* BYE [UNAVAILABLE] "+text, true)
	}()
}

// serve runs the connection up to login. It reports whether it handed
// the connection on to a relay goroutine, which then finishes it;
// otherwise the caller calls finish.
func (c *conn) serve() (handedOff bool) {
	release, checks, err := c.srv.limiter.AdmitConn(clientAddr(c.nc.RemoteAddr()))
	limitEvents(c.span, checks, err)
	if err != nil {
		// Refused before any command: no upstream connection is spent.
		limit := checks[len(checks)-1]
		c.mu.Lock()
		c.refusedBy = limit.Limit
		c.mu.Unlock()
		c.refuse(limit.Limit)
		c.log.Info("connection refused", "reason", err.Error(), "limit", limit.Limit, "count", limit.Count, "max", limit.Max)
		if !c.implicitTLS { // an imaps client waits for a ServerHello, not IMAP
			c.w.line("* BYE [UNAVAILABLE] "+err.Error(), false)
		}
		return false
	}
	c.release = release
	c.tel.accepted.Add(context.Background(), 1, metric.WithAttributes(attribute.String("listener", c.listener)))

	// The deadline covers an implicit TLS handshake too, which counts
	// toward the caps like any connection.
	c.nc.SetDeadline(c.since.Add(c.opts.PreauthTimeout))
	if c.implicitTLS {
		if c.startTLS() != nil {
			return false
		}
	} else {
		c.br = bufio.NewReaderSize(c.nc, 4096)
		c.r = c.newReader()
	}
	if err := c.w.line("* OK [CAPABILITY "+c.capabilities()+"] imapguard ready", false); err != nil {
		return false
	}
	for {
		cmd, err := c.r.readCommand()
		if err != nil {
			if !c.readError(err) {
				break
			}
			continue
		}
		if !c.dispatch(c.r, cmd) {
			break
		}
	}
	sess := c.ready
	if sess == nil {
		return false
	}
	// The relay runs on fresh goroutines with small stacks, and the
	// pre-authentication reader and its buffers are dropped: an idle
	// session should hold as little as possible. This goroutine, whose
	// stack grew during login, ends here.
	c.ready, c.br, c.r = nil, nil, nil
	go func() {
		defer func() {
			// run recovers inside each direction; a panic here came
			// before they started.
			if v := recover(); v != nil {
				c.logPanic(v)
				sess.closeBoth()
				sess.releaseUser()
				c.finish()
			}
		}()
		sess.run() // the session calls c.finish when it ends
	}()
	return true
}

// finish ends the connection, once: closes it, frees its slot, logs its
// summary and takes it off the server's registry.
func (c *conn) finish() {
	c.finishOnce.Do(func() {
		c.mu.Lock()
		if c.byeTimer != nil {
			c.byeTimer.Stop()
		}
		c.mu.Unlock()
		c.close()
		if c.release != nil {
			c.logEnd()
			c.release()
		}
		c.endSessionSpan()
		c.endConnSpan()
		c.srv.forget(c)
	})
}

// readError answers a failed command read and reports whether the
// connection goes on. This is the one place read errors become responses.
func (c *conn) readError(err error) bool {
	var tb *tooBigError
	var se *syntaxError
	switch {
	case errors.As(err, &tb):
		text := "Command too long (max_command_size=" + strconv.Itoa(c.opts.MaxCommandSize) + ")"
		if tb.fatal {
			c.refuse(reasonCommandTooBig)
			c.setOutcome("command too big")
			c.w.line("* BYE [TOOBIG] "+text, true)
			return false
		}
		c.refuseCommand(reasonCommandTooBig)
		return c.bad(tagOr(tb.tag) + " BAD [TOOBIG] " + text)
	case errors.As(err, &se):
		return c.bad(tagOr(se.tag) + " BAD " + se.msg)
	case errors.Is(err, os.ErrDeadlineExceeded):
		c.mu.Lock()
		down := c.shuttingDown
		c.mu.Unlock()
		if !down {
			c.setOutcome("preauth timeout")
			c.refuse(reasonPreauthTimeout)
			c.w.line("* BYE Autologout; not authenticated in time (preauth_timeout="+formatDuration(c.opts.PreauthTimeout)+")", true)
		}
		return false
	case errors.Is(err, io.EOF):
		c.setOutcomeIfEmpty("client closed")
		return false
	default:
		c.setOutcomeIfEmpty("client error")
		c.log.Debug("client read failed", "err", err)
		return false
	}
}

func tagOr(tag string) string {
	if tag == "" {
		return "*"
	}
	return tag
}

// bad answers an invalid command and closes the connection after
// max_bad_commands of them (ALPACA: a non-IMAP client sent here by an
// attacker is cut off quickly).
func (c *conn) bad(line string) bool {
	c.badCommands++
	if err := c.w.line(line, false); err != nil {
		return false
	}
	if c.badCommands >= c.opts.MaxBadCommands {
		c.setOutcome("too many invalid commands")
		c.refuse(reasonBadCommands)
		c.w.line("* BYE Too many invalid commands (max_bad_commands="+strconv.Itoa(c.opts.MaxBadCommands)+")", true)
		return false
	}
	return true
}

// dispatch runs one pre-authentication command and reports whether the
// connection goes on unauthenticated.
func (c *conn) dispatch(r *preauthReader, cmd *command) bool {
	ok := func(name string) bool {
		return c.w.line(cmd.tag+" OK "+name+" completed", false) == nil
	}
	switch cmd.name {
	case "CAPABILITY":
		if len(cmd.args) != 0 {
			return c.bad(cmd.tag + " BAD CAPABILITY takes no arguments")
		}
		return c.w.lines("* CAPABILITY "+c.capabilities(), cmd.tag+" OK CAPABILITY completed") == nil
	case "NOOP":
		if len(cmd.args) != 0 {
			return c.bad(cmd.tag + " BAD NOOP takes no arguments")
		}
		return ok("NOOP")
	case "LOGOUT":
		if len(cmd.args) != 0 {
			return c.bad(cmd.tag + " BAD LOGOUT takes no arguments")
		}
		c.setOutcome("logout")
		c.w.lines("* BYE Logging out", cmd.tag+" OK LOGOUT completed")
		return false
	case "ID":
		if !validID(cmd.args) {
			return c.bad(cmd.tag + " BAD Invalid ID arguments")
		}
		return c.w.lines(`* ID ("name" "imapguard")`, cmd.tag+" OK ID completed") == nil
	case "LOGIN", "AUTHENTICATE":
		if !c.authAllowed() {
			// RFC 9051 §6.2.3 (LOGINDISABLED); RFC 5530 PRIVACYREQUIRED.
			c.startAuth(cmd.name, attemptedMechanism(cmd), "").end(authPrivacyRequired, "")
			return c.w.line(cmd.tag+" NO [PRIVACYREQUIRED] Use STARTTLS or the TLS port before logging in", false) == nil
		}
		if cmd.name == "AUTHENTICATE" {
			return c.authenticate(r, cmd)
		}
		if len(cmd.args) != 2 || !isAstring(cmd.args[0]) || !isAstring(cmd.args[1]) {
			c.startAuth("LOGIN", "LOGIN", "").end(authMalformed, "")
			return c.bad(cmd.tag + " BAD LOGIN takes a user name and a password")
		}
		return c.login(cmd.tag, "LOGIN", "LOGIN", cmd.args[0].val, cmd.args[1].val)
	case "STARTTLS":
		return c.starttls(cmd)
	}
	if validAfterAuth[cmd.name] {
		return c.bad(cmd.tag + " BAD Command not valid before authentication")
	}
	return c.bad(cmd.tag + " BAD Unknown command")
}

// starttls runs STARTTLS (RFC 9051 §6.2.1).
func (c *conn) starttls(cmd *command) bool {
	switch {
	case c.opts.TLSConfig == nil:
		return c.bad(cmd.tag + " BAD STARTTLS is not available")
	case c.tlsActive:
		return c.bad(cmd.tag + " BAD TLS is already active")
	case len(cmd.args) != 0:
		return c.bad(cmd.tag + " BAD STARTTLS takes no arguments")
	}
	if err := c.w.line(cmd.tag+" OK Begin TLS negotiation now", false); err != nil {
		return false
	}
	// CVE-2011-0411: whatever the client pipelined behind STARTTLS in
	// plaintext may have been injected by an attacker; it is thrown away,
	// never executed after the handshake.
	if n := c.br.Buffered(); n > 0 {
		c.br.Discard(n)
		c.log.Info("discarded plaintext pipelined after STARTTLS", "bytes", n)
	}
	return c.startTLS() == nil
}

// validAfterAuth are the commands of RFC 9051 and common extensions that
// are valid only once authenticated.
var validAfterAuth = map[string]bool{
	"ENABLE": true, "SELECT": true, "EXAMINE": true, "CREATE": true, "DELETE": true,
	"RENAME": true, "SUBSCRIBE": true, "UNSUBSCRIBE": true, "LIST": true, "LSUB": true,
	"NAMESPACE": true, "STATUS": true, "APPEND": true, "IDLE": true, "CLOSE": true,
	"UNSELECT": true, "EXPUNGE": true, "SEARCH": true, "FETCH": true, "STORE": true,
	"COPY": true, "MOVE": true, "UID": true, "CHECK": true, "COMPRESS": true,
	"GETQUOTA": true, "GETQUOTAROOT": true, "SETQUOTA": true, "GETACL": true,
	"SETACL": true, "MYRIGHTS": true, "LISTRIGHTS": true, "DELETEACL": true,
	"GETMETADATA": true, "SETMETADATA": true, "NOTIFY": true, "SORT": true, "THREAD": true,
}

func isAstring(a arg) bool { return a.kind == argAtom || a.kind == argString }

// validID checks ID's argument: NIL, or a parenthesised list of
// field-value pairs of strings (RFC 2971 §3.1).
func validID(args []arg) bool {
	if len(args) == 1 && args[0].kind == argAtom && strings.EqualFold(args[0].val, "NIL") {
		return true
	}
	if len(args) < 2 || args[0].kind != argLParen || args[len(args)-1].kind != argRParen {
		return false
	}
	inner := args[1 : len(args)-1]
	if len(inner)%2 != 0 || len(inner) > 60 {
		return false
	}
	for i, a := range inner {
		switch {
		case a.kind == argString:
		case a.kind == argAtom && i%2 == 1 && strings.EqualFold(a.val, "NIL"):
		default:
			return false
		}
	}
	return true
}

// authenticate runs AUTHENTICATE PLAIN (RFC 4616) or LOGIN
// (draft-murchison-sasl-login), with SASL-IR (RFC 4959).
func (c *conn) authenticate(r *preauthReader, cmd *command) bool {
	// An attempt that never reaches login is recorded here, once, with
	// why it stopped.
	failed := func(result string) {
		c.startAuth("AUTHENTICATE", attemptedMechanism(cmd), "").end(result, "")
	}
	if len(cmd.args) < 1 || len(cmd.args) > 2 || cmd.args[0].kind != argAtom ||
		(len(cmd.args) == 2 && cmd.args[1].kind != argAtom) {
		failed(authMalformed)
		return c.bad(cmd.tag + " BAD AUTHENTICATE takes a mechanism and an optional initial response")
	}
	mech := strings.ToUpper(cmd.args[0].val)
	var ir *string
	if len(cmd.args) == 2 {
		ir = &cmd.args[1].val
	}
	// next returns the client's next SASL response: the initial one
	// first, else after a challenge.
	next := func(challenge string) (resp []byte, cont bool) {
		var line []byte
		if ir != nil {
			line, ir = []byte(*ir), nil
		} else {
			if err := c.w.line("+ "+challenge, false); err != nil {
				return nil, false
			}
			var err error
			if line, err = r.readContinuation(); err != nil {
				var tb *tooBigError
				if errors.As(err, &tb) {
					tb.tag = cmd.tag
				}
				failed(authAborted)
				return nil, c.readError(err)
			}
		}
		if string(line) == "*" {
			failed(authCancelled)
			return nil, c.bad(cmd.tag + " BAD Authentication cancelled")
		}
		if string(line) == "=" {
			return []byte{}, true
		}
		dec, err := base64.StdEncoding.DecodeString(string(line))
		if err != nil {
			failed(authMalformed)
			return nil, c.bad(cmd.tag + " BAD Invalid base64 in SASL response")
		}
		return dec, true
	}
	switch mech {
	case "PLAIN":
		resp, cont := next("")
		if resp == nil {
			return cont
		}
		parts := strings.Split(string(resp), "\x00")
		if len(parts) != 3 {
			failed(authMalformed)
			return c.bad(cmd.tag + " BAD Malformed PLAIN response")
		}
		if parts[0] != "" && parts[0] != parts[1] {
			// RFC 4616 §2: acting as another user is an authorization
			// request this proxy does not grant.
			c.startAuth("AUTHENTICATE", "PLAIN", parts[1]).end(authAuthorizationFailed, "")
			return c.authFailed(cmd.tag, "NO [AUTHORIZATIONFAILED] Authorization as another user is not permitted")
		}
		return c.login(cmd.tag, "AUTHENTICATE", "PLAIN", parts[1], parts[2])
	case "LOGIN":
		user, cont := next("VXNlcm5hbWU6") // "Username:"
		if user == nil {
			return cont
		}
		pass, cont := next("UGFzc3dvcmQ6") // "Password:"
		if pass == nil {
			return cont
		}
		return c.login(cmd.tag, "AUTHENTICATE", "LOGIN", string(user), string(pass))
	}
	failed(authUnsupported)
	return c.bad(cmd.tag + " NO Unsupported authentication mechanism")
}

// authFailed answers a failed authentication and closes the connection
// after max_auth_failures of them.
func (c *conn) authFailed(tag, resp string) bool {
	c.authFailures++
	if err := c.w.line(tag+" "+resp, false); err != nil {
		return false
	}
	if c.authFailures >= c.opts.MaxAuthFailures {
		c.setOutcome("too many authentication failures")
		c.refuse(reasonAuthFailures)
		c.w.line("* BYE Too many authentication failures (max_auth_failures="+strconv.Itoa(c.opts.MaxAuthFailures)+")", true)
		return false
	}
	return true
}

// login logs in to the upstream as user, for the IMAP command (LOGIN or
// AUTHENTICATE) with the mechanism (LOGIN or PLAIN) the client used, and
// on success readies the session for the relay. It reports whether the
// connection goes on unauthenticated.
func (c *conn) login(tag, command, mech, user, pass string) bool {
	log := c.log.With("user", user, "mechanism", mech)
	a := c.startAuth(command, mech, user)
	if user == "" {
		a.end(authFailed, "")
		return c.authFailed(tag, "NO [AUTHENTICATIONFAILED] Authentication failed")
	}
	start := time.Now()
	dctx, dspan := a.upstreamSpan(spanDial)
	up, err := dialUpstream(dctx, c.opts)
	endSpan(dspan, err)
	if c.ctx.Err() == nil {
		c.tel.dialTime.Record(context.Background(), since(start), metric.WithAttributes(attribute.Bool("ok", err == nil)))
	}
	if err == nil {
		lstart := time.Now()
		lctx, lspan := a.upstreamSpan(spanLogin)
		err = up.login(lctx, user, pass)
		result, code := loginResult(err)
		endLoginSpan(lspan, result, code)
		if c.ctx.Err() == nil {
			c.tel.loginTime.Record(context.Background(), since(lstart), metric.WithAttributes(attribute.String("result", result)))
		}
		if err != nil {
			up.logout()
		}
	}
	if err != nil && c.ctx.Err() != nil {
		// Kicked or shut down during the login: not the upstream's
		// doing, and the client has been told BYE.
		a.end(authAborted, "")
		return false
	}
	if err != nil {
		var le *loginError
		if !errors.As(err, &le) {
			le = &loginError{kind: loginUnavailable, err: err}
		}
		switch le.kind {
		case loginAuthFailed:
			a.end(authFailed, "")
			attrs := []any{"upstream_time", time.Since(start)}
			if le.err != nil {
				attrs = append(attrs, "detail", le.err)
			}
			log.Info("authentication failed", attrs...)
			return c.authFailed(tag, "NO [AUTHENTICATIONFAILED] Authentication failed")
		case loginRefused:
			a.end(authRefused, le.code)
			log.Info("upstream refused login", "code", le.code, "text", le.text)
			return c.w.line(tag+" NO ["+le.code+"] "+le.text, false) == nil
		}
		a.end(authUnavailable, "")
		c.refuseCommand(reasonUpstreamUnavailable)
		log.Warn("upstream unavailable", "err", le.err)
		return c.w.line(tag+" NO [UNAVAILABLE] Mail server unavailable, try again later", false) == nil
	}
	releaseUser, check, err := c.srv.limiter.AdmitUser(user)
	limitEvents(a.span, []limits.Check{check}, err)
	if err != nil {
		// Checked only now that the upstream accepted the password, so the
		// answer tells nothing to someone who does not know it.
		up.logout()
		a.end(authLimit, "")
		c.refuseCommand(reasonMaxPerUser)
		log.Info("login refused", "reason", err.Error(), "limit", check.Limit, "count", check.Count, "max", check.Max)
		return c.w.line(tag+" NO [LIMIT] "+err.Error(), false) == nil
	}
	a.end(authSuccess, "")
	sess := &session{c: c, up: up.nc, idle: c.opts.IdleTimeout, max: c.opts.MaxCommandSize, releaseUser: releaseUser}
	sess.w = c.w
	c.mu.Lock()
	if c.shuttingDown {
		c.mu.Unlock()
		releaseUser()
		up.logout()
		return false
	}
	c.user = user
	c.sess = sess
	c.mu.Unlock()
	if c.opts.RecordUser {
		c.span.SetAttributes(attribute.String("enduser.id", user))
	}
	// Relayed writes may wait on a slow reader for as long as a session
	// may be idle.
	c.w.setTimeout(sess.idle)

	c.nc.SetDeadline(time.Time{})
	up.nc.SetDeadline(time.Time{})
	log.Info("logged in", "upstream_time", time.Since(start))
	c.sessStart = time.Now()
	_, c.sessSpan = c.tel.tracer.Start(c.ctx, spanSession)
	if err := c.w.line(tag+" OK [CAPABILITY "+clientCaps(up.caps)+"] Logged in", false); err != nil {
		releaseUser()
		up.logout()
		return false
	}
	// Bytes either side sent right behind the login (pipelined
	// commands) are already in the readers; the relay starts with them.
	upInitial, _ := up.br.Peek(up.br.Buffered())
	clientInitial, _ := c.br.Peek(c.br.Buffered())
	sess.upInitial = bytes.Clone(upInitial)
	sess.clientInitial = bytes.Clone(clientInitial)
	c.ready = sess
	return false
}

// loginResult names the result of an upstream login for telemetry, from
// a fixed set, with the upstream's response code when it refused: never
// the upstream's text, which may name the user.
func loginResult(err error) (result, code string) {
	var le *loginError
	switch {
	case err == nil:
		return authSuccess, ""
	case errors.As(err, &le) && le.kind == loginAuthFailed:
		return authFailed, ""
	case errors.As(err, &le) && le.kind == loginRefused:
		return authRefused, le.code
	}
	return authUnavailable, ""
}

// attemptedMechanism names the mechanism of a LOGIN or AUTHENTICATE
// command for telemetry, from a fixed set (a metric label must not take
// whatever a client sends).
func attemptedMechanism(cmd *command) string {
	if cmd.name == "LOGIN" {
		return "LOGIN"
	}
	if len(cmd.args) > 0 {
		switch m := strings.ToUpper(cmd.args[0].val); m {
		case "PLAIN", "LOGIN":
			return m
		}
	}
	return "other"
}

// noteRelayEnd records how a relayed session ended.
func (c *conn) noteRelayEnd(clientErr, upstreamErr error) {
	switch {
	case errors.Is(clientErr, io.EOF):
		c.setOutcomeIfEmpty("client closed")
	case errors.Is(upstreamErr, io.EOF):
		c.setOutcomeIfEmpty("upstream closed")
	}
	c.setOutcomeIfEmpty("connection error")
}

// logEnd writes the connection's summary line.
func (c *conn) logEnd() {
	c.mu.Lock()
	user, sess, outcome := c.user, c.sess, c.outcome
	c.mu.Unlock()
	if outcome == "" {
		outcome = "closed" // as on the span and the metric
	}
	attrs := []any{"duration", time.Since(c.since).Round(time.Millisecond), "outcome", outcome}
	if user != "" {
		attrs = append(attrs, "user", user)
	}
	if sess != nil {
		attrs = append(attrs, "bytes_to_upstream", sess.bytesToUpstream.Load(), "bytes_to_client", sess.bytesToClient.Load())
	}
	c.log.Info("connection closed", attrs...)
}

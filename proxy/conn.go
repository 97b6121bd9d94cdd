package proxy

import (
	"bufio"
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"time"

	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy/clock"
	"github.com/imapguard/imapguard/proxy/imapwire"
)

// conn is one client connection, from accept to close. Before login it is
// the IMAP server: this file has the greeting, the command loop and the
// commands of any state (NOOP, LOGOUT); the others have a file each
// (capability.go, id.go, starttls.go, login.go, authenticate.go), and
// upstream_login.go logs in to the upstream and hands the connection to a
// session (relay.go), which owns both ends from then on.
type conn struct {
	srv         *Server
	id          uint64
	listener    string
	implicitTLS bool     // accepted on an imaps listener
	peer        net.Addr // the TCP peer: the client, or a balancer (PROXY protocol)
	// remote and local are the client's address and the address it
	// connected to: the TCP connection's, or those a trusted PROXY header
	// carried (proxyheader.go). Set before admission; read under mu by
	// others (the admin API).
	remote, local net.Addr
	opts          *Options
	clock         clock.Clock
	since         time.Time       // accepted, on the wall clock (durations, the admin API)
	ctx           context.Context // cancelled when the connection closes
	cancel        context.CancelFunc
	log           *slog.Logger
	w             *clientWriter
	trace         *connTrace

	// Owned by the goroutine serving the connection before login.
	br           *bufio.Reader
	r            *imapwire.Reader
	badCommands  int
	authFailures int
	// untrustedPeer: proxy_protocol is on and the peer is not in
	// trusted_proxies; it is closed if it sends a PROXY header.
	untrustedPeer bool
	releaseUser   func()      // the user's slot, once logged in
	preauth       clock.Timer // preauth_timeout
	ready         relayer     // logged in: relay this once the command loop ends
	clientID      []idField   // the client's ID fields, for the upstream (id.go)

	mu             sync.Mutex
	nc             net.Conn // the TCP connection, or TLS over it
	tlsActive      bool     // nc is TLS (implicit or STARTTLS); written only before login
	user           string
	backend        string // the session's backend with several upstreams (route.go)
	sess           relayer
	closing        bool        // kicked or shut down: a BYE is on its way
	byeTimer       clock.Timer // closes a connection whose BYE is held up
	preauthExpired bool
	outcome        outcome
	refusedBy      string        // the cap that refused the connection
	release        func()        // the connection's slot (idempotent)
	preauthElem    *list.Element // in the server's list of unauthenticated connections
	finishOnce     sync.Once
}

func newConn(s *Server, nc net.Conn, listener string, implicitTLS bool) *conn {
	c := &conn{
		srv:         s,
		id:          s.nextID.Add(1),
		nc:          nc,
		peer:        nc.RemoteAddr(),
		remote:      nc.RemoteAddr(),
		local:       nc.LocalAddr(),
		listener:    listener,
		implicitTLS: implicitTLS,
		opts:        s.options(),
		clock:       s.clock,
	}
	c.since = time.Now()
	c.trace = newConnTrace(s.telemetry(), c)
	c.log = connLogger(s.log, c.id, c.remote, nil, c.trace.traceID())
	c.ctx, c.cancel = context.WithCancel(c.trace.ctx)
	c.w = newClientWriter(nc, c.close, c.record)
	// A line that cannot be written says how the client went.
	c.w.writeFailed = func(err error) { c.noteOutcome(endOf(&writeError{err}, clientSide, clientSide)) }
	return c
}

// serve runs the connection up to login. It returns the session to relay,
// or nil when the connection ends here (the caller then finishes it).
func (c *conn) serve() relayer {
	// The timer covers a PROXY header and an implicit TLS handshake too.
	c.preauth = c.clock.AfterFunc(c.opts.PreauthTimeout, c.preauthExpire)
	defer c.endLogin()
	if c.implicitTLS {
		// Nothing in plaintext to an imaps client, which waits for a
		// ServerHello: not a shutdown's BYE while a PROXY header is
		// awaited either. startTLS unmutes after the handshake.
		c.w.mute()
	}
	if !c.proxyHeader() {
		return nil
	}
	release, checks, err := c.srv.limiter.AdmitConnAt(clientAddr(c.remote), c.clock.Now())
	c.trace.limitEvents(c.trace.span, checks, err)
	var le *limits.Error
	if errors.As(err, &le) && le.Limit == "max_connections" && le.Count == le.Value && !c.opts.KeepUnauthenticated {
		// Make room: a flood of connections that never log in must not
		// lock real users out (Dovecot's login process does the same).
		// Over the cap (it was lowered), closing one would not.
		for victim := c.srv.oldestUnauthenticated(); victim != nil; victim = c.srv.oldestUnauthenticated() {
			if victim.evict(le.Value) {
				release, checks, err = c.srv.limiter.AdmitConnAt(clientAddr(c.remote), c.clock.Now())
				c.trace.limitEvents(c.trace.span, checks, err)
				le = nil
				break
			}
		}
	}
	if errors.As(err, &le) {
		// Refused before any command: no upstream connection is spent.
		c.log.Info("connection refused", "reason", le.Error(), "limit", le.Limit, "count", le.Count, "max", le.Value)
		bye := connLimitBye(le)
		bye.silent = c.implicitTLS // an imaps client waits for a ServerHello, not IMAP
		c.w.respond(bye)
		return nil
	}
	c.mu.Lock()
	c.release = release
	c.mu.Unlock()
	c.srv.unauthenticated(c)
	c.trace.accepted(c.listener)

	// An implicit TLS handshake counts toward the caps like any
	// connection.
	if c.implicitTLS {
		if !c.checkUntrusted() || c.startTLS() != nil {
			return nil
		}
	}
	if c.w.respond(greeting(c.capabilities())) != nil {
		return nil
	}
	if !c.implicitTLS && !c.checkUntrusted() {
		return nil
	}
	for {
		cmd, err := c.r.ReadCommand()
		if err != nil {
			if !c.readError(err) {
				break
			}
			continue
		}
		if !c.dispatch(cmd) {
			break
		}
	}
	// The relay runs on fresh goroutines with small stacks, and the
	// pre-authentication reader and its buffers are dropped: an idle
	// session should hold as little as possible.
	sess := c.ready
	c.ready, c.br, c.r = nil, nil, nil
	return sess
}

// endLogin ends what only the login needed, so that a session does not
// hold it for its life: the preauth timer, and the children of the
// connection's context (the upstream dial's deadline leaves a map in it;
// a cancel frees that, and nothing after the login waits on the
// context).
func (c *conn) endLogin() {
	c.preauth.Stop()
	c.preauth = nil
	c.mu.Lock()
	relaying := c.sess != nil
	c.mu.Unlock()
	if relaying {
		c.cancel()
	}
}

// setReader reads commands from nc (the TCP connection, or TLS after a
// handshake).
func (c *conn) setReader(nc net.Conn) {
	c.br = bufio.NewReaderSize(nc, 4096)
	c.r = imapwire.NewReader(c.br, c.opts.MaxCommandSize, func() error {
		return c.w.respond(literalGoAhead())
	})
}

// preauthExpire ends the wait of a connection that has not logged in
// within preauth_timeout: the blocked read (or TLS handshake) returns a
// deadline error, which readError answers.
func (c *conn) preauthExpire() {
	c.mu.Lock()
	if c.sess != nil {
		c.mu.Unlock()
		return
	}
	c.preauthExpired = true
	// Under the lock, so that a login that has just succeeded cannot
	// clear the deadline before it is set.
	c.nc.SetReadDeadline(time.Unix(1, 0))
	c.mu.Unlock()
}

// dispatch runs one command before authentication and reports whether
// the connection goes on unauthenticated.
func (c *conn) dispatch(cmd *imapwire.Command) bool {
	switch cmd.Name {
	case "CAPABILITY":
		return c.handleCapability(cmd)
	case "NOOP":
		if len(cmd.Args) != 0 {
			return c.bad(bad(cmd.Tag, "NOOP takes no arguments"))
		}
		return c.w.respond(completed(cmd.Tag, "NOOP")) == nil
	case "LOGOUT":
		if len(cmd.Args) != 0 {
			return c.bad(bad(cmd.Tag, "LOGOUT takes no arguments"))
		}
		c.w.respond(logoutBye(), completed(cmd.Tag, "LOGOUT"))
		return false
	case "ID":
		return c.handleID(cmd)
	case "STARTTLS":
		return c.handleStartTLS(cmd)
	case "LOGIN":
		return c.handleLogin(cmd)
	case "AUTHENTICATE":
		return c.handleAuthenticate(cmd)
	}
	if validAfterAuth[cmd.Name] {
		return c.bad(bad(cmd.Tag, "Command not valid before authentication"))
	}
	return c.bad(bad(cmd.Tag, "Unknown command"))
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

// readError answers a failed command read and reports whether the
// connection goes on. This is the one place read errors become responses.
func (c *conn) readError(err error) bool {
	var tb *imapwire.TooBigError
	var se *imapwire.SyntaxError
	switch {
	case errors.As(err, &tb):
		if tb.Fatal {
			c.w.respond(tooBigBye(c.opts.MaxCommandSize))
			return false
		}
		return c.bad(tooBig(tb.Tag, c.opts.MaxCommandSize))
	case errors.As(err, &se):
		return c.bad(bad(se.Tag, se.Msg))
	case errors.Is(err, os.ErrDeadlineExceeded):
		c.mu.Lock()
		expired := c.preauthExpired && !c.closing
		c.mu.Unlock()
		if expired {
			c.w.respond(preauthTimeoutBye(c.opts.PreauthTimeout))
		}
		return false
	default:
		// A FIN (also in the middle of a literal) or a reset is the
		// client's; anything else failed reading from it.
		o := endOf(err, clientSide, clientSide)
		if o == outcomeConnectionError {
			o = outcomeClientError
			c.log.Debug("client read failed", "err", err)
		}
		c.noteOutcome(o)
		return false
	}
}

// bad answers an invalid command and closes the connection after
// max_bad_commands of them (ALPACA: a non-IMAP client sent here by an
// attacker is cut off quickly).
func (c *conn) bad(r response) bool {
	return c.countedFailure(r, &c.badCommands, c.opts.MaxBadCommands, tooManyBadCommands)
}

// countedFailure answers r, counts it in *n and closes the connection
// with bye(max) once max of them are reached. It reports whether the
// connection goes on.
func (c *conn) countedFailure(r response, n *int, max int, bye func(int) response) bool {
	*n++
	if c.w.respond(r) != nil {
		return false
	}
	if *n >= max {
		c.w.respond(bye(max))
		return false
	}
	return true
}

// record notes what a response says of the connection (the writer calls
// it for each response with an outcome or a refusal): the outcome of a
// closing response, unless one is known already (the first cause wins: a
// kick is not turned into the idle timeout whose BYE comes after it),
// and the refusal for telemetry.
func (c *conn) record(r response) {
	if r.closing && r.outcome != outcomeClosed {
		c.mu.Lock()
		if c.outcome == outcomeClosed {
			c.outcome = r.outcome
			if r.outcome == outcomeRefused {
				c.refusedBy = r.refusal
			}
		}
		c.mu.Unlock()
	}
	if r.refusal != "" {
		c.trace.refused(r.refusal, r.closing)
	}
}

// noteOutcome records an outcome the proxy observed (a close, an error),
// unless one is known already.
func (c *conn) noteOutcome(o outcome) {
	c.mu.Lock()
	if c.outcome == outcomeClosed {
		c.outcome = o
	}
	c.mu.Unlock()
}

// close closes the client connection and, once relaying, the upstream
// one; handlers then unwind by their normal path.
func (c *conn) close() {
	c.cancel()
	c.mu.Lock()
	sess, nc := c.sess, c.nc
	c.mu.Unlock()
	if sess != nil {
		sess.close()
		return
	}
	nc.Close()
}

// shutdown tells the client BYE (at a response boundary when relaying)
// and closes the connection.
func (c *conn) shutdown(text string) { c.closeWithBye(outcomeShutdown, text) }

// kick is shutdown on an administrator's request.
func (c *conn) kick(text string) { c.closeWithBye(outcomeKicked, text) }

// closeWithBye says BYE and closes without waiting: the caller (Kick,
// Shutdown) may be closing many connections, and one whose client has
// stopped reading must not hold it up. The BYE goes out at the next
// response boundary; if that does not come within byeGrace, the
// connection is closed without it.
func (c *conn) closeWithBye(o outcome, text string) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	c.closing = true
	if c.outcome == outcomeClosed {
		c.outcome = o
	}
	c.byeTimer = c.clock.AfterFunc(byeGrace, c.close)
	c.mu.Unlock()
	// The closing line closes the connection and cancels its context,
	// which abandons an upstream login under way; the BYE goes first.
	go c.w.respond(unavailableBye(text))
}

// evict closes a connection that has not logged in, to make room for a
// new one under max_connections: its slot is free at once, and it is told
// BYE. It reports false, and does nothing, if the connection logged in
// meanwhile: a session is never closed for a newcomer.
func (c *conn) evict(max int) bool {
	c.mu.Lock()
	if c.sess != nil {
		c.mu.Unlock()
		return false
	}
	release := c.release
	already := c.closing
	c.closing = true // a login that has not committed yet is abandoned
	c.mu.Unlock()
	release()
	if !already {
		c.log.Info("closing the oldest unauthenticated connection to make room", "max_connections", max)
		go c.w.respond(evictedBye(max))
	}
	return true
}

// finish ends the connection, once: closes it, frees its slots, logs its
// summary, ends its spans and takes it off the server's registry. res is
// the session's result, if the connection was relayed.
func (c *conn) finish(res *result) {
	c.finishOnce.Do(func() {
		c.mu.Lock()
		if c.byeTimer != nil {
			c.byeTimer.Stop()
		}
		c.mu.Unlock()
		c.close()
		if res != nil {
			c.noteOutcome(res.outcome)
		}
		if c.releaseUser != nil {
			c.releaseUser()
		}
		c.srv.authenticated(c)
		c.mu.Lock()
		release := c.release
		c.mu.Unlock()
		if release != nil {
			c.logEnd(res)
			release()
		}
		c.mu.Lock()
		sum := connSummary{outcome: c.outcome, refusedBy: c.refusedBy, user: c.user,
			recordUser: c.srv.options().RecordUser, authFailures: c.authFailures, badCommands: c.badCommands, res: res}
		c.mu.Unlock()
		c.trace.end(sum)
		c.srv.forget(c, res)
	})
}

// logEnd writes the connection's summary line.
func (c *conn) logEnd(res *result) {
	c.mu.Lock()
	user, o := c.user, c.outcome
	c.mu.Unlock()
	// Attrs, not key-value pairs: no value is boxed into an interface.
	attrs := make([]slog.Attr, 0, 5)
	attrs = append(attrs, slog.Duration("duration", time.Since(c.since).Round(time.Millisecond)), slog.String("outcome", o.String()))
	if user != "" {
		attrs = append(attrs, slog.String("user", user))
	}
	if res != nil {
		attrs = append(attrs, slog.Int64("bytes_to_upstream", res.toUpstream), slog.Int64("bytes_to_client", res.toClient))
	}
	c.log.LogAttrs(context.Background(), slog.LevelInfo, "connection closed", attrs...)
}

// logPanic logs a recovered panic with its stack.
func logPanic(log *slog.Logger, v any) {
	log.Error("panic in connection handler", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
}

// info describes the connection for the admin API.
func (c *conn) info() ConnInfo {
	c.mu.Lock()
	i := ConnInfo{ID: c.id, Client: c.remote.String(), Listener: c.listener,
		User: c.user, Backend: c.backend, TLS: c.tlsActive, Since: c.since}
	if c.remote != c.peer { // setAddrs replaced it (not for a LOCAL header)
		i.Via = c.peer.String()
	}
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
	up, down := sess.bytes()
	return true, up, down
}

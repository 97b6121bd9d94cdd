package proxy

import (
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imapguard/imapguard/proxy/clock"
	"github.com/imapguard/imapguard/proxy/imapwire"
	"github.com/imapguard/imapguard/proxy/park"
)

// A session relays an authenticated connection. Its invariants:
//
//   - Goroutines: at most two, one per direction (copyClientToUpstream,
//     copyUpstreamToClient, in copy.go). A direction idle for parkAfter
//     gives its goroutine up and parks (package park); it resumes on a
//     new one when its socket turns readable. Timers (idle_timeout, the
//     half-close linger) run on the clock's goroutines.
//   - Ownership: from login on, the session owns both connections and the
//     client writer. close closes each connection exactly once
//     (closeOnce); it runs after a closing line (the writer's onClose),
//     when either direction ends, from the linger timer, and from the
//     conn when it is kicked or shut down. Nothing else closes them.
//   - Reporting: when both directions have ended, end runs once (the
//     last one to end calls it) and reports a result to done; the session
//     calls nothing else of its connection.
//   - Locks: session.mu guards closing, the directions' parked flags and
//     the linger timer; it is held while calling the parker (which has a
//     lock of its own) and never while taking another. clientWriter.mu is
//     never held while session.mu is taken: the writer calls onClose
//     after releasing it.
type session struct {
	client  net.Conn // TCP, or TLS over it
	up      net.Conn
	w       *clientWriter
	log     *slog.Logger
	clock   clock.Clock
	parker  park.Parker
	sweeper *park.Sweeper
	idle    time.Duration // idle_timeout
	max     int           // max_command_size
	done    func(result)
	// onCommand is the server's test hook (Server.onCommand).
	onCommand func(tag []byte, size int, forwarded bool)

	lastActivity atomic.Int64 // on clock, unix nanoseconds
	idleTimer    clock.Timer
	gate         imapwire.LiteralGate

	toUpstream atomic.Int64
	toClient   atomic.Int64
	loggingOut atomic.Bool // the client sent LOGOUT
	clientEOF  atomic.Bool // the client direction ended with an end of stream

	cmd                    *commandCopier // client to upstream
	resp                   *respCopier    // upstream to client
	clientDir, upstreamDir *direction
	live                   atomic.Int32 // directions not yet ended
	clientErr, upErr       error        // how each ended (set once, before live drops)
	observed               outcome      // how the relay ended as seen; first wins (under mu)

	closed    chan struct{} // closed by close: waits on the gate give up
	mu        sync.Mutex
	closing   bool
	linger    clock.Timer // bounds the upstream direction after a client half-close
	closeOnce sync.Once

	upInitial     []byte // read from the upstream during login, not yet relayed
	clientInitial []byte // pipelined by the client behind its login
}

// relayer is an authenticated session as its conn sees it: the
// goroutine relay (session, here) or the event-loop relay (loopSession,
// relay_loop_linux.go).
type relayer interface {
	// setInitial gives it the bytes either side sent right behind the
	// login, already read.
	setInitial(up, client []byte)
	// start starts relaying; the session finishes its conn when it ends.
	start()
	// close closes both connections at once; the session then ends.
	close()
	// closeAfterFlush is the client writer's onClose: a closing line was
	// written, or queued, and the session closes once it is out.
	closeAfterFlush()
	// bytes returns the bytes relayed so far each way.
	bytes() (toUpstream, toClient int64)
}

// result is what a session reports when it ends.
type result struct {
	outcome              outcome // how the relay ended, as the session saw it
	toUpstream, toClient int64   // bytes relayed each way
}

// newSession returns the session that will relay client and up, writing
// to the client through w, with the connection's logger and the server's
// clock, parker and sweeper; done is told its result once.
func newSession(c *conn, up net.Conn) *session {
	return &session{
		client:    c.nc,
		up:        up,
		w:         c.w,
		log:       c.log,
		clock:     c.clock,
		parker:    c.srv.parker,
		sweeper:   &c.srv.sweeper,
		idle:      c.opts.IdleTimeout,
		max:       c.opts.MaxCommandSize,
		done:      func(r result) { c.finish(&r) },
		onCommand: c.srv.onCommand,
		closed:    make(chan struct{}),
	}
}

// bytes returns the bytes relayed so far, to the upstream and to the
// client.
func (s *session) bytes() (toUpstream, toClient int64) {
	return s.toUpstream.Load(), s.toClient.Load()
}

func (s *session) setInitial(up, client []byte) { s.upInitial, s.clientInitial = up, client }

// start runs the session: on the calling goroutine (the one that served
// the login) for a plaintext client, on a fresh one with a small stack
// for a TLS client (see Server.handle).
func (s *session) start() {
	if _, tlsClient := s.client.(*tls.Conn); tlsClient {
		go s.runRecovered()
		return
	}
	s.runRecovered()
}

func (s *session) runRecovered() {
	defer func() {
		// The directions recover inside; a panic here came before they
		// started.
		if v := recover(); v != nil {
			logPanic(s.log, v)
			s.close()
			s.done(result{outcome: outcomeConnectionError})
		}
	}()
	s.run()
}

// closeAfterFlush: the writer wrote the closing line before calling it.
func (s *session) closeAfterFlush() { s.close() }

// run starts the relay: the client direction on this goroutine, the
// upstream direction on a new one. The session ends (end) when both have.
func (s *session) run() {
	f := imapwire.NewCommandFramer(s.max, &s.gate)
	f.OnCommand = s.onCommand
	cc := newCommandCopier(s.client, s.up, f, s.clientInitial)
	cc.noteActivity = s.noteActivity
	cc.sent = &s.toUpstream
	cc.onLogout = func() { s.loggingOut.Store(true) }
	cc.refuse = func(r imapwire.Refusal) { s.w.respond(framerRefusal(r, s.max)) }
	cc.await = func() bool { return s.gate.Wait(s.closed) }
	rc := newRespCopier(s.up, s.w, imapwire.NewResponseFramer(&s.gate), relayBufSize, s.upInitial, func(n int64) {
		s.toClient.Add(n)
		s.noteActivity()
	})
	s.upInitial, s.clientInitial = nil, nil

	s.cmd, s.resp = cc, rc
	// Under the lock: a shutdown or kick may close the session (close
	// reads the directions) before it has started.
	s.mu.Lock()
	s.clientDir = &direction{s: s, name: "client", reader: cc.idle, run: s.copyClientToUpstream, ended: s.clientEnded}
	s.upstreamDir = &direction{s: s, name: "upstream", reader: rc.idle, run: s.copyUpstreamToClient, ended: s.upstreamEnded}
	s.mu.Unlock()
	s.live.Store(2)
	s.noteActivity()
	s.idleTimer = s.clock.AfterFunc(s.idle, s.checkIdle)
	if cc.idle != nil || rc.idle != nil {
		s.sweeper.Add(s)
	}
	go s.upstreamDir.pump()
	s.clientDir.pump()
}

// copyClientToUpstream frames client commands into the upstream, until
// the client ends or the direction parks.
func (s *session) copyClientToUpstream() error { return s.cmd.run() }

// copyUpstreamToClient relays upstream responses, noting response
// boundaries for injected lines, until the upstream ends or the direction
// parks.
func (s *session) copyUpstreamToClient() error { return s.resp.run() }

func (s *session) noteActivity() { s.lastActivity.Store(s.clock.Now().UnixNano()) }

// EvictIdle is called by the sweeper: the waiting reads of a session with
// no traffic since idleSince are evicted, so that its directions park.
func (s *session) EvictIdle(idleSince time.Time) {
	if s.lastActivity.Load() > idleSince.UnixNano() {
		return
	}
	for _, d := range [2]*direction{s.clientDir, s.upstreamDir} {
		// Parked directions are not waiting: a load, no lock.
		if d.reader != nil && d.reader.waiting() {
			d.reader.evict()
		}
	}
}

// checkIdle runs from the idle timer. A session with no traffic either
// way for idle_timeout is told BYE at a response boundary and closed.
func (s *session) checkIdle() {
	since := s.clock.Now().Sub(time.Unix(0, s.lastActivity.Load()))
	if since < s.idle {
		s.idleTimer.Reset(s.idle - since)
		return
	}
	s.log.Info("closing idle session", "idle_timeout", s.idle)
	bye := idleTimeoutBye(s.idle)
	// An upstream stalled inside a response for the whole timeout leaves
	// no boundary to wait for.
	bye.silent = s.w.inResponse()
	s.w.respond(bye)
}

// close closes both connections, once; running directions then unwind,
// and parked ones are finished here.
func (s *session) close() {
	var unparked []*direction
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closing = true
		close(s.closed)
		for _, d := range [2]*direction{s.clientDir, s.upstreamDir} {
			// Off the epoll set before the descriptor can be reused.
			if d != nil && d.parked && s.parker.Unpark(d.reader.fd, d) {
				unparked = append(unparked, d)
			}
		}
		s.mu.Unlock()
		// The connections first: a relayed write (copyLiteral) may hold
		// the writer's lock until its connection fails.
		s.client.Close()
		s.up.Close()
		s.w.abandon()
	})
	for _, d := range unparked {
		d.finish(net.ErrClosed)
	}
}

func (s *session) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// clientEnded handles the end of the client direction.
func (s *session) clientEnded(err error) {
	s.clientErr = err
	switch {
	case errors.Is(err, imapwire.ErrCommandTooBig):
		s.log.Info("oversize command after part of it was relayed; closing", "max_command_size", s.max)
		s.w.respond(tooBigBye(s.max))
	case errors.Is(err, imapwire.ErrCommandInvalid):
		s.log.Info("invalid line in a command already partly relayed; closing")
		s.w.respond(invalidCommandBye())
	case err == io.EOF:
		// The client half-closed: let the upstream finish what it is
		// sending, for a bounded time. The client ended the session,
		// whoever closes last; whether with a FIN or a reset that a write
		// to it consumed (Linux reports a reset once, then an end of
		// stream), the upstream direction's end tells.
		if s.loggingOut.Load() {
			s.observe(outcomeLogout)
		}
		s.clientEOF.Store(true)
		if tc, ok := s.up.(interface{ CloseWrite() error }); ok {
			tc.CloseWrite()
		}
		s.mu.Lock()
		s.linger = s.clock.AfterFunc(lingerTimeout, s.close)
		s.mu.Unlock()
	default:
		// Reset, or closed by the proxy: nothing more can reach the
		// client, so free the upstream and the slots at once.
		s.observe(endOf(err, clientSide, upstreamSide))
		s.close()
	}
}

// upstreamEnded handles the end of the upstream direction: nothing more
// can reach the client, so the client direction ends too.
func (s *session) upstreamEnded(err error) {
	s.upErr = err
	o := endOf(err, upstreamSide, clientSide)
	switch {
	case o == outcomeUpstreamClosed && s.loggingOut.Load():
		o = outcomeLogout // the answer to the client's LOGOUT
	case o == outcomeUpstreamClosed && s.clientEOF.Load():
		o = outcomeClientClosed // its answer to the client's close
	}
	s.observe(o)
	s.close()
}

// observe records how the relay ended, unless that is known already; an
// end the proxy caused (outcomeClosed) records nothing.
func (s *session) observe(o outcome) {
	s.mu.Lock()
	if s.observed == outcomeClosed {
		s.observed = o
	}
	s.mu.Unlock()
}

// end runs once, after both directions have ended, and reports.
func (s *session) end() {
	s.idleTimer.Stop()
	s.mu.Lock()
	if s.linger != nil {
		s.linger.Stop()
	}
	s.mu.Unlock()
	s.close()
	s.sweeper.Remove(s)
	if s.clientEOF.Load() {
		s.observe(outcomeClientClosed)
	}
	s.observe(outcomeConnectionError) // if nothing said otherwise
	s.mu.Lock()
	o := s.observed
	s.mu.Unlock()
	s.done(result{outcome: o, toUpstream: s.toUpstream.Load(), toClient: s.toClient.Load()})
}

// direction is one copy loop of a session, resumable: run returns errPark
// when the loop was evicted while waiting, and is called again when the
// socket turns readable.
type direction struct {
	s      *session
	name   string
	run    func() error
	ended  func(error)
	reader *idleReader // nil: this direction cannot park
	parked bool        // guarded by s.mu
}

// Resume continues a parked direction (park.Resumer).
func (d *direction) Resume() { d.pump() }

// pump runs d until it parks or ends.
func (d *direction) pump() {
	defer func() {
		if v := recover(); v != nil {
			logPanic(d.s.log, v)
			d.s.close()
			d.finish(errors.New("panic"))
		}
	}()
	for {
		err := d.run()
		if err == errPark {
			if d.park() {
				return
			}
			if !d.s.isClosing() {
				continue // could not park: wait on this goroutine
			}
			err = net.ErrClosed
		}
		d.finish(err)
		return
	}
}

// park hands d to the parker, unless the session is closing.
func (d *direction) park() bool {
	s := d.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing || d.reader == nil || !s.parker.Park(d.reader.fd, d) {
		return false
	}
	d.parked = true
	return true
}

func (d *direction) finish(err error) {
	d.ended(err)
	if d.s.live.Add(-1) == 0 {
		d.s.end()
	}
}

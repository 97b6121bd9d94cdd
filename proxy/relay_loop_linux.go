package proxy

import (
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/imapguard/imapguard/proxy/clock"
	"github.com/imapguard/imapguard/proxy/evloop"
	"github.com/imapguard/imapguard/proxy/imapwire"
)

// A loopSession relays an authenticated plaintext session on an event
// loop (relay = "loop"): both sockets are taken over from the login phase
// as raw non-blocking descriptors and registered, edge-triggered, with
// one of the server's loops. It does what the goroutine relay (relay.go,
// copy.go) does, in the same order and with the same framers, but never
// waits:
//
//   - Reads go until a short read or EAGAIN; an edge says when to read
//     again. Writes that the socket does not take are queued
//     (sockQueue); while a queue holds more than queueMax, the side that
//     feeds it is not read (backpressure).
//   - Where the goroutine relay blocks — the framer's Await on the
//     upstream's answer, a refusal waiting for a response boundary — the
//     client direction stops at that point of its step (phase) and goes
//     on when the upstream's bytes have been scanned.
//   - Large literals are spliced through a pipe pair held only while the
//     literal is in flight (splicer).
//   - idle_timeout is a deadline in the loop's timer heap; an idle
//     session holds no goroutine, no buffer and no timer of its own.
//
// Ownership: from start on, the loop alone touches the session's fields
// but for the client queue (locked: the client writer writes the proxy's
// own lines through it from any goroutine), the byte counters (atomic)
// and the started/early flags (mu), which settle a close that races the
// hand-over. Other goroutines reach it through close and closeAfterFlush
// (posted). The pumps, which move the bytes, are in
// relay_loop_pump_linux.go.
type loopSession struct {
	c  *conn
	lp *eventLoop
	w  *clientWriter
	up net.Conn // until takeOver

	mu      sync.Mutex // started and early, while start may race a close
	started bool
	early   bool        // closed before it started
	cq      clientQueue // to the client
	uq      sockQueue   // to the upstream
	cfd     int
	ufd     int
	cid     int32
	uid     int32
	idle    time.Duration

	gate  imapwire.LiteralGate
	f     *imapwire.CommandFramer
	rf    *imapwire.ResponseFramer
	st    imapwire.Step
	phase uint8 // how far the client direction carried out st

	cb            cmdBuf  // the client's bytes
	ubufp         *[]byte // the upstream's bytes, pooled; nil when empty
	carry         int     // bytes held back at the start of ubuf
	upFresh       bool    // ubuf holds bytes read during login, not yet scanned
	cspl, uspl    *splicer
	deadline      evloop.Deadline // idle_timeout, on the server's clock
	stuck         evloop.Deadline // the client's queue made no progress for idle_timeout (wall clock)
	last          time.Time       // last traffic either way
	linger, flush clock.Timer

	clientIn, upIn   bool // the socket may have bytes: read until it has none
	clientHup, upHup bool // its peer closed (or failed): read until the end
	clientDone       bool // the client direction ended
	shutWr           bool // the client half-closed: half-close the upstream once uq is empty
	loggingOut       bool
	clientEOF        bool
	closing          bool // a closing line was written: close once cq is empty
	dead             bool // closed
	observed         outcome

	toUpstream, toClient atomic.Int64

	upInitial, clientInitial []byte
}

// eventLoop is one of the server's loops with its timers: on the
// server's clock for idle_timeout, and on the wall clock for the writes
// to a client that does not read (what a socket's write deadline is for
// the goroutine relay).
type eventLoop struct {
	*evloop.Loop
	timers *evloop.Timers
	wall   *evloop.Timers
}

// loopSupported reports whether the event-loop relay works here.
func loopSupported() bool { return evloop.Supported() }

func newEventLoop(clk clock.Clock) (*eventLoop, error) {
	l, err := evloop.New()
	if err != nil {
		return nil, err
	}
	return &eventLoop{Loop: l, timers: evloop.NewTimers(clk, l.Post), wall: evloop.NewTimers(clock.Real, l.Post)}, nil
}

// loopable reports whether a session between client and up can run on an
// event loop: both plain TCP (TLS keeps the goroutine relay).
func loopable(client, up net.Conn) bool {
	_, ok1 := client.(*net.TCPConn)
	_, ok2 := up.(*net.TCPConn)
	return ok1 && ok2
}

// newLoopSession returns the session that will relay c's client and up
// on lp. Nothing is taken over yet: start does that, after the login's
// answer has been written.
func newLoopSession(c *conn, up net.Conn, lp *eventLoop) *loopSession {
	return &loopSession{c: c, lp: lp, w: c.w, up: up, cfd: -1, ufd: -1, cid: -1, uid: -1,
		idle: c.opts.IdleTimeout, observed: outcomeClosed}
}

// takeOver takes the sockets over from the login phase: the session owns
// duplicates of their descriptors, and the net.Conns are closed (off Go's
// poller).
func (s *loopSession) takeOver() error {
	cfd, err := dupSocket(s.c.nc.(*net.TCPConn))
	if err != nil {
		return err
	}
	ufd, err := dupSocket(s.up.(*net.TCPConn))
	if err != nil {
		syscall.Close(cfd)
		return err
	}
	s.cfd, s.ufd = cfd, ufd
	s.cq.q.fd = cfd
	s.uq.fd = ufd
	s.w.setConn(&s.cq) // before the net.Conn closes: a kick's BYE may be on its way
	s.c.nc.Close()
	s.up.Close()
	s.up = nil
	s.f = imapwire.NewCommandFramer(s.c.opts.MaxCommandSize, &s.gate)
	s.f.OnCommand = s.c.srv.onCommand
	s.cb.maxBuf = max(s.f.Max()+512, cmdBufSize)
	s.rf = imapwire.NewResponseFramer(&s.gate)
	s.deadline.F = s.idleCheck
	s.stuck.F = s.writeTimedOut
	return nil
}

// dupSocket returns a close-on-exec duplicate of tc's descriptor, which
// shares its (non-blocking) open file.
func dupSocket(tc *net.TCPConn) (int, error) {
	rc, err := tc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(sfd uintptr) {
		r, _, e := syscall.Syscall(syscall.SYS_FCNTL, sfd, syscall.F_DUPFD_CLOEXEC, 0)
		if e != 0 {
			derr = e
			return
		}
		fd = int(r)
	}); err != nil {
		return -1, err
	}
	return fd, derr
}

func (s *loopSession) setInitial(up, client []byte) { s.upInitial, s.clientInitial = up, client }

func (s *loopSession) bytes() (toUpstream, toClient int64) {
	return s.toUpstream.Load(), s.toClient.Load()
}

// start takes the sockets over and hands the session to its loop.
func (s *loopSession) start() {
	s.mu.Lock()
	if s.early {
		s.mu.Unlock()
		s.c.finish(&result{outcome: outcomeConnectionError})
		return
	}
	err := s.takeOver()
	s.started = err == nil
	s.mu.Unlock()
	if err != nil {
		s.c.log.Warn("event loop: cannot take the session's sockets over", "err", err)
		s.closeEarly()
		s.c.finish(&result{outcome: outcomeConnectionError})
		return
	}
	if !s.lp.Post(s.begin) {
		s.closeNow() // the loop is closed: the server is shutting down
	}
}

// closeEarly closes a session that has not started: its net.Conns.
// It reports false if the session has started (the loop owns it).
func (s *loopSession) closeEarly() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return false
	}
	s.early = true
	s.c.nc.Close()
	if s.up != nil {
		s.up.Close()
	}
	s.w.abandon()
	return true
}

// close closes the session at once (a kick's or shutdown's grace ran
// out, the server's forced close): from any goroutine.
func (s *loopSession) close() {
	if s.closeEarly() {
		return
	}
	if !s.lp.Post(s.closeNow) {
		s.closeNow()
	}
}

// closeAfterFlush is the client writer's onClose: a closing line was
// written (or queued); the session closes once the client has it.
func (s *loopSession) closeAfterFlush() {
	if s.closeEarly() {
		return
	}
	if !s.lp.Post(s.closeWhenFlushed) {
		s.closeNow()
	}
}

// begin runs on the loop: registers both sockets and relays what either
// side sent right behind the login.
func (s *loopSession) begin() {
	var err error
	if s.cid, err = s.lp.Add(s.cfd, (*loopClient)(s)); err != nil {
		s.observe(outcomeConnectionError)
		s.closeNow()
		return
	}
	if s.uid, err = s.lp.Add(s.ufd, (*loopUpstream)(s)); err != nil {
		s.observe(outcomeConnectionError)
		s.closeNow()
		return
	}
	s.last = s.lp.timers.Now()
	s.lp.timers.Schedule(&s.deadline, s.last.Add(s.idle))
	if len(s.clientInitial) > 0 {
		s.cb.takeBuf(len(s.clientInitial))
		s.cb.w = copy(s.cb.buf, s.clientInitial)
	}
	if len(s.upInitial) > 0 {
		s.ubufp = getBuf(relayBufSize)
		s.carry = copy((*s.ubufp)[:relayBufSize], s.upInitial)
		s.upFresh = true
	}
	s.upInitial, s.clientInitial = nil, nil
	s.clientIn, s.upIn = true, true
	s.pump()
}

// loopClient and loopUpstream are the session as the handler of each of
// its sockets.
type (
	loopClient   loopSession
	loopUpstream loopSession
)

func (h *loopClient) Event(ev uint32) {
	s := (*loopSession)(h)
	if ev&(evloop.In|evloop.RDHup|evloop.Err|evloop.Hup) != 0 {
		s.clientIn = true
		s.clientHup = s.clientHup || ev&(evloop.RDHup|evloop.Err|evloop.Hup) != 0
	}
	if ev&(evloop.Out|evloop.Err|evloop.Hup) != 0 && s.cq.len() > 0 {
		s.flushClient()
	}
	s.pump()
}

func (h *loopUpstream) Event(ev uint32) {
	s := (*loopSession)(h)
	if ev&(evloop.In|evloop.RDHup|evloop.Err|evloop.Hup) != 0 {
		s.upIn = true
		s.upHup = s.upHup || ev&(evloop.RDHup|evloop.Err|evloop.Hup) != 0
	}
	if ev&(evloop.Out|evloop.Err|evloop.Hup) != 0 && s.uq.len() > 0 {
		if _, err := s.uq.flush(); err != nil {
			s.clientEnded(&writeError{err})
		} else {
			s.touch()
		}
		s.halfCloseUpstream()
	}
	s.pump()
}

// flushClient sends what is queued for the client.
func (s *loopSession) flushClient() {
	empty, err := s.cq.flush()
	if err != nil {
		s.upstreamEnded(&writeError{err})
		return
	}
	s.touch()
	if empty && s.closing {
		s.closeNow()
		return
	}
	s.watchClientQueue(true)
}

// watchClientQueue bounds how long the client may leave its queue
// unread: idle_timeout on the wall clock from the last progress, as the
// goroutine relay's write deadline. progress says the queue moved.
func (s *loopSession) watchClientQueue(progress bool) {
	switch {
	case !s.clientBlocked():
		s.lp.wall.Cancel(&s.stuck)
	case progress || !s.stuck.Scheduled():
		s.lp.wall.Schedule(&s.stuck, time.Now().Add(s.idle))
	}
}

// clientBlocked reports whether bytes wait for the client to read: in
// its queue, or in the pipe of a literal being spliced to it.
func (s *loopSession) clientBlocked() bool {
	return s.cq.len() > 0 || (s.uspl != nil && s.uspl.inPipe > 0)
}

// writeTimedOut runs when the client's queue has made no progress for
// idle_timeout.
func (s *loopSession) writeTimedOut(time.Time) {
	if s.dead || !s.clientBlocked() {
		return
	}
	s.observe(outcomeWriteTimeout)
	s.closeNow()
}

func (s *loopSession) touch() { s.last = s.lp.timers.Now() }

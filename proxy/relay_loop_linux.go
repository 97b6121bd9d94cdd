package proxy

import (
	"errors"
	"io"
	"net"
	"os"
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
// and closeReq. Other goroutines reach it through close (posted).
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

// The phases of the client direction's step.
const (
	phaseNext   = iota // call Next
	phaseRefuse        // answer a refusal (may wait for room at a boundary), then send the probe
	phaseAwait         // wait for the upstream's answer (st.Await)
	phaseMore          // read more, or stream a literal (st.More)
)

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

// pump runs both directions until neither can go on.
func (s *loopSession) pump() {
	defer func() {
		if v := recover(); v != nil {
			logPanic(s.c.log, v)
			s.closeNow()
		}
	}()
	// The client's side first: what the upstream relays may open its
	// way (the gate, room at a boundary), never the other way round, so
	// the client's side goes again after each round that moved upstream
	// bytes.
	for !s.dead && !s.closing {
		s.pumpClient()
		if !s.pumpUpstream() {
			return
		}
	}
}

// pumpClient frames the client's commands into the upstream, as
// commandCopier does, until it must wait.
func (s *loopSession) pumpClient() {
	for !s.dead && !s.closing && !s.clientDone {
		if s.cspl != nil {
			k, err := s.cspl.run(s.cfd, s.ufd, s.uq.len() == 0, &s.clientIn)
			if k.in > 0 {
				s.f.Streamed(k.in)
				s.touch()
			}
			if k.out > 0 {
				s.toUpstream.Add(k.out)
				s.touch()
			}
			if err != nil {
				s.clientEnded(err)
				return
			}
			if !s.cspl.done() {
				return
			}
			s.cspl.close()
			s.cspl = nil
			s.phase = phaseNext
			continue
		}
		if s.uq.len() > queueMax || s.cq.len() > queueMax {
			return // backpressure: the upstream or the client is not reading
		}
		st := &s.st
		switch s.phase {
		case phaseNext:
			err := s.f.Next(s.cb.buf[s.cb.r:s.cb.w], st)
			if st.Logout {
				s.loggingOut = true
			}
			if err != nil {
				s.clientEnded(err)
				return
			}
			if st.Drop > 0 {
				if !s.forward() {
					return
				}
				s.cb.r += st.Drop
				s.cb.out = s.cb.r
			}
			s.cb.r += st.Forward
			if st.Flush && !s.forward() {
				return
			}
			s.phase = phaseRefuse
			fallthrough
		case phaseRefuse:
			if st.Refuse != imapwire.RefuseNone {
				if !s.w.tryRespond(framerRefusal(s.f.Refusal(st), s.f.Max())) {
					return // room comes at the upstream's next boundary
				}
				st.Refuse = imapwire.RefuseNone
			}
			if st.Probe != nil {
				// The proxy's own command: not counted, like commandCopier.
				s.touch()
				if err := s.uq.send(st.Probe); err != nil {
					s.clientEnded(&writeError{err})
					return
				}
				st.Probe = nil
			}
			s.phase = phaseAwait
			fallthrough
		case phaseAwait:
			if st.Await && !s.gate.Ready() {
				return
			}
			s.phase = phaseMore
			fallthrough
		case phaseMore:
			if !st.More {
				s.phase = phaseNext
				continue
			}
			if st.Stream >= spliceMin && s.cb.r == s.cb.w {
				if !s.forward() {
					return
				}
				sp, err := newSplicer(st.Stream)
				if err == nil {
					s.cb.releaseBuf()
					s.cb.r, s.cb.w, s.cb.out = 0, 0, 0
					s.cspl = sp
					continue
				}
				// No pipe: the octets go through the buffer.
			}
			if !s.forward() {
				return
			}
			if !s.clientIn {
				if s.cb.r == s.cb.w {
					s.cb.releaseBuf()
					s.cb.r, s.cb.w, s.cb.out = 0, 0, 0
				}
				return
			}
			if !s.readClient() {
				return
			}
			s.phase = phaseNext
		}
	}
}

// forward sends cb.buf[out:r] to the upstream; false: the session ended.
func (s *loopSession) forward() bool {
	if s.cb.r > s.cb.out {
		s.touch()
		err := s.uq.send(s.cb.buf[s.cb.out:s.cb.r])
		s.toUpstream.Add(int64(s.cb.r - s.cb.out))
		s.cb.out = s.cb.r
		if err != nil {
			s.clientEnded(&writeError{err})
			return false
		}
	}
	s.cb.out = s.cb.r
	return true
}

// readClient reads more of the client's bytes, as commandCopier.fill;
// false: the client direction ended.
func (s *loopSession) readClient() bool {
	switch {
	case s.cb.bufp == nil:
		s.cb.takeBuf(0)
	case s.cb.r == s.cb.w:
		s.cb.r, s.cb.w, s.cb.out = 0, 0, 0
	default:
		s.cb.makeRoom()
	}
	space := s.cb.buf[s.cb.w:]
	n, err := readFD(s.cfd, space)
	switch {
	case n > 0:
		s.cb.w += n
		s.touch()
		if n < len(space) && !s.clientHup {
			s.clientIn = false // drained; the next bytes bring an edge
		}
		return true
	case err == syscall.EAGAIN:
		s.clientIn = false
		return true
	case err == nil:
		s.clientEnded(io.EOF)
	default:
		s.clientEnded(err)
	}
	return false
}

// readFD reads, retrying EINTR; a read error is an *os.SyscallError.
func readFD(fd int, p []byte) (int, error) {
	for {
		n, err := rawRead(fd, p)
		switch err {
		case nil:
			return n, nil
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return 0, err
		}
		return 0, os.NewSyscallError("read", err)
	}
}

// pumpUpstream relays the upstream's responses to the client, as
// respCopier does, until it must wait; it reports whether it moved.
func (s *loopSession) pumpUpstream() (moved bool) {
	for !s.dead && !s.closing {
		if s.uspl != nil {
			k, err := s.uspl.run(s.ufd, s.cfd, s.cq.len() == 0, &s.upIn)
			if k.in > 0 {
				s.rf.Skip(k.in)
				s.toClient.Add(k.in)
				s.touch()
				moved = true
			}
			if k.out > 0 {
				s.touch()
				moved = true
			}
			if err != nil {
				s.upstreamEnded(err)
				return true
			}
			s.watchClientQueue(k.out > 0)
			if !s.uspl.done() {
				return moved
			}
			s.uspl.close()
			s.uspl = nil
			continue
		}
		if s.cq.len() > queueMax {
			return moved // backpressure: the client is not reading
		}
		var n int
		var rerr error
		switch {
		case s.upFresh:
			s.upFresh = false
			s.toClient.Add(int64(s.carry))
		case !s.upIn:
			if s.carry == 0 {
				putBuf(s.ubufp)
				s.ubufp = nil
			}
			return moved
		default:
			if s.ubufp == nil {
				s.ubufp = getBuf(relayBufSize)
			}
			space := (*s.ubufp)[s.carry:relayBufSize]
			n, rerr = readFD(s.ufd, space)
			switch {
			case n > 0:
				if n < len(space) && !s.upHup {
					s.upIn = false
				}
				s.toClient.Add(int64(n))
				s.touch()
			case rerr == syscall.EAGAIN:
				s.upIn = false
				continue
			case rerr == nil:
				rerr = io.EOF
			}
		}
		moved = true
		if total := s.carry + n; total > 0 {
			buf := (*s.ubufp)[:relayBufSize]
			newLen, done, boundary := s.rf.Scan(buf[:total], rerr != nil)
			werr := s.w.relay(buf[:done], boundary, s.rf.Mid())
			s.carry = copy(buf, buf[done:newLen])
			s.watchClientQueue(false)
			if werr != nil {
				s.upstreamEnded(&writeError{werr})
				return true
			}
			if s.carry == 0 && s.rf.LiteralLeft() >= spliceMin && rerr == nil {
				if sp, err := newSplicer(s.rf.LiteralLeft()); err == nil {
					putBuf(s.ubufp)
					s.ubufp = nil
					s.uspl = sp
					continue
				}
			}
		}
		if rerr != nil {
			s.upstreamEnded(rerr)
			return true
		}
	}
	return moved
}

// clientEnded handles the end of the client direction, as
// session.clientEnded.
func (s *loopSession) clientEnded(err error) {
	if s.clientDone {
		return
	}
	s.clientDone = true
	// What was framed goes on first, whatever ended the direction, as
	// commandCopier.run flushes (a failed write fails again, harmlessly).
	s.forward()
	log := s.c.log
	switch {
	case errors.Is(err, imapwire.ErrCommandTooBig):
		log.Info("oversize command after part of it was relayed; closing", "max_command_size", s.f.Max())
		s.w.respond(tooBigBye(s.f.Max()))
	case errors.Is(err, imapwire.ErrCommandInvalid):
		log.Info("invalid line in a command already partly relayed; closing")
		s.w.respond(invalidCommandBye())
	case err == io.EOF:
		// The client half-closed: the upstream is half-closed once what
		// the client sent has gone out, and has lingerTimeout to finish.
		if s.loggingOut {
			s.observe(outcomeLogout)
		}
		s.clientEOF = true
		s.shutWr = true
		s.halfCloseUpstream()
		s.linger = s.c.clock.AfterFunc(lingerTimeout, s.close)
	default:
		s.observe(endOf(err, clientSide, upstreamSide))
		s.closeNow()
	}
	s.cb.releaseBuf()
	s.cb.r, s.cb.w, s.cb.out = 0, 0, 0
}

// halfCloseUpstream sends the upstream the client's end of stream once
// everything before it has gone out.
func (s *loopSession) halfCloseUpstream() {
	if s.shutWr && s.uq.len() == 0 && !s.dead {
		s.shutWr = false
		syscall.Shutdown(s.ufd, syscall.SHUT_WR)
	}
}

// upstreamEnded handles the end of the upstream direction, as
// session.upstreamEnded: the session closes once the client has what
// was relayed.
func (s *loopSession) upstreamEnded(err error) {
	o := endOf(err, upstreamSide, clientSide)
	switch {
	case o == outcomeUpstreamClosed && s.loggingOut:
		o = outcomeLogout
	case o == outcomeUpstreamClosed && s.clientEOF:
		o = outcomeClientClosed
	}
	s.observe(o)
	var we *writeError
	if errors.As(err, &we) && !errors.Is(we.err, errClientClosed) {
		s.closeNow() // the client cannot be written to
		return
	}
	// The upstream's last bytes, or the proxy's closing line, are still
	// to reach the client.
	s.closeWhenFlushed()
}

// closeWhenFlushed closes the session once the client has been sent what
// is queued for it, within writeTimeout.
func (s *loopSession) closeWhenFlushed() {
	if s.dead {
		return
	}
	s.closing = true
	if s.cq.len() == 0 {
		s.closeNow()
		return
	}
	if s.flush == nil {
		// On the wall clock, as the goroutine relay's write deadline.
		s.flush = clock.Real.AfterFunc(writeTimeout, s.close)
	}
}

// idleCheck runs from the loop's timers when the idle deadline passes.
func (s *loopSession) idleCheck(now time.Time) {
	if s.dead {
		return
	}
	if since := now.Sub(s.last); since < s.idle {
		s.lp.timers.Schedule(&s.deadline, s.last.Add(s.idle))
		return
	}
	if s.clientBlocked() {
		// The client has read nothing for idle_timeout while bytes
		// waited for it: the goroutine relay's write would have timed
		// out.
		s.observe(outcomeWriteTimeout)
		s.closeNow()
		return
	}
	s.c.log.Info("closing idle session", "idle_timeout", s.idle)
	bye := idleTimeoutBye(s.idle)
	bye.silent = s.w.inResponse()
	s.w.respond(bye)
}

// observe records how the relay ended, unless that is known already.
func (s *loopSession) observe(o outcome) {
	if s.observed == outcomeClosed {
		s.observed = o
	}
}

// closeNow closes both sockets, on the loop, once, and reports the
// session's end.
func (s *loopSession) closeNow() {
	if s.dead {
		return
	}
	s.dead = true
	if s.cid >= 0 {
		s.lp.Remove(s.cfd, s.cid)
	}
	if s.uid >= 0 {
		s.lp.Remove(s.ufd, s.uid)
	}
	s.lp.timers.Cancel(&s.deadline)
	s.lp.wall.Cancel(&s.stuck)
	if s.linger != nil {
		s.linger.Stop()
	}
	if s.flush != nil {
		s.flush.Stop()
	}
	s.cq.close()
	s.uq.close()
	syscall.Close(s.cfd)
	syscall.Close(s.ufd)
	for _, sp := range [2]*splicer{s.cspl, s.uspl} {
		if sp != nil {
			sp.close()
		}
	}
	s.cspl, s.uspl = nil, nil
	s.cb.releaseBuf()
	putBuf(s.ubufp)
	s.ubufp = nil
	s.w.abandon()
	if s.clientEOF {
		s.observe(outcomeClientClosed)
	}
	s.observe(outcomeConnectionError)
	res := result{outcome: s.observed, toUpstream: s.toUpstream.Load(), toClient: s.toClient.Load()}
	// Off the loop: finishing logs, ends spans and releases slots (in
	// Redis, with the cluster store), which may wait.
	go s.c.finish(&res)
}

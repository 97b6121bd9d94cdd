package proxy

import (
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// relayBufSize is the upstream-to-client buffer. Large literals bypass it
// (spliced), so it only has to hold response lines.
const relayBufSize = 32 << 10

// errPark is returned by a relay direction's read that the sweeper
// evicted: the direction parks (see parker) instead of ending.
var errPark = errors.New("proxy: direction parked")

// parkAfter is how long a direction waits without traffic before it is
// parked and gives up its goroutine; sweepEvery is how often the sweeper
// looks.
const (
	parkAfter  = 500 * time.Millisecond
	sweepEvery = 250 * time.Millisecond
)

// session is an authenticated connection being relayed. Each direction
// runs on its own goroutine while it has traffic, and is parked without
// one when idle; the session ends when both directions have.
type session struct {
	c    *conn
	up   net.Conn
	w    *clientWriter
	idle time.Duration
	max  int

	lastActivity atomic.Int64 // unix nanoseconds
	timer        *time.Timer  // idle_timeout
	linger       *time.Timer  // bounds the upstream direction after a client half-close
	gate         literalGate

	bytesToUpstream atomic.Int64
	bytesToClient   atomic.Int64
	loggingOut      atomic.Bool // the client sent LOGOUT

	cmd                    *cmdFramer  // client to upstream
	resp                   *respCopier // upstream to client
	clientDir, upstreamDir *direction
	live                   atomic.Int32 // directions not yet ended
	clientErr, upErr       error        // how each ended (set once, before live drops)

	mu        sync.Mutex // closing and the directions' parked flags
	closing   bool
	closeOnce sync.Once

	releaseUser   func() // the user's slot, freed when the relay ends
	upInitial     []byte // read from the upstream during login, not yet relayed
	clientInitial []byte // pipelined by the client behind its login
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

// pump runs d until it parks or ends.
func (d *direction) pump() {
	defer func() {
		if v := recover(); v != nil {
			d.s.c.logPanic(v)
			d.s.closeBoth()
			d.finish(errors.New("panic"))
		}
	}()
	for {
		err := d.run()
		if err == errPark {
			if d.s.park(d) {
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

func (d *direction) finish(err error) {
	d.ended(err)
	if d.s.live.Add(-1) == 0 {
		d.s.end()
	}
}

func (s *session) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// park hands d to the parker, unless the session is closing.
func (s *session) park(d *direction) bool {
	p := getParker()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing || p == nil || d.reader == nil || !p.park(d.reader.fd, d) {
		return false
	}
	d.parked = true
	return true
}

func (s *session) noteActivity() { s.lastActivity.Store(time.Now().UnixNano()) }

// evictIdle is called by the sweeper: directions of a session idle for
// parkAfter stop waiting on a goroutine.
func (s *session) evictIdle(now int64) {
	if now-s.lastActivity.Load() < int64(parkAfter) {
		return
	}
	for _, d := range [2]*direction{s.clientDir, s.upstreamDir} {
		// Parked directions are not waiting: a load, no lock.
		if d.reader != nil && d.reader.waiting() {
			d.reader.evict()
		}
	}
}

// closeBoth closes both connections; running directions then unwind, and
// parked ones are finished here.
func (s *session) closeBoth() {
	var unparked []*direction
	s.closeOnce.Do(func() {
		p := getParker()
		s.mu.Lock()
		s.closing = true
		for _, d := range [2]*direction{s.clientDir, s.upstreamDir} {
			// Off the epoll set before the descriptor can be reused.
			if d != nil && d.parked && p.unpark(d.reader.fd, d) {
				unparked = append(unparked, d)
			}
		}
		s.mu.Unlock()
		s.c.nc.Close()
		s.up.Close()
	})
	for _, d := range unparked {
		d.finish(net.ErrClosed)
	}
}

// checkIdle runs from the idle timer. A session with no traffic either
// way for idle_timeout is told BYE at a response boundary and closed.
// Because any traffic restarts the wait, an IDLE command (RFC 2177) is
// never cut before idle_timeout, which is at least 30 minutes by default
// as RFC 9051 §5.4 asks.
func (s *session) checkIdle() {
	since := time.Since(time.Unix(0, s.lastActivity.Load()))
	if since < s.idle {
		s.timer.Reset(s.idle - since)
		return
	}
	s.c.setOutcome("idle timeout")
	s.c.refuse(reasonIdleTimeout)
	s.c.log.Info("closing idle session", "idle_timeout", s.idle)
	s.w.mu.Lock()
	mid := s.w.midResponse
	s.w.mu.Unlock()
	if mid {
		// The upstream stalled inside a response for the whole timeout:
		// there is no boundary to wait for.
		s.w.closeNow()
		s.closeBoth()
		return
	}
	s.w.line("* BYE Autologout; idle for too long (idle_timeout="+formatDuration(s.idle)+")", true)
}

// shutdown says BYE at the next response boundary and closes.
func (s *session) shutdown(text string) {
	s.w.line("* BYE [UNAVAILABLE] "+text, true)
}

// run starts the relay: the client direction on this goroutine, the
// upstream direction on a new one. The session ends (end) when both have.
func (s *session) run() {
	f := newCmdFramer(s.c.nc, s.up, s.max, s.clientInitial)
	f.gate = &s.gate
	f.noteActivity = s.noteActivity
	f.sentBytes = &s.bytesToUpstream
	f.onLogout = func() { s.loggingOut.Store(true) }
	f.reply = func(line string) { s.w.line(line, false) }
	f.onTooBig = func() { s.c.refuseCommand(reasonCommandTooBig) }
	rc := newRespCopier(s.up, s.w, newRespFramer(&s.gate), relayBufSize, s.upInitial, func(n int64) {
		s.bytesToClient.Add(n)
		s.noteActivity()
	})
	s.upInitial, s.clientInitial = nil, nil

	s.cmd, s.resp = f, rc
	// Under the lock: a shutdown or kick may close the session (closeBoth
	// reads the directions) before it has started.
	s.mu.Lock()
	s.clientDir = &direction{s: s, name: "client", reader: f.idle, run: s.copyClientToUpstream, ended: s.clientEnded}
	s.upstreamDir = &direction{s: s, name: "upstream", reader: rc.idle, run: s.copyUpstreamToClient, ended: s.upstreamEnded}
	s.mu.Unlock()
	s.live.Store(2)
	s.noteActivity()
	s.timer = time.AfterFunc(s.idle, s.checkIdle)
	if getParker() != nil && (f.idle != nil || rc.idle != nil) {
		s.c.srv.sweeper.add(s)
	}
	go s.upstreamDir.pump()
	s.clientDir.pump()
}

// copyClientToUpstream frames client commands into the upstream, until
// the client ends or the direction parks.
func (s *session) copyClientToUpstream() error {
	return s.cmd.run()
}

// copyUpstreamToClient relays upstream responses, noting response
// boundaries for injected lines, until the upstream ends or the direction
// parks.
func (s *session) copyUpstreamToClient() error { return s.resp.run() }

// clientEnded handles the end of the client direction.
func (s *session) clientEnded(err error) {
	s.clientErr = err
	switch {
	case errors.Is(err, errCommandTooBig):
		s.c.setOutcome("command too big")
		s.c.refuse(reasonCommandTooBig)
		s.c.log.Info("oversize command after part of it was relayed; closing", "max_command_size", s.max)
		s.w.line(tooBigBye(s.max), true)
	case errors.Is(err, io.EOF):
		// The client half-closed: let the upstream finish what it is
		// sending, for a bounded time.
		if tc, ok := s.up.(interface{ CloseWrite() error }); ok {
			tc.CloseWrite()
		}
		s.mu.Lock()
		s.linger = time.AfterFunc(lingerTimeout, s.closeBoth)
		s.mu.Unlock()
	default:
		// Reset, or closed by the proxy: nothing more can reach the
		// client, so free the upstream and the slots at once.
		s.closeBoth()
	}
}

// upstreamEnded handles the end of the upstream direction: nothing more
// can reach the client, so the client direction ends too.
func (s *session) upstreamEnded(err error) {
	s.upErr = err
	if err == io.EOF {
		if s.loggingOut.Load() {
			s.c.setOutcomeIfEmpty("logout")
		}
		s.c.setOutcomeIfEmpty("upstream closed")
	}
	s.closeBoth()
}

// end runs once, after both directions have ended.
func (s *session) end() {
	s.timer.Stop()
	s.mu.Lock()
	if s.linger != nil {
		s.linger.Stop()
	}
	s.mu.Unlock()
	s.closeBoth()
	s.c.srv.sweeper.remove(s)
	if s.loggingOut.Load() && (errors.Is(s.clientErr, io.EOF) || errors.Is(s.upErr, io.EOF)) {
		s.c.setOutcomeIfEmpty("logout")
	}
	s.c.noteRelayEnd(s.clientErr, s.upErr)
	s.releaseUser()
	s.c.finish()
}

// responseSink is where a respCopier writes: the clientWriter, or a
// recorder in tests.
type responseSink interface {
	relay(p []byte, boundary int, mid bool) error
	copyLiteral(src io.Reader, n int64) (int64, error)
}

// respCopier copies upstream responses to the client through a
// respFramer, with a pooled buffer of bufSize (> holdMax) that it gives
// back whenever it waits with nothing held back. run is resumable after
// errPark.
type respCopier struct {
	src      io.Reader
	dst      responseSink
	f        *respFramer
	bufSize  int
	progress func(n int64)
	idle     *idleReader

	bufp  *[]byte // nil while waiting with nothing held
	carry int     // bytes held back at the start of the buffer
	fresh bool    // the buffer holds initial bytes not yet scanned
}

func newRespCopier(src io.Reader, dst responseSink, f *respFramer, bufSize int, initial []byte, progress func(n int64)) *respCopier {
	c := &respCopier{src: src, dst: dst, f: f, bufSize: bufSize, progress: progress, idle: newIdleReader(src, bufSize)}
	if len(initial) > 0 {
		c.bufp = getBuf(bufSize)
		c.carry = copy((*c.bufp)[:bufSize], initial)
		c.fresh = true
	}
	return c
}

// copyResponses copies src to dst through f until src ends, starting with
// initial (bytes read from src before). progress is told of every read
// and literal copy.
func copyResponses(src io.Reader, dst responseSink, f *respFramer, bufSize int, initial []byte, progress func(n int64)) error {
	return newRespCopier(src, dst, f, bufSize, initial, progress).run()
}

func (c *respCopier) run() error {
	for {
		var n int
		var err error
		switch {
		case c.fresh:
			c.fresh = false
			c.progress(int64(c.carry)) // read during login, relayed now
		case c.carry == 0 && c.idle != nil:
			// Nothing held back: wait without a buffer.
			putBuf(c.bufp)
			if c.bufp, n, err = c.idle.read(); err != nil {
				return err
			}
		default:
			if c.bufp == nil {
				c.bufp = getBuf(c.bufSize)
			}
			n, err = c.src.Read((*c.bufp)[c.carry:c.bufSize])
		}
		if n > 0 {
			c.progress(int64(n))
		}
		if total := c.carry + n; total > 0 {
			buf := (*c.bufp)[:c.bufSize]
			// A short partial line is held back even in a full buffer: it
			// moves to the front (holdMax < bufSize).
			newLen, done, boundary := c.f.scan(buf[:total], err != nil)
			werr := c.dst.relay(buf[:done], boundary, c.f.mid())
			c.carry = copy(buf, buf[done:newLen])
			if werr != nil {
				c.release()
				return werr
			}
			for c.carry == 0 && c.f.litLeft >= spliceMin {
				k, cerr := c.dst.copyLiteral(c.src, min(c.f.litLeft, spliceChunk))
				c.f.litLeft -= k
				c.progress(k)
				if cerr != nil {
					c.release()
					return cerr
				}
				if k == 0 {
					c.release()
					return io.ErrUnexpectedEOF
				}
			}
		}
		if err != nil {
			c.release()
			return err
		}
	}
}

func (c *respCopier) release() {
	putBuf(c.bufp)
	c.bufp = nil
}

// formatDuration prints a duration the way the configuration takes it.
func formatDuration(d time.Duration) string {
	switch {
	case d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	case d%time.Minute == 0:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	case d%time.Second == 0:
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	}
	return d.String()
}

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

// session is an authenticated connection being relayed.
type session struct {
	c    *conn
	up   net.Conn
	w    *clientWriter
	idle time.Duration
	max  int

	lastActivity atomic.Int64 // unix nanoseconds
	timer        *time.Timer
	gate         literalGate

	bytesToUpstream atomic.Int64
	bytesToClient   atomic.Int64

	closeOnce sync.Once

	releaseUser   func() // the user's slot, freed when the relay ends
	upInitial     []byte // read from the upstream during login, not yet relayed
	clientInitial []byte // pipelined by the client behind its login
}

func (s *session) noteActivity() { s.lastActivity.Store(time.Now().UnixNano()) }

// closeBoth closes both connections; the copy loops then unwind.
func (s *session) closeBoth() {
	s.closeOnce.Do(func() {
		s.c.nc.Close()
		s.up.Close()
	})
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

// run relays until either side ends.
func (s *session) run() {
	defer s.releaseUser()
	upInitial, clientInitial := s.upInitial, s.clientInitial
	s.upInitial, s.clientInitial = nil, nil
	s.noteActivity()
	s.timer = time.AfterFunc(s.idle, s.checkIdle)
	defer s.timer.Stop()

	done := make(chan error, 1)
	go func() {
		defer func() {
			if v := recover(); v != nil {
				s.c.logPanic(v)
				s.closeBoth()
				done <- errors.New("panic")
			}
		}()
		err := s.copyUpstreamToClient(upInitial)
		// Nothing more can reach the client: end the other direction too.
		s.closeBoth()
		done <- err
	}()

	cerr := s.copyClientToUpstream(clientInitial)
	var uerr error
	select {
	case uerr = <-done:
		// The upstream ended first (LOGOUT, or it dropped us).
	default:
		switch {
		case errors.Is(cerr, errCommandTooBig):
			s.w.line(tooBigBye(s.max), true)
		case errors.Is(cerr, io.EOF):
			// The client half-closed: let the upstream finish what it
			// is sending, for a bounded time.
			if tc, ok := s.up.(interface{ CloseWrite() error }); ok {
				tc.CloseWrite()
			}
			s.up.SetReadDeadline(time.Now().Add(lingerTimeout))
		default:
			// Reset, or closed by the proxy: nothing more can reach the
			// client, so free the upstream and the slots at once.
			s.closeBoth()
		}
		uerr = <-done
	}
	s.closeBoth()
	s.c.noteRelayEnd(cerr, uerr)
}

// copyClientToUpstream frames client commands into the upstream.
func (s *session) copyClientToUpstream(initial []byte) error {
	f := newCmdFramer(s.c.nc, s.up, s.max, initial)
	f.gate = &s.gate
	f.noteActivity = s.noteActivity
	f.reply = func(line string) { s.w.line(line, false) }
	err := f.run()
	s.bytesToUpstream.Store(f.forwardedBytes)
	if errors.Is(err, errCommandTooBig) {
		s.c.setOutcome("command too big")
		s.c.log.Info("oversize command after part of it was relayed; closing", "max_command_size", s.max)
	}
	return err
}

// copyUpstreamToClient relays upstream responses, noting response
// boundaries for injected lines.
func (s *session) copyUpstreamToClient(initial []byte) error {
	err := copyResponses(s.up, s.w, newRespFramer(&s.gate), relayBufSize, initial, func(n int64) {
		s.bytesToClient.Add(n)
		s.noteActivity()
	})
	if err == io.EOF {
		s.c.setOutcomeIfEmpty("upstream closed")
	}
	return err
}

// responseSink is where copyResponses writes: the clientWriter, or a
// recorder in tests.
type responseSink interface {
	relay(p []byte, boundary int, mid bool) error
	copyLiteral(src io.Reader, n int64) (int64, error)
}

// copyResponses copies src to dst through f until src ends, starting with
// initial (bytes read from src before), with a pooled buffer of bufSize
// (> holdMax) that it gives back whenever it waits with nothing held.
// progress is told of every read and literal copy.
func copyResponses(src io.Reader, dst responseSink, f *respFramer, bufSize int, initial []byte, progress func(n int64)) error {
	idle := newIdleReader(src, bufSize)
	bufp := getBuf(bufSize)
	defer func() { putBuf(bufp) }()
	buf := (*bufp)[:bufSize]
	carry := copy(buf, initial)
	fresh := carry > 0
	for {
		var n int
		var err error
		switch {
		case fresh:
			fresh = false
		case carry == 0 && idle != nil:
			// Nothing held back: wait without a buffer.
			putBuf(bufp)
			if bufp, n, err = idle.read(); err != nil {
				return err
			}
			buf = (*bufp)[:bufSize]
		default:
			n, err = src.Read(buf[carry:])
		}
		if n > 0 {
			progress(int64(n))
		}
		if total := carry + n; total > 0 {
			// A short partial line is held back even in a full buffer: it
			// moves to the front (holdMax < len(buf)).
			newLen, done, boundary := f.scan(buf[:total], err != nil)
			werr := dst.relay(buf[:done], boundary, f.mid())
			carry = copy(buf, buf[done:newLen])
			if werr != nil {
				return werr
			}
			for carry == 0 && f.litLeft >= spliceMin {
				k, cerr := dst.copyLiteral(src, min(f.litLeft, spliceChunk))
				f.litLeft -= k
				progress(k)
				if cerr != nil {
					return cerr
				}
				if k == 0 {
					return io.ErrUnexpectedEOF
				}
			}
		}
		if err != nil {
			return err
		}
	}
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

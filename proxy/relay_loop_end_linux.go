package proxy

import (
	"errors"
	"io"
	"syscall"
	"time"

	"github.com/imapguard/imapguard/proxy/clock"
	"github.com/imapguard/imapguard/proxy/imapwire"
)

// How a loopSession (relay_loop_linux.go) ends: a direction's end, the
// idle timeout, and the close on the loop that reports its result.

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

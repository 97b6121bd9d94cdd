package proxy

import (
	"io"
	"os"
	"syscall"

	"github.com/imapguard/imapguard/proxy/imapwire"
)

// The pumps of a loopSession (relay_loop_linux.go): what moves bytes
// between its two sockets when the loop says they are ready.

// The phases of the client direction's step.
const (
	phaseNext   = iota // call Next
	phaseRefuse        // answer a refusal (may wait for room at a boundary), then send the probe
	phaseAwait         // wait for the upstream's answer (st.Await)
	phaseMore          // read more, or stream a literal (st.More)
)

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

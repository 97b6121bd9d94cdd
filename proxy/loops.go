package proxy

import (
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
)

// loops are the server's event loops for relay = "loop", started on the
// first session that needs one and closed by Shutdown once every session
// has ended.
type loops struct {
	once   sync.Once
	n      int
	list   []*eventLoop
	next   atomic.Uint32
	failed error
}

// relayMode resolves Options.Relay: RelayLoop or RelayGoroutines.
func relayMode(o *Options) string {
	mode := o.Relay
	if mode == "" || mode == RelayAuto {
		mode = RelayLoop
		if env := os.Getenv("IMAPGUARD_RELAY"); env == RelayLoop || env == RelayGoroutines {
			mode = env
		}
	}
	if mode == RelayLoop && !loopSupported() {
		mode = RelayGoroutines
	}
	return mode
}

// eventLoopCount is Options.EventLoops, or one per four CPUs the process
// may use, at least one.
func eventLoopCount(o *Options) int {
	if o.EventLoops > 0 {
		return o.EventLoops
	}
	return max(1, runtime.GOMAXPROCS(0)/4)
}

// newRelay returns the relay for a session between c's client and up:
// on an event loop when the relay is "loop" and both are plain TCP, else
// the goroutine relay.
func (s *Server) newRelay(c *conn, up net.Conn) relayer {
	if s.relay == RelayLoop && loopable(c.nc, up) {
		if lp := s.loops.pick(s); lp != nil {
			return newLoopSession(c, up, lp)
		}
	}
	return newSession(c, up)
}

// pick returns a loop, round robin; nil if none could be started.
func (l *loops) pick(s *Server) *eventLoop {
	l.once.Do(func() {
		for range l.n {
			lp, err := newEventLoop(s.clock)
			if err != nil {
				l.failed = err
				s.log.Warn("event loop: cannot start one; relaying with goroutines", "err", err)
				break
			}
			l.list = append(l.list, lp)
		}
	})
	if len(l.list) == 0 {
		return nil
	}
	return l.list[int(l.next.Add(1))%len(l.list)]
}

// close stops the loops, once no session uses them.
func (l *loops) close() {
	l.once.Do(func() {}) // none may start after this
	for _, lp := range l.list {
		lp.Close()
	}
}

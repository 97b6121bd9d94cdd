// Package park holds idle relay directions without a goroutine each.
//
// A relay direction (one copy loop of a session) that has been idle for a
// while gives up its goroutine and parks: a Parker watches its socket and
// resumes it on a new goroutine when the socket turns readable (data, EOF
// or an error). With thousands of sessions idling in IDLE, goroutine
// stacks would otherwise be most of the proxy's memory. A Sweeper decides
// which directions are idle. Busy directions never park, so the hot path
// pays nothing for it.
//
// New returns the Linux epoll parker, or Nop where there is none; the
// proxy's Server is given one (or makes its own) instead of sharing a
// process-wide singleton.
package park

import (
	"sync"
	"time"

	"github.com/imapguard/imapguard/proxy/clock"
)

// Resumer is what waits in a Parker: its Resume runs on a new goroutine
// when its socket turns readable.
type Resumer interface{ Resume() }

// Parker watches the sockets of parked directions.
type Parker interface {
	// Park arranges for r.Resume to run once fd turns readable. It
	// reports false when it cannot; the caller then keeps waiting on its
	// own goroutine.
	Park(fd int, r Resumer) bool
	// Unpark takes r off fd before fd is closed, and reports whether r
	// was still parked: then Resume will not run, and the caller finishes
	// r itself.
	Unpark(fd int, r Resumer) bool
	// Close stops the parker; whatever is still parked is resumed.
	Close() error
}

// Nop parks nothing: directions keep their goroutines.
type Nop struct{}

func (Nop) Park(int, Resumer) bool   { return false }
func (Nop) Unpark(int, Resumer) bool { return false }
func (Nop) Close() error             { return nil }

// Idler is what a Sweeper looks at: a session whose waiting reads it
// evicts (so that they park) once it has been idle long enough.
type Idler interface {
	// EvictIdle evicts the waiting reads if the session has had no
	// traffic since before idleSince.
	EvictIdle(idleSince time.Time)
}

// Sweeper evicts the waiting reads of sessions idle for After, looking
// every Every. Its goroutine runs only while it has sessions.
type Sweeper struct {
	After time.Duration
	Every time.Duration
	Clock clock.Clock

	mu       sync.Mutex
	sessions map[Idler]struct{}
	running  bool
}

// Add starts watching s.
func (w *Sweeper) Add(s Idler) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.sessions == nil {
		w.sessions = make(map[Idler]struct{})
	}
	w.sessions[s] = struct{}{}
	if !w.running {
		w.running = true
		go w.loop()
	}
}

// Remove stops watching s.
func (w *Sweeper) Remove(s Idler) {
	w.mu.Lock()
	delete(w.sessions, s)
	w.mu.Unlock()
}

// loop looks on a wall-clock ticker (sweeping is the proxy's own
// housekeeping, not a protocol timer) and measures idleness on w.Clock.
func (w *Sweeper) loop() {
	t := time.NewTicker(w.Every)
	defer t.Stop()
	for range t.C {
		w.mu.Lock()
		if len(w.sessions) == 0 {
			w.running = false
			w.mu.Unlock()
			return
		}
		since := w.Clock.Now().Add(-w.After)
		for s := range w.sessions {
			s.EvictIdle(since)
		}
		w.mu.Unlock()
	}
}

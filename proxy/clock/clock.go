// Package clock is the proxy's one seam for time: the timers that bound
// protocol states (the pre-authentication timeout, the idle timeout, the
// grace a BYE gets, the half-close linger) are started on a Clock, so
// that tests can run them on a Fake clock instead of waiting for the
// wall clock. Socket deadlines that only bound a single write or dial
// stay on the wall clock: the kernel keeps them.
package clock

import (
	"sort"
	"sync"
	"time"
)

// Clock tells the time and runs functions later.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f on its own goroutine once d has passed.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a function waiting to run; see time.Timer.
type Timer interface {
	// Stop keeps the function from running and reports whether it was
	// still waiting.
	Stop() bool
	// Reset makes it run d from now and reports whether it was still
	// waiting.
	Reset(d time.Duration) bool
}

// Real is the wall clock.
var Real Clock = realClock{}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// Fake is a Clock whose time moves only when Advance moves it. Its
// timers run, in the order of their times, on their own goroutines, as
// real ones do. The zero value is not usable; call NewFake.
type Fake struct {
	mu      sync.Mutex
	now     time.Time
	timers  []*fakeTimer
	changed chan struct{} // closed and replaced when a timer is added
}

// NewFake returns a Fake clock that reads now.
func NewFake(now time.Time) *Fake {
	return &Fake{now: now, changed: make(chan struct{})}
}

// Now returns the fake time.
func (c *Fake) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc starts a timer that runs f when the fake time reaches now+d.
func (c *Fake) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, f: f}
	c.schedule(t, d)
	return t
}

// schedule (re)arms t; c.mu is held.
func (c *Fake) schedule(t *fakeTimer, d time.Duration) {
	t.when = c.now.Add(d)
	if !t.armed {
		t.armed = true
		c.timers = append(c.timers, t)
	}
	close(c.changed)
	c.changed = make(chan struct{})
}

// Advance moves the time forward by d and starts every timer that is
// due, on its own goroutine.
func (c *Fake) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []*fakeTimer
	kept := c.timers[:0]
	for _, t := range c.timers {
		if !t.when.After(c.now) {
			t.armed = false
			due = append(due, t)
		} else {
			kept = append(kept, t)
		}
	}
	c.timers = kept
	c.mu.Unlock()
	sort.SliceStable(due, func(i, j int) bool { return due[i].when.Before(due[j].when) })
	for _, t := range due {
		go t.f()
	}
}

// Pending returns how many timers wait.
func (c *Fake) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// WaitPending blocks until at least n timers wait, or timeout passes on
// the wall clock; it reports whether they do. A test calls it before
// Advance, so that it does not move the time before the code under test
// has started the timer it means to fire.
func (c *Fake) WaitPending(n int, timeout time.Duration) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		ok, changed := len(c.timers) >= n, c.changed
		c.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-changed:
		case <-deadline.C:
			return false
		}
	}
}

type fakeTimer struct {
	c     *Fake
	f     func()
	when  time.Time
	armed bool // waiting in c.timers
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	if !t.armed {
		return false
	}
	t.armed = false
	for i, x := range t.c.timers {
		if x == t {
			t.c.timers = append(t.c.timers[:i], t.c.timers[i+1:]...)
			break
		}
	}
	return true
}

func (t *fakeTimer) Reset(d time.Duration) bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.armed
	t.c.schedule(t, d)
	return was
}

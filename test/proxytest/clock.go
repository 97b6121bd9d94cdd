package proxytest

import (
	"testing"
	"time"

	"github.com/imapguard/imapguard/proxy/clock"
)

// Clock is a fake clock for a proxy's protocol timers: given as
// proxy.Options.Clock, it runs preauth_timeout, idle_timeout, the BYE
// grace of a kick or shutdown and the half-close linger, and they fire
// only when the test moves it. A timeout test then waits for no time on
// the wall clock and can show to the nanosecond that a timer fired when
// it was due and not earlier (Expire, ByeAfter).
//
// A session's idle time is measured from its last traffic, noted on the
// clock. The proxy notes what it reads before passing it on, but it also
// notes a relayed command once its write to the upstream has returned
// (proxy/copy.go, commandCopier.flush), and that can come after the
// client has read the upstream's answer: a test that moved the clock in
// between would find the traffic noted later than it happened. Before
// moving the clock on a session whose last traffic was a command it
// relayed, a test calls Conn.Settle. Nothing can follow IDLE that way:
// its own note may still come late (where the write is to a TLS
// upstream or from a TLS client, in about 2% of runs under load).
type Clock struct{ *clock.Fake }

// NewClock returns a fake clock that reads midnight, 1 January 2025 UTC.
func NewClock() *Clock {
	return &Clock{clock.NewFake(time.Date(2025, time.January, 1, 0, 0, 0, 0, time.UTC))}
}

// WaitTimers fails the test unless at least n timers come to wait. The
// proxy starts its timers on its own goroutines (a connection's
// preauth_timeout once its goroutine starts, before a PROXY header and
// admission; a session's idle_timeout once it relays), so a test that
// moves the clock waits for them first.
func (c *Clock) WaitTimers(t testing.TB, n int) {
	t.Helper()
	if !c.WaitPending(n, Timeout) {
		t.Fatalf("%d timers wait; want at least %d", c.Pending(), n)
	}
}

// Expire moves the clock on by d, to when a timer is due to end a
// connection, in two steps; at least n timers wait throughout. Once they
// wait, the clock moves to a nanosecond before d: there the timers must
// still wait, or wait again (an idle timer that fires, finds traffic since
// it started and starts itself for the rest), so nothing has ended a
// connection early. Then it moves to d, where the timer fires.
func (c *Clock) Expire(t testing.TB, d time.Duration, n int) {
	t.Helper()
	c.WaitTimers(t, n)
	c.Advance(d - time.Nanosecond)
	if !c.WaitPending(n, Timeout) {
		t.Fatalf("a nanosecond before %v: %d timers wait; want at least %d (a timer fired early and did not start again)", d, c.Pending(), n)
	}
	c.Advance(time.Nanosecond)
}

// ByeAfter expires a timer d from now (see Expire, with n timers) and
// checks that conn then gets bye and is closed.
func (c *Clock) ByeAfter(conn *Conn, d time.Duration, n int, bye string) {
	conn.t.Helper()
	c.Expire(conn.t, d, n)
	conn.ExpectBye(bye)
}

package proxy

import (
	"cmp"
	"context"
	"slices"
	"time"

	"go.opentelemetry.io/otel/metric"

	"github.com/imapguard/imapguard/proxy/clock"
)

// This file is the drain of a rolling restart (issue 12): stop accepting,
// tell the clients that have not logged in BYE at once, and the
// authenticated sessions one after another over a spread, so that their
// clients do not all reconnect to the next proxy in the same second, as
// Dovecot's login_proxy_max_disconnect_delay spreads its disconnects.

// shutdownText is the text of the BYE of a shutdown or drain:
// "* BYE [UNAVAILABLE] Server shutting down".
const shutdownText = "Server shutting down"

// drainState is a drain under way: its timers, on the Server's clock,
// stopped when it ends.
type drainState struct {
	timers []clock.Timer
	done   chan struct{} // closed when every connection has finished
}

// Drain starts a drain and returns at once: the listeners are closed
// (Serve returns ErrServerClosed), each connection that has not logged in
// (a login under way with the upstream included, which is abandoned) is
// told "* BYE [UNAVAILABLE] Server shutting down" and closed, and the
// authenticated sessions, oldest first, get the same BYE at a response
// boundary at instants spread evenly over spread: of n sessions, the i-th
// (from 0) at i*spread/n after the start, on the Server's clock
// (Options.Clock). A session whose BYE cannot get out (its client does
// not read) is closed without it after the BYE grace, as with Kick. When
// timeout has passed, whatever is still open is closed. Drained is closed
// once every connection has finished.
//
// Drain reports whether it started a drain: false if one is under way or
// Shutdown was called. Shutdown during a drain closes what is left at
// once when its context is done (a hard stop), and stops the drain's
// timers. The connections end with the outcome "proxy shutdown".
func (s *Server) Drain(timeout, spread time.Duration) bool {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return false
	}
	s.closing = true
	for ln := range s.listeners {
		ln.Close()
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	d := &drainState{done: s.drained}
	s.drain = d
	s.mu.Unlock()

	slices.SortFunc(conns, func(a, b *conn) int { return cmp.Compare(a.id, b.id) })
	var sessions []*conn
	for _, c := range conns {
		c.mu.Lock()
		authenticated := c.sess != nil
		c.mu.Unlock()
		if authenticated {
			sessions = append(sessions, c)
		} else {
			c.shutdown(shutdownText)
		}
	}
	s.log.Info("draining: not accepting; BYE to the sessions spread over disconnect_spread",
		"preauth", len(conns)-len(sessions), "sessions", len(sessions),
		"disconnect_spread", spread, "drain_timeout", timeout)
	var timers []clock.Timer
	for i, c := range sessions {
		at := spreadSlot(spread, i, len(sessions))
		if at <= 0 {
			c.shutdown(shutdownText)
			continue
		}
		timers = append(timers, s.clock.AfterFunc(at, func() { c.shutdown(shutdownText) }))
	}
	timers = append(timers, s.clock.AfterFunc(timeout, func() { s.drainExpired(timeout) }))
	s.mu.Lock()
	d.timers = timers
	s.mu.Unlock()

	go func() {
		s.wg.Wait()
		s.stopDrain()
		s.log.Info("drained: every connection has ended")
		close(d.done)
	}()
	return true
}

// spreadSlot is when the i-th of n sessions gets its BYE: i*spread/n,
// computed without overflow.
func spreadSlot(spread time.Duration, i, n int) time.Duration {
	if n <= 0 {
		return 0
	}
	q, r := spread/time.Duration(n), spread%time.Duration(n)
	return q*time.Duration(i) + r*time.Duration(i)/time.Duration(n)
}

// drainExpired closes what a drain left open after its timeout.
func (s *Server) drainExpired(timeout time.Duration) {
	s.mu.Lock()
	left := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		left = append(left, c)
	}
	s.mu.Unlock()
	if len(left) > 0 {
		s.log.Info("drain_timeout reached: closing the connections left", "connections", len(left), "drain_timeout", timeout)
	}
	// Closed outside the lock: a closed session may finish on this
	// goroutine, and finishing takes the lock (forget).
	for _, c := range left {
		c.noteOutcome(outcomeShutdown)
		c.close()
	}
}

// stopDrain stops the timers of a drain, if one was started.
func (s *Server) stopDrain() {
	s.mu.Lock()
	d := s.drain
	var timers []clock.Timer
	if d != nil {
		timers, d.timers = d.timers, nil
	}
	s.mu.Unlock()
	for _, t := range timers {
		t.Stop()
	}
}

// Draining reports whether the server has stopped accepting for good: a
// drain or a shutdown has started. The admin API's /readyz then answers
// 503 at once.
func (s *Server) Draining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// Drained is closed when a drain has ended: every connection has
// finished. It is never closed without a Drain.
func (s *Server) Drained() <-chan struct{} { return s.drained }

// instrumentDrain registers the gauge imapguard.draining on mp: 1 from
// the start of a drain or shutdown, else 0. Kept apart from the other
// instruments (telemetry.go); a second Instrument replaces it.
func (s *Server) instrumentDrain(mp metric.MeterProvider) error {
	m := mp.Meter(instrumentationName)
	g, err := m.Int64ObservableGauge("imapguard.draining",
		metric.WithDescription("1 while the proxy drains or shuts down (not accepting, /readyz 503), else 0"))
	if err != nil {
		return err
	}
	reg, err := m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		var v int64
		if s.Draining() {
			v = 1
		}
		o.ObserveInt64(g, v)
		return nil
	}, g)
	if err != nil {
		return err
	}
	s.mu.Lock()
	old := s.drainReg
	s.drainReg = reg
	s.mu.Unlock()
	if old != nil {
		return old.Unregister()
	}
	return nil
}

package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// The flood phase: max_connections is reached by idle pre-auth
// connections from many client addresses. The oldest connection that has
// not authenticated is then closed to make room for each new one (as
// Dovecot's login process does), so the flood cannot lock real users out;
// authenticated sessions are never closed for it; and only when every
// connection is authenticated is a new one refused.

// The two answers of max_connections (issue 10).
func evictBye(max int) string {
	return fmt.Sprintf("* BYE [UNAVAILABLE] Too many connections; closing the oldest unauthenticated one (max_connections=%d)", max)
}

func refuseBye(max int) string {
	return fmt.Sprintf("* BYE [UNAVAILABLE] Too many connections (max_connections=%d)", max)
}

// floodConn is one connection of the flood and what it was told.
type floodConn struct {
	greeted bool
	first   string // the first line, when not a greeting
	bye     string // the line that came after the greeting, if any
	ended   bool   // the proxy closed it
}

func (s *suite) phaseFlood() *phaseResult {
	r := newResult("flood")
	defer r.finish()
	max := s.opts.floodMax
	var users []user
	for i := range 64 {
		users = append(users, user{name: fmt.Sprintf("fl%02d", i), pass: fmt.Sprintf("pw-fl-%d", i), messages: 2, messageSize: 500})
	}
	e, err := newEnv(s.ctx, "flood", s.dir, s.bins, os.Stderr, users, guardConfig{maxConnections: max, maxConnsPerUser: 1000})
	if err != nil {
		r.fail(err)
		return r
	}
	defer e.close()
	base, err := e.ready(users[0])
	if err != nil {
		r.fail(err)
		return r
	}
	gap := ""
	if !bytes.Contains(s.binText, []byte("closing the oldest unauthenticated")) {
		gap = "this build of imapguard has no eviction (its binary lacks the BYE text): the lead's max_connections change has not landed"
	}
	mark := func(c *check) {
		if !c.OK {
			c.Gap = gap
		}
	}

	// Logged-in sessions first: a tenth of the slots.
	loggedIn := max / 10
	crowd, err := e.openCrowd(loggedIn, users)
	if err != nil {
		r.fail(err)
		return r
	}
	defer func() { crowd.close() }()
	m0, err := e.probe.metrics(s.ctx)
	if err != nil {
		r.fail(err)
		return r
	}

	// The flood: one connection at a time, each from the next loopback
	// address, each waiting for its greeting before the next.
	e.dialer.sources = loopbackSources(2, 254)
	n := s.opts.floodConns
	conns := make([]*floodConn, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var raws []*client
	defer func() { closeAll(raws) }()
	watchUntil := time.Now().Add(5 * time.Minute)
	start := time.Now()
	for i := range n {
		fc := &floodConn{}
		conns[i] = fc
		raw, err := e.dialer.dialTCP(s.ctx, e.imapAddr, e.dialer.source())
		if err != nil {
			r.fail(fmt.Errorf("flood connection %d: %w", i, err))
			return r
		}
		c := &client{raw: raw, nc: raw, br: newBufReader(raw), timeout: 5 * time.Second}
		raws = append(raws, c)
		c.deadline()
		line, err := c.readLine()
		if err == nil && strings.HasPrefix(line, "* OK") {
			fc.greeted = true
		} else {
			fc.first = fmt.Sprintf("%q %v", line, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.nc.SetReadDeadline(watchUntil)
			line, err := c.readLine()
			if err == nil {
				mu.Lock()
				fc.bye = line
				mu.Unlock()
				_, err = io.Copy(io.Discard, c.br)
			}
			var ne interface{ Timeout() bool }
			if !(errors.As(err, &ne) && ne.Timeout()) {
				mu.Lock()
				fc.ended = true
				mu.Unlock()
			}
		}()
	}
	floodTime := time.Since(start)

	// A real user logs in while the flood holds every slot.
	e.dialer.sources = nil
	real := users[len(users)-1]
	realC, err := e.dialer.open(s.ctx, plain)
	if err == nil {
		err = realC.login(real.name, real.pass)
		if err == nil {
			_, err = realC.command("SELECT INBOX")
		}
		if err == nil {
			_, err = realC.command("FETCH 1 (FLAGS BODY.PEEK[])")
		}
	}
	mark(r.check("a real user logs in during the flood", err == nil, "%v", orNone(err)))
	realIn := err == nil
	if realIn {
		crowd.cs = append(crowd.cs, realC) // a session like the others from now on
	} else if realC != nil {
		realC.raw.Close()
	}
	mark(r.check("the logged-in sessions keep working through the flood", crowd.exercise() == nil, "%v", orNone(crowd.exercise())))

	// Who was told what: the survivors are the newest, the evicted the
	// oldest, each evicted one with the BYE of issue 10.
	slots := max - loggedIn // for pre-auth connections during the flood
	wantEvicted := n - slots + 1
	if !realIn {
		wantEvicted = n - slots
	}
	mu.Lock()
	greeted, evicted, badBye, wrongOrder, refusedAtOnce := 0, 0, 0, 0, 0
	var firstBad []string
	for i, fc := range conns {
		if fc.greeted {
			greeted++
		} else {
			refusedAtOnce++
			if len(firstBad) < 2 {
				firstBad = append(firstBad, fmt.Sprintf("connection %d: %s", i, fc.first))
			}
		}
		if fc.bye != "" {
			evicted++
			if fc.bye != evictBye(max) {
				badBye++
				if len(firstBad) < 4 {
					firstBad = append(firstBad, fmt.Sprintf("connection %d told %q", i, fc.bye))
				}
			}
		}
		oldest := i < wantEvicted
		if fc.greeted && oldest != (fc.bye != "") {
			wrongOrder++
		}
	}
	mu.Unlock()
	r.figure("flood: %d pre-auth connections from 253 addresses in %s against max_connections=%d, with %d sessions logged in",
		n, floodTime.Round(time.Millisecond), max, loggedIn)
	mark(r.check("every flood connection is greeted (none refused while unauthenticated ones remain)", greeted == n,
		"%d greeted, %d refused at once; %s", greeted, refusedAtOnce, firstN(firstBad, 4)))
	mark(r.check("the oldest unauthenticated connections are evicted, with the eviction BYE", greeted == n && evicted == wantEvicted && badBye == 0 && wrongOrder == 0,
		"%d evicted (want %d: the flood beyond %d pre-auth slots, and one for the real user), %d with another line, %d out of order", evicted, wantEvicted, slots, badBye, wrongOrder))
	m1, err := e.probe.metrics(s.ctx)
	if err == nil {
		d := delta(m0.outcomes(), m1.outcomes())
		mark(r.check("imapguard_connections_closed_total{outcome=\"evicted\"} counts the evictions", d["evicted"] == evicted && evicted == wantEvicted,
			"got %s; want evicted=%d", formatCounts(d), wantEvicted))
		refused := int(m1.sum(mRefused, map[string]string{"reason": "max_connections"}) - m0.sum(mRefused, map[string]string{"reason": "max_connections"}))
		mark(r.check("nobody is refused while unauthenticated connections remain", refused == 0, "refused_total{reason=max_connections} +%d", refused))
		oc := m1.openCounts()
		r.figure("during the flood: open %+v", oc)
	}

	// Every slot authenticated: the flood goes, sessions fill the slots,
	// and a new connection is refused as before.
	closeAll(raws)
	raws = nil
	wg.Wait()
	err = waitFor(s.ctx, 30*time.Second, func() (bool, error) {
		m, err := e.probe.metrics(s.ctx)
		return err == nil && m.openCounts().Preauth == 0, nil
	})
	if err != nil {
		r.fail(fmt.Errorf("the flood's connections did not all end: %w", err))
		return r
	}
	more, err := e.openCrowd(max-len(crowd.cs), users)
	if err != nil {
		r.fail(fmt.Errorf("filling the slots with sessions: %w", err))
		return r
	}
	crowd.cs = append(crowd.cs, more.cs...)
	m2, _ := e.probe.metrics(s.ctx)
	line, err := firstLine(e, e.imapAddr)
	r.check("with every slot authenticated, a new connection is refused with the BYE of max_connections", line == refuseBye(max),
		"got %q (%v); want %q", line, err, refuseBye(max))
	line, err = firstLine(e, e.imapsAddr)
	var ne interface{ Timeout() bool }
	timedOut := errors.As(err, &ne) && ne.Timeout()
	r.check("... and on the imaps port closed without a line", line == "" && err != nil && !timedOut, "got %q (%v)", line, err)
	r.check("no authenticated session is evicted", crowd.exercise() == nil, "%d sessions; %v", len(crowd.cs), orNone(crowd.exercise()))
	if m3, err := e.probe.metrics(s.ctx); err == nil && m2 != nil {
		d := delta(m2.outcomes(), m3.outcomes())
		r.check("the two refusals are counted as refused", d["refused"] == 2 && total(d) == 2, "got %s; want refused=2", formatCounts(d))
	}
	crowd.close()
	crowd.cs = nil
	e.settle(r, base, 60*time.Second, max)
	e.stillServes(r, users[0], "after the flood")
	e.checkExit(r)
	return r
}

// firstLine connects to addr and returns the first line the proxy sends
// (for the imaps port, in plaintext: none is expected).
func firstLine(e *env, addr string) (string, error) {
	raw, err := e.dialer.dialTCP(e.ctx, addr, nil)
	if err != nil {
		return "", err
	}
	defer raw.Close()
	c := &client{raw: raw, nc: raw, br: newBufReader(raw), timeout: 5 * time.Second}
	c.deadline()
	return c.readLine()
}

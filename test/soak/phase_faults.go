package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The faults phase: the upstream killed mid-session and mid-login,
// upstreams that never greet, stall or answer garbage, and EMFILE at
// accept. Through each, the proxy must keep serving everyone else, answer
// what it can with [UNAVAILABLE], and recover when the fault ends.

// Timeouts of the faults phase's proxy: short, so that faults show
// quickly. idle_timeout is at its minimum, 30s.
const (
	faultConnectTimeout = 2 * time.Second
	faultLoginTimeout   = 3 * time.Second
	faultIdleTimeout    = 30 * time.Second
)

// killImapd kills the upstream at once (SIGKILL): its sockets are closed
// by the kernel, as in a crash.
func (e *env) killImapd() {
	e.imapd.stop(syscall.SIGKILL, 5*time.Second)
}

// phaseFaults runs the upstream faults on one proxy, then EMFILE on
// another.
func (s *suite) phaseFaults() *phaseResult {
	r := newResult("faults")
	defer r.finish()
	var users []user
	for i := range 32 {
		users = append(users, user{name: fmt.Sprintf("f%02d", i), pass: fmt.Sprintf("pw-f-%d", i), messages: 3, messageSize: 1000})
	}
	e, err := newEnv(s.ctx, "faults", s.dir, s.bins, os.Stderr, users, guardConfig{
		maxConnsPerUser: 1000,
		connectTimeout:  faultConnectTimeout.String(),
		loginTimeout:    faultLoginTimeout.String(),
		idleTimeout:     faultIdleTimeout.String(),
	})
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
	r.figure("baseline: goroutines %d, fds %d, RSS %s; connect_timeout %s, login_timeout %s, idle_timeout %s",
		base.snap.Goroutines, base.snap.Proc.FDs, mib(float64(base.snap.Proc.RSS)), faultConnectTimeout, faultLoginTimeout, faultIdleTimeout)
	u := users[0]
	answerLimit := faultConnectTimeout + faultLoginTimeout + time.Second

	for _, step := range []struct {
		name string
		run  func(r *phaseResult, e *env, users []user, name string) error
	}{
		{"upstream killed mid-session", s.faultKillMidSession},
		{"upstream killed mid-login", s.faultKillMidLogin},
		{"upstream never greets", fakeFault(neverGreet, answerLimit)},
		{"upstream stalls mid-greeting", fakeFault(stallGreeting, answerLimit)},
		{"upstream answers garbage", fakeFault(garbageGreeting, answerLimit)},
		{"upstream answers the login with garbage", fakeFault((&fakeIMAP{onLogin: garbageAnswer}).serve, answerLimit)},
		{"upstream stalls mid-response after login", s.faultStallMidResponse},
		{"upstream answers garbage after login", s.faultGarbageAfterLogin},
	} {
		if s.ctx.Err() != nil {
			r.fail(s.ctx.Err())
			return r
		}
		s.logf("faults: %s", step.name)
		before, _ := e.probe.metrics(s.ctx)
		start := time.Now()
		if err := step.run(r, e, users, step.name); err != nil {
			r.check(step.name+": ran", false, "%v", err)
		}
		if after, err := e.probe.metrics(s.ctx); err == nil && before != nil {
			r.figure("%s (%s): outcomes %s", step.name, time.Since(start).Round(100*time.Millisecond), formatCounts(delta(before.outcomes(), after.outcomes())))
		}
	}
	e.settle(r, base, 60*time.Second, 100)
	e.stillServes(r, u, "after the upstream faults")
	e.checkExit(r)
	e.close()

	if s.ctx.Err() == nil {
		s.logf("faults: EMFILE at accept")
		s.faultEMFILE(r, users)
	}
	return r
}

// faultKillMidSession kills cmd/imapd under logged-in sessions (some in
// IDLE) and pre-auth clients, checks what each sees, that logins are
// refused with NO [UNAVAILABLE] while it is down, and that everything
// works once it is back.
func (s *suite) faultKillMidSession(r *phaseResult, e *env, users []user, name string) error {
	victims, err := e.openCrowd(60, users)
	if err != nil {
		return err
	}
	for i, c := range victims.cs {
		if i%2 == 0 {
			if _, err := c.idle(); err != nil {
				return err
			}
		}
	}
	pre, err := e.openPreauth(12)
	if err != nil {
		return err
	}
	defer closeAll(pre)
	before, err := e.probe.metrics(s.ctx)
	if err != nil {
		return err
	}
	killed := time.Now()
	e.killImapd()

	// Every victim's connection ends; what it read last is noted.
	var wg sync.WaitGroup
	var mu sync.Mutex
	ended, byes := 0, 0
	var slowest time.Duration
	for _, c := range victims.cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
			bye := false
			for {
				line, err := c.readResponse()
				if err != nil {
					break
				}
				if strings.HasPrefix(line, "* BYE") {
					bye = true
				}
			}
			c.raw.Close()
			mu.Lock()
			defer mu.Unlock()
			if d := time.Since(killed); d < 10*time.Second {
				ended++
				slowest = max(slowest, d)
			}
			if bye {
				byes++
			}
		}()
	}
	wg.Wait()
	r.check(name+": every session's client connection ends", ended == len(victims.cs),
		"%d of %d within 10s (slowest %s)", ended, len(victims.cs), slowest.Round(time.Millisecond))
	r.figure("%s: %d of %d sessions were told * BYE before the close", name, byes, len(victims.cs))
	var after metricSet
	waitFor(s.ctx, 10*time.Second, func() (bool, error) {
		m, err := e.probe.metrics(s.ctx)
		if err == nil {
			after = m
		}
		return err == nil && m.openCounts().Authenticated == 0, nil
	})
	if after != nil {
		d := delta(before.outcomes(), after.outcomes())
		s.checkOutcomes(r, name+": sessions end as upstream_closed or upstream_reset", d, len(victims.cs), "upstream_closed", "upstream_reset")
	}
	r.check(name+": pre-auth clients are still served", noopAll(pre) == nil, "%v", orNone(noopAll(pre)))
	refused := e.unavailableLogins(r, name, 12, users[1], faultConnectTimeout+time.Second)
	defer closeAll(refused)

	if err := e.startImapd(); err != nil {
		return fmt.Errorf("restarting imapd: %w", err)
	}
	retryLogins(r, name, refused, users[1])
	crowd, err := e.openCrowd(6, users)
	r.check(name+": new sessions work once it is back", err == nil, "%v", orNone(err))
	if err == nil {
		crowd.close()
	}
	return nil
}

// faultKillMidLogin points the proxy at a relay that holds each login
// command before cmd/imapd sees it, starts logins until all are held,
// kills imapd, and expects each login to end in NO [UNAVAILABLE].
func (s *suite) faultKillMidLogin(r *phaseResult, e *env, users []user, name string) error {
	const n = 30
	rl := &relay{target: e.imapdAddr, holdLogin: make(chan *hold)}
	fake, err := startFake(rl.serve)
	if err != nil {
		return err
	}
	defer fake.close()
	if err := e.setUpstream(fake.addr()); err != nil {
		return err
	}
	defer e.setUpstream(e.imapdAddr)
	cs, err := e.openPreauth(n)
	if err != nil {
		return err
	}
	defer closeAll(cs)
	results := make(chan error, n)
	for i, c := range cs {
		go func() {
			_, err := loginUnavailable(c, users[i%len(users)])
			results <- err
		}()
	}
	var holds []*hold
	timeout := time.After(10 * time.Second)
	for len(holds) < n {
		select {
		case h := <-rl.holdLogin:
			holds = append(holds, h)
		case <-timeout:
			return fmt.Errorf("%d of %d logins reached the upstream within 10s", len(holds), n)
		}
	}
	killed := time.Now()
	e.killImapd()
	var errs []error
	for range n {
		if err := <-results; err != nil {
			errs = append(errs, err)
		}
	}
	took := time.Since(killed)
	r.check(name+": every held login is answered NO [UNAVAILABLE]", len(errs) == 0,
		"%d of %d, all within %s of the kill; %v", n-len(errs), n, took.Round(time.Millisecond), orNone(errors.Join(errs...)))
	for _, h := range holds {
		close(h.release)
	}
	// From now on the relay holds nothing: logins pass straight through.
	go func() {
		for {
			select {
			case h := <-rl.holdLogin:
				close(h.release)
			case <-fake.closed:
				return
			}
		}
	}()
	if err := e.startImapd(); err != nil {
		return fmt.Errorf("restarting imapd: %w", err)
	}
	retryLogins(r, name, cs, users[2])
	return nil
}

// fakeFault is a fault played by a fake upstream that fails every login:
// while the proxy points at it, logins over every transport get NO
// [UNAVAILABLE] within limit, the sessions opened before keep working,
// the proxy lets go of the fake's connections, and once the proxy points
// back at cmd/imapd the refused connections log in.
func fakeFault(handler func(*fakeUpstream, net.Conn), limit time.Duration) func(*phaseResult, *env, []user, string) error {
	return func(r *phaseResult, e *env, users []user, name string) error {
		sc, err := e.openFakeScene(handler, 0, users, "")
		if err != nil {
			return err
		}
		defer sc.close()
		others, fake := sc.others, sc.fake
		refused := e.unavailableLogins(r, name, 12, users[3], limit)
		defer closeAll(refused)
		r.check(name+": the sessions opened before keep working", others.exercise() == nil, "%v", orNone(others.exercise()))
		err = waitFor(e.ctx, 5*time.Second, func() (bool, error) { return fake.open() == 0, nil })
		r.check(name+": the proxy closes its connections to the faulty upstream", err == nil,
			"%d of %d still open 5s after the last refusal", fake.open(), fake.accepted.Load())
		// The fault ends where it is: the same address now leads to
		// cmd/imapd. (A SIGHUP back would not do for the connections
		// already open: each keeps the upstream.address it was accepted
		// under.)
		fake.heal(e.imapdAddr)
		retryLogins(r, name, refused, users[3])
		return sc.restore()
	}
}

// faultStallMidResponse logs sessions in to an upstream that stalls in
// the middle of a FETCH response, and expects the proxy to keep serving
// the others and to close the stalled sessions at idle_timeout. Two
// literal sizes: one the relay copies through its buffer, one (over 64
// KiB) it hands to its splice path. Those still open afterwards are
// kicked through the admin API.
func (s *suite) faultStallMidResponse(r *phaseResult, e *env, users []user, name string) error {
	for _, size := range []int{10000, 100000} {
		if err := s.stallOnce(r, e, users, fmt.Sprintf("%s (a %d-byte literal)", name, size), size); err != nil {
			return err
		}
	}
	return nil
}

func (s *suite) stallOnce(r *phaseResult, e *env, users []user, name string, size int) error {
	const n = 6
	sc, err := e.openFakeScene((&fakeIMAP{onFetch: stallMidResponse(size)}).serve, n, users, "the stalling upstream")
	if err != nil {
		return err
	}
	defer sc.close()
	others, stalled := sc.others, sc.hit
	for _, c := range stalled.cs {
		tag := c.nextTag()
		io.WriteString(c.nc, tag+" FETCH 1 BODY[]\r\n")
		c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, err := c.readLine()
		if err != nil || literalSize(line) != int64(size) {
			return fmt.Errorf("the stalled FETCH: %q %v", line, err)
		}
		if _, err := io.CopyN(io.Discard, c.br, 1000); err != nil {
			return fmt.Errorf("the stalled FETCH's first 1000 bytes: %w", err)
		}
	}
	stalledAt := time.Now()
	r.check(name+": the other sessions keep working", others.exercise() == nil, "%v", orNone(others.exercise()))
	// The others log out now, so that only the stalled sessions are left
	// to end (and none of the others reaches idle_timeout).
	others.close()
	others.cs = nil
	var before metricSet
	err = waitFor(s.ctx, 10*time.Second, func() (bool, error) {
		m, err := e.probe.metrics(s.ctx)
		if err == nil {
			before = m
		}
		return err == nil && m.openCounts().Open == n, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for the other sessions to end: %w", err)
	}
	// Each stalled client waits for the proxy to close its connection.
	closedAfter := waitClosed(stalled.cs, stalledAt.Add(faultIdleTimeout+10*time.Second), stalledAt)
	var ds []string
	ok := len(closedAfter) == n
	for _, d := range closedAfter {
		ds = append(ds, d.Round(100*time.Millisecond).String())
		ok = ok && d >= faultIdleTimeout-time.Second
	}
	c := r.check(name+": the stalled sessions are closed at idle_timeout", ok,
		"%d of %d closed within idle_timeout+10s (after %s); want all, after about %s", len(closedAfter), n, strings.Join(ds, " "), faultIdleTimeout)
	kicked := 0
	if !ok {
		c.Detail += "; goroutines saved in " + e.dumpGoroutines(fmt.Sprintf("goroutines-stalled-%d.txt", size))
		// What the administrator can do: kick them (the BYE waits for a
		// response boundary that never comes; the proxy closes anyway
		// after its grace of 10s).
		kickedAt := time.Now()
		err := e.kick(`{"address":"127.0.0.0/8","reason":"soak: stalled"}`)
		closed := waitClosed(stalled.cs, kickedAt.Add(20*time.Second), kickedAt)
		var ks []string
		for _, d := range closed {
			ks = append(ks, d.Round(100*time.Millisecond).String())
		}
		kicked = len(closed)
		r.check(name+": a kick closes the sessions still stalled", err == nil && len(closed) == n-len(closedAfter),
			"%d of %d closed within 20s of the kick (after %s); %v", len(closed), n-len(closedAfter), strings.Join(ks, " "), orNone(err))
	}
	var after metricSet
	waitFor(s.ctx, 10*time.Second, func() (bool, error) {
		m, err := e.probe.metrics(s.ctx)
		if err == nil {
			after = m
		}
		return err == nil && m.openCounts().Open == 0, nil
	})
	if after != nil {
		d := delta(before.outcomes(), after.outcomes())
		idle := len(closedAfter)
		r.check(name+": each stalled session's outcome says what closed it", d["idle_timeout"] == idle && d["kicked"] == kicked && total(d) == idle+kicked,
			"got %s; want idle_timeout=%d kicked=%d", formatCounts(d), idle, kicked)
	}
	return nil
}

// faultGarbageAfterLogin logs sessions in to an upstream that answers a
// FETCH with garbage (binary, a bogus 100 GB literal announcement), and
// expects the proxy to keep serving the others and the garbled sessions
// to end once the client logs out and the upstream closes.
func (s *suite) faultGarbageAfterLogin(r *phaseResult, e *env, users []user, name string) error {
	const n = 6
	sc, err := e.openFakeScene((&fakeIMAP{onFetch: garbageAnswer}).serve, n, users, "the garbage upstream")
	if err != nil {
		return err
	}
	defer sc.close()
	others, garbled := sc.others, sc.hit
	ended := 0
	for _, c := range garbled.cs {
		io.WriteString(c.nc, c.nextTag()+" FETCH 1 BODY[]\r\n")
		io.WriteString(c.nc, c.nextTag()+" LOGOUT\r\n")
		c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := io.Copy(io.Discard, c.br)
		var ne net.Error
		if !(errors.As(err, &ne) && ne.Timeout()) {
			ended++
		}
	}
	r.check(name+": the garbled sessions end after LOGOUT", ended == n, "%d of %d within 10s", ended, n)
	r.check(name+": the other sessions keep working", others.exercise() == nil, "%v", orNone(others.exercise()))
	return nil
}

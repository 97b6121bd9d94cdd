package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The abrupt-end phase: connections ended by the client with an RST or a
// FIN at every point of a connection's life, many of each, then a check
// that nothing drifted or leaked and that each ended with the outcome it
// should.

// abruptCase is a point at which a client goes away.
type abruptCase struct {
	name string
	// hold: the case needs the relay (upstream switched with SIGHUP)
	// holding each connection at this point: "greeting" or "login".
	hold string
	// want are the outcomes each ending should produce; nil: recorded,
	// not checked (which outcome is right depends on a race, or is a
	// matter of definition).
	wantFIN, wantRST []string
	why              string // for unchecked endings
}

// Pre-authentication resets may be named client_error (the label today)
// or client_reset (the lead's new one): both are accepted there. After
// login the mapping is unambiguous.
var (
	preauthReset = []string{"client_reset", "client_error"}
	closed       = []string{"client_closed"}
	reset        = []string{"client_reset"}
	tlsFailedFIN = []string{"tls_handshake_failed", "client_closed"}
	tlsFailedRST = []string{"tls_handshake_failed", "client_reset"}
)

var abruptCases = []abruptCase{
	{name: "before-greeting", wantFIN: closed,
		why: "an RST may arrive before the proxy has accepted or greeted: client_reset, client_error or closed"},
	{name: "before-tls-hello", why: "a client that leaves an imaps port before its ClientHello: tls_handshake_failed or client_closed/reset"},
	{name: "mid-tls-handshake", wantFIN: tlsFailedFIN, wantRST: tlsFailedRST},
	{name: "mid-starttls-handshake", wantFIN: tlsFailedFIN, wantRST: tlsFailedRST},
	{name: "preauth-literal", wantFIN: closed, wantRST: preauthReset},
	{name: "mid-upstream-dial", hold: "greeting", wantFIN: closed, wantRST: preauthReset},
	{name: "mid-login", hold: "login", wantFIN: closed, wantRST: preauthReset},
	{name: "append-literal", wantFIN: closed, wantRST: reset},
	{name: "in-idle", wantFIN: closed, wantRST: reset},
	{name: "mid-fetch", wantFIN: closed, wantRST: reset},
}

// caseResult is one case and ending of the abrupt phase.
type caseResult struct {
	Case     string         `json:"case"`
	Ending   string         `json:"ending"`
	N        int            `json:"connections"`
	Failed   int            `json:"failed"`     // did not reach the point
	NoClose  int            `json:"not_closed"` // FIN: the proxy kept its side open past drainLimit
	Accepted int            `json:"accepted"`   // imapguard_connections_accepted_total delta
	Outcomes map[string]int `json:"outcomes"`
	Seconds  float64        `json:"seconds"`
	Errors   []string       `json:"errors,omitempty"`

	relayOpen int // the relay's connections still open after the case
}

// bigMessage is the size of the message fetched in mid-fetch.
const bigMessage = 2 << 20

// abruptRun is the state shared by the connections of the phase.
type abruptRun struct {
	e     *env
	users []user
	big   user
	next  atomic.Uint64 // rotates the transports

	// For the cases that hold connections at the upstream: a relay to
	// cmd/imapd, new for each such case.
	fake *fakeUpstream
	rl   *relay
}

// phaseAbrupt runs every case with both endings.
func (s *suite) phaseAbrupt() *phaseResult {
	r := newResult("abrupt")
	defer r.finish()
	var users []user
	for i := range 64 {
		users = append(users, user{name: fmt.Sprintf("ab%02d", i), pass: fmt.Sprintf("pw-ab-%d", i), messages: 3, messageSize: 1000})
	}
	big := user{name: "big", pass: "pw-big", messages: 1, messageSize: bigMessage}
	e, err := newEnv(s.ctx, "abrupt", s.dir, s.bins, os.Stderr, append(users, big), guardConfig{maxConnsPerUser: 1000})
	if err != nil {
		r.fail(err)
		return r
	}
	defer e.close()
	// Many source addresses: 100,000 connections leave TIME_WAIT sockets
	// that one address's ephemeral ports could not absorb.
	e.dialer.sources = loopbackSources(2, 254)
	e.dialer.timeout = 15 * time.Second
	base, err := e.ready(users[0])
	if err != nil {
		r.fail(err)
		return r
	}
	r.figure("baseline: goroutines %d, fds %d, RSS %s", base.snap.Goroutines, base.snap.Proc.FDs, mib(float64(base.snap.Proc.RSS)))
	ab := &abruptRun{e: e, users: users, big: big}
	relayOpen := 0

	per := s.opts.abruptConns / (2 * len(abruptCases))
	total := 0
	stopWatch := e.watchPeaks(time.Second)
	defer stopWatch()
	for _, ac := range abruptCases {
		for _, end := range []ending{fin, rst} {
			if s.ctx.Err() != nil {
				r.fail(s.ctx.Err())
				return r
			}
			cr, err := s.runCase(ab, ac, end, per)
			if err != nil {
				r.fail(fmt.Errorf("%s %s: %w", ac.name, end, err))
				return r
			}
			r.Cases = append(r.Cases, cr)
			relayOpen += cr.relayOpen
			total += cr.N
			s.logf("abrupt: %-22s %s: %d connections in %.1fs, %d failed to reach the point, %d not closed after FIN; outcomes %s",
				cr.Case, cr.Ending, cr.N, cr.Seconds, cr.Failed, cr.NoClose, formatCounts(cr.Outcomes))
			s.judgeCase(r, ac, end, cr)
		}
	}
	pk := stopWatch()
	r.figure("%d connections ended abruptly: %d per case and ending, %d cases, FIN and RST; %s", total, per, len(abruptCases), pk)
	after := e.settle(r, base, 60*time.Second, max(pk.open, s.opts.abruptConc))
	r.check("the relay's upstream connections all closed", relayOpen == 0, "%d still open at the end of their case", relayOpen)
	all := delta(base.outcome, after.m.outcomes())
	r.figure("outcomes over the phase: %s", formatCounts(all))
	e.stillServes(r, users[0], "after the abrupt ends")
	e.checkExit(r)
	return r
}

// judgeCase records the checks of one case and ending.
func (s *suite) judgeCase(r *phaseResult, ac abruptCase, end ending, cr *caseResult) {
	name := ac.name + " " + end.String()
	r.check(name+": every connection reached its point", cr.Failed == 0, "%d of %d did not: %s", cr.Failed, cr.N, firstN(cr.Errors, 3))
	if end == fin {
		r.check(name+": the proxy closed its side after the FIN", cr.NoClose == 0, "%d of %d still open after %s", cr.NoClose, cr.N, drainLimit)
	}
	r.check(name+": each connection counted once (accepted and closed)", cr.Accepted == cr.N && total(cr.Outcomes) == cr.N,
		"accepted %d, closed %d; want %d", cr.Accepted, total(cr.Outcomes), cr.N)
	want := ac.wantFIN
	if end == rst {
		want = ac.wantRST
	}
	if want == nil {
		r.figure("%s: outcomes %s (not checked: %s)", name, formatCounts(cr.Outcomes), ac.why)
		return
	}
	s.checkOutcomes(r, name+": outcome", cr.Outcomes, cr.N, want...)
}

// runCase runs n connections of one case and ending and waits for the
// proxy to have closed them all.
func (s *suite) runCase(ab *abruptRun, ac abruptCase, end ending, n int) (*caseResult, error) {
	e := ab.e
	cr := &caseResult{Case: ac.name, Ending: end.String(), N: n}
	start := time.Now()
	conc := s.opts.abruptConc
	if ac.hold != "" {
		ab.rl = &relay{target: e.imapdAddr}
		if ac.hold == "greeting" {
			ab.rl.holdGreeting = make(chan *hold)
		} else {
			ab.rl.holdLogin = make(chan *hold)
		}
		var err error
		if ab.fake, err = startFake(ab.rl.serve); err != nil {
			return nil, err
		}
		defer ab.fake.close()
		// One at a time: the hold taken is then this connection's own.
		conc = 1
		if err := e.setUpstream(ab.fake.addr()); err != nil {
			return nil, err
		}
		if ac.hold == "greeting" {
			if err := ab.primeProbe(); err != nil {
				return nil, err
			}
		}
	}
	before, err := e.probe.metrics(s.ctx)
	if err != nil {
		return nil, err
	}
	var next atomic.Int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			u := ab.users[w%len(ab.users)]
			for {
				i := next.Add(1) - 1
				if i >= int64(n) || s.ctx.Err() != nil {
					return
				}
				closed, err := ab.one(ac, end, u)
				mu.Lock()
				if err != nil {
					cr.Failed++
					if len(cr.Errors) < 5 {
						cr.Errors = append(cr.Errors, err.Error())
					}
				}
				if end == fin && !closed {
					cr.NoClose++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	// Every connection the proxy accepted has ended once the closed
	// counter has moved by n and nothing is open.
	var after metricSet
	werr := waitFor(s.ctx, 60*time.Second, func() (bool, error) {
		m, err := e.probe.metrics(s.ctx)
		if err != nil {
			return false, nil
		}
		after = m
		return m.openCounts().Open == 0 && total(delta(before.outcomes(), m.outcomes())) >= n, nil
	})
	if after == nil {
		return nil, fmt.Errorf("metrics: %w", werr)
	}
	cr.Outcomes = delta(before.outcomes(), after.outcomes())
	cr.Accepted = int(after.sum(mAccepted, nil) - before.sum(mAccepted, nil))
	cr.Seconds = time.Since(start).Seconds()
	if ac.hold != "" {
		waitFor(s.ctx, 10*time.Second, func() (bool, error) { return ab.fake.open() == 0, nil })
		cr.relayOpen = ab.fake.open()
		if err := e.setUpstream(e.imapdAddr); err != nil {
			return nil, err
		}
	}
	return cr, nil
}

// primeProbe lets through the proxy's own probe of the upstream it was
// just switched to (proxy/upstream_caps.go: a client's greeting starts
// one when the upstream's capabilities are not known), so that the
// greeting holds that follow are the case's connections and not the
// probe's, which would take the first of them and leave each connection
// waiting for the one after it.
func (ab *abruptRun) primeProbe() error {
	c, err := ab.e.dialer.open(ab.e.ctx, plain)
	if err != nil {
		return err
	}
	defer c.abort(fin)
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case h := <-ab.rl.holdGreeting:
		close(h.release)
	case <-t.C:
		return errors.New("the proxy did not probe its new upstream within 10s")
	}
	return waitFor(ab.e.ctx, 10*time.Second, func() (bool, error) { return ab.fake.open() == 0, nil })
}

// one runs one connection of a case: brings it to its point and ends it.
// closed reports, for a FIN, whether the proxy then closed its side.
func (ab *abruptRun) one(ac abruptCase, end ending, u user) (closed bool, err error) {
	ctx := ab.e.ctx
	d := ab.e.dialer
	switch ac.name {
	case "before-greeting", "before-tls-hello":
		addr := d.imapAddr
		if ac.name == "before-tls-hello" {
			addr = d.imapsAddr
		}
		raw, err := d.dialTCP(ctx, addr, d.source())
		if err != nil {
			return true, err
		}
		_, closed := abortConn(raw, end)
		return closed, nil

	case "mid-tls-handshake", "mid-starttls-handshake":
		return ab.midHandshake(ac.name == "mid-starttls-handshake", end)

	case "preauth-literal":
		c, err := d.open(ctx, plain)
		if err != nil {
			return true, err
		}
		if _, err := c.continuation("LOGIN {64}"); err != nil {
			c.abort(rst)
			return true, err
		}
		io.WriteString(c.nc, "0123456789")
		_, closed := c.abort(end)
		return closed, nil

	case "mid-upstream-dial", "mid-login":
		ch := ab.rl.holdGreeting
		if ac.name == "mid-login" {
			ch = ab.rl.holdLogin
		}
		c, err := d.open(ctx, plain)
		if err != nil {
			return true, err
		}
		if _, err := io.WriteString(c.nc, "t1 LOGIN "+quote(u.name)+" "+quote(u.pass)+"\r\n"); err != nil {
			c.abort(rst)
			return true, err
		}
		timeout := time.NewTimer(10 * time.Second)
		defer timeout.Stop()
		var h *hold
		select {
		case h = <-ch:
		case <-timeout.C:
			c.abort(rst)
			return true, errors.New("the proxy did not reach that point of the upstream login within 10s")
		}
		// The FIN (or RST) first, then let the upstream go on, then see
		// the proxy close.
		if end == rst {
			c.raw.SetLinger(0)
			c.raw.Close()
			close(h.release)
			return true, nil
		}
		c.raw.CloseWrite()
		close(h.release)
		_, closed := abortConn(c.raw, fin)
		return closed, nil

	case "append-literal", "in-idle", "mid-fetch":
		t := transport(ab.next.Add(1) % 3)
		who := u
		if ac.name == "mid-fetch" {
			who = ab.big
		}
		c, err := d.open(ctx, t)
		if err != nil {
			return true, err
		}
		if err := c.login(who.name, who.pass); err != nil {
			c.abort(rst)
			return true, err
		}
		switch ac.name {
		case "append-literal":
			if _, err := c.continuation("APPEND INBOX {200000}"); err != nil {
				c.abort(rst)
				return true, err
			}
			c.nc.Write(make([]byte, 5000))
		case "in-idle":
			if _, err := c.command("SELECT INBOX"); err != nil {
				c.abort(rst)
				return true, err
			}
			if _, err := c.idle(); err != nil {
				c.abort(rst)
				return true, err
			}
		case "mid-fetch":
			if err := startBigFetch(c); err != nil {
				c.abort(rst)
				return true, err
			}
		}
		_, closed := c.abort(end)
		return closed, nil
	}
	return true, fmt.Errorf("unknown case %q", ac.name)
}

// startBigFetch selects INBOX, asks for the big message and reads the
// first 64 KiB of its literal.
func startBigFetch(c *client) error {
	if _, err := c.command("SELECT INBOX"); err != nil {
		return err
	}
	tag := c.nextTag()
	c.deadline()
	if _, err := io.WriteString(c.nc, tag+" FETCH 1 BODY.PEEK[]\r\n"); err != nil {
		return err
	}
	for {
		line, err := c.readLine()
		if err != nil {
			return err
		}
		if n := literalSize(line); n >= 0 {
			if n < 128<<10 {
				return fmt.Errorf("FETCH literal of %d bytes; want a big one", n)
			}
			_, err := io.CopyN(io.Discard, c.br, 64<<10)
			return err
		}
		if strings.HasPrefix(line, tag+" ") {
			return fmt.Errorf("FETCH ended before its literal: %q", line)
		}
	}
}

// midHandshake starts a TLS handshake (on imaps, or after STARTTLS) and
// ends the connection once the server's first flight has arrived: the
// proxy is then waiting for the client's Finished.
func (ab *abruptRun) midHandshake(viaSTARTTLS bool, end ending) (bool, error) {
	ctx := ab.e.ctx
	d := ab.e.dialer
	addr := d.imapsAddr
	if viaSTARTTLS {
		addr = d.imapAddr
	}
	raw, err := d.dialTCP(ctx, addr, d.source())
	if err != nil {
		return true, err
	}
	if viaSTARTTLS {
		c := &client{raw: raw, nc: raw, br: bufio.NewReader(raw), timeout: d.timeout}
		c.deadline()
		if _, err := c.readLine(); err != nil {
			raw.Close()
			return true, err
		}
		if _, err := c.command("STARTTLS"); err != nil {
			raw.Close()
			return true, err
		}
		raw.SetDeadline(time.Time{})
	}
	sc := &stallConn{TCPConn: raw, got: make(chan struct{}), stop: make(chan struct{})}
	hsDone := make(chan struct{})
	go func() {
		defer close(hsDone)
		hctx, cancel := context.WithTimeout(ctx, d.timeout)
		defer cancel()
		tls.Client(sc, clientTLS()).HandshakeContext(hctx)
	}()
	timeout := time.NewTimer(d.timeout)
	defer timeout.Stop()
	var failed error
	select {
	case <-sc.got:
	case <-hsDone:
		failed = errors.New("the handshake ended before the server's first flight")
	case <-timeout.C:
		failed = errors.New("no server flight")
	}
	var closed bool
	if failed != nil {
		raw.SetLinger(0)
		raw.Close()
		closed = true
	} else {
		_, closed = abortConn(raw, end)
	}
	close(sc.stop)
	<-hsDone
	return closed, failed
}

// stallConn is the TCP connection under a TLS client that is to stop
// halfway: the first read that brings data (the server's first flight)
// signals got and withholds the data, and every read then waits for stop.
type stallConn struct {
	*net.TCPConn
	got, stop chan struct{}
	once      sync.Once
}

func (s *stallConn) Read(p []byte) (int, error) {
	select {
	case <-s.got:
		<-s.stop
		return 0, net.ErrClosed
	default:
	}
	n, err := s.TCPConn.Read(p)
	if n > 0 {
		s.once.Do(func() { close(s.got) })
		<-s.stop
		return 0, net.ErrClosed
	}
	return n, err
}

package main

import (
	"bufio"
	"net"
	"os"
	"strings"
	"time"
)

// faultEMFILE runs imapguard with a low RLIMIT_NOFILE, fills its
// descriptors with connections, and checks that it keeps serving the
// sessions it has, answers a login it cannot dial for with NO
// [UNAVAILABLE], and serves the connections that waited once
// descriptors are free again.
func (s *suite) faultEMFILE(r *phaseResult, users []user) {
	const name = "EMFILE at accept"
	const nofile = 128
	e, err := newEnv(s.ctx, "emfile", s.dir, s.bins, os.Stderr, users, guardConfig{maxConnsPerUser: 1000, nofile: nofile})
	if err != nil {
		r.check(name+": ran", false, "%v", err)
		return
	}
	defer e.close()
	e.dialer.timeout = 5 * time.Second
	if err := e.warmUp(users[0]); err != nil {
		r.check(name+": ran", false, "%v", err)
		return
	}
	base, err := e.takeBaseline()
	if err != nil {
		r.check(name+": ran", false, "%v", err)
		return
	}
	sessions, err := e.openCrowd(10, users)
	if err != nil {
		r.check(name+": ran", false, "%v", err)
		return
	}
	defer sessions.close()

	// Fill the descriptors: open plaintext connections one at a time
	// until one is not greeted within 2s; the proxy is then at its limit.
	var greeted, waiting []*net.TCPConn
	defer func() {
		for _, c := range append(greeted, waiting...) {
			c.Close()
		}
	}()
	var first *client // a greeted connection kept for a LOGIN during the fault
	for len(greeted) < 2*nofile {
		raw, err := e.dialer.dialTCP(e.ctx, e.imapAddr, nil)
		if err != nil {
			r.check(name+": ran", false, "dial: %v", err)
			return
		}
		c := &client{raw: raw, nc: raw, br: bufio.NewReader(raw), timeout: 2 * time.Second}
		c.deadline()
		if _, err := c.readLine(); err != nil {
			waiting = append(waiting, raw)
			break
		}
		if first == nil {
			first = c
			continue
		}
		greeted = append(greeted, raw)
	}
	st, _ := readProc(e.guard.pid())
	r.check(name+": the proxy reached its descriptor limit", len(waiting) == 1 && st.FDs >= nofile-1,
		"%d connections greeted, then one was not; imapguard holds %d descriptors of %d", len(greeted)+1, st.FDs, nofile)
	for range 20 {
		raw, err := e.dialer.dialTCP(e.ctx, e.imapAddr, nil)
		if err != nil {
			break
		}
		waiting = append(waiting, raw)
	}
	r.check(name+": logged-in sessions keep working", sessions.exercise() == nil, "%v", orNone(sessions.exercise()))
	if first != nil {
		first.timeout = faultConnectTimeoutDefault + 2*time.Second
		took, err := loginUnavailable(first, users[1])
		r.check(name+": a LOGIN that needs a descriptor for the upstream is answered NO [UNAVAILABLE]", err == nil,
			"after %s; %v", took.Round(time.Millisecond), orNone(err))
	}
	r.check(name+": the accept errors are logged and retried", e.guardLogHas("accept failed; retrying") > 0,
		"%d log lines 'accept failed; retrying'", e.guardLogHas("accept failed; retrying"))

	// The fault ends: the greeted connections go; those that waited in
	// the backlog are accepted and greeted.
	for _, c := range greeted {
		c.Close()
	}
	greeted = nil
	served := 0
	for _, raw := range waiting {
		raw.SetReadDeadline(time.Now().Add(10 * time.Second))
		if line, err := bufio.NewReader(raw).ReadString('\n'); err == nil && strings.HasPrefix(line, "* OK") {
			served++
		}
	}
	r.check(name+": the connections that waited are greeted once descriptors are free", served == len(waiting),
		"%d of %d within 10s", served, len(waiting))
	if first != nil {
		first.timeout = 10 * time.Second
		err := first.login(users[1].name, users[1].pass)
		if err == nil {
			err = first.logout()
		}
		r.check(name+": the connection refused during the fault logs in after it", err == nil, "%v", orNone(err))
	}
	for _, c := range waiting {
		c.Close()
	}
	waiting = nil
	sessions.close()
	sessions.cs = nil
	e.settle(r, base, 30*time.Second, nofile)
	e.stillServes(r, users[0], "after EMFILE")
	e.checkExit(r)
}

// faultConnectTimeoutDefault is the connect_timeout of the EMFILE
// proxy (the default).
const faultConnectTimeoutDefault = 5 * time.Second

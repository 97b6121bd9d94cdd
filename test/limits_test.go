package test

import (
	"strings"
	"testing"
	"time"

	"github.com/imapguard/imapguard/cmd/imapd/server"
	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/test/proxytest"
)

// countedProxy is a proxy in front of imapd whose upstream connections
// and timers the test sees: the proxy dials through dials, which counts
// the connections it opens and closes, reaches imapd through fwd, which
// the test can cut as a crashing upstream would, and runs its timers on
// clock, which moves only when the test moves it: no connection here
// ends by the wall clock.
type countedProxy struct {
	*proxytest.Proxy
	dials *proxytest.Dialer
	fwd   *proxytest.Forwarder
	clock *proxytest.Clock
}

// startCounted starts imapd with users (default: alice), the forwarder
// and the proxy with opts and lim.
func startCounted(t *testing.T, opts proxy.Options, lim limits.Options, users ...server.User) *countedProxy {
	t.Helper()
	// Registered before the proxy's cleanup, the forwarder's runs after it.
	p := &countedProxy{dials: &proxytest.Dialer{}, fwd: proxytest.Forward(t, proxytest.Imapd(t, users...)), clock: proxytest.NewClock()}
	opts.Dial, opts.Clock = p.dials.Dial, p.clock
	p.Proxy = proxytest.Start(t, proxytest.Config{Upstream: p.fwd.Addr, Options: opts, Limits: lim})
	return p
}

// wantDials checks how many upstream connections the proxy opened.
func (p *countedProxy) wantDials(t *testing.T, want int64, why string) {
	t.Helper()
	if n := p.dials.Dials.Load(); n != want {
		t.Errorf("upstream dials: got %d; want %d%s", n, want, why)
	}
}

// greeted dials from src and checks the greeting is * OK.
func greeted(t *testing.T, src, addr string) *proxytest.Conn {
	t.Helper()
	c := proxytest.DialFrom(t, src, addr)
	c.Greeting()
	return c
}

// refused dials from src and checks the proxy answers the connection with
// bye and closes it.
func refused(t *testing.T, src, addr, bye string) {
	t.Helper()
	c := proxytest.DialFrom(t, src, addr)
	c.Expect(bye)
	c.ExpectClosed()
}

func TestLimitMaxConnections(t *testing.T) {
	p := startCounted(t, proxy.Options{}, limits.Options{MaxConnections: 3})
	s1 := proxytest.Login(t, p.Addr, "alice", "secret")
	s2 := proxytest.Login(t, p.Addr, "alice", "secret")
	pre := greeted(t, "", p.Addr)
	p.wantDials(t, 2, "")

	// Full: a new connection takes the place of the one that has not
	// logged in (TestFloodEvictsUnauthenticated).
	s3 := greeted(t, "", p.Addr)
	pre.Expect(byeEvicted(3))
	pre.ExpectClosed()
	s3.LogIn("l", "LOGIN alice secret")

	// Full of sessions: refused.
	refused(t, "", p.Addr, byeMaxConns(3))
	p.wantDials(t, 3, " (refused connection must not reach the upstream)")
	if c := p.Limiter.Counts(); c.Connections != 3 || c.Sessions != 3 {
		t.Errorf("counts after refusal: got %+v; want Connections=3 Sessions=3", c)
	}
	// The refusal disturbed nobody.
	s2.OK("n1", "NOOP")
	s3.OK("n1", "NOOP")

	// Refused again while full, then one leaves and a new one fits.
	refused(t, "", p.Addr, byeMaxConns(3))
	s1.Logout("z")
	proxytest.WaitCounts(t, p.Limiter, "one slot freed", func(c limits.Counts) bool { return c.Connections == 2 })
	proxytest.Login(t, p.Addr, "alice", "secret").OK("n2", "NOOP")
	// Full again.
	refused(t, "", p.Addr, byeMaxConns(3))
	p.wantDials(t, 4, "")
	p.dials.WaitOpen(t, 3)
}

func TestLimitPerIP(t *testing.T) {
	p := startCounted(t, proxy.Options{}, limits.Options{MaxConnectionsPerIP: 2})
	a1 := greeted(t, "127.0.0.2", p.Addr)
	a2 := greeted(t, "127.0.0.2", p.Addr)
	refused(t, "127.0.0.2", p.Addr, byeMaxPerIP(2))

	b1 := greeted(t, "127.0.0.3", p.Addr)
	b2 := greeted(t, "127.0.0.3", p.Addr)
	refused(t, "127.0.0.3", p.Addr, byeMaxPerIP(2))
	if c := p.Limiter.Counts(); c.Connections != 4 || c.Addresses != 2 {
		t.Errorf("counts: got %+v; want Connections=4 Addresses=2", c)
	}
	a2.OK("n", "NOOP")
	b2.OK("n", "NOOP")
	b1.OK("l", "LOGIN alice secret")

	// A slot freed on 127.0.0.2 is usable from there.
	a1.Close()
	proxytest.WaitCounts(t, p.Limiter, "127.0.0.2 slot freed", func(c limits.Counts) bool { return c.Connections == 3 })
	greeted(t, "127.0.0.2", p.Addr).OK("l", "LOGIN alice secret")
	refused(t, "127.0.0.2", p.Addr, byeMaxPerIP(2))
}

func TestLimitPerUser(t *testing.T) {
	p := startCounted(t, proxy.Options{}, limits.Options{MaxConnectionsPerUser: 2},
		server.User{Username: "alice", Password: "secret", Messages: 1},
		server.User{Username: "bob", Password: "hunter2"})
	s1 := proxytest.Login(t, p.Addr, "alice", "secret")
	s2 := proxytest.Login(t, p.Addr, "alice", "secret")
	p.dials.WaitOpen(t, 2)

	c := greeted(t, "", p.Addr)
	_, st := c.Cmd("l1", "LOGIN alice secret")
	wantLine(t, "3rd LOGIN of alice", st, noMaxPerUser("l1", 2))
	p.wantDials(t, 3, " (the limit is checked after the upstream accepted)")
	p.dials.WaitOpen(t, 2) // the refused login's upstream connection was closed

	// AUTHENTICATE PLAIN is refused the same way.
	_, st = c.Cmd("l2", "AUTHENTICATE PLAIN "+proxytest.SASLPlain("alice", "secret"))
	wantLine(t, "3rd AUTHENTICATE of alice", st, noMaxPerUser("l2", 2))
	p.dials.WaitOpen(t, 2)

	// The connection stays usable.
	c.OK("n1", "NOOP")
	if un := c.OK("c1", "CAPABILITY"); len(un) != 1 || !strings.HasPrefix(un[0], "* CAPABILITY ") {
		t.Fatalf("CAPABILITY after refusal: got %q; want one * CAPABILITY line", un)
	}

	// At the cap, a wrong password is still a wrong password: the limit
	// is only checked once the upstream accepted the credentials.
	_, st = c.Cmd("l3", "LOGIN alice wrong")
	wantPrefix(t, "wrong password at the cap", st, "l3 NO [AUTHENTICATIONFAILED]")
	p.dials.WaitOpen(t, 2)

	// Another user is not affected.
	proxytest.Login(t, p.Addr, "bob", "hunter2").OK("n", "NOOP")
	p.dials.WaitOpen(t, 3)

	// A refused connection can log out.
	d := greeted(t, "", p.Addr)
	_, st = d.Cmd("l1", "LOGIN alice secret")
	wantLine(t, "LOGIN of alice on a 4th connection", st, noMaxPerUser("l1", 2))
	d.Logout("z")

	// Once a session ends, LOGIN on the refused connection succeeds.
	s1.Logout("z")
	aliceDown := func(c limits.Counts) bool { return c.PerUser["alice"] == 1 }
	proxytest.WaitCounts(t, p.Limiter, "alice down to one session", aliceDown)
	_, st = c.Cmd("l4", "LOGIN alice secret")
	wantPrefix(t, "LOGIN after a session ended", st, "l4 OK ")
	c.OK("s", "SELECT INBOX")
	s2.OK("n", "NOOP")
	if n := p.Limiter.Counts().PerUser["alice"]; n != 2 {
		t.Errorf("alice sessions: got %d; want 2", n)
	}
	p.dials.WaitOpen(t, 3)
	c.Logout("z")
	proxytest.WaitCounts(t, p.Limiter, "alice down to one session", aliceDown)
	p.dials.WaitOpen(t, 2)
}

func TestLimitPerUserDefault(t *testing.T) {
	p := startCounted(t, proxy.Options{}, limits.Options{})
	var sessions []*proxytest.Conn
	for range 16 {
		sessions = append(sessions, proxytest.Login(t, p.Addr, "alice", "secret"))
	}
	c := greeted(t, "", p.Addr)
	_, st := c.Cmd("l1", "LOGIN alice secret")
	wantLine(t, "17th LOGIN", st, noMaxPerUser("l1", 16))
	p.dials.WaitOpen(t, 16)
	sessions[3].Logout("z")
	proxytest.WaitCounts(t, p.Limiter, "15 sessions", func(c limits.Counts) bool { return c.Sessions == 15 })
	_, st = c.Cmd("l2", "LOGIN alice secret")
	wantPrefix(t, "LOGIN after one of 16 left", st, "l2 OK ")
}

// TestLimitLiveReload changes the limiter's caps and the server's
// options while connections are open: new connections get the new
// values, older ones keep theirs.
func TestLimitLiveReload(t *testing.T) {
	t.Run("limiter", func(t *testing.T) {
		p := startCounted(t, proxy.Options{}, limits.Options{})
		c1 := greeted(t, "", p.Addr)
		c2 := greeted(t, "", p.Addr)
		c3 := greeted(t, "127.0.0.2", p.Addr)

		p.Limiter.SetOptions(limits.Options{MaxConnections: 2})
		// Over the new cap: refused, and nobody is closed for it, since
		// closing one would not make room.
		refused(t, "", p.Addr, byeMaxConns(2))
		// The connections over the new cap are kept.
		c1.OK("n", "NOOP")
		c2.OK("n", "NOOP")
		c3.OK("n", "NOOP")

		c1.Logout("z")
		proxytest.WaitCounts(t, p.Limiter, "two connections left", func(c limits.Counts) bool { return c.Connections == 2 })
		// At the cap: a new connection takes the place of the oldest one
		// that has not logged in.
		c4 := greeted(t, "", p.Addr)
		c2.Expect(byeEvicted(2))
		c2.ExpectClosed()

		// Per address and per user, lowered and raised.
		p.Limiter.SetOptions(limits.Options{MaxConnectionsPerIP: 1, MaxConnectionsPerUser: 1})
		refused(t, "127.0.0.2", p.Addr, byeMaxPerIP(1))
		c3.OK("l", "LOGIN alice secret")
		_, st := c4.Cmd("l", "LOGIN alice secret")
		wantLine(t, "2nd session of alice with per-user cap 1", st, noMaxPerUser("l", 1))

		p.Limiter.SetOptions(limits.Options{MaxConnectionsPerIP: 2, MaxConnectionsPerUser: 2})
		_, st = c4.Cmd("l2", "LOGIN alice secret")
		wantPrefix(t, "LOGIN after raising the per-user cap", st, "l2 OK ")
		greeted(t, "127.0.0.2", p.Addr)
	})

	t.Run("server options", func(t *testing.T) {
		const tooBig = " BAD [TOOBIG] Command too long (max_command_size=64)"
		// Started with the defaults: preauth_timeout 1m, idle_timeout 30m.
		p := startCounted(t, proxy.Options{}, limits.Options{})
		old := greeted(t, "", p.Addr)
		oldSess := proxytest.Login(t, p.Addr, "alice", "secret")
		oldSess.Settle("x") // relaying: its idle timer runs

		p.Server.SetOptions(proxy.Options{UpstreamAddr: p.fwd.Addr, Dial: p.dials.Dial,
			MaxCommandSize: 64, PreauthTimeout: 10 * time.Second, IdleTimeout: 5 * time.Minute})
		fresh := greeted(t, "", p.Addr)

		long := `ID ("name" "` + strings.Repeat("x", 100) + `")`
		_, st := fresh.Cmd("t1", long)
		wantLine(t, "long ID on a new connection", st, "t1"+tooBig)
		if un := old.OK("t1", long); len(un) != 1 || !strings.HasPrefix(un[0], "* ID ") {
			t.Fatalf("long ID on an older connection: got %q; want * ID", un)
		}

		// The new connection has the new pre-auth timeout; the older one
		// keeps its own. Three timers wait: the pre-auth timeouts of old
		// and fresh, and the idle timeout of oldSess.
		p.clock.ByeAfter(fresh, 10*time.Second, 3, byePreauth("10s"))
		old.OK("n", "NOOP")
		p.clock.ByeAfter(old, 50*time.Second, 2, byePreauth("1m"))

		// A new session gets the new idle timeout; the older session keeps
		// the default one although it has been quiet for longer.
		sess := proxytest.Login(t, p.Addr, "alice", "secret")
		list := `LIST "" "` + strings.Repeat("x", 100) + `"`
		_, st = sess.Cmd("t2", list)
		wantLine(t, "long LIST in a new session", st, "t2"+tooBig)
		p.clock.ByeAfter(sess, 5*time.Minute, 2, byeIdle("5m"))
		oldSess.OK("n", "NOOP") // quiet for 6m
		oldSess.OK("t2", list)  // the older session keeps max_command_size 10240
		proxytest.WaitCounts(t, p.Limiter, "one connection left", func(c limits.Counts) bool { return c.Connections == 1 })
	})
}

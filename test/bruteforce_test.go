package test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imapguard/imapguard/cmd/imapd/server"
	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/test/proxytest"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// The brute-force defence across connections (issue 11): failed logins
// counted per address and per user, a growing delay before the upstream
// is asked, blocks, on the fake clock.

// guardedProxy is a proxy in front of imapd (alice/secret, bob/hunter2)
// with a brute-force tracker, its upstream dials counted, its timers and
// the tracker's time on a fake clock, and its metrics in reader.
type guardedProxy struct {
	*proxytest.Proxy
	tracker *limits.Tracker
	dials   *proxytest.Dialer
	clock   *proxytest.Clock
	reader  *sdkmetric.ManualReader
}

func startGuarded(t *testing.T, ao limits.AuthOptions) *guardedProxy {
	t.Helper()
	return startGuardedWith(t, ao, func(c *proxytest.Config) { c.Options.MaxAuthFailures = 100 })
}

// startGuardedMax is startGuarded with max_auth_failures.
func startGuardedMax(t *testing.T, ao limits.AuthOptions, maxAuthFailures int) *guardedProxy {
	t.Helper()
	return startGuardedWith(t, ao, func(c *proxytest.Config) { c.Options.MaxAuthFailures = maxAuthFailures })
}

// startGuardedWith is startGuarded with the proxy's configuration changed
// by set.
func startGuardedWith(t *testing.T, ao limits.AuthOptions, set func(*proxytest.Config)) *guardedProxy {
	t.Helper()
	up := proxytest.Imapd(t,
		server.User{Username: "alice", Password: "secret", Messages: 1},
		server.User{Username: "bob", Password: "hunter2", Messages: 1})
	g := &guardedProxy{tracker: limits.NewTracker(ao), dials: &proxytest.Dialer{}, clock: proxytest.NewClock(),
		reader: sdkmetric.NewManualReader()}
	meters := sdkmetric.NewMeterProvider(sdkmetric.WithReader(g.reader))
	t.Cleanup(func() { meters.Shutdown(context.Background()) })
	// preauth_timeout far beyond the delays and blocks the tests wait
	// out on the fake clock.
	opts := proxy.Options{Dial: g.dials.Dial, Clock: g.clock, AuthTracker: g.tracker, PreauthTimeout: 24 * time.Hour}
	cfg := proxytest.Config{Upstream: up, Options: opts, Setup: func(s *proxy.Server) {
		if err := s.Instrument(nil, meters); err != nil {
			t.Fatal(err)
		}
	}}
	set(&cfg)
	g.Proxy = proxytest.Start(t, cfg)
	return g
}

func guardOptions() limits.AuthOptions {
	return limits.AuthOptions{Window: 10 * time.Minute, MaxPerIP: 10, MaxPerUser: 30,
		Block: 15 * time.Minute, Delay: 2 * time.Second, Entries: 1000}
}

func (g *guardedProxy) wantDials(t *testing.T, want int64, why string) {
	t.Helper()
	if n := g.dials.Dials.Load(); n != want {
		t.Errorf("upstream dials: got %d; want %d (%s)", n, want, why)
	}
}

const (
	authFailedNo = " NO [AUTHENTICATIONFAILED] Authentication failed"
	blockedByIP  = " NO [UNAVAILABLE] Too many failed logins, try again later (max_auth_failures_per_ip=%d)"
	blockedUser  = " NO [UNAVAILABLE] Too many failed logins, try again later (max_auth_failures_per_user=%d)"
)

// noAnswerYet checks that nothing comes from c for a moment: the answer
// is held back.
func noAnswerYet(t *testing.T, c *proxytest.Conn, why string) {
	t.Helper()
	cl := c.Client()
	cl.Timeout = 100 * time.Millisecond
	defer func() { cl.Timeout = 0 }()
	if l, err := cl.Line(); err == nil || !proxytest.IsTimeout(err) {
		t.Fatalf("%s: got %q, %v; want no answer yet", why, l, err)
	}
}

func TestBruteForceDelayGrows(t *testing.T) {
	g := startGuarded(t, guardOptions())
	c := proxytest.DialFrom(t, "127.0.0.2", g.Addr)
	c.Greeting()
	g.clock.WaitTimers(t, 1) // preauth_timeout
	// The first failure is answered at once.
	if _, st := c.Cmd("a1", "LOGIN alice wrong"); st != "a1"+authFailedNo {
		t.Fatalf("got %q; want %q", st, "a1"+authFailedNo)
	}
	g.wantDials(t, 1, "the first attempt")
	for i, delay := range []time.Duration{2 * time.Second, 4 * time.Second, 8 * time.Second, 15 * time.Second} {
		tag := fmt.Sprintf("a%d", i+2)
		c.Send(tag + " LOGIN alice wrong\r\n")
		// The delay runs before the upstream is asked: nothing is
		// dialled, nothing answered, until the clock passes it.
		g.clock.WaitTimers(t, 2)
		noAnswerYet(t, c, tag)
		g.wantDials(t, int64(i+1), "during the delay")
		g.clock.Expire(t, delay, 2)
		c.Expect(tag + authFailedNo)
		g.wantDials(t, int64(i+2), "after the delay")
	}
	// Another address is not delayed, and logs in.
	ok := proxytest.LoginFrom(t, "127.0.0.3", g.Addr, "alice", "secret")
	ok.Logout("z")
	// The right password from the failing address waits the delay too
	// (15 s at most), and logs in; the success resets the delay.
	c.Send("a9 LOGIN bob hunter2\r\n")
	g.clock.WaitTimers(t, 2)
	noAnswerYet(t, c, "bob from the failing address")
	g.clock.Expire(t, limits.MaxAuthFailureDelay, 2)
	c.LoggedIn("a9")
	c.Logout("z")
	c2 := proxytest.LoginFrom(t, "127.0.0.2", g.Addr, "alice", "secret") // no delay now
	c2.Logout("z")
	proxytest.WaitZero(t, g.Limiter)

	m := collect(t, g.reader)
	m.want(t, []metricWant{
		{"sum", "imapguard.auth.delayed", nil, 5},
		{"sum", "imapguard.auth.attempts", []string{"result=failed"}, 5},
		// alice from .3 and from .2, bob from .2.
		{"gauge", "imapguard.auth.tracked", []string{"table=known"}, 3},
	})
}

func TestBruteForceBlockPerIP(t *testing.T) {
	o := guardOptions()
	o.MaxPerIP, o.Delay = 3, 0
	g := startGuarded(t, o)
	c := proxytest.DialFrom(t, "127.0.0.2", g.Addr)
	c.Greeting()
	for i, user := range []string{"alice", "bob", "carol"} {
		tag := fmt.Sprintf("a%d", i)
		if _, st := c.Cmd(tag, "LOGIN "+user+" wrong"); st != tag+authFailedNo {
			t.Fatalf("got %q; want a failed login", st)
		}
	}
	// Blocked now, even with the right password, without a dial.
	want := fmt.Sprintf(blockedByIP, 3)
	if _, st := c.Cmd("b1", "LOGIN alice secret"); st != "b1"+want {
		t.Fatalf("got %q; want %q", st, "b1"+want)
	}
	d := proxytest.DialFrom(t, "127.0.0.2", g.Addr) // on a new connection too
	d.Greeting()
	if _, st := d.Cmd("b2", "AUTHENTICATE PLAIN "+proxytest.SASLPlain("bob", "hunter2")); st != "b2"+want {
		t.Fatalf("got %q; want %q", st, "b2"+want)
	}
	g.wantDials(t, 3, "blocked logins must not reach the upstream")
	// Other addresses are not.
	proxytest.LoginFrom(t, "127.0.0.3", g.Addr, "alice", "secret").Logout("z")
	// A moment before auth_failure_block has passed since the last
	// failure, still blocked; then free.
	g.clock.Advance(o.Block - time.Second)
	if _, st := d.Cmd("b3", "LOGIN alice secret"); st != "b3"+want {
		t.Fatalf("a second before the block ends: got %q; want %q", st, "b3"+want)
	}
	g.clock.Advance(time.Second)
	d.LogIn("b4", "LOGIN alice secret")
	d.Logout("z")
	c.Logout("z")
	proxytest.WaitZero(t, g.Limiter)

	m := collect(t, g.reader)
	m.want(t, []metricWant{
		{"sum", "imapguard.connections.refused", []string{"reason=max_auth_failures_per_ip"}, 3},
		{"sum", "imapguard.auth.attempts", []string{"result=blocked"}, 3},
		{"gauge", "imapguard.limit", []string{"limit=max_auth_failures_per_ip"}, 3},
	})
}

// A refusal by the block counts towards max_auth_failures on its
// connection, as a wrong password does.
func TestBruteForceBlockCountsPerConnection(t *testing.T) {
	o := guardOptions()
	o.MaxPerIP, o.Delay = 1, 0
	g := startGuardedMax(t, o, 2)
	c := proxytest.DialFrom(t, "127.0.0.2", g.Addr)
	c.Greeting()
	c.Cmd("a1", "LOGIN alice wrong")
	c.Send("a2 LOGIN alice secret\r\n")
	c.Expect("a2"+fmt.Sprintf(blockedByIP, 1), "* BYE Too many authentication failures (max_auth_failures=2)")
	c.ExpectClosed()
	proxytest.WaitZero(t, g.Limiter)
}

func TestBruteForceBlockPerUser(t *testing.T) {
	o := guardOptions()
	o.MaxPerIP, o.MaxPerUser, o.Delay = 0, 3, 0
	g := startGuarded(t, o)
	// alice uses 127.0.0.5.
	proxytest.LoginFrom(t, "127.0.0.5", g.Addr, "alice", "secret").Logout("z")
	for _, src := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"} {
		c := proxytest.DialFrom(t, src, g.Addr)
		c.Greeting()
		if _, st := c.Cmd("a", "LOGIN ALICE wrong"); st != "a"+authFailedNo {
			t.Fatalf("from %s: got %q; want a failed login", src, st)
		}
		c.Logout("z")
	}
	dials := g.dials.Dials.Load()
	// A new address is refused for alice, even with her password; bob
	// is not.
	c := proxytest.DialFrom(t, "127.0.0.6", g.Addr)
	c.Greeting()
	if _, st := c.Cmd("b", "LOGIN alice secret"); st != "b"+fmt.Sprintf(blockedUser, 3) {
		t.Fatalf("alice from a new address: got %q; want %q", st, "b"+fmt.Sprintf(blockedUser, 3))
	}
	g.wantDials(t, dials, "a blocked user must not reach the upstream")
	// From where she logged in before, alice is not locked out, and her
	// success clears her count: the new address may log her in too.
	proxytest.LoginFrom(t, "127.0.0.5", g.Addr, "alice", "secret").Logout("z")
	c.LogIn("c", "LOGIN alice secret")
	c.Logout("z")
	proxytest.WaitZero(t, g.Limiter)
}

// A client that leaves during the delay ends its connection at once: the
// upstream is never asked, the slot is freed.
func TestBruteForceClientLeavesDuringDelay(t *testing.T) {
	g := startGuarded(t, guardOptions())
	c := proxytest.DialFrom(t, "127.0.0.2", g.Addr)
	c.Greeting()
	c.Cmd("a1", "LOGIN alice wrong")
	c.Send("a2 LOGIN alice secret\r\n")
	g.clock.WaitTimers(t, 2)
	c.Close()
	proxytest.WaitZero(t, g.Limiter)
	// The delay's timer is stopped with the connection; the clock moving
	// on then dials nothing.
	proxytest.WaitFor(t, "the delay's timer stopped", func() bool { return g.clock.Pending() == 0 })
	g.clock.Advance(time.Minute)
	g.wantDials(t, 1, "the client left during the delay")

	// A kick during the delay: the client is told BYE.
	k := proxytest.DialFrom(t, "127.0.0.2", g.Addr)
	k.Greeting()
	k.Send("k1 LOGIN alice secret\r\n")
	g.clock.WaitTimers(t, 2)
	if _, err := g.Server.Kick(proxy.Match{Address: "127.0.0.2"}, ""); err != nil {
		t.Fatal(err)
	}
	k.ExpectBye("* BYE [UNAVAILABLE] Session closed by the administrator")
	proxytest.WaitZero(t, g.Limiter)
	g.wantDials(t, 1, "the connection was kicked during the delay")
}

// SIGHUP's path: new options apply at once to what is tracked, and
// clearing an address lifts its block.
func TestBruteForceReloadAndClear(t *testing.T) {
	o := guardOptions()
	o.Delay = 0
	g := startGuarded(t, o)
	c := proxytest.DialFrom(t, "127.0.0.2", g.Addr)
	c.Greeting()
	c.Cmd("a1", "LOGIN alice wrong")
	c.Cmd("a2", "LOGIN alice wrong")
	c.LogIn("a3", "LOGIN alice secret") // 2 < 10
	c.Logout("z")
	o.MaxPerIP = 2
	g.tracker.SetOptions(o)
	c = proxytest.DialFrom(t, "127.0.0.2", g.Addr)
	c.Greeting()
	if _, st := c.Cmd("b1", "LOGIN alice secret"); st != "b1"+fmt.Sprintf(blockedByIP, 2) {
		t.Fatalf("after lowering max_auth_failures_per_ip: got %q; want blocked", st)
	}
	ps := g.Server.Penalties()
	if len(ps) != 1 || ps[0].Kind != "address" || ps[0].Key != "127.0.0.2/32" || ps[0].Failures != 2 ||
		!ps[0].BlockedUntil.Equal(g.clock.Now().Add(o.Block)) {
		t.Fatalf("got penalties %+v; want 127.0.0.2 blocked", ps)
	}
	if n, err := g.Server.ClearPenalties(proxy.PenaltyMatch{Address: "127.0.0.0/24"}); err != nil || n != 1 {
		t.Fatalf("clear: got %d, %v; want 1", n, err)
	}
	c.LogIn("b2", "LOGIN alice secret")
	c.Logout("z")
	if _, err := g.Server.ClearPenalties(proxy.PenaltyMatch{Address: "nope"}); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("clear with a bad address: got %v; want an error naming it", err)
	}
	proxytest.WaitZero(t, g.Limiter)
}

// TestCLIBruteForceReload runs the binaries: failed logins are tracked,
// and SIGHUP lowering max_auth_failures_per_ip blocks the address that
// already has that many, at once.
func TestCLIBruteForceReload(t *testing.T) {
	upAddr := startIMAPD(t)
	cfg := func(maxPerIP int) string {
		return "[listen]\nimap = \"127.0.0.1:0\"\n[upstream]\naddress = \"" + upAddr + "\"\n[limits]\n" +
			"auth_failure_delay = \"0s\"\nmax_auth_failures = 10\nmax_auth_failures_per_ip = " + strconv.Itoa(maxPerIP) + "\n"
	}
	path := writeFile(t, "imapguard.toml", cfg(100))
	p := startImapguard(t, path)
	addr := p.waitLog(regexp.MustCompile(`msg="imapguard listening" imap=(\S+)`))[1]

	c := proxytest.DialFrom(t, "127.0.0.2", addr)
	c.Greeting()
	for _, tag := range []string{"a", "b"} {
		if _, st := c.Cmd(tag, "LOGIN demo wrong"); st != tag+authFailedNo {
			t.Fatalf("got %q; want a failed login", st)
		}
	}
	if err := os.WriteFile(path, []byte(cfg(2)), 0o600); err != nil {
		t.Fatal(err)
	}
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLog(regexp.MustCompile(`configuration reloaded`))
	if _, st := c.Cmd("c", "LOGIN demo demo"); st != "c"+fmt.Sprintf(blockedByIP, 2) {
		t.Fatalf("after reload: got %q; want blocked", st)
	}
	proxytest.LoginFrom(t, "127.0.0.3", addr, "demo", "demo").Logout("z")
}

// Over implicit TLS the delay works the same, and a client that leaves
// during it is noticed through the TLS layer.
func TestBruteForceDelayOverTLS(t *testing.T) {
	ca := newTestCA(t, "bruteforce")
	g := startGuardedWith(t, guardOptions(), func(c *proxytest.Config) {
		c.Options.TLSConfig, c.ServeTLS, c.Options.MaxAuthFailures = ca.serverConfig(), true, 100
	})
	c, _ := proxytest.DialTLS(t, g.TLSAddr, ca.clientConfig())
	c.Greeting()
	c.Cmd("a1", "LOGIN alice wrong")
	c.Send("a2 LOGIN alice secret\r\n")
	g.clock.WaitTimers(t, 2)
	noAnswerYet(t, c, "a2 over TLS")
	g.clock.Expire(t, 2*time.Second, 2)
	c.LoggedIn("a2")
	c.Logout("z")

	d, _ := proxytest.DialTLS(t, g.TLSAddr, ca.clientConfig())
	d.Greeting()
	d.Cmd("b1", "LOGIN bob wrong")
	d.Send("b2 LOGIN bob hunter2\r\n")
	g.clock.WaitTimers(t, 2)
	d.Close()
	proxytest.WaitZero(t, g.Limiter)
	g.wantDials(t, 3, "the client left during the delay")
}

// A client in limits.exempt_networks (a webmail host) is neither
// delayed nor blocked by its address, however often its users fail; its
// users are still counted by name.
func TestBruteForceExemptNetwork(t *testing.T) {
	o := guardOptions()
	o.MaxPerIP, o.MaxPerUser = 2, 4
	g := startGuardedWith(t, o, func(c *proxytest.Config) {
		c.Options.MaxAuthFailures = 100
		c.Limits.ExemptNetworks = []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}
	})
	c := proxytest.DialFrom(t, "127.0.0.2", g.Addr)
	c.Greeting()
	// Past max_auth_failures_per_ip, with no delay: each answer comes at
	// once, and the upstream is asked every time.
	for i := range 3 {
		tag := fmt.Sprintf("a%d", i)
		if _, st := c.Cmd(tag, "LOGIN alice wrong"); st != tag+authFailedNo {
			t.Fatalf("failure %d from an exempt address: got %q; want a failed login", i+1, st)
		}
	}
	g.wantDials(t, 3, "an exempt address is not blocked")
	c.LogIn("b1", "LOGIN bob hunter2")
	c.Logout("z")
	// alice's fourth failure, from an address that is not exempt,
	// reaches max_auth_failures_per_user: alice is blocked there.
	d := proxytest.DialFrom(t, "127.0.0.3", g.Addr)
	d.Greeting()
	if _, st := d.Cmd("d1", "LOGIN alice wrong"); st != "d1"+authFailedNo {
		t.Fatalf("got %q; want a failed login", st)
	}
	want := fmt.Sprintf(blockedUser, 4)
	if _, st := d.Cmd("d2", "LOGIN alice secret"); st != "d2"+want {
		t.Fatalf("alice after 4 failures: got %q; want %q", st, "d2"+want)
	}
	g.wantDials(t, 5, "the blocked login is not passed on")
	d.Logout("z")
	proxytest.WaitZero(t, g.Limiter)
}

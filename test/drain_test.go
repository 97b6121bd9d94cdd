package test

import (
	"net"
	"testing"
	"time"

	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/test/proxytest"
)

// drainUpstream is a scripted upstream for the drain tests: IDLE idles
// until DONE, FETCH sends half a literal and the rest once release is
// closed, anything else is answered OK.
func drainUpstream(t *testing.T, release <-chan struct{}) *proxytest.Fake {
	return proxytest.StartFake(t, func(c *proxytest.FakeConn) {
		if c.AcceptLogin() != nil {
			return
		}
		for {
			cmd, err := c.Command()
			if err != nil {
				return
			}
			switch cmd.Name {
			case "IDLE":
				c.Write("+ idling\r\n")
				if _, err := c.Line(); err != nil { // DONE
					return
				}
				c.Write(cmd.Tag + " OK IDLE done\r\n")
			case "FETCH":
				c.Write("* 1 FETCH (BODY[] {10}\r\n01234")
				<-release
				c.Write("56789)\r\n" + cmd.Tag + " OK FETCH done\r\n")
			default:
				c.Write(cmd.Tag + " OK done\r\n")
			}
		}
	})
}

// TestDrainSpread (issue 12): a drain stops accepting, tells a client
// that has not logged in BYE at once, and the authenticated sessions,
// oldest first, at instants spread evenly over the spread, on the
// proxy's clock: of 4 sessions over 8s, at 0s, 2s, 4s and 6s. The fake
// clock moves to a nanosecond before each slot (the sessions still open
// are all there) and then to it (the next one, and only it, gets BYE). A
// session in IDLE gets it at its slot; one in the middle of a response
// gets the rest of the response first.
func TestDrainSpread(t *testing.T) {
	release := make(chan struct{})
	up := drainUpstream(t, release)
	clk := proxytest.NewClock()
	p := proxytest.Start(t, proxytest.Config{Upstream: up.Addr, Options: proxy.Options{Clock: clk}})

	s0 := proxytest.LoginFrom(t, "127.0.0.2", p.Addr, "alice", "secret")
	s1 := proxytest.LoginFrom(t, "127.0.0.3", p.Addr, "bob", "secret")
	s2 := proxytest.LoginFrom(t, "127.0.0.4", p.Addr, "carol", "secret")
	s3 := proxytest.LoginFrom(t, "127.0.0.5", p.Addr, "dave", "secret")
	pre := proxytest.DialFrom(t, "127.0.0.6", p.Addr)
	pre.Greeting()
	pre.Cmd("n", "NOOP") // admitted and registered
	s0.Idle("i")
	s2.Idle("i")
	s1.Send("f FETCH 1 BODY[]\r\n")
	s1.Expect("* 1 FETCH (BODY[] {10}") // the literal has begun
	s3.OK("n", "NOOP")

	const spread, timeout = 8 * time.Second, 30 * time.Second
	if !p.Server.Drain(timeout, spread) {
		t.Fatal("Drain: got false; want a drain started")
	}
	if p.Server.Drain(timeout, spread) {
		t.Error("second Drain: got true; want false (one is under way)")
	}
	if !p.Server.Draining() {
		t.Error("Draining: got false; want true")
	}
	// At once: the pre-auth client and the oldest session.
	pre.ExpectBye(byeShutdown)
	s0.ExpectBye(byeShutdown)
	proxytest.WaitFor(t, "the listener closed", func() bool { return len(p.Server.Listening()) == 0 })
	if nc, err := net.Dial("tcp", p.Addr); err == nil {
		nc.Close()
		t.Error("a connection was accepted during the drain")
	}

	open := func(want int) {
		t.Helper()
		proxytest.WaitFor(t, "open connections", func() bool { return len(p.Server.Conns()) == want })
	}
	open(3)
	start := time.Duration(0)
	step := func(slot time.Duration, stillOpen int) {
		t.Helper()
		clk.Advance(slot - time.Nanosecond - start)
		if n := len(p.Server.Conns()); n != stillOpen {
			t.Fatalf("a nanosecond before %v: %d connections open; want %d", slot, n, stillOpen)
		}
		clk.Advance(time.Nanosecond)
		start = slot
	}

	// 2s: the session in the middle of a FETCH; its BYE waits for the
	// end of the response.
	step(2*time.Second, 3)
	close(release)
	s1.Expect("0123456789)", "f OK FETCH done")
	s1.ExpectBye(byeShutdown)
	open(2)

	// 4s: the second session in IDLE.
	step(4*time.Second, 2)
	s2.ExpectBye(byeShutdown)
	open(1)

	// 6s: the last one, which still works until then.
	s3.OK("n2", "NOOP")
	step(6*time.Second, 1)
	s3.ExpectBye(byeShutdown)

	select {
	case <-p.Server.Drained():
	case <-time.After(proxytest.Timeout):
		t.Fatal("Drained not closed after every connection ended")
	}
	proxytest.WaitZero(t, p.Limiter)
}

// TestDrainTimeout: what is still open when drain_timeout runs out is
// closed, without its BYE when its turn has not come (a spread longer
// than the timeout, which the configuration refuses but Drain accepts).
// The gauge imapguard.draining is 1 from the start of the drain, and both
// connections end with the outcome "proxy shutdown".
func TestDrainTimeout(t *testing.T) {
	up := drainUpstream(t, nil)
	clk := proxytest.NewClock()
	p := startTracedProxy(t, up.Addr, proxy.Options{Clock: clk}, limits.Options{})
	a := proxytest.LoginFrom(t, "127.0.0.2", p.Addr, "alice", "secret")
	b := proxytest.LoginFrom(t, "127.0.0.3", p.Addr, "bob", "secret")
	b.Idle("i")
	collect(t, p.reader).want(t, []metricWant{{"gauge", "imapguard.draining", nil, 0}})
	if !p.Server.Drain(5*time.Second, 20*time.Second) {
		t.Fatal("Drain: got false")
	}
	collect(t, p.reader).want(t, []metricWant{{"gauge", "imapguard.draining", nil, 1}})
	a.ExpectBye(byeShutdown) // slot 0
	// b's slot is at 10s; the timeout comes first.
	clk.Expire(t, 5*time.Second, 1)
	b.ExpectClosed()
	select {
	case <-p.Server.Drained():
	case <-time.After(proxytest.Timeout):
		t.Fatal("Drained not closed after drain_timeout")
	}
	proxytest.WaitZero(t, p.Limiter)
	collectUntil(t, p.reader, "both connections counted closed", func(m metrics) bool {
		return m.sum("imapguard.connections.closed", "outcome=proxy_shutdown") == 2
	})
}

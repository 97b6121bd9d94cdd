package test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/test/proxytest"
)

// parkedSession is a session logged in through the proxy and gone quiet,
// idling (RFC 2177) or not.
type parkedSession struct {
	c    *proxytest.Conn
	user string
	idle bool
}

// loginAndPark logs in a session for each of users, from 127.0.0.2 on,
// puts every other one in IDLE, and waits until all are parked: the
// proxy holds no goroutine for them (see waitGoroutines). clk is the
// proxy's clock when it is a fake one: the goroutine relay's sweeper
// runs on it, so it is moved on a sweep at a time until they park.
func loginAndPark(t *testing.T, p *proxytest.Proxy, clk *proxytest.Clock, users ...string) []parkedSession {
	t.Helper()
	base := runtime.NumGoroutine()
	var ss []parkedSession
	for i, u := range users {
		s := parkedSession{c: proxytest.LoginFrom(t, fmt.Sprintf("127.0.0.%d", 2+i), p.Addr, u, "secret"), user: u, idle: i%2 == 1}
		s.c.OK("s", "SELECT INBOX")
		if s.idle {
			s.c.Idle("i")
		}
		ss = append(ss, s)
	}
	// Each session adds the upstream's goroutine (the fake serves each
	// connection on one) and none of the proxy's once parked; up to
	// four more for what the proxy starts once, on its first session
	// (such as its parker's, its sweeper's, its event loops). A session
	// not parked holds one or two: with 8 sessions, that shows.
	max := base + len(users) + 4
	deadline := time.Now().Add(3 * proxytest.Timeout)
	for {
		got, ok := waitGoroutines(max, 20*time.Millisecond)
		if ok {
			return ss
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions did not park: %d goroutines; want at most %d", len(users), got, max)
		}
		if clk != nil {
			clk.Advance(250 * time.Millisecond) // a sweep (proxy's sweepEvery)
		}
	}
}

// loopUpstream is a fake upstream that answers every command OK, IDLE
// with "+ idling" until DONE, and LOGOUT with BYE.
func loopUpstream(t *testing.T) *proxytest.Fake {
	return proxytest.StartFake(t, func(c *proxytest.FakeConn) {
		// No deadline: a session that outlived the fake's would end and
		// give up its goroutines, as a parked one does. The cleanup
		// closes it.
		c.NetConn().SetDeadline(time.Time{})
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
				if l, err := c.Line(); err != nil || l != "DONE" {
					return
				}
			case "LOGOUT":
				c.Write(proxytest.Logout(cmd.Tag))
				return
			}
			if c.Write(cmd.Tag+" OK "+cmd.Name+" completed\r\n") != nil {
				return
			}
		}
	})
}

// TestLoopKickParked (issue 14, "kick and shutdown of parked sessions"):
// sessions parked, some in IDLE, are ended by a kick, a shutdown and a
// drain, under each relay. Each client gets its BYE and the close, as a
// session that was not parked does (TestKick, TestSessionOutcomes,
// TestDrainSpread); the outcome is recorded as it is there (kicked, proxy
// shutdown); a session the kick did not match goes on; the counts and
// the registry return to zero.
func TestLoopKickParked(t *testing.T) {
	const byeKick = "* BYE [UNAVAILABLE] Session closed by the administrator"
	forEachRelay(t, func(t *testing.T, relay string) {
		t.Run("kick", func(t *testing.T) {
			p := startTracedProxy(t, loopUpstream(t).Addr, proxy.Options{Relay: relay}, limits.Options{})
			ss := loginAndPark(t, p.Proxy, nil, "alice", "alice", "bob", "alice", "bob", "bob", "alice", "bob")
			kicked, err := p.Server.Kick(proxy.Match{User: "alice"}, "")
			if err != nil || len(kicked) != 4 {
				t.Fatalf("Kick(alice) = %d sessions, %v; want 4", len(kicked), err)
			}
			for _, s := range ss {
				if s.user == "alice" {
					s.c.ExpectBye(byeKick)
				}
			}
			// Bob's sessions were parked too, and go on.
			for _, s := range ss {
				if s.user != "bob" {
					continue
				}
				if s.idle {
					s.c.Send("DONE\r\n")
					s.c.Expect("i OK IDLE completed")
				}
				s.c.OK("n", "NOOP")
				s.c.Logout("z")
			}
			proxytest.WaitZero(t, p.Limiter)
			proxytest.WaitFor(t, "the registry empty", func() bool { return len(p.Server.Conns()) == 0 })
			collectUntil(t, p.reader, "4 kicked, 4 logged out", func(m metrics) bool {
				return m.sum("imapguard.connections.closed", "outcome=kicked") == 4 &&
					m.sum("imapguard.connections.closed", "outcome=logout") == 4
			})
		})
		t.Run("shutdown", func(t *testing.T) {
			p := startTracedProxy(t, loopUpstream(t).Addr, proxy.Options{Relay: relay}, limits.Options{})
			ss := loginAndPark(t, p.Proxy, nil, "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi")
			shut := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), proxytest.Timeout)
				defer cancel()
				shut <- p.Server.Shutdown(ctx)
			}()
			for _, s := range ss {
				s.c.ExpectBye(byeShutdown)
			}
			if err := <-shut; err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			proxytest.WaitZero(t, p.Limiter)
			if n := len(p.Server.Conns()); n != 0 {
				t.Fatalf("the registry holds %d connections after Shutdown; want 0", n)
			}
			collectUntil(t, p.reader, "8 ended by the shutdown", func(m metrics) bool {
				return m.sum("imapguard.connections.closed", "outcome=proxy_shutdown") == 8
			})
		})
		t.Run("drain", func(t *testing.T) {
			// As TestDrainSpread: of 8 sessions over 8s, oldest first,
			// at 0s, 1s ... 7s on the proxy's clock.
			clk := proxytest.NewClock()
			p := startTracedProxy(t, loopUpstream(t).Addr, proxy.Options{Relay: relay, Clock: clk}, limits.Options{})
			ss := loginAndPark(t, p.Proxy, clk, "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi")
			if !p.Server.Drain(30*time.Second, 8*time.Second) {
				t.Fatal("Drain: got false; want a drain started")
			}
			ss[0].c.ExpectBye(byeShutdown)
			for i, s := range ss[1:] {
				open := len(ss) - 1 - i
				proxytest.WaitFor(t, fmt.Sprintf("%d connections open", open), func() bool { return len(p.Server.Conns()) == open })
				clk.Advance(time.Second - time.Nanosecond)
				if n := len(p.Server.Conns()); n != open {
					t.Fatalf("a nanosecond before slot %d: %d connections open; want %d", i+1, n, open)
				}
				clk.Advance(time.Nanosecond)
				s.c.ExpectBye(byeShutdown)
			}
			select {
			case <-p.Server.Drained():
			case <-time.After(proxytest.Timeout):
				t.Fatal("Drained not closed after every session ended")
			}
			proxytest.WaitZero(t, p.Limiter)
			collectUntil(t, p.reader, "8 ended by the drain", func(m metrics) bool {
				return m.sum("imapguard.connections.closed", "outcome=proxy_shutdown") == 8
			})
		})
	})
}

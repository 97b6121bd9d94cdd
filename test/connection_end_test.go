package test

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/test/proxytest"
)

// TestLimitCountsReturnToZero ends connections in every way there is and
// checks that the limiter forgets them and the upstream connections are
// closed.
func TestLimitCountsReturnToZero(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts proxy.Options
		lim  limits.Options
		end  func(t *testing.T, p *countedProxy)
	}{
		{name: "logout", end: func(t *testing.T, p *countedProxy) {
			c := proxytest.Login(t, p.Addr, "alice", "secret")
			pre := greeted(t, "", p.Addr)
			proxytest.WaitCounts(t, p.Limiter, "counted", func(c limits.Counts) bool { return c.Connections == 2 && c.Sessions == 1 })
			c.Logout("z")
			pre.Logout("z")
		}},
		{name: "client closes pre-auth", end: func(t *testing.T, p *countedProxy) {
			greeted(t, "", p.Addr).Close()
		}},
		{name: "client closes in the middle of a pre-auth command", end: func(t *testing.T, p *countedProxy) {
			c := greeted(t, "", p.Addr)
			c.Send("a LOGIN {6}\r\n")
			c.ExpectPrefix("+ ")
			c.Send("ali")
			c.Reset()
		}},
		{name: "client resets mid-session", end: func(t *testing.T, p *countedProxy) {
			c := loginSelected(t, p.Addr)
			proxytest.WaitCounts(t, p.Limiter, "session counted", func(c limits.Counts) bool { return c.Sessions == 1 })
			c.Reset()
			// Nothing can reach a client that reset the connection: its
			// slots and the upstream connection go at once, not after the
			// half-close linger meant for a client that only stopped
			// sending. The linger runs on p.clock, which does not move
			// here: a relay that waited for it would never let go.
			proxytest.WaitCounts(t, p.Limiter, "BUG: slots not released after the client's RST (the relay lingers for an idle upstream as after a half-close)",
				func(c limits.Counts) bool { return c.Sessions == 0 })
		}},
		{name: "client closes mid-session", end: func(t *testing.T, p *countedProxy) {
			c := proxytest.Login(t, p.Addr, "alice", "secret")
			c.Idle("i")
			c.Close()
		}},
		{name: "upstream drops mid-session", end: func(t *testing.T, p *countedProxy) {
			c := loginSelected(t, p.Addr)
			c2 := proxytest.Login(t, p.Addr, "alice", "secret")
			c2.Idle("i")
			p.fwd.Cut()
			c.ExpectClosed()
			c2.ExpectClosed()
		}},
		{name: "preauth timeout", opts: proxy.Options{PreauthTimeout: time.Minute}, end: func(t *testing.T, p *countedProxy) {
			c := greeted(t, "", p.Addr)
			// Commands do not extend the pre-authentication time: a NOOP
			// a second before it runs out is answered, and the BYE comes a
			// minute after the connection was admitted.
			p.clock.Advance(59 * time.Second)
			c.OK("n", "NOOP")
			p.clock.ByeAfter(c, time.Second, 1, byePreauth("1m"))
			proxytest.WaitZero(t, p.Limiter)
			p.wantDials(t, 0, "")
		}},
		{name: "preauth timeout during a literal", opts: proxy.Options{PreauthTimeout: time.Minute}, end: func(t *testing.T, p *countedProxy) {
			c := greeted(t, "", p.Addr)
			c.Send("a LOGIN {6}\r\n")
			c.ExpectPrefix("+ ")
			c.Send("ali") // and nothing more
			p.clock.ByeAfter(c, time.Minute, 1, byePreauth("1m"))
		}},
		{name: "idle timeout", opts: proxy.Options{IdleTimeout: 30 * time.Minute}, end: func(t *testing.T, p *countedProxy) {
			c := loginSelected(t, p.Addr)
			c.Settle("x") // the session's one timer is idle_timeout
			p.clock.ByeAfter(c, 30*time.Minute, 1, byeIdle("30m"))
		}},
		{name: "too many authentication failures", opts: proxy.Options{MaxAuthFailures: 2}, end: func(t *testing.T, p *countedProxy) {
			c := greeted(t, "", p.Addr)
			for _, tag := range []string{"a", "b"} {
				_, st := c.Cmd(tag, "LOGIN alice wrong")
				wantPrefix(t, "failure "+tag, st, tag+" NO [AUTHENTICATIONFAILED]")
			}
			c.ExpectPrefix("* BYE")
			c.ExpectClosed()
		}},
		{name: "too many bad commands", opts: proxy.Options{MaxBadCommands: 1}, end: func(t *testing.T, p *countedProxy) {
			c := greeted(t, "", p.Addr)
			c.Send("a FROB\r\n")
			c.ExpectPrefix("a BAD")
			c.ExpectPrefix("* BYE")
			c.ExpectClosed()
		}},
		{name: "refused by a cap", lim: limits.Options{MaxConnections: 1, MaxConnectionsPerUser: 1}, end: func(t *testing.T, p *countedProxy) {
			c := proxytest.Login(t, p.Addr, "alice", "secret")
			refused(t, "", p.Addr, byeMaxConns(1))
			c.Logout("z")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startCounted(t, tc.opts, tc.lim)
			tc.end(t, p)
			proxytest.WaitZero(t, p.Limiter)
			p.dials.WaitOpen(t, 0)
		})
	}

	t.Run("shutdown", func(t *testing.T) {
		p := startCounted(t, proxy.Options{}, limits.Options{})
		pre := greeted(t, "127.0.0.2", p.Addr)
		auth := proxytest.Login(t, p.Addr, "alice", "secret")
		auth.OK("s", "SELECT INBOX")
		idle := proxytest.Login(t, p.Addr, "alice", "secret")
		idle.OK("s", "SELECT INBOX")
		idle.Idle("i")
		proxytest.WaitCounts(t, p.Limiter, "3 connections, 2 sessions", func(c limits.Counts) bool {
			return c.Connections == 3 && c.Sessions == 2
		})

		shutdown(t, p.Proxy)
		if n := p.dials.Open.Load(); n != 0 {
			t.Errorf("upstream connections open right after Shutdown: got %d; want 0", n)
		}
		for name, c := range map[string]*proxytest.Conn{"pre-auth": pre, "authenticated": auth, "idling": idle} {
			wantLine(t, name+" client after Shutdown", c.Line(), byeShutdown)
			c.ExpectClosed()
		}
		// No new connections.
		if nc, err := net.DialTimeout("tcp", p.Addr, time.Second); err == nil {
			nc.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, rerr := nc.Read(make([]byte, 1))
			nc.Close()
			if n > 0 || rerr == nil {
				t.Errorf("connection after Shutdown was served")
			}
		}
	})

	t.Run("shutdown during upstream login", func(t *testing.T) {
		dialing := make(chan struct{})
		var once sync.Once
		d := &proxytest.Dialer{Hook: func(ctx context.Context) error {
			once.Do(func() { close(dialing) })
			<-ctx.Done() // an upstream that never answers the dial
			return ctx.Err()
		}}
		p := proxytest.Start(t, proxytest.Config{Upstream: proxytest.Imapd(t),
			Options: proxy.Options{Dial: d.Dial, ConnectTimeout: 20 * time.Second}})
		c := greeted(t, "", p.Addr)
		c.Send("l LOGIN alice secret\r\n")
		select {
		case <-dialing:
		case <-time.After(proxytest.Timeout):
			t.Fatal("proxy did not dial the upstream")
		}
		if d := shutdown(t, p); d > 5*time.Second {
			t.Errorf("Shutdown took %v; want the pending login abandoned at once", d)
		}
		l := c.Line()
		if strings.HasPrefix(l, "l NO ") {
			// The abandoned login may be answered before the BYE.
			t.Logf("before BYE: %q", l)
			l = c.Line()
		}
		wantLine(t, "client after Shutdown", l, byeShutdown)
		c.ExpectClosed()
	})
}

// TestHalfCloseLinger: when the client half-closes its session, the
// proxy passes the EOF on to the upstream and gives it the half-close
// linger (5s, on a fake clock) to finish; an upstream that neither
// answers nor closes is then cut, not earlier, and the slots are freed.
func TestHalfCloseLinger(t *testing.T) {
	sawEOF := make(chan struct{})
	up := proxytest.StartFake(t, func(c *proxytest.FakeConn) {
		if c.AcceptLogin() != nil {
			return
		}
		c.ReadAll() // up to the EOF the proxy passes on
		close(sawEOF)
		c.StayOpen()
	})
	clk := proxytest.NewClock()
	p := proxytest.Start(t, proxytest.Config{Upstream: up.Addr, Options: proxy.Options{Clock: clk}})
	c := proxytest.Login(t, p.Addr, "alice", "secret")
	c.CloseWrite()
	select {
	case <-sawEOF:
	case <-time.After(proxytest.Timeout):
		t.Fatal("the upstream did not see the client's EOF")
	}
	// Two timers wait: the session's idle_timeout and the linger.
	clk.Expire(t, 5*time.Second, 2)
	c.ExpectClosed()
	proxytest.WaitZero(t, p.Limiter)
}

// shutdown shuts p down, which must succeed, checks that every count is
// zero right after, and returns how long Shutdown took.
func shutdown(t *testing.T, p *proxytest.Proxy) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), proxytest.Timeout)
	defer cancel()
	start := time.Now()
	if err := p.Server.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: got %v; want nil", err)
	}
	d := time.Since(start)
	if c := p.Limiter.Counts(); c.Connections != 0 || c.Addresses != 0 || c.Users != 0 || c.Sessions != 0 {
		t.Errorf("counts right after Shutdown: got %+v; want zero", c)
	}
	return d
}

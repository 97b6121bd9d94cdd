package test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/imapguard/imapguard/cmd/imapd/server"
	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/test/proxytest"
)

// TestKick: Kick closes the sessions it matches with BYE [UNAVAILABLE],
// by user (case-insensitively) or by client address, and leaves the
// others alone; Select and Conns report state and bytes.
func TestKick(t *testing.T) {
	up := proxytest.Imapd(t,
		server.User{Username: "alice", Password: "secret", Messages: 2},
		server.User{Username: "bob", Password: "hunter2", Messages: 1})
	p := proxytest.Start(t, proxytest.Config{Upstream: up})

	a1 := proxytest.Login(t, p.Addr, "alice", "secret")
	a2 := proxytest.DialFrom(t, "127.0.0.2", p.Addr)
	a2.Greeting()
	a2.Cmd("l1", "LOGIN alice secret")
	b := proxytest.DialFrom(t, "127.0.0.3", p.Addr)
	b.Greeting()
	b.Cmd("l1", "LOGIN bob hunter2")
	pre := proxytest.DialFrom(t, "127.0.0.4", p.Addr)
	pre.Greeting()
	pre.Cmd("n1", "NOOP") // registered before the selection below
	a1.Cmd("s1", "SELECT INBOX")

	all := p.Server.Conns()
	if len(all) != 4 {
		t.Fatalf("Conns() = %d connections, want 4: %+v", len(all), all)
	}
	sel, err := p.Server.Select(proxy.Match{User: "ALICE"})
	if err != nil || len(sel) != 2 {
		t.Fatalf("Select(ALICE) = %+v, %v; want 2", sel, err)
	}
	for _, i := range sel {
		if i.State() != "authenticated" || i.User != "alice" {
			t.Errorf("alice session %+v", i)
		}
	}
	// The SELECT went one way and its answer the other (counted just
	// after each write, so possibly after the client read it).
	proxytest.WaitFor(t, "bytes counted both ways", func() bool {
		sel, _ := p.Server.Select(proxy.Match{User: "alice"})
		return len(sel) == 2 && sel[0].BytesToUpstream > 0 && sel[0].BytesToClient > 0
	})
	if sel, _ := p.Server.Select(proxy.Match{Address: "127.0.0.4"}); len(sel) != 1 || sel[0].State() != "preauth" {
		t.Fatalf("Select(127.0.0.4) = %+v", sel)
	}
	if _, err := p.Server.Select(proxy.Match{Address: "nonsense"}); err == nil {
		t.Fatal("Select(nonsense) succeeded")
	}
	if _, err := p.Server.Kick(proxy.Match{}, ""); !errors.Is(err, proxy.ErrEmptyMatch) {
		t.Fatalf("Kick(empty) = %v", err)
	}

	kicked, err := p.Server.Kick(proxy.Match{User: "Alice"}, "")
	if err != nil || len(kicked) != 2 {
		t.Fatalf("Kick(alice) = %+v, %v", kicked, err)
	}
	for _, c := range []*proxytest.Conn{a1, a2} {
		if l := c.Line(); l != "* BYE [UNAVAILABLE] Session closed by the administrator" {
			t.Fatalf("kicked client got %q", l)
		}
		c.ExpectClosed()
	}
	// Bob and the pre-auth connection are untouched.
	if _, st := b.Cmd("n2", "NOOP"); !strings.HasPrefix(st, "n2 OK") {
		t.Fatalf("bob after kick: %q", st)
	}
	kicked, err = p.Server.Kick(proxy.Match{Address: "127.0.0.4/31"}, "Maintenance")
	if err != nil || len(kicked) != 1 || kicked[0].State() != "preauth" {
		t.Fatalf("Kick(127.0.0.4/31) = %+v, %v", kicked, err)
	}
	if l := pre.Line(); l != "* BYE [UNAVAILABLE] Maintenance" {
		t.Fatalf("pre-auth client got %q", l)
	}
	pre.ExpectClosed()
	proxytest.WaitCounts(t, p.Limiter, "kicked slots freed", func(c limits.Counts) bool {
		return c.Connections == 1 && c.Sessions == 1
	})
}

// TestCheckUpstream: reachable upstream gives nil, a closed port an error.
func TestCheckUpstream(t *testing.T) {
	up := proxytest.Imapd(t)
	p := proxytest.Start(t, proxytest.Config{Upstream: up})
	ctx, cancel := context.WithTimeout(context.Background(), proxytest.Timeout)
	defer cancel()
	if err := p.Server.CheckUpstream(ctx); err != nil {
		t.Fatalf("CheckUpstream: %v", err)
	}
	// Serve registers the listener on its own goroutine.
	proxytest.WaitFor(t, "Listening() = ["+p.Addr+"]", func() bool {
		got := p.Server.Listening()
		return len(got) == 1 && got[0] == p.Addr
	})
	p.Server.SetOptions(proxy.Options{UpstreamAddr: proxytest.ClosedAddr(t)})
	if err := p.Server.CheckUpstream(ctx); err == nil {
		t.Fatal("CheckUpstream to a closed port succeeded")
	}
}

// TestKickStuckClient: a client that stopped reading in the middle of a
// large response holds the relay's writer, so its BYE cannot go out. Kick
// must not wait for it; the connection is closed without the BYE when
// the BYE grace (10s, on the proxy's fake clock) runs out, or when the
// context of a Shutdown does, which must not deadlock.
func TestKickStuckClient(t *testing.T) {
	up := proxytest.StartFake(t, func(c *proxytest.FakeConn) {
		if c.AcceptLogin() != nil {
			return
		}
		c.Command() // the FETCH
		// A literal far larger than the socket buffers, never finished.
		c.Write("* 1 FETCH (BODY[] {100000000}\r\n")
		chunk := string(make([]byte, 64<<10))
		for {
			c.NetConn().SetWriteDeadline(time.Now().Add(proxytest.Timeout))
			if c.Write(chunk) != nil {
				return
			}
		}
	})
	for _, tc := range []struct {
		name string
		end  func(t *testing.T, p *proxytest.Proxy, clk *proxytest.Clock)
	}{
		{"the BYE grace runs out", func(t *testing.T, p *proxytest.Proxy, clk *proxytest.Clock) {
			// Two timers wait: the session's idle_timeout and the grace.
			clk.Expire(t, 10*time.Second, 2)
		}},
		{"the context of Shutdown runs out", func(t *testing.T, p *proxytest.Proxy, clk *proxytest.Clock) {
			// The clock does not move: the grace never runs out.
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			shut := make(chan error, 1)
			go func() { shut <- p.Server.Shutdown(ctx) }()
			select {
			case err := <-shut:
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("Shutdown = %v, want the context's deadline", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Shutdown did not return after its context ran out")
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := proxytest.NewClock()
			p := proxytest.Start(t, proxytest.Config{Upstream: up.Addr, Options: proxy.Options{Clock: clk}})
			c := proxytest.Login(t, p.Addr, "alice", "secret")
			c.Send("f FETCH 1 BODY[]\r\n") // and never read the answer
			proxytest.WaitFor(t, "the relay is writing to the client", func() bool {
				sel, _ := p.Server.Select(proxy.Match{User: "alice"})
				return len(sel) == 1 && sel[0].BytesToClient > 1<<20
			})

			kicked := make(chan error, 1)
			go func() {
				_, err := p.Server.Kick(proxy.Match{User: "alice"}, "")
				kicked <- err
			}()
			select {
			case err := <-kicked:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Kick waited for a client that does not read")
			}
			tc.end(t, p, clk)
			proxytest.WaitZero(t, p.Limiter)
		})
	}
}

package test

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imapguard/imapguard/cmd/imapd/server"
	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy"
)

// Exact refusal lines.
func limByeMaxConns(n int) string {
	return fmt.Sprintf("* BYE [UNAVAILABLE] Too many connections (max_connections=%d)", n)
}

func limByeMaxPerIP(n int) string {
	return fmt.Sprintf("* BYE [UNAVAILABLE] Too many connections from your address (max_connections_per_ip=%d)", n)
}

func limNoMaxPerUser(tag string, n int) string {
	return fmt.Sprintf("%s NO [LIMIT] Too many connections for this user (max_connections_per_user=%d)", tag, n)
}

const limShutdownBye = "* BYE [UNAVAILABLE] Server shutting down"

// limUpstream sits between the proxy and the real upstream. The proxy
// dials it through Options.Dial, so the test sees every upstream
// connection the proxy opens and closes; the connections go through a TCP
// forwarder, so the test can also drop them from the upstream side.
type limUpstream struct {
	t     *testing.T
	addr  string       // the forwarder; pass it as the proxy's upstream
	dials atomic.Int64 // connections the proxy dialled
	open  atomic.Int64 // of those, not yet closed by the proxy

	// dialHook, when set, runs at the start of each dial (before the
	// real dial); it may block on ctx.
	dialHook func(ctx context.Context) error

	mu    sync.Mutex
	conns map[net.Conn]struct{} // the forwarder's connections, both sides
	ln    net.Listener
	wg    sync.WaitGroup
}

func newLimUpstream(t *testing.T, real string) *limUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &limUpstream{t: t, addr: ln.Addr().String(), conns: make(map[net.Conn]struct{}), ln: ln}
	u.wg.Add(1)
	go u.accept(real)
	// Registered before startProxy's cleanup, so it runs after it.
	t.Cleanup(func() {
		ln.Close()
		u.cut()
		u.wg.Wait()
	})
	return u
}

func (u *limUpstream) track(c net.Conn) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.conns == nil {
		return false
	}
	u.conns[c] = struct{}{}
	return true
}

func (u *limUpstream) accept(real string) {
	defer u.wg.Done()
	for {
		down, err := u.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.DialTimeout("tcp", real, 5*time.Second)
		if err != nil {
			down.Close()
			continue
		}
		if !u.track(down) || !u.track(up) {
			down.Close()
			up.Close()
			return
		}
		u.wg.Add(1)
		go func() {
			defer u.wg.Done()
			var half sync.WaitGroup
			pipe := func(dst, src net.Conn) {
				defer half.Done()
				io.Copy(dst, src)
				if tc, ok := dst.(*net.TCPConn); ok {
					tc.CloseWrite()
				}
			}
			half.Add(2)
			go pipe(up, down)
			go pipe(down, up)
			half.Wait()
			down.Close()
			up.Close()
			u.mu.Lock()
			delete(u.conns, down)
			delete(u.conns, up)
			u.mu.Unlock()
		}()
	}
}

// cut drops every forwarded connection at once, as a crashing upstream
// would.
func (u *limUpstream) cut() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for c := range u.conns {
		c.Close()
	}
}

// dial is the proxy's Options.Dial.
func (u *limUpstream) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if u.dialHook != nil {
		if err := u.dialHook(ctx); err != nil {
			return nil, err
		}
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	u.dials.Add(1)
	u.open.Add(1)
	return &limUpConn{TCPConn: nc.(*net.TCPConn), u: u}, nil
}

// limUpConn counts the proxy's Close of an upstream connection.
type limUpConn struct {
	*net.TCPConn
	u    *limUpstream
	once sync.Once
}

func (c *limUpConn) Close() error {
	c.once.Do(func() { c.u.open.Add(-1) })
	return c.TCPConn.Close()
}

// waitOpen waits until the proxy holds exactly n upstream connections.
func (u *limUpstream) waitOpen(t *testing.T, n int64) {
	t.Helper()
	limWaitFor(t, fmt.Sprintf("proxy holds %d upstream connections", n), func() bool { return u.open.Load() == n },
		func() string { return fmt.Sprintf("open=%d dials=%d", u.open.Load(), u.dials.Load()) })
}

// limWaitFor polls cond on a ticker until it holds, failing after a
// deadline.
func limWaitFor(t *testing.T, what string, cond func() bool, state func() string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline:
			t.Fatalf("timed out waiting: %s (%s)", what, state())
		case <-tick.C:
		}
	}
}

// limProxy starts an upstream with users, a limUpstream in front of it
// and the proxy.
func limProxy(t *testing.T, opts proxy.Options, lim limits.Options, users ...server.User) (*testProxy, *limUpstream) {
	t.Helper()
	u := newLimUpstream(t, startUpstream(t, users...))
	opts.Dial = u.dial
	return startProxy(t, u.addr, opts, lim), u
}

func limWantLine(t *testing.T, what, got, want string) {
	t.Helper()
	if got != want {
		t.Fatalf("%s: got %q; want %q", what, got, want)
	}
}

func limWantPrefix(t *testing.T, what, got, prefix string) {
	t.Helper()
	if !strings.HasPrefix(got, prefix) {
		t.Fatalf("%s: got %q; want a line starting %q", what, got, prefix)
	}
}

// greeted dials from src and checks the greeting is * OK.
func limGreeted(t *testing.T, src, addr string) *rawConn {
	t.Helper()
	c := dialFrom(t, src, addr)
	limWantPrefix(t, "greeting", c.greeting(), "* OK ")
	return c
}

// logout sends LOGOUT and checks BYE, OK and the close.
func limLogout(c *rawConn, tag string) {
	c.t.Helper()
	un, st := c.cmd(tag, "LOGOUT")
	if len(un) == 0 || !strings.HasPrefix(un[0], "* BYE") || !strings.HasPrefix(st, tag+" OK") {
		c.t.Fatalf("LOGOUT: got %q %q; want * BYE and %s OK", un, st, tag)
	}
	c.expectClosed()
}

func limOK(c *rawConn, tag, command string) {
	c.t.Helper()
	un, st := c.cmd(tag, command)
	if !strings.HasPrefix(st, tag+" OK") {
		c.t.Fatalf("%s: got %q %q; want %s OK", command, un, st, tag)
	}
}

// reset closes the connection with an RST.
func limReset(c *rawConn) {
	c.t.Helper()
	if err := c.nc.(*net.TCPConn).SetLinger(0); err != nil {
		c.t.Fatal(err)
	}
	c.nc.Close()
}

func TestLimitMaxConnections(t *testing.T) {
	p, up := limProxy(t, proxy.Options{}, limits.Options{MaxConnections: 3})
	s1 := login(t, p.Addr, "alice", "secret")
	s2 := login(t, p.Addr, "alice", "secret")
	pre := limGreeted(t, "", p.Addr)
	if n := up.dials.Load(); n != 2 {
		t.Fatalf("upstream dials: got %d; want 2", n)
	}

	refused := dialRaw(t, p.Addr)
	limWantLine(t, "4th connection", refused.line(), limByeMaxConns(3))
	refused.expectClosed()
	if n := up.dials.Load(); n != 2 {
		t.Errorf("upstream dials after refusal: got %d; want 2 (refused connection must not reach the upstream)", n)
	}
	if c := p.Limiter.Counts(); c.Connections != 3 || c.Sessions != 2 {
		t.Errorf("counts after refusal: got %+v; want Connections=3 Sessions=2", c)
	}
	// The refusal disturbed nobody.
	limOK(s2, "n1", "NOOP")
	limOK(pre, "n1", "NOOP")

	// Refused again while full, then one leaves and a new one fits.
	again := dialRaw(t, p.Addr)
	limWantLine(t, "5th connection", again.line(), limByeMaxConns(3))
	again.expectClosed()
	limLogout(s1, "z")
	waitCounts(t, p.Limiter, "one slot freed", func(c limits.Counts) bool { return c.Connections == 2 })
	s3 := login(t, p.Addr, "alice", "secret")
	limOK(s3, "n2", "NOOP")
	// Full again.
	full := dialRaw(t, p.Addr)
	limWantLine(t, "connection while full again", full.line(), limByeMaxConns(3))
	full.expectClosed()
	if n := up.dials.Load(); n != 3 {
		t.Errorf("upstream dials: got %d; want 3", n)
	}
	up.waitOpen(t, 2)
}

func TestLimitPerIP(t *testing.T) {
	p, _ := limProxy(t, proxy.Options{}, limits.Options{MaxConnectionsPerIP: 2})
	a1 := limGreeted(t, "127.0.0.2", p.Addr)
	a2 := limGreeted(t, "127.0.0.2", p.Addr)
	a3 := dialFrom(t, "127.0.0.2", p.Addr)
	limWantLine(t, "3rd connection from 127.0.0.2", a3.line(), limByeMaxPerIP(2))
	a3.expectClosed()

	b1 := limGreeted(t, "127.0.0.3", p.Addr)
	b2 := limGreeted(t, "127.0.0.3", p.Addr)
	b3 := dialFrom(t, "127.0.0.3", p.Addr)
	limWantLine(t, "3rd connection from 127.0.0.3", b3.line(), limByeMaxPerIP(2))
	b3.expectClosed()
	if c := p.Limiter.Counts(); c.Connections != 4 || c.Addresses != 2 {
		t.Errorf("counts: got %+v; want Connections=4 Addresses=2", c)
	}
	limOK(a2, "n", "NOOP")
	limOK(b2, "n", "NOOP")
	limOK(b1, "l", "LOGIN alice secret")

	// A slot freed on 127.0.0.2 is usable from there.
	a1.nc.Close()
	waitCounts(t, p.Limiter, "127.0.0.2 slot freed", func(c limits.Counts) bool { return c.Connections == 3 })
	a4 := limGreeted(t, "127.0.0.2", p.Addr)
	limOK(a4, "l", "LOGIN alice secret")
	a5 := dialFrom(t, "127.0.0.2", p.Addr)
	limWantLine(t, "connection from 127.0.0.2 while full again", a5.line(), limByeMaxPerIP(2))
	a5.expectClosed()
}

func TestLimitPerUser(t *testing.T) {
	p, up := limProxy(t, proxy.Options{}, limits.Options{MaxConnectionsPerUser: 2},
		server.User{Username: "alice", Password: "secret", Messages: 1},
		server.User{Username: "bob", Password: "hunter2"})
	s1 := login(t, p.Addr, "alice", "secret")
	s2 := login(t, p.Addr, "alice", "secret")
	up.waitOpen(t, 2)

	c := limGreeted(t, "", p.Addr)
	_, st := c.cmd("l1", "LOGIN alice secret")
	limWantLine(t, "3rd LOGIN of alice", st, limNoMaxPerUser("l1", 2))
	if n := up.dials.Load(); n != 3 {
		t.Errorf("upstream dials: got %d; want 3 (the limit is checked after the upstream accepted)", n)
	}
	up.waitOpen(t, 2) // the refused login's upstream connection was closed

	// AUTHENTICATE PLAIN is refused the same way.
	ir := base64.StdEncoding.EncodeToString([]byte("\x00alice\x00secret"))
	_, st = c.cmd("l2", "AUTHENTICATE PLAIN "+ir)
	limWantLine(t, "3rd AUTHENTICATE of alice", st, limNoMaxPerUser("l2", 2))
	up.waitOpen(t, 2)

	// The connection stays usable.
	limOK(c, "n1", "NOOP")
	un, st := c.cmd("c1", "CAPABILITY")
	if len(un) != 1 || !strings.HasPrefix(un[0], "* CAPABILITY ") || !strings.HasPrefix(st, "c1 OK") {
		t.Fatalf("CAPABILITY after refusal: got %q %q", un, st)
	}

	// At the cap, a wrong password is still a wrong password: the limit
	// is only checked once the upstream accepted the credentials.
	_, st = c.cmd("l3", "LOGIN alice wrong")
	limWantPrefix(t, "wrong password at the cap", st, "l3 NO [AUTHENTICATIONFAILED]")
	up.waitOpen(t, 2)

	// Another user is not affected.
	b := login(t, p.Addr, "bob", "hunter2")
	limOK(b, "n", "NOOP")
	up.waitOpen(t, 3)

	// A refused connection can log out.
	d := limGreeted(t, "", p.Addr)
	_, st = d.cmd("l1", "LOGIN alice secret")
	limWantLine(t, "LOGIN of alice on a 4th connection", st, limNoMaxPerUser("l1", 2))
	limLogout(d, "z")

	// Once a session ends, LOGIN on the refused connection succeeds.
	limLogout(s1, "z")
	waitCounts(t, p.Limiter, "alice down to one session", func(c limits.Counts) bool { return c.PerUser["alice"] == 1 })
	_, st = c.cmd("l4", "LOGIN alice secret")
	limWantPrefix(t, "LOGIN after a session ended", st, "l4 OK ")
	limOK(c, "s", "SELECT INBOX")
	limOK(s2, "n", "NOOP")
	if n := p.Limiter.Counts().PerUser["alice"]; n != 2 {
		t.Errorf("alice sessions: got %d; want 2", n)
	}
	up.waitOpen(t, 3)
	limLogout(c, "z")
	waitCounts(t, p.Limiter, "alice down to one session", func(c limits.Counts) bool { return c.PerUser["alice"] == 1 })
	up.waitOpen(t, 2)
}

func TestLimitPerUserDefault(t *testing.T) {
	p, up := limProxy(t, proxy.Options{}, limits.Options{})
	var sessions []*rawConn
	for range 16 {
		sessions = append(sessions, login(t, p.Addr, "alice", "secret"))
	}
	c := limGreeted(t, "", p.Addr)
	_, st := c.cmd("l1", "LOGIN alice secret")
	limWantLine(t, "17th LOGIN", st, limNoMaxPerUser("l1", 16))
	up.waitOpen(t, 16)
	limLogout(sessions[3], "z")
	waitCounts(t, p.Limiter, "15 sessions", func(c limits.Counts) bool { return c.Sessions == 15 })
	_, st = c.cmd("l2", "LOGIN alice secret")
	limWantPrefix(t, "LOGIN after one of 16 left", st, "l2 OK ")
}

// TestLimitCountsReturnToZero ends connections in every way there is and
// checks that the limiter forgets them and the upstream connections are
// closed.
func TestLimitCountsReturnToZero(t *testing.T) {
	const timeout = 300 * time.Millisecond

	t.Run("logout", func(t *testing.T) {
		p, up := limProxy(t, proxy.Options{}, limits.Options{})
		c := login(t, p.Addr, "alice", "secret")
		pre := limGreeted(t, "", p.Addr)
		waitCounts(t, p.Limiter, "counted", func(c limits.Counts) bool { return c.Connections == 2 && c.Sessions == 1 })
		limLogout(c, "z")
		limLogout(pre, "z")
		waitZero(t, p.Limiter)
		up.waitOpen(t, 0)
	})

	t.Run("client closes pre-auth", func(t *testing.T) {
		p, _ := limProxy(t, proxy.Options{}, limits.Options{})
		c := limGreeted(t, "", p.Addr)
		c.nc.Close()
		waitZero(t, p.Limiter)
	})

	t.Run("client closes in the middle of a pre-auth command", func(t *testing.T) {
		p, _ := limProxy(t, proxy.Options{}, limits.Options{})
		c := limGreeted(t, "", p.Addr)
		c.send("a LOGIN {6}\r\n")
		limWantPrefix(t, "literal continuation", c.line(), "+ ")
		c.send("ali")
		limReset(c)
		waitZero(t, p.Limiter)
	})

	t.Run("client resets mid-session", func(t *testing.T) {
		p, up := limProxy(t, proxy.Options{}, limits.Options{})
		c := login(t, p.Addr, "alice", "secret")
		limOK(c, "s", "SELECT INBOX")
		waitCounts(t, p.Limiter, "session counted", func(c limits.Counts) bool { return c.Sessions == 1 })
		start := time.Now()
		limReset(c)
		waitZero(t, p.Limiter)
		up.waitOpen(t, 0)
		// Nothing can reach a client that reset the connection: its slots
		// and the upstream connection should go at once, not after the
		// 5 s half-close linger meant for a client that only stopped
		// sending.
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("BUG: slots and upstream connection released %v after the client's RST; want at once (the relay lingers for an idle upstream as after a half-close)", d.Round(time.Millisecond))
		}
	})

	t.Run("client closes mid-session", func(t *testing.T) {
		p, up := limProxy(t, proxy.Options{}, limits.Options{})
		c := login(t, p.Addr, "alice", "secret")
		c.send("i IDLE\r\n")
		limWantPrefix(t, "IDLE", c.line(), "+")
		c.nc.Close()
		waitZero(t, p.Limiter)
		up.waitOpen(t, 0)
	})

	t.Run("upstream drops mid-session", func(t *testing.T) {
		p, up := limProxy(t, proxy.Options{}, limits.Options{})
		c := login(t, p.Addr, "alice", "secret")
		limOK(c, "s", "SELECT INBOX")
		c2 := login(t, p.Addr, "alice", "secret")
		c2.send("i IDLE\r\n")
		limWantPrefix(t, "IDLE", c2.line(), "+")
		up.cut()
		c.expectClosed()
		c2.expectClosed()
		waitZero(t, p.Limiter)
		up.waitOpen(t, 0)
	})

	t.Run("preauth timeout", func(t *testing.T) {
		p, up := limProxy(t, proxy.Options{PreauthTimeout: timeout}, limits.Options{})
		start := time.Now()
		c := limGreeted(t, "", p.Addr)
		limOK(c, "n", "NOOP") // commands do not extend the pre-auth time
		l := c.line()
		elapsed := time.Since(start)
		limWantPrefix(t, "after preauth_timeout", l, "* BYE")
		if !strings.Contains(l, "preauth_timeout=300ms") {
			t.Errorf("BYE: got %q; want it to name preauth_timeout=300ms", l)
		}
		if elapsed < timeout {
			t.Errorf("BYE after %v; want at least %v", elapsed, timeout)
		}
		c.expectClosed()
		waitZero(t, p.Limiter)
		if n := up.dials.Load(); n != 0 {
			t.Errorf("upstream dials: got %d; want 0", n)
		}
	})

	t.Run("preauth timeout during a literal", func(t *testing.T) {
		p, _ := limProxy(t, proxy.Options{PreauthTimeout: timeout}, limits.Options{})
		c := limGreeted(t, "", p.Addr)
		c.send("a LOGIN {6}\r\n")
		limWantPrefix(t, "literal continuation", c.line(), "+ ")
		c.send("ali") // and nothing more
		limWantPrefix(t, "after preauth_timeout", c.line(), "* BYE")
		c.expectClosed()
		waitZero(t, p.Limiter)
	})

	t.Run("idle timeout", func(t *testing.T) {
		p, up := limProxy(t, proxy.Options{IdleTimeout: timeout}, limits.Options{})
		c := login(t, p.Addr, "alice", "secret")
		start := time.Now()
		limOK(c, "s", "SELECT INBOX")
		l := c.line()
		elapsed := time.Since(start)
		limWantPrefix(t, "after idle_timeout", l, "* BYE")
		if !strings.Contains(l, "idle_timeout=300ms") {
			t.Errorf("BYE: got %q; want it to name idle_timeout=300ms", l)
		}
		if elapsed < timeout {
			t.Errorf("BYE after %v; want at least %v", elapsed, timeout)
		}
		c.expectClosed()
		waitZero(t, p.Limiter)
		up.waitOpen(t, 0)
	})

	t.Run("too many authentication failures", func(t *testing.T) {
		p, up := limProxy(t, proxy.Options{MaxAuthFailures: 2}, limits.Options{})
		c := limGreeted(t, "", p.Addr)
		_, st := c.cmd("a", "LOGIN alice wrong")
		limWantPrefix(t, "1st failure", st, "a NO [AUTHENTICATIONFAILED]")
		_, st = c.cmd("b", "LOGIN alice wrong")
		limWantPrefix(t, "2nd failure", st, "b NO [AUTHENTICATIONFAILED]")
		limWantPrefix(t, "after 2nd failure", c.line(), "* BYE")
		c.expectClosed()
		waitZero(t, p.Limiter)
		up.waitOpen(t, 0)
	})

	t.Run("too many bad commands", func(t *testing.T) {
		p, _ := limProxy(t, proxy.Options{MaxBadCommands: 1}, limits.Options{})
		c := limGreeted(t, "", p.Addr)
		c.send("a FROB\r\n")
		limWantPrefix(t, "bad command", c.line(), "a BAD")
		limWantPrefix(t, "after bad command", c.line(), "* BYE")
		c.expectClosed()
		waitZero(t, p.Limiter)
	})

	t.Run("refused by a cap", func(t *testing.T) {
		p, _ := limProxy(t, proxy.Options{}, limits.Options{MaxConnections: 1, MaxConnectionsPerUser: 1})
		c := login(t, p.Addr, "alice", "secret")
		r := dialRaw(t, p.Addr)
		limWantLine(t, "refused", r.line(), limByeMaxConns(1))
		r.expectClosed()
		limLogout(c, "z")
		waitZero(t, p.Limiter)
	})

	t.Run("shutdown", func(t *testing.T) {
		p, up := limProxy(t, proxy.Options{}, limits.Options{},
			server.User{Username: "alice", Password: "secret", Messages: 2})
		pre := limGreeted(t, "127.0.0.2", p.Addr)
		auth := login(t, p.Addr, "alice", "secret")
		limOK(auth, "s", "SELECT INBOX")
		idle := login(t, p.Addr, "alice", "secret")
		limOK(idle, "s", "SELECT INBOX")
		idle.send("i IDLE\r\n")
		limWantPrefix(t, "IDLE", idle.line(), "+")
		waitCounts(t, p.Limiter, "3 connections, 2 sessions", func(c limits.Counts) bool {
			return c.Connections == 3 && c.Sessions == 2
		})

		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.Server.Shutdown(ctx); err != nil {
			t.Fatalf("Shutdown: got %v; want nil", err)
		}
		if c := p.Limiter.Counts(); c.Connections != 0 || c.Addresses != 0 || c.Users != 0 || c.Sessions != 0 {
			t.Errorf("counts right after Shutdown: got %+v; want zero", c)
		}
		if n := up.open.Load(); n != 0 {
			t.Errorf("upstream connections open right after Shutdown: got %d; want 0", n)
		}
		for name, c := range map[string]*rawConn{"pre-auth": pre, "authenticated": auth, "idling": idle} {
			limWantLine(t, name+" client after Shutdown", c.line(), limShutdownBye)
			c.expectClosed()
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
		u := newLimUpstream(t, startUpstream(t))
		dialing := make(chan struct{})
		var once sync.Once
		u.dialHook = func(ctx context.Context) error {
			once.Do(func() { close(dialing) })
			<-ctx.Done() // an upstream that never answers the dial
			return ctx.Err()
		}
		p := startProxy(t, u.addr, proxy.Options{Dial: u.dial, ConnectTimeout: 20 * time.Second}, limits.Options{})
		c := limGreeted(t, "", p.Addr)
		c.send("l LOGIN alice secret\r\n")
		select {
		case <-dialing:
		case <-time.After(10 * time.Second):
			t.Fatal("proxy did not dial the upstream")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		start := time.Now()
		if err := p.Server.Shutdown(ctx); err != nil {
			t.Fatalf("Shutdown: got %v; want nil", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("Shutdown took %v; want the pending login abandoned at once", d)
		}
		if c := p.Limiter.Counts(); c.Connections != 0 || c.Sessions != 0 {
			t.Errorf("counts right after Shutdown: got %+v; want zero", c)
		}
		l := c.line()
		if strings.HasPrefix(l, "l NO ") {
			// The abandoned login may be answered before the BYE.
			t.Logf("before BYE: %q", l)
			l = c.line()
		}
		limWantLine(t, "client after Shutdown", l, limShutdownBye)
		c.expectClosed()
	})
}

// TestLimitIdleTimeoutIDLE: traffic during IDLE keeps a session alive
// past idle_timeout; without traffic it is cut, not earlier.
func TestLimitIdleTimeoutIDLE(t *testing.T) {
	const idle = 400 * time.Millisecond
	const period = idle / 4
	p, _ := limProxy(t, proxy.Options{IdleTimeout: idle}, limits.Options{},
		server.User{Username: "alice", Password: "secret", Messages: 1},
		server.User{Username: "bob", Password: "hunter2", Messages: 1})

	t.Run("traffic keeps it alive", func(t *testing.T) {
		a := login(t, p.Addr, "alice", "secret")
		limOK(a, "s", "SELECT INBOX")
		a.send("i IDLE\r\n")
		limWantPrefix(t, "IDLE", a.line(), "+")
		b := login(t, p.Addr, "alice", "secret")

		const msg = "Subject: ping\r\n\r\nping\r\n"
		tick := time.NewTicker(period)
		defer tick.Stop()
		start := time.Now()
		var lastSend time.Time
		appends := 0
		for time.Since(start) < 3*idle {
			<-tick.C
			lastSend = time.Now()
			b.send(fmt.Sprintf("ap%d APPEND INBOX {%d}\r\n", appends, len(msg)))
			limWantPrefix(t, "APPEND continuation", b.line(), "+")
			b.send(msg + "\r\n")
			_, st := b.until(fmt.Sprintf("ap%d", appends))
			limWantPrefix(t, "APPEND", st, fmt.Sprintf("ap%d OK", appends))
			appends++
			// A sees the new message.
			for {
				l := a.line()
				if strings.HasPrefix(l, "* BYE") {
					t.Fatalf("IDLE session cut after %v with traffic every %v: %q", time.Since(start), period, l)
				}
				if strings.HasSuffix(l, " EXISTS") {
					if want := fmt.Sprintf("* %d EXISTS", appends+1); l != want {
						t.Fatalf("update: got %q; want %q", l, want)
					}
					break
				}
			}
		}
		t.Logf("IDLE kept for %v (idle_timeout %v) by %d APPENDs", time.Since(start), idle, appends)

		// The traffic stops: A is cut, not before idle_timeout after the
		// last APPEND was sent.
		l := a.line()
		elapsed := time.Since(lastSend)
		limWantPrefix(t, "IDLE after traffic stopped", l, "* BYE")
		if !strings.Contains(l, "idle_timeout=400ms") {
			t.Errorf("BYE: got %q; want it to name idle_timeout=400ms", l)
		}
		if elapsed < idle {
			t.Errorf("BYE %v after the last traffic; want at least %v", elapsed, idle)
		}
		a.expectClosed()
	})

	t.Run("no traffic", func(t *testing.T) {
		c := login(t, p.Addr, "bob", "hunter2")
		limOK(c, "s", "SELECT INBOX")
		start := time.Now()
		c.send("i IDLE\r\n")
		limWantPrefix(t, "IDLE", c.line(), "+")
		l := c.line()
		elapsed := time.Since(start)
		limWantPrefix(t, "IDLE without traffic", l, "* BYE")
		if elapsed < idle {
			t.Errorf("BYE after %v; want at least %v", elapsed, idle)
		}
		c.expectClosed()
	})

	waitZero(t, p.Limiter)
}

// limClient is a line client that returns errors, for goroutines.
type limClient struct {
	nc net.Conn
	br *bufio.Reader
}

func limDial(src, addr string) (*limClient, error) {
	d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &limClient{nc: nc, br: bufio.NewReader(nc)}, nil
}

func (c *limClient) line() (string, error) {
	c.nc.SetReadDeadline(time.Now().Add(15 * time.Second))
	s, err := c.br.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("reading: %w (got %q)", err, s)
	}
	return strings.TrimRight(s, "\r\n"), nil
}

func (c *limClient) cmd(tag, command string) (untagged []string, tagged string, err error) {
	c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c.nc, tag+" "+command+"\r\n"); err != nil {
		return nil, "", err
	}
	for {
		l, err := c.line()
		if err != nil {
			return untagged, "", err
		}
		if strings.HasPrefix(l, tag+" ") {
			return untagged, l, nil
		}
		untagged = append(untagged, l)
	}
}

func (c *limClient) expectClosed() error {
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	s, err := c.br.ReadString('\n')
	if err == nil {
		return fmt.Errorf("got %q; want connection closed", s)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return errors.New("connection still open")
	}
	return nil
}

func (c *limClient) logout() error {
	un, st, err := c.cmd("z", "LOGOUT")
	if err != nil {
		return err
	}
	if len(un) == 0 || !strings.HasPrefix(un[0], "* BYE") || !strings.HasPrefix(st, "z OK") {
		return fmt.Errorf("LOGOUT: got %q %q", un, st)
	}
	return c.expectClosed()
}

func (c *limClient) reset() {
	c.nc.(*net.TCPConn).SetLinger(0)
	c.nc.Close()
}

// limTracker counts, from the clients' side, the connections and
// sessions they hold: up after the proxy said so (greeting, LOGIN OK),
// down before the client lets go (sends LOGOUT, closes). The proxy's own
// counts are therefore never below these, and these must stay within the
// caps.
type limTracker struct {
	maxConns, maxPerIP, maxPerUser int

	mu                                sync.Mutex
	conns                             int
	perIP, perUser                    map[string]int
	peakConns, peakPerIP, peakPerUser int
	violations                        []string
}

func newLimTracker(maxConns, maxPerIP, maxPerUser int) *limTracker {
	return &limTracker{maxConns: maxConns, maxPerIP: maxPerIP, maxPerUser: maxPerUser,
		perIP: make(map[string]int), perUser: make(map[string]int)}
}

func (k *limTracker) connUp(ip string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.conns++
	k.perIP[ip]++
	k.peakConns = max(k.peakConns, k.conns)
	k.peakPerIP = max(k.peakPerIP, k.perIP[ip])
	if k.conns > k.maxConns {
		k.violations = append(k.violations, fmt.Sprintf("%d connections held at once; cap %d", k.conns, k.maxConns))
	}
	if k.perIP[ip] > k.maxPerIP {
		k.violations = append(k.violations, fmt.Sprintf("%d connections from %s at once; cap %d", k.perIP[ip], ip, k.maxPerIP))
	}
}

func (k *limTracker) connDown(ip string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.conns--
	k.perIP[ip]--
}

func (k *limTracker) userUp(user string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.perUser[user]++
	k.peakPerUser = max(k.peakPerUser, k.perUser[user])
	if k.perUser[user] > k.maxPerUser {
		k.violations = append(k.violations, fmt.Sprintf("%d sessions of %s at once; cap %d", k.perUser[user], user, k.maxPerUser))
	}
}

func (k *limTracker) userDown(user string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.perUser[user]--
}

// limSampler checks the limiter's own counts against the caps until
// stopped.
func limSampler(lim *limits.Limiter, maxConns, maxAddrs, maxPerUser, maxSessions int) (stop func() []string) {
	done := make(chan struct{})
	res := make(chan []string, 1)
	go func() {
		var bad []string
		samples := 0
		for {
			select {
			case <-done:
				res <- bad
				return
			default:
			}
			c := lim.Counts()
			samples++
			if c.Connections > maxConns || c.Addresses > maxAddrs || c.Sessions > maxSessions {
				bad = append(bad, fmt.Sprintf("limiter counts %+v over the caps", c))
			}
			for u, n := range c.PerUser {
				if n > maxPerUser {
					bad = append(bad, fmt.Sprintf("limiter holds %d sessions of %s; cap %d", n, u, maxPerUser))
				}
			}
			if len(bad) > 10 {
				bad = bad[:10]
			}
			runtime.Gosched()
		}
	}()
	return func() []string { close(done); return <-res }
}

// limBarrier lets n goroutines wait for each other.
type limBarrier struct {
	wg   sync.WaitGroup
	done chan struct{}
}

func newLimBarrier(n int) *limBarrier {
	b := &limBarrier{done: make(chan struct{})}
	b.wg.Add(n)
	go func() { b.wg.Wait(); close(b.done) }()
	return b
}

func (b *limBarrier) arrive() { b.wg.Done() }

func (b *limBarrier) wait() error {
	select {
	case <-b.done:
		return nil
	case <-time.After(20 * time.Second):
		return errors.New("barrier timed out")
	}
}

func TestLimitConcurrency(t *testing.T) {
	const (
		clients    = 200
		maxConns   = 50
		maxPerIP   = 10
		maxPerUser = 5
		nIPs       = 8
	)
	users := []string{"u0", "u1", "u2", "u3"}
	var su []server.User
	for _, u := range users {
		su = append(su, server.User{Username: u, Password: "pw-" + u, Messages: 1})
	}
	p, up := limProxy(t, proxy.Options{}, limits.Options{
		MaxConnections: maxConns, MaxConnectionsPerIP: maxPerIP, MaxConnectionsPerUser: maxPerUser,
	}, su...)
	byeOK := []string{limByeMaxConns(maxConns), limByeMaxPerIP(maxPerIP)}

	// Round 1, in lock step, so that the outcome is exact. Wave A: 20
	// clients from 127.0.0.2 connect at once: 10 are accepted, 10 refused
	// by max_connections_per_ip. Wave B: the other 180, from 127.0.0.3 to
	// 127.0.0.9, connect at once while wave A holds on: 40 more are
	// accepted (7 addresses could take 70), the rest refused. Then the
	// 50 log in at once, as 4 users: 5 sessions each. Nobody leaves
	// before everyone got the answer.
	t.Run("lock step", func(t *testing.T) {
		const waveA = 20
		ipOf := func(i int) string {
			if i < waveA {
				return "127.0.0.2"
			}
			return fmt.Sprintf("127.0.0.%d", 3+(i-waveA)%(nIPs-1))
		}
		waveOf := func(i int) int { return min(i/waveA, 1) }
		k := newLimTracker(maxConns, maxPerIP, maxPerUser)
		stopSampler := limSampler(p.Limiter, maxConns, nIPs, maxPerUser, maxPerUser*len(users))
		waveB, greetB, loginB := newLimBarrier(waveA), newLimBarrier(clients), newLimBarrier(clients)
		var accepted, refusedGlobal, refusedIP [2]atomic.Int64 // by wave
		var acceptedAll, loggedIn, refusedUser atomic.Int64
		errs := make(chan error, clients)
		var wg sync.WaitGroup
		for i := range clients {
			wg.Go(func() {
				waveDone, greetDone, loginDone := i >= waveA, false, false
				defer func() {
					if !waveDone {
						waveB.arrive()
					}
					if !greetDone {
						greetB.arrive()
					}
					if !loginDone {
						loginB.arrive()
					}
				}()
				err := func() error {
					ip, w := ipOf(i), waveOf(i)
					if w == 1 {
						if err := waveB.wait(); err != nil {
							return err
						}
					}
					c, err := limDial(ip, p.Addr)
					if err != nil {
						return err
					}
					defer c.nc.Close()
					g, err := c.line()
					if err != nil {
						return fmt.Errorf("greeting: %w", err)
					}
					if !waveDone {
						waveB.arrive()
						waveDone = true
					}
					if strings.HasPrefix(g, "* BYE") {
						switch g {
						case limByeMaxConns(maxConns):
							refusedGlobal[w].Add(1)
						case limByeMaxPerIP(maxPerIP):
							refusedIP[w].Add(1)
						default:
							return fmt.Errorf("refusal: got %q; want one of %q", g, byeOK)
						}
						return c.expectClosed()
					}
					if !strings.HasPrefix(g, "* OK ") {
						return fmt.Errorf("greeting: got %q", g)
					}
					k.connUp(ip)
					accepted[w].Add(1)
					user := users[int(acceptedAll.Add(1)-1)%len(users)]
					greetB.arrive()
					greetDone = true
					if err := greetB.wait(); err != nil {
						return err
					}

					_, st, err := c.cmd("l", "LOGIN "+user+" pw-"+user)
					if err != nil {
						return err
					}
					session := false
					switch {
					case strings.HasPrefix(st, "l OK "):
						k.userUp(user)
						loggedIn.Add(1)
						session = true
					case st == limNoMaxPerUser("l", maxPerUser):
						refusedUser.Add(1)
					default:
						return fmt.Errorf("LOGIN %s: got %q; want OK or %q", user, st, limNoMaxPerUser("l", maxPerUser))
					}
					loginB.arrive()
					loginDone = true
					if err := loginB.wait(); err != nil {
						return err
					}

					if session {
						if _, st, err := c.cmd("n", "NOOP"); err != nil || !strings.HasPrefix(st, "n OK") {
							return fmt.Errorf("NOOP: %q %v", st, err)
						}
						k.userDown(user)
					}
					k.connDown(ip)
					switch i % 3 {
					case 0:
						return c.logout()
					case 1:
						c.nc.Close()
					default:
						c.reset()
					}
					return nil
				}()
				if err != nil {
					errs <- fmt.Errorf("client %d: %w", i, err)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		for _, v := range stopSampler() {
			t.Error(v)
		}
		for _, v := range k.violations {
			t.Error(v)
		}
		for w, name := range []string{"A", "B"} {
			t.Logf("wave %s: accepted %d, refused %d by max_connections and %d by max_connections_per_ip",
				name, accepted[w].Load(), refusedGlobal[w].Load(), refusedIP[w].Load())
		}
		t.Logf("%d logged in, %d refused by max_connections_per_user", loggedIn.Load(), refusedUser.Load())
		if a, g, ip := accepted[0].Load(), refusedGlobal[0].Load(), refusedIP[0].Load(); a != maxPerIP || g != 0 || ip != waveA-maxPerIP {
			t.Errorf("wave A: got %d accepted, %d refused by max_connections, %d by max_connections_per_ip; want %d, 0, %d",
				a, g, ip, maxPerIP, waveA-maxPerIP)
		}
		if a, r := accepted[1].Load(), refusedGlobal[1].Load()+refusedIP[1].Load(); a != maxConns-maxPerIP || r != clients-waveA-(maxConns-maxPerIP) {
			t.Errorf("wave B: got %d accepted, %d refused; want %d, %d", a, r, maxConns-maxPerIP, clients-waveA-(maxConns-maxPerIP))
		}
		if got := loggedIn.Load(); got != int64(maxPerUser*len(users)) {
			t.Errorf("logged in: got %d; want %d", got, maxPerUser*len(users))
		}
		if got := refusedUser.Load(); got != int64(maxConns-maxPerUser*len(users)) {
			t.Errorf("refused at login: got %d; want %d", got, maxConns-maxPerUser*len(users))
		}
		waitZero(t, p.Limiter)
		up.waitOpen(t, 0)
	})

	// Round 2, free running: every client connects several times and ends
	// each connection its own way.
	t.Run("free running", func(t *testing.T) {
		// Half of the clients from 127.0.0.2, so that its cap is hit too.
		ipOf := func(i int) string {
			if i%2 == 0 {
				return "127.0.0.2"
			}
			return fmt.Sprintf("127.0.0.%d", 3+(i/2)%(nIPs-1))
		}
		k := newLimTracker(maxConns, maxPerIP, maxPerUser)
		stopSampler := limSampler(p.Limiter, maxConns, nIPs, maxPerUser, maxPerUser*len(users))
		var stats [8]atomic.Int64 // see names below
		names := []string{"greeted", "refused max_connections", "refused max_connections_per_ip",
			"logged in", "refused max_connections_per_user", "logout", "close", "reset"}
		errs := make(chan error, clients)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range clients {
			wg.Go(func() {
				<-start
				err := func() error {
					ip := ipOf(i)
					for iter := range 3 {
						c, err := limDial(ip, p.Addr)
						if err != nil {
							return err
						}
						err = func() error {
							defer c.nc.Close()
							g, err := c.line()
							if err != nil {
								return fmt.Errorf("greeting: %w", err)
							}
							switch {
							case g == limByeMaxConns(maxConns):
								stats[1].Add(1)
								return c.expectClosed()
							case g == limByeMaxPerIP(maxPerIP):
								stats[2].Add(1)
								return c.expectClosed()
							case !strings.HasPrefix(g, "* OK "):
								return fmt.Errorf("greeting: got %q; want * OK or one of %q", g, byeOK)
							}
							stats[0].Add(1)
							k.connUp(ip)
							action := (i + iter) % 5
							user := users[(i+iter)%len(users)]
							session := false
							if action >= 2 {
								_, st, err := c.cmd("l", "LOGIN "+user+" pw-"+user)
								if err != nil {
									k.connDown(ip)
									return err
								}
								switch {
								case strings.HasPrefix(st, "l OK "):
									stats[3].Add(1)
									k.userUp(user)
									session = true
								case st == limNoMaxPerUser("l", maxPerUser):
									stats[4].Add(1)
								default:
									k.connDown(ip)
									return fmt.Errorf("LOGIN %s: got %q; want OK or %q", user, st, limNoMaxPerUser("l", maxPerUser))
								}
								if session {
									if _, st, err := c.cmd("n", "NOOP"); err != nil || !strings.HasPrefix(st, "n OK") {
										k.userDown(user)
										k.connDown(ip)
										return fmt.Errorf("NOOP: %q %v", st, err)
									}
								}
							}
							if session {
								k.userDown(user)
							}
							k.connDown(ip)
							switch action {
							case 0, 2:
								stats[6].Add(1)
								c.nc.Close()
							case 1, 3:
								stats[5].Add(1)
								return c.logout()
							default:
								stats[7].Add(1)
								c.reset()
							}
							return nil
						}()
						if err != nil {
							return err
						}
					}
					return nil
				}()
				if err != nil {
					errs <- fmt.Errorf("client %d: %w", i, err)
				}
			})
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		for _, v := range stopSampler() {
			t.Error(v)
		}
		for _, v := range k.violations {
			t.Error(v)
		}
		var sb strings.Builder
		for i, n := range names {
			fmt.Fprintf(&sb, "%s=%d ", n, stats[i].Load())
		}
		t.Logf("%s; peaks: %d connections, %d per address, %d per user", sb.String(), k.peakConns, k.peakPerIP, k.peakPerUser)
		if got := stats[0].Load() + stats[1].Load() + stats[2].Load(); got != 3*clients {
			t.Errorf("connections answered: got %d; want %d", got, 3*clients)
		}
		waitZero(t, p.Limiter)
		up.waitOpen(t, 0)
	})
}

func TestLimitLiveReload(t *testing.T) {
	t.Run("limiter", func(t *testing.T) {
		p, _ := limProxy(t, proxy.Options{}, limits.Options{})
		c1 := limGreeted(t, "", p.Addr)
		c2 := limGreeted(t, "", p.Addr)
		c3 := limGreeted(t, "127.0.0.2", p.Addr)

		p.Limiter.SetOptions(limits.Options{MaxConnections: 2})
		r := dialRaw(t, p.Addr)
		limWantLine(t, "connection after lowering max_connections to 2", r.line(), limByeMaxConns(2))
		r.expectClosed()
		// The connections over the new cap are kept.
		limOK(c1, "n", "NOOP")
		limOK(c2, "n", "NOOP")
		limOK(c3, "n", "NOOP")

		limLogout(c1, "z")
		r = dialRaw(t, p.Addr)
		// Still 2 counted (or 3 if c1 is not unwound yet): refused.
		limWantLine(t, "connection at the new cap", r.line(), limByeMaxConns(2))
		r.expectClosed()
		limLogout(c2, "z")
		waitCounts(t, p.Limiter, "one connection left", func(c limits.Counts) bool { return c.Connections == 1 })
		c4 := limGreeted(t, "", p.Addr)

		// Per address and per user, lowered and raised.
		p.Limiter.SetOptions(limits.Options{MaxConnectionsPerIP: 1, MaxConnectionsPerUser: 1})
		r = dialFrom(t, "127.0.0.2", p.Addr)
		limWantLine(t, "2nd connection from 127.0.0.2 with per-ip cap 1", r.line(), limByeMaxPerIP(1))
		r.expectClosed()
		limOK(c3, "l", "LOGIN alice secret")
		_, st := c4.cmd("l", "LOGIN alice secret")
		limWantLine(t, "2nd session of alice with per-user cap 1", st, limNoMaxPerUser("l", 1))

		p.Limiter.SetOptions(limits.Options{MaxConnectionsPerIP: 2, MaxConnectionsPerUser: 2})
		_, st = c4.cmd("l2", "LOGIN alice secret")
		limWantPrefix(t, "LOGIN after raising the per-user cap", st, "l2 OK ")
		limGreeted(t, "127.0.0.2", p.Addr)
	})

	t.Run("server options", func(t *testing.T) {
		const preauth = 500 * time.Millisecond
		u := newLimUpstream(t, startUpstream(t))
		p := startProxy(t, u.addr, proxy.Options{Dial: u.dial}, limits.Options{})
		old := limGreeted(t, "", p.Addr)
		oldSess := login(t, p.Addr, "alice", "secret")
		oldLast := time.Now()

		p.Server.SetOptions(proxy.Options{UpstreamAddr: u.addr, Dial: u.dial,
			MaxCommandSize: 64, PreauthTimeout: preauth, IdleTimeout: preauth})
		start := time.Now()
		fresh := limGreeted(t, "", p.Addr)

		long := `ID ("name" "` + strings.Repeat("x", 100) + `")`
		_, st := fresh.cmd("t1", long)
		limWantLine(t, "long ID on a new connection", st, "t1 BAD [TOOBIG] Command too long (max_command_size=64)")
		un, st := old.cmd("t1", long)
		if len(un) != 1 || !strings.HasPrefix(un[0], "* ID ") || !strings.HasPrefix(st, "t1 OK") {
			t.Fatalf("long ID on an older connection: got %q %q; want * ID and t1 OK", un, st)
		}

		// The new connection has the new pre-auth timeout.
		l := fresh.line()
		elapsed := time.Since(start)
		limWantPrefix(t, "new connection after the new preauth_timeout", l, "* BYE")
		if !strings.Contains(l, "preauth_timeout=500ms") {
			t.Errorf("BYE: got %q; want it to name preauth_timeout=500ms", l)
		}
		if elapsed < preauth {
			t.Errorf("BYE after %v; want at least %v", elapsed, preauth)
		}
		fresh.expectClosed()

		// A new session gets the new idle timeout; the older session keeps
		// the default one although it was quiet for longer.
		sess := login(t, p.Addr, "alice", "secret")
		list := `LIST "" "` + strings.Repeat("x", 100) + `"`
		_, st = sess.cmd("t2", list)
		limWantLine(t, "long LIST in a new session", st, "t2 BAD [TOOBIG] Command too long (max_command_size=64)")
		limWantPrefix(t, "new session after the new idle_timeout", sess.line(), "* BYE")
		sess.expectClosed()
		if q := time.Since(oldLast); q < preauth {
			t.Fatalf("older session quiet for %v only; want more than %v", q, preauth)
		}
		limOK(oldSess, "n", "NOOP")
		limOK(oldSess, "t2", list) // the older session keeps max_command_size 10240
		limOK(old, "n", "NOOP")
		waitCounts(t, p.Limiter, "two connections left", func(c limits.Counts) bool { return c.Connections == 2 })
	})
}

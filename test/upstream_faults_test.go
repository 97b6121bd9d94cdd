package test

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/test/proxytest"
)

// TestE2EUpstreamUnavailable: an upstream that refuses, or accepts and
// never answers, gives the client a prompt NO [UNAVAILABLE] (RFC 5530)
// and leaves its connection usable.
func TestE2EUpstreamUnavailable(t *testing.T) {
	t.Parallel()
	// after checks the connection is still the proxy's, unauthenticated.
	after := func(t *testing.T, c *proxytest.Conn) {
		t.Helper()
		c.OK("n", "NOOP")
		if caps := proxytest.CapLine(c.OK("k", "CAPABILITY")); !strings.Contains(caps, "AUTH=PLAIN") {
			t.Fatalf("CAPABILITY after failed login: got %q; want AUTH=PLAIN", caps)
		}
		c.Logout("z")
	}
	t.Run("refused", func(t *testing.T) {
		t.Parallel()
		p := proxytest.Start(t, proxytest.Config{Upstream: proxytest.ClosedAddr(t)})
		c := proxytest.Dial(t, p.Addr)
		c.Greeting()
		// More attempts than max_auth_failures: an unavailable upstream is
		// not the client's failure.
		for i, cmd := range []string{
			"LOGIN " + mainUser + " " + mainPass,
			"AUTHENTICATE PLAIN " + proxytest.SASLPlain(mainUser, mainPass),
			"LOGIN " + mainUser + " " + mainPass,
			"LOGIN " + mainUser + " " + mainPass,
		} {
			tag := "a" + strconv.Itoa(i)
			start := time.Now()
			if _, st := c.Cmd(tag, cmd); !strings.HasPrefix(st, tag+" NO [UNAVAILABLE]") {
				t.Fatalf("%s: got %q; want %s NO [UNAVAILABLE]", cmd, st, tag)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("%s: NO [UNAVAILABLE] after %v; want prompt", cmd, d)
			}
		}
		after(t, c)
		proxytest.WaitZero(t, p.Limiter)
	})
	for _, tc := range []struct{ name, greeting string }{
		{"silent", ""},
		{"greets then silent", "* OK hello\r\n"},
		{"greets with caps then silent", "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] hello\r\n"},
		{"waiting for auth", "* OK Waiting for authentication process to respond..\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := proxytest.StartFake(t, proxytest.Hold(tc.greeting))
			const loginTimeout = 500 * time.Millisecond
			p := proxytest.Start(t, proxytest.Config{Upstream: h.Addr, Options: proxy.Options{LoginTimeout: loginTimeout}})
			c := proxytest.Dial(t, p.Addr)
			c.Greeting()
			start := time.Now()
			_, st := c.Cmd("a", "LOGIN "+mainUser+" "+mainPass)
			d := time.Since(start)
			if !strings.HasPrefix(st, "a NO [UNAVAILABLE]") {
				t.Fatalf("got %q; want a NO [UNAVAILABLE]", st)
			}
			if d < loginTimeout-50*time.Millisecond || d > 5*time.Second {
				t.Errorf("answered after %v; want about the login timeout %v", d, loginTimeout)
			}
			// The proxy gave up on the upstream connection: it is closed.
			var up *proxytest.FakeConn
			select {
			case up = <-h.Accepted:
			case <-time.After(5 * time.Second):
				t.Fatal("the proxy never connected to the upstream")
			}
			up.NetConn().SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := up.ReadAll(); err != nil && proxytest.IsTimeout(err) {
				t.Errorf("the proxy left its upstream connection open")
			}
			after(t, c)
			proxytest.WaitZero(t, p.Limiter)
		})
	}
}

// TestE2EUpstreamDrops cuts the upstream side of relayed sessions: the
// client's connection is closed and every count returns to zero.
func TestE2EUpstreamDrops(t *testing.T) {
	t.Parallel()
	forEachUpstream(t, func(t *testing.T, up, user, pass string) {
		// What the session is doing when the upstream goes.
		for _, tc := range []struct {
			name  string
			doing func(t *testing.T, c *proxytest.Conn, f *proxytest.Forwarder)
		}{
			{"selected", func(t *testing.T, c *proxytest.Conn, f *proxytest.Forwarder) {
				c.OK("a", "SELECT INBOX")
			}},
			{"idle", func(t *testing.T, c *proxytest.Conn, f *proxytest.Forwarder) {
				c.OK("a", "SELECT INBOX")
				c.Idle("b")
			}},
			{"mid append literal", func(t *testing.T, c *proxytest.Conn, f *proxytest.Forwarder) {
				before := f.ToUpstream.Load()
				c.Send("a APPEND INBOX {5000000}\r\n")
				c.ExpectPrefix("+")
				part := bytes.Repeat([]byte("0123456789abcde\r\n"), 1<<16) // ~1.1 MB
				c.Send(string(part))
				f.WaitForwarded(t, before+int64(len(part)))
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				f := proxytest.Forward(t, up)
				p := proxytest.Start(t, proxytest.Config{Upstream: f.Addr})
				c := proxytest.Login(t, p.Addr, user, pass)
				tc.doing(t, c, f)
				f.Cut()
				c.ExpectEnd()
				proxytest.WaitZero(t, p.Limiter)
			})
		}
		t.Run("several sessions", func(t *testing.T) {
			f := proxytest.Forward(t, up)
			p := proxytest.Start(t, proxytest.Config{Upstream: f.Addr})
			var cs []*proxytest.Conn
			for range 3 {
				c := proxytest.Login(t, p.Addr, user, pass)
				c.OK("a", "NOOP")
				cs = append(cs, c)
			}
			f.Cut()
			for _, c := range cs {
				c.ExpectEnd()
			}
			proxytest.WaitZero(t, p.Limiter)
			// The proxy itself is fine: a new session to a healthy
			// upstream works.
			p.Server.SetOptions(proxy.Options{UpstreamAddr: up})
			proxytest.Login(t, p.Addr, user, pass).SelectAndLogout("")
			proxytest.WaitZero(t, p.Limiter)
		})
	})
}

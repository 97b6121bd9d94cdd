// Package test holds imapguard's end-to-end tests: real sockets on
// loopback, the proxy in front of the bundled cmd/imapd upstream or a
// private Dovecot.
package test

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/imapguard/imapguard/cmd/imapd/server"
	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/test/proxytest"
)

// testLogger logs to the test's output when -v is given.
func testLogger(t *testing.T) *slog.Logger {
	if !testing.Verbose() {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// startUpstream starts the bundled upstream with the given users.
func startUpstream(t *testing.T, users ...server.User) string {
	t.Helper()
	if len(users) == 0 {
		users = []server.User{{Username: "alice", Password: "secret", Messages: 3}}
	}
	return server.Start(t, server.Options{Users: users, InsecureAuth: true})
}

// testProxy is a running proxy.
type testProxy = proxytest.Proxy

// startProxy starts a proxy in front of upstream, listening on
// 127.0.0.1:0. Its cleanup shuts it down and checks that every count went
// back to zero.
func startProxy(t *testing.T, upstream string, opts proxy.Options, lim limits.Options) *testProxy {
	t.Helper()
	return startProxyWith(t, upstream, opts, lim, nil)
}

// startProxyWith is startProxy that lets setup prepare the server (such
// as Instrument) before it serves.
func startProxyWith(t *testing.T, upstream string, opts proxy.Options, lim limits.Options, setup func(*proxy.Server)) *testProxy {
	t.Helper()
	return proxytest.Start(t, proxytest.Config{Upstream: upstream, Options: opts, Limits: lim, Logger: testLogger(t), Setup: setup})
}

// The proxy releases slots and updates its registry when handlers
// unwind, after the client has seen the close: these poll on a ticker
// with a deadline, they do not sleep for a guessed time.
var (
	waitCounts = proxytest.WaitCounts
	waitFor    = proxytest.WaitFor
	waitZero   = proxytest.WaitZero
)

// rawConn is a line-oriented test client.
type rawConn struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

// dialFrom connects to addr from the local address src ("" = any), such
// as 127.0.0.2, to test per-address limits.
func dialFrom(t *testing.T, src, addr string) *rawConn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &rawConn{t: t, nc: nc, br: bufio.NewReader(nc)}
}

func dialRaw(t *testing.T, addr string) *rawConn { return dialFrom(t, "", addr) }

// line reads one line without CRLF, with a deadline.
func (c *rawConn) line() string {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	s, err := c.br.ReadString('\n')
	if err != nil {
		c.t.Fatalf("reading line: %v (got %q)", err, s)
	}
	return strings.TrimRight(s, "\r\n")
}

// expectClosed checks that the server closes the connection (EOF or
// reset) without sending more.
func (c *rawConn) expectClosed() {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	s, err := c.br.ReadString('\n')
	if err == nil {
		c.t.Fatalf("got %q; want connection closed", s)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.t.Fatalf("connection still open")
	}
}

func (c *rawConn) send(s string) {
	c.t.Helper()
	c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c.nc, s); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// cmd sends a command line and returns the untagged lines and the tagged
// one.
func (c *rawConn) cmd(tag, line string) (untagged []string, tagged string) {
	c.t.Helper()
	c.send(tag + " " + line + "\r\n")
	return c.until(tag)
}

// until reads up to the tagged response for tag.
func (c *rawConn) until(tag string) (untagged []string, tagged string) {
	c.t.Helper()
	for {
		l := c.line()
		if strings.HasPrefix(l, tag+" ") {
			return untagged, l
		}
		untagged = append(untagged, l)
	}
}

// greeting reads the greeting.
func (c *rawConn) greeting() string {
	c.t.Helper()
	return c.line()
}

// login opens a connection and logs in with LOGIN.
func login(t *testing.T, addr, user, pass string) *rawConn {
	t.Helper()
	c := dialRaw(t, addr)
	if g := c.greeting(); !strings.HasPrefix(g, "* OK ") {
		t.Fatalf("greeting %q", g)
	}
	_, st := c.cmd("l1", "LOGIN "+quote(user)+" "+quote(pass))
	if !strings.HasPrefix(st, "l1 OK ") {
		t.Fatalf("login: got %q; want OK", st)
	}
	return c
}

func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// imapClient connects go-imap's client through the proxy.
func imapClient(t *testing.T, addr string) *imapclient.Client {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := imapclient.New(nc, nil)
	t.Cleanup(func() { c.Close() })
	if err := c.WaitGreeting(); err != nil {
		t.Fatal(err)
	}
	return c
}

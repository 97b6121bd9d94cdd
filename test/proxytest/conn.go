package proxytest

import (
	"crypto/tls"
	"net"
	"slices"
	"strings"
	"testing"
)

// Conn is a raw IMAP client bound to a test: any error, and any answer
// the method checks and finds wrong, fails the test. Its connection is
// closed at cleanup.
type Conn struct {
	t testing.TB
	c *Client
}

// Dial connects to addr.
func Dial(t testing.TB, addr string) *Conn { t.Helper(); return DialFrom(t, "", addr) }

// DialFrom connects to addr from the local address src ("" = any), such
// as 127.0.0.2, to test per-address limits.
func DialFrom(t testing.TB, src, addr string) *Conn {
	t.Helper()
	c, err := DialClient(src, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &Conn{t: t, c: c}
}

// DialWith connects to addr with d, whose Control can set socket options
// before the connection is made (such as a small receive buffer).
func DialWith(t testing.TB, d *net.Dialer, addr string) *Conn {
	t.Helper()
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := NewClient(nc)
	t.Cleanup(func() { c.Close() })
	return &Conn{t: t, c: c}
}

// DialTLS connects to addr, an implicit TLS (imaps) port, and completes
// the handshake with cfg.
func DialTLS(t testing.TB, addr string, cfg *tls.Config) (*Conn, tls.ConnectionState) {
	t.Helper()
	c := Dial(t, addr)
	return c, c.UpgradeTLS(cfg)
}

// Login connects to addr, reads an * OK greeting and logs in with LOGIN.
func Login(t testing.TB, addr, user, pass string) *Conn {
	t.Helper()
	return LoginFrom(t, "", addr, user, pass)
}

// LoginFrom is Login from the local address src (see DialFrom).
func LoginFrom(t testing.TB, src, addr, user, pass string) *Conn {
	t.Helper()
	c := DialFrom(t, src, addr)
	c.Greeting()
	if _, st := c.Cmd("l1", "LOGIN "+Quote(user)+" "+Quote(pass)); !strings.HasPrefix(st, "l1 OK ") {
		t.Fatalf("login: got %q; want OK", st)
	}
	return c
}

// Client is the error-returning form of the same connection, for use on
// another goroutine.
func (c *Conn) Client() *Client { return c.c }

// For returns the same connection reporting to t, such as a subtest.
func (c *Conn) For(t testing.TB) *Conn { return &Conn{t: t, c: c.c} }

func (c *Conn) check(err error) {
	c.t.Helper()
	if err != nil {
		c.t.Fatal(err)
	}
}

// Send writes s as it is.
func (c *Conn) Send(s string) { c.t.Helper(); c.check(c.c.Send(s)) }

// Line reads one line without CRLF.
func (c *Conn) Line() string {
	c.t.Helper()
	l, err := c.c.Line()
	c.check(err)
	return l
}

// Greeting reads the greeting and fails unless it is * OK.
func (c *Conn) Greeting() string {
	c.t.Helper()
	g := c.Line()
	if !strings.HasPrefix(g, "* OK ") {
		c.t.Fatalf("greeting: got %q; want * OK", g)
	}
	return g
}

// Expect reads one line for each of want and fails unless they are
// exactly those.
func (c *Conn) Expect(want ...string) {
	c.t.Helper()
	for _, w := range want {
		if got := c.Line(); got != w {
			c.t.Fatalf("got %.300q; want %q", got, w)
		}
	}
}

// ExpectPrefix reads one line, fails unless it starts with prefix, and
// returns it.
func (c *Conn) ExpectPrefix(prefix string) string {
	c.t.Helper()
	l := c.Line()
	if !strings.HasPrefix(l, prefix) {
		c.t.Fatalf("got %.300q; want a line starting %q", l, prefix)
	}
	return l
}

// Cmd sends "tag command" and returns the untagged lines and the tagged
// one.
func (c *Conn) Cmd(tag, command string) (untagged []string, tagged string) {
	c.t.Helper()
	untagged, tagged, err := c.c.Cmd(tag, command)
	c.check(err)
	return untagged, tagged
}

// Until reads up to the tagged response for tag.
func (c *Conn) Until(tag string) (untagged []string, tagged string) {
	c.t.Helper()
	untagged, tagged, err := c.c.Until(tag)
	c.check(err)
	return untagged, tagged
}

// UntilAll reads responses until every tag in tags is completed, in any
// order (RFC 9051 §5.5 lets a server run pipelined commands concurrently;
// Dovecot answers a pipelined FETCH before an earlier NOOP). It returns
// all untagged lines and the tagged line of each tag.
func (c *Conn) UntilAll(tags ...string) (untagged []string, tagged map[string]string) {
	c.t.Helper()
	tagged = make(map[string]string)
	for len(tagged) < len(tags) {
		l := c.Line()
		i := slices.IndexFunc(tags, func(tag string) bool { return strings.HasPrefix(l, tag+" ") })
		if i < 0 {
			untagged = append(untagged, l)
			continue
		}
		if _, dup := tagged[tags[i]]; dup {
			c.t.Fatalf("second completion for tag %s: %q", tags[i], l)
		}
		tagged[tags[i]] = l
	}
	return untagged, tagged
}

// OK runs a command, fails unless it completes with OK, and returns the
// untagged lines.
func (c *Conn) OK(tag, command string) []string {
	c.t.Helper()
	un, st := c.Cmd(tag, command)
	if !strings.HasPrefix(st, tag+" OK") {
		c.t.Fatalf("%s: got %q (untagged %q); want %s OK", command, st, un, tag)
	}
	return un
}

// LogIn sends "tag command", a LOGIN or an AUTHENTICATE with an initial
// response, checks the login succeeded (see LoggedIn) and returns the
// tagged OK.
func (c *Conn) LogIn(tag, command string) string {
	c.t.Helper()
	c.Send(tag + " " + command + "\r\n")
	return c.LoggedIn(tag)
}

// LoggedIn reads up to the tagged answer to a LOGIN or AUTHENTICATE and
// checks it: OK with the post-login capabilities in a response code (RFC
// 9051 §7.1), and no continuation request among the lines before it. It
// returns the tagged OK.
func (c *Conn) LoggedIn(tag string) string {
	c.t.Helper()
	untagged, tagged := c.Until(tag)
	if !strings.HasPrefix(tagged, tag+" OK [CAPABILITY ") {
		c.t.Fatalf("login: got %q (before it %q); want %s OK [CAPABILITY ...]", tagged, untagged, tag)
	}
	for _, l := range untagged {
		if strings.HasPrefix(l, "+") {
			c.t.Fatalf("login: unexpected continuation request %q before %q", l, tagged)
		}
	}
	return tagged
}

// Idle sends IDLE (RFC 2177) and reads the continuation request: the
// session then idles until the client sends DONE.
func (c *Conn) Idle(tag string) {
	c.t.Helper()
	c.Send(tag + " IDLE\r\n")
	c.ExpectPrefix("+")
}

// Logout sends LOGOUT and checks for * BYE, the tagged OK and the close.
func (c *Conn) Logout(tag string) { c.t.Helper(); c.check(c.c.Logout(tag)) }

// SelectAndLogout runs SELECT INBOX, checks for the line wantExists
// among its answers (unless ""), and logs out.
func (c *Conn) SelectAndLogout(wantExists string) {
	c.t.Helper()
	un := c.OK("s1", "SELECT INBOX")
	if wantExists != "" && !slices.Contains(un, wantExists) {
		c.t.Errorf("SELECT INBOX: no %q in %q", wantExists, un)
	}
	c.Logout("s2")
}

// ExpectClosed checks that the server closes the connection (EOF or
// reset) without sending more.
func (c *Conn) ExpectClosed() { c.t.Helper(); c.check(c.c.ExpectClosed()) }

// Settle sends a command the proxy answers itself after login (COMPRESS,
// which it refuses) and reads the answer. Once it is here, the session
// relays, so its idle timer runs, and it has noted on its clock all the
// traffic before: it notes a relayed command's write to the upstream
// before it reads the next command (see Clock). Not during IDLE, where
// RFC 2177 allows only DONE.
func (c *Conn) Settle(tag string) {
	c.t.Helper()
	c.Send(tag + " COMPRESS DEFLATE\r\n")
	c.Expect(tag + " NO [CANNOT] COMPRESS is not available through this proxy")
}

// ExpectBye reads one line, fails unless it is bye, and checks that the
// server then closes the connection.
func (c *Conn) ExpectBye(bye string) {
	c.t.Helper()
	c.Expect(bye)
	c.ExpectClosed()
}

// ExpectEnd checks that the server closes the connection, allowing only
// untagged BYE lines before the end.
func (c *Conn) ExpectEnd() {
	c.t.Helper()
	for {
		l, err := c.c.Line()
		if err != nil {
			if IsTimeout(err) {
				c.t.Fatalf("connection still open: %v", err)
			}
			return
		}
		if !strings.HasPrefix(l, "* BYE") {
			c.t.Fatalf("got %q; want the connection closed (or * BYE)", l)
		}
	}
}

// ReadToEnd reads whatever the server sends until it closes the
// connection, and fails if the connection stays open. err is nil for an
// orderly close (FIN), else the error that ended it (such as a reset).
func (c *Conn) ReadToEnd() (data []byte, err error) {
	c.t.Helper()
	data, err = c.c.ReadToEnd()
	if IsTimeout(err) {
		c.t.Fatalf("connection still open after %v (received %q)", Timeout, data)
	}
	return data, err
}

// StartTLS runs STARTTLS, which must be answered with a tagged OK and
// nothing else, and goes on over TLS with cfg.
func (c *Conn) StartTLS(tag string, cfg *tls.Config) tls.ConnectionState {
	c.t.Helper()
	if un, st := c.Cmd(tag, "STARTTLS"); !strings.HasPrefix(st, tag+" OK ") || len(un) != 0 {
		c.t.Fatalf("STARTTLS: got %q (untagged %q); want %s OK", st, un, tag)
	}
	return c.UpgradeTLS(cfg)
}

// UpgradeTLS runs the TLS handshake now (see Client.UpgradeTLS).
func (c *Conn) UpgradeTLS(cfg *tls.Config) tls.ConnectionState {
	c.t.Helper()
	st, err := c.c.UpgradeTLS(cfg)
	c.check(err)
	return st
}

// Close closes the connection.
func (c *Conn) Close() { c.c.Close() }

// CloseWrite half-closes the connection: the server reads EOF.
func (c *Conn) CloseWrite() { c.t.Helper(); c.check(c.c.CloseWrite()) }

// Reset closes the connection with an RST.
func (c *Conn) Reset() { c.t.Helper(); c.check(c.c.Reset()) }

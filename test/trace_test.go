package test

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"

	"github.com/imapguard/imapguard/cmd/imapd/server"
	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/test/proxytest"
)

const tracedPassword = "pa55-Secret-wOrd"

// loginRefused logs in as alice on a new connection to addr, which the
// proxy must refuse with an answer starting want, and logs out.
func loginRefused(t *testing.T, addr, want string) {
	t.Helper()
	c := proxytest.Dial(t, addr)
	c.Greeting()
	_, st := c.Cmd("a", "LOGIN alice "+tracedPassword)
	wantPrefix(t, "LOGIN", st, want)
	c.Logout("z")
}

func TestTraceSuccessfulSession(t *testing.T) {
	up := proxytest.Imapd(t, server.User{Username: "alice", Password: tracedPassword, Messages: 2})
	tp := startTracedProxy(t, up, proxy.Options{}, limits.Options{MaxConnections: 10, MaxConnectionsPerIP: 5, MaxConnectionsPerUser: 3})

	c := proxytest.DialFrom(t, "127.0.0.2", tp.Addr)
	c.Greeting()
	c.Send("a AUTHENTICATE PLAIN\r\n")
	c.Expect("+ ")
	c.Send(proxytest.SASLPlain("alice", tracedPassword) + "\r\n")
	if _, st := c.Until("a"); !strings.HasPrefix(st, "a OK") {
		t.Fatalf("login: %q", st)
	}
	c.Cmd("s", "SELECT INBOX")
	c.Cmd("f", "FETCH 1:* (BODY.PEEK[])")
	c.Logout("z")

	root := tp.tree(t, "imapguard.connection(imap.authenticate(upstream.dial upstream.login) imap.session)")
	wantAttr(t, root, "client.address", "127.0.0.2")
	wantAttr(t, root, "server.address", "127.0.0.1")
	// The client's LOGOUT ended it, whichever side closed first.
	wantAttr(t, root, "imapguard.outcome", "logout")
	wantAttr(t, root, "imapguard.session.ended_by", "client")
	if root.s.SpanKind.String() != "server" || root.s.Status.Code != codes.Unset {
		t.Errorf("root kind %v status %v", root.s.SpanKind, root.s.Status)
	}
	if _, ok := attrOf(root.s, "client.port"); !ok {
		t.Error("root has no client.port")
	}
	ev := limitEvent(t, root, "max_connections")
	if ev["imapguard.limit.count"] != "0" || ev["imapguard.limit.max"] != "10" || ev["imapguard.limit.exceeded"] != "false" {
		t.Errorf("max_connections event %v", ev)
	}
	limitEvent(t, root, "max_connections_per_ip")

	auth := root.find("imap.authenticate")
	wantAttr(t, auth, "imapguard.auth.mechanism", "PLAIN")
	wantAttr(t, auth, "imap.command", "AUTHENTICATE")
	wantAttr(t, auth, "imapguard.auth.result", "success")
	if ev := limitEvent(t, auth, "max_connections_per_user"); ev["imapguard.limit.max"] != "3" {
		t.Errorf("per-user event %v", ev)
	}
	dial := root.find("upstream.dial")
	if dial.s.SpanKind.String() != "client" {
		t.Errorf("dial kind %v", dial.s.SpanKind)
	}
	wantAttr(t, dial, "server.address", "127.0.0.1")
	sess := root.find("imap.session")
	for _, k := range []string{"imapguard.bytes.to_upstream", "imapguard.bytes.to_client"} {
		if v, ok := attrOf(sess.s, k); !ok || v.AsInt64() <= 0 {
			t.Errorf("session %s = %v", k, v.String())
		}
	}
	// record_user is off: the user appears nowhere, the password never.
	all := everyString(tp.spans.GetSpans())
	if strings.Contains(all, "enduser.id") || strings.Contains(all, "alice") {
		t.Errorf("user recorded without record_user:\n%s", all)
	}
	if strings.Contains(all, tracedPassword) || strings.Contains(all, proxytest.SASLPlain("alice", tracedPassword)) {
		t.Errorf("password in spans:\n%s", all)
	}
}

func TestTraceRecordUser(t *testing.T) {
	up := proxytest.Imapd(t, server.User{Username: "alice", Password: tracedPassword})
	tp := startTracedProxy(t, up, proxy.Options{RecordUser: true}, limits.Options{})
	c := proxytest.Login(t, tp.Addr, "alice", tracedPassword)
	c.Logout("z")
	root := tp.tree(t, "")
	wantAttr(t, root, "enduser.id", "alice")
	wantAttr(t, root.find("imap.authenticate"), "enduser.id", "alice")
	wantAttr(t, root.find("imap.authenticate"), "imap.command", "LOGIN")
	if all := everyString(tp.spans.GetSpans()); strings.Contains(all, tracedPassword) {
		t.Errorf("password in spans:\n%s", all)
	}
}

func TestTraceWrongPassword(t *testing.T) {
	up := proxytest.Imapd(t, server.User{Username: "alice", Password: tracedPassword})
	tp := startTracedProxy(t, up, proxy.Options{MaxAuthFailures: 2}, limits.Options{})
	c := proxytest.Dial(t, tp.Addr)
	c.Greeting()
	for _, tag := range []string{"a", "b"} {
		if _, st := c.Cmd(tag, "LOGIN alice wrong-"+tracedPassword); !strings.HasPrefix(st, tag+" NO [AUTHENTICATIONFAILED]") {
			t.Fatalf("got %q", st)
		}
	}
	c.Line() // BYE
	c.ExpectClosed()
	root := tp.tree(t, "imapguard.connection(imap.authenticate(upstream.dial upstream.login) imap.authenticate(upstream.dial upstream.login))")
	auth := root.children[0]
	wantAttr(t, auth, "imapguard.auth.result", "failed")
	if auth.s.Status.Code != codes.Error {
		t.Errorf("auth status %v", auth.s.Status)
	}
	wantAttr(t, root, "imapguard.outcome", "too many authentication failures")
	wantAttr(t, root, "imapguard.refused.reason", "too_many_auth_failures")
	wantAttr(t, root, "imapguard.auth.failures", 2)
	if root.s.Status.Code != codes.Error {
		t.Errorf("root status %v", root.s.Status)
	}
	if all := everyString(tp.spans.GetSpans()); strings.Contains(all, tracedPassword) {
		t.Errorf("password in spans:\n%s", all)
	}
	m := collect(t, tp.reader)
	if got := m.sum("imapguard.auth.attempts", "mechanism=LOGIN", "result=failed"); got != 2 {
		t.Errorf("auth attempts failed = %v, want 2", got)
	}
	if got := m.sum("imapguard.connections.refused", "reason=too_many_auth_failures"); got != 1 {
		t.Errorf("refused too_many_auth_failures = %v", got)
	}
}

func TestTraceUpstreamDown(t *testing.T) {
	tp := startTracedProxy(t, proxytest.ClosedAddr(t), proxy.Options{}, limits.Options{})
	loginRefused(t, tp.Addr, "a NO [UNAVAILABLE]")
	root := tp.tree(t, "imapguard.connection(imap.authenticate(upstream.dial))")
	dial := root.find("upstream.dial")
	if dial.s.Status.Code != codes.Error || !strings.Contains(dial.s.Status.Description, "connect") {
		t.Errorf("dial status %+v", dial.s.Status)
	}
	wantAttr(t, root.find("imap.authenticate"), "imapguard.auth.result", "unavailable")
	wantRefusalEvent(t, root, "upstream_unavailable")
	wantAttr(t, root, "imapguard.outcome", "logout")
	m := collect(t, tp.reader)
	if got := m.sum("imapguard.connections.refused", "reason=upstream_unavailable"); got != 1 {
		t.Errorf("refused upstream_unavailable = %v", got)
	}
	if got := m.count("imapguard.upstream.dial.duration", "ok=false"); got != 1 {
		t.Errorf("dial duration count (failed) = %v", got)
	}
	if all := everyString(tp.spans.GetSpans()); strings.Contains(all, tracedPassword) {
		t.Errorf("password in spans:\n%s", all)
	}
}

// TestTraceRefusals: each kind of refusal gives a connection span with
// status Error, its reason, and, for a cap, the limit event that refused.
func TestTraceRefusals(t *testing.T) {
	up := proxytest.Imapd(t, server.User{Username: "alice", Password: tracedPassword})

	t.Run("max_connections", func(t *testing.T) {
		tp := startTracedProxy(t, up, proxy.Options{}, limits.Options{MaxConnections: 1})
		// A session holds the one slot (a connection that has not logged
		// in would be closed to make room).
		proxytest.Login(t, tp.Addr, "alice", tracedPassword)
		c := proxytest.Dial(t, tp.Addr)
		c.ExpectPrefix("* BYE [UNAVAILABLE]")
		root := tp.tree(t, "")
		wantAttr(t, root, "imapguard.outcome", "refused")
		wantAttr(t, root, "imapguard.refused.reason", "max_connections")
		ev := limitEvent(t, root, "max_connections")
		if ev["imapguard.limit.count"] != "1" || ev["imapguard.limit.max"] != "1" || ev["imapguard.limit.exceeded"] != "true" {
			t.Errorf("event %v", ev)
		}
		if root.s.Status.Code != codes.Error {
			t.Errorf("status %v", root.s.Status)
		}
		if got := collect(t, tp.reader).sum("imapguard.connections.refused", "reason=max_connections"); got != 1 {
			t.Errorf("refused metric %v", got)
		}
	})
	t.Run("max_connections_per_ip", func(t *testing.T) {
		tp := startTracedProxy(t, up, proxy.Options{}, limits.Options{MaxConnectionsPerIP: 1})
		held := proxytest.DialFrom(t, "127.0.0.2", tp.Addr)
		held.Greeting()
		other := proxytest.DialFrom(t, "127.0.0.3", tp.Addr) // another address is fine
		other.Greeting()
		c := proxytest.DialFrom(t, "127.0.0.2", tp.Addr)
		c.ExpectPrefix("* BYE [UNAVAILABLE]")
		root := tp.tree(t, "")
		wantAttr(t, root, "imapguard.refused.reason", "max_connections_per_ip")
		if ev := limitEvent(t, root, "max_connections_per_ip"); ev["imapguard.limit.exceeded"] != "true" {
			t.Errorf("event %v", ev)
		}
	})
	t.Run("max_connections_per_user", func(t *testing.T) {
		tp := startTracedProxy(t, up, proxy.Options{}, limits.Options{MaxConnectionsPerUser: 1})
		proxytest.Login(t, tp.Addr, "alice", tracedPassword)
		loginRefused(t, tp.Addr, "a NO [LIMIT]")
		root := tp.tree(t, "")
		auth := root.find("imap.authenticate")
		wantAttr(t, auth, "imapguard.auth.result", "limit")
		if ev := limitEvent(t, auth, "max_connections_per_user"); ev["imapguard.limit.count"] != "1" || ev["imapguard.limit.exceeded"] != "true" {
			t.Errorf("event %v", ev)
		}
		wantRefusalEvent(t, root, "max_connections_per_user")
	})
	t.Run("preauth_timeout", func(t *testing.T) {
		clk := proxytest.NewClock()
		tp := startTracedProxy(t, up, proxy.Options{PreauthTimeout: time.Minute, Clock: clk}, limits.Options{})
		c := proxytest.Dial(t, tp.Addr)
		c.Greeting()
		clk.ByeAfter(c, time.Minute, 1, byePreauth("1m"))
		root := tp.tree(t, "")
		wantAttr(t, root, "imapguard.outcome", "preauth timeout")
		wantAttr(t, root, "imapguard.refused.reason", "preauth_timeout")
		if root.s.Status.Code != codes.Error {
			t.Errorf("status %v", root.s.Status)
		}
	})
	t.Run("command_too_big", func(t *testing.T) {
		tp := startTracedProxy(t, up, proxy.Options{MaxCommandSize: 1024}, limits.Options{})
		// Once before login and once after: both are refused with BAD
		// and the session goes on.
		c := proxytest.Dial(t, tp.Addr)
		c.Greeting()
		c.Send("a NOOP " + strings.Repeat("x", 2000) + "\r\n")
		if l := c.Line(); !strings.Contains(l, "[TOOBIG]") {
			t.Fatalf("got %q", l)
		}
		if _, st := c.Cmd("l", "LOGIN alice "+tracedPassword); !strings.HasPrefix(st, "l OK") {
			t.Fatalf("login: %q", st)
		}
		if _, st := c.Cmd("b", "NOOP "+strings.Repeat("y", 2000)); !strings.HasPrefix(st, "b BAD [TOOBIG]") {
			t.Fatalf("after login: %q", st)
		}
		c.Logout("z")
		root := tp.tree(t, "")
		wantRefusalEvent(t, root, "command_too_big")
		if got := collect(t, tp.reader).sum("imapguard.connections.refused", "reason=command_too_big"); got != 2 {
			t.Errorf("refused metric %v, want 2", got)
		}
	})
	t.Run("tls_handshake", func(t *testing.T) {
		pki := newTestCA(t, "imap.test")
		tp := startTracedProxy(t, up, proxy.Options{TLSConfig: pki.serverConfig()}, limits.Options{})
		c := proxytest.Dial(t, tp.Addr)
		c.Greeting()
		if _, st := c.Cmd("a", "STARTTLS"); !strings.HasPrefix(st, "a OK") {
			t.Fatalf("got %q", st)
		}
		c.Send("this is not a TLS ClientHello\r\n")
		c.ExpectClosed()
		root := tp.tree(t, "imapguard.connection(tls.handshake)")
		if hs := root.find("tls.handshake"); hs.s.Status.Code != codes.Error {
			t.Errorf("handshake status %v", hs.s.Status)
		}
		wantAttr(t, root, "imapguard.outcome", "tls handshake failed")
		wantAttr(t, root, "imapguard.refused.reason", "tls_handshake")
	})
}

// TestTraceTLSSession: a session over STARTTLS has a handshake span and
// the TLS version on the root.
func TestTraceTLSSession(t *testing.T) {
	up := proxytest.Imapd(t, server.User{Username: "alice", Password: tracedPassword})
	pki := newTestCA(t, "imap.test")
	tp := startTracedProxy(t, up, proxy.Options{TLSConfig: pki.serverConfig()}, limits.Options{})
	c := proxytest.Dial(t, tp.Addr)
	c.Greeting()
	c.StartTLS("a", pki.clientConfig())
	if _, st := c.Cmd("b", "LOGIN alice "+tracedPassword); !strings.HasPrefix(st, "b OK") {
		t.Fatalf("login %q", st)
	}
	c.Logout("z")
	root := tp.tree(t, "imapguard.connection(tls.handshake imap.authenticate(upstream.dial upstream.login) imap.session)")
	wantAttr(t, root, "tls.protocol.version", "1.3")
	wantAttr(t, root.find("tls.handshake"), "tls.established", true)
}

// TestTraceAbruptEnds: the spans of a session end, and are exported, when
// the client resets the connection mid-session, when the upstream dies,
// and when the proxy shuts down.
func TestTraceAbruptEnds(t *testing.T) {
	up := proxytest.Imapd(t, server.User{Username: "alice", Password: tracedPassword, Messages: 1})

	t.Run("client reset", func(t *testing.T) {
		tp := startTracedProxy(t, up, proxy.Options{}, limits.Options{})
		c := proxytest.Login(t, tp.Addr, "alice", tracedPassword)
		c.Send("f FETCH 1 (BODY.PEEK[])\r\n") // in flight when the client goes
		c.Reset()
		root := tp.tree(t, "")
		if sess := root.find("imap.session"); sess == nil {
			t.Fatalf("no session span: %s", root.shape())
		}
		if v, _ := attrOf(root.s, "imapguard.outcome"); v.AsString() == "" {
			t.Errorf("no outcome on %v", root.s.Attributes)
		}
		proxytest.WaitZero(t, tp.Limiter)
	})
	t.Run("upstream dies", func(t *testing.T) {
		f := proxytest.Forward(t, up)
		tp := startTracedProxy(t, f.Addr, proxy.Options{}, limits.Options{})
		c := proxytest.Login(t, tp.Addr, "alice", tracedPassword)
		c.Cmd("n", "NOOP")
		f.Cut()
		c.ExpectClosed()
		root := tp.tree(t, "")
		wantAttr(t, root, "imapguard.outcome", "upstream closed")
		wantAttr(t, root.find("imap.session"), "imapguard.session.ended_by", "upstream")
	})
	t.Run("proxy shutdown", func(t *testing.T) {
		tp := startTracedProxy(t, up, proxy.Options{}, limits.Options{})
		c := proxytest.Login(t, tp.Addr, "alice", tracedPassword)
		pre := proxytest.Dial(t, tp.Addr)
		pre.Greeting()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := tp.Server.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		c.Line() // BYE
		c.ExpectClosed()
		roots := tp.connTrees(t, 2)
		for _, r := range roots {
			wantAttr(t, r, "imapguard.outcome", "proxy shutdown")
		}
		wantAttr(t, roots[0].find("imap.session"), "imapguard.session.ended_by", "proxy")
	})
}

// TestTraceAttemptsThatStopEarly: attempts that never reach the upstream
// are recorded too, with a mechanism from a fixed set.
func TestTraceAttemptsThatStopEarly(t *testing.T) {
	up := proxytest.Imapd(t)
	tp := startTracedProxy(t, up, proxy.Options{MaxBadCommands: 10}, limits.Options{})
	c := proxytest.Dial(t, tp.Addr)
	c.Greeting()
	c.Cmd("a", "AUTHENTICATE CRAM-MD5")
	c.Send("b AUTHENTICATE PLAIN\r\n")
	c.Line() // "+ "
	c.Send("*\r\n")
	c.Until("b")
	c.Cmd("c", "AUTHENTICATE PLAIN !!notbase64!!")
	c.Cmd("d", "LOGIN onlyuser")
	c.Logout("z")
	root := tp.tree(t, "")
	var got []string
	for _, ch := range root.children {
		m, _ := attrOf(ch.s, "imapguard.auth.mechanism")
		r, _ := attrOf(ch.s, "imapguard.auth.result")
		got = append(got, m.String()+"/"+r.String())
	}
	want := "other/unsupported_mechanism PLAIN/cancelled PLAIN/malformed LOGIN/malformed"
	if strings.Join(got, " ") != want {
		t.Errorf("attempts %v, want %s", got, want)
	}
	m := collect(t, tp.reader)
	if n := m.sum("imapguard.auth.attempts", "mechanism=other", "result=unsupported_mechanism"); n != 1 {
		t.Errorf("unsupported attempts = %v", n)
	}
}

// TestTraceDovecot: the span tree and metrics with a real Dovecot behind
// the proxy, a wrong password then the right one, and no password in
// what is recorded.
func TestTraceDovecot(t *testing.T) {
	up := startDovecot(t, []dovecotUser{{Username: "carol", Password: tracedPassword}})
	tp := startTracedProxy(t, up, proxy.Options{}, limits.Options{})
	c := proxytest.Dial(t, tp.Addr)
	c.Greeting()
	if _, st := c.Cmd("a", "LOGIN carol wrong-"+tracedPassword); !strings.HasPrefix(st, "a NO [AUTHENTICATIONFAILED]") {
		t.Fatalf("wrong password: %q", st)
	}
	c.Send("b AUTHENTICATE PLAIN " + proxytest.SASLPlain("carol", tracedPassword) + "\r\n")
	if _, st := c.Until("b"); !strings.HasPrefix(st, "b OK") {
		t.Fatalf("login: %q", st)
	}
	c.Cmd("s", "SELECT INBOX")
	c.Logout("z")

	root := tp.tree(t, "imapguard.connection(imap.authenticate(upstream.dial upstream.login) imap.authenticate(upstream.dial upstream.login) imap.session)")
	wantAttr(t, root.children[0], "imapguard.auth.result", "failed")
	wantAttr(t, root.children[1], "imapguard.auth.result", "success")
	wantAttr(t, root, "imapguard.outcome", "logout")
	if all := everyString(tp.spans.GetSpans()); strings.Contains(all, tracedPassword) || strings.Contains(all, "carol") {
		t.Errorf("password or user in spans:\n%s", all)
	}
	m := collect(t, tp.reader)
	if n := m.count("imapguard.upstream.login.duration", "result=failed"); n != 1 {
		t.Errorf("failed login durations = %v", n)
	}
	if n := m.sum("imapguard.auth.attempts", "mechanism=PLAIN", "result=success"); n != 1 {
		t.Errorf("PLAIN successes = %v", n)
	}
}

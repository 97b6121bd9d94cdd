package test

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/imapguard/imapguard/cmd/imapd/server"
	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/test/proxytest"
)

// tracedProxy is a proxy whose spans go to an in-memory exporter and
// whose metrics to a manual reader.
type tracedProxy struct {
	*testProxy
	spans  *tracetest.InMemoryExporter
	reader *sdkmetric.ManualReader
}

func startTracedProxy(t *testing.T, upstream string, opts proxy.Options, lim limits.Options) *tracedProxy {
	t.Helper()
	tp := &tracedProxy{spans: tracetest.NewInMemoryExporter(), reader: sdkmetric.NewManualReader()}
	// A syncer exports each span as it ends.
	provider := sdktrace.NewTracerProvider(sdktrace.WithSyncer(tp.spans))
	meters := sdkmetric.NewMeterProvider(sdkmetric.WithReader(tp.reader))
	t.Cleanup(func() {
		provider.Shutdown(context.Background())
		meters.Shutdown(context.Background())
	})
	tp.testProxy = startProxyWith(t, upstream, opts, lim, func(s *proxy.Server) {
		if err := s.Instrument(provider, meters); err != nil {
			t.Fatal(err)
		}
	})
	return tp
}

// spanNode is an exported span with its children, for checking trees.
type spanNode struct {
	s        tracetest.SpanStub
	children []*spanNode
}

// connTrees waits until n connection spans have ended and returns their
// trees, in the order they started.
func (tp *tracedProxy) connTrees(t *testing.T, n int) []*spanNode {
	t.Helper()
	var roots []*spanNode
	if !proxytest.Eventually(func() bool { roots = tp.trees(); return len(roots) >= n }) {
		t.Fatalf("%d connection spans ended, want %d", len(roots), n)
	}
	sort.Slice(roots, func(i, j int) bool { return roots[i].s.StartTime.Before(roots[j].s.StartTime) })
	for _, r := range roots {
		r.sort()
	}
	return roots
}

// trees returns the trees of the connection spans exported so far.
func (tp *tracedProxy) trees() []*spanNode {
	stubs := tp.spans.GetSpans()
	var roots []*spanNode
	byID := map[string]*spanNode{}
	for _, s := range stubs {
		byID[s.SpanContext.SpanID().String()] = &spanNode{s: s}
	}
	for _, s := range stubs {
		node := byID[s.SpanContext.SpanID().String()]
		if parent, ok := byID[s.Parent.SpanID().String()]; ok && s.Parent.IsValid() {
			parent.children = append(parent.children, node)
		} else if s.Name == "imapguard.connection" {
			roots = append(roots, node)
		}
	}
	return roots
}

func (n *spanNode) sort() {
	sort.Slice(n.children, func(i, j int) bool { return n.children[i].s.StartTime.Before(n.children[j].s.StartTime) })
	for _, c := range n.children {
		c.sort()
	}
}

// shape renders the tree's span names, children in parentheses.
func (n *spanNode) shape() string {
	if len(n.children) == 0 {
		return n.s.Name
	}
	parts := make([]string, len(n.children))
	for i, c := range n.children {
		parts[i] = c.shape()
	}
	return n.s.Name + "(" + strings.Join(parts, " ") + ")"
}

func (n *spanNode) find(name string) *spanNode {
	if n.s.Name == name {
		return n
	}
	for _, c := range n.children {
		if f := c.find(name); f != nil {
			return f
		}
	}
	return nil
}

func attrOf(s tracetest.SpanStub, key string) (attribute.Value, bool) {
	for _, kv := range s.Attributes {
		if string(kv.Key) == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

func wantAttr(t *testing.T, n *spanNode, key string, want any) {
	t.Helper()
	v, ok := attrOf(n.s, key)
	if !ok {
		t.Errorf("span %s has no %s; attributes %v", n.s.Name, key, n.s.Attributes)
		return
	}
	if got := v.String(); got != fmt.Sprint(want) {
		t.Errorf("span %s: %s = %s, want %v", n.s.Name, key, got, want)
	}
}

// limitEvent returns the span's "limit" event for the named limit.
func limitEvent(t *testing.T, n *spanNode, limit string) map[string]string {
	t.Helper()
	for _, e := range n.s.Events {
		m := map[string]string{}
		for _, kv := range e.Attributes {
			m[string(kv.Key)] = kv.Value.String()
		}
		if e.Name == "limit" && m["imapguard.limit.name"] == limit {
			return m
		}
	}
	t.Fatalf("span %s has no limit event for %s: %v", n.s.Name, limit, n.s.Events)
	return nil
}

// wantRefusalEvent checks that a refusal that left the connection open
// is an event on the span, not its reason.
func wantRefusalEvent(t *testing.T, n *spanNode, reason string) {
	t.Helper()
	if v, ok := attrOf(n.s, "imapguard.refused.reason"); ok {
		t.Errorf("span %s has imapguard.refused.reason %s; the connection was not refused", n.s.Name, v.String())
	}
	for _, e := range n.s.Events {
		for _, kv := range e.Attributes {
			if e.Name == "refusal" && string(kv.Key) == "imapguard.refused.reason" && kv.Value.String() == reason {
				return
			}
		}
	}
	t.Errorf("span %s has no refusal event for %s: %v", n.s.Name, reason, n.s.Events)
}

// everyString returns every attribute, event and status text of all
// spans, for the secret-leak check.
func everyString(stubs tracetest.SpanStubs) string {
	var b strings.Builder
	for _, s := range stubs {
		fmt.Fprintln(&b, s.Name, s.Status.Description)
		for _, kv := range s.Attributes {
			fmt.Fprintln(&b, kv.Key, kv.Value.String())
		}
		for _, e := range s.Events {
			fmt.Fprintln(&b, e.Name)
			for _, kv := range e.Attributes {
				fmt.Fprintln(&b, kv.Key, kv.Value.String())
			}
		}
	}
	return b.String()
}

const tracedPassword = "pa55-Secret-wOrd"

func TestTraceSuccessfulSession(t *testing.T) {
	up := startUpstream(t, server.User{Username: "alice", Password: tracedPassword, Messages: 2})
	tp := startTracedProxy(t, up, proxy.Options{}, limits.Options{MaxConnections: 10, MaxConnectionsPerIP: 5, MaxConnectionsPerUser: 3})

	c := dialFrom(t, "127.0.0.2", tp.Addr)
	c.greeting()
	c.send("a AUTHENTICATE PLAIN\r\n")
	if l := c.line(); l != "+ " {
		t.Fatalf("got %q", l)
	}
	c.send(e2eB64("\x00alice\x00"+tracedPassword) + "\r\n")
	if _, st := c.until("a"); !strings.HasPrefix(st, "a OK") {
		t.Fatalf("login: %q", st)
	}
	c.cmd("s", "SELECT INBOX")
	c.cmd("f", "FETCH 1:* (BODY.PEEK[])")
	c.cmd("z", "LOGOUT")
	c.expectClosed()

	root := tp.connTrees(t, 1)[0]
	if got, want := root.shape(), "imapguard.connection(imap.authenticate(upstream.dial upstream.login) imap.session)"; got != want {
		t.Fatalf("span tree %s, want %s", got, want)
	}
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
	if strings.Contains(all, tracedPassword) || strings.Contains(all, e2eB64("\x00alice\x00"+tracedPassword)) {
		t.Errorf("password in spans:\n%s", all)
	}
}

func TestTraceRecordUser(t *testing.T) {
	up := startUpstream(t, server.User{Username: "alice", Password: tracedPassword})
	tp := startTracedProxy(t, up, proxy.Options{RecordUser: true}, limits.Options{})
	c := login(t, tp.Addr, "alice", tracedPassword)
	c.cmd("z", "LOGOUT")
	c.expectClosed()
	root := tp.connTrees(t, 1)[0]
	wantAttr(t, root, "enduser.id", "alice")
	wantAttr(t, root.find("imap.authenticate"), "enduser.id", "alice")
	wantAttr(t, root.find("imap.authenticate"), "imap.command", "LOGIN")
	if all := everyString(tp.spans.GetSpans()); strings.Contains(all, tracedPassword) {
		t.Errorf("password in spans:\n%s", all)
	}
}

func TestTraceWrongPassword(t *testing.T) {
	up := startUpstream(t, server.User{Username: "alice", Password: tracedPassword})
	tp := startTracedProxy(t, up, proxy.Options{MaxAuthFailures: 2}, limits.Options{})
	c := dialRaw(t, tp.Addr)
	c.greeting()
	for _, tag := range []string{"a", "b"} {
		if _, st := c.cmd(tag, "LOGIN alice wrong-"+tracedPassword); !strings.HasPrefix(st, tag+" NO [AUTHENTICATIONFAILED]") {
			t.Fatalf("got %q", st)
		}
	}
	c.line() // BYE
	c.expectClosed()
	root := tp.connTrees(t, 1)[0]
	if got, want := root.shape(), "imapguard.connection(imap.authenticate(upstream.dial upstream.login) imap.authenticate(upstream.dial upstream.login))"; got != want {
		t.Fatalf("span tree %s, want %s", got, want)
	}
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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	tp := startTracedProxy(t, dead, proxy.Options{}, limits.Options{})
	c := dialRaw(t, tp.Addr)
	c.greeting()
	if _, st := c.cmd("a", "LOGIN alice "+tracedPassword); !strings.HasPrefix(st, "a NO [UNAVAILABLE]") {
		t.Fatalf("got %q", st)
	}
	c.cmd("z", "LOGOUT")
	c.expectClosed()
	root := tp.connTrees(t, 1)[0]
	if got, want := root.shape(), "imapguard.connection(imap.authenticate(upstream.dial))"; got != want {
		t.Fatalf("span tree %s, want %s", got, want)
	}
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
	up := startUpstream(t, server.User{Username: "alice", Password: tracedPassword})

	t.Run("max_connections", func(t *testing.T) {
		tp := startTracedProxy(t, up, proxy.Options{}, limits.Options{MaxConnections: 1})
		held := dialRaw(t, tp.Addr)
		held.greeting()
		c := dialRaw(t, tp.Addr)
		if g := c.greeting(); !strings.HasPrefix(g, "* BYE [UNAVAILABLE]") {
			t.Fatalf("greeting %q", g)
		}
		root := tp.connTrees(t, 1)[0]
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
		held := dialFrom(t, "127.0.0.2", tp.Addr)
		held.greeting()
		other := dialFrom(t, "127.0.0.3", tp.Addr) // another address is fine
		other.greeting()
		c := dialFrom(t, "127.0.0.2", tp.Addr)
		c.greeting()
		root := tp.connTrees(t, 1)[0]
		wantAttr(t, root, "imapguard.refused.reason", "max_connections_per_ip")
		if ev := limitEvent(t, root, "max_connections_per_ip"); ev["imapguard.limit.exceeded"] != "true" {
			t.Errorf("event %v", ev)
		}
	})
	t.Run("max_connections_per_user", func(t *testing.T) {
		tp := startTracedProxy(t, up, proxy.Options{}, limits.Options{MaxConnectionsPerUser: 1})
		login(t, tp.Addr, "alice", tracedPassword)
		c := dialRaw(t, tp.Addr)
		c.greeting()
		if _, st := c.cmd("a", "LOGIN alice "+tracedPassword); !strings.HasPrefix(st, "a NO [LIMIT]") {
			t.Fatalf("got %q", st)
		}
		c.cmd("z", "LOGOUT")
		c.expectClosed()
		root := tp.connTrees(t, 1)[0]
		auth := root.find("imap.authenticate")
		wantAttr(t, auth, "imapguard.auth.result", "limit")
		if ev := limitEvent(t, auth, "max_connections_per_user"); ev["imapguard.limit.count"] != "1" || ev["imapguard.limit.exceeded"] != "true" {
			t.Errorf("event %v", ev)
		}
		wantRefusalEvent(t, root, "max_connections_per_user")
	})
	t.Run("preauth_timeout", func(t *testing.T) {
		tp := startTracedProxy(t, up, proxy.Options{PreauthTimeout: 300 * time.Millisecond}, limits.Options{})
		c := dialRaw(t, tp.Addr)
		c.greeting()
		c.line() // BYE Autologout
		c.expectClosed()
		root := tp.connTrees(t, 1)[0]
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
		c := dialRaw(t, tp.Addr)
		c.greeting()
		c.send("a NOOP " + strings.Repeat("x", 2000) + "\r\n")
		if l := c.line(); !strings.Contains(l, "[TOOBIG]") {
			t.Fatalf("got %q", l)
		}
		if _, st := c.cmd("l", "LOGIN alice "+tracedPassword); !strings.HasPrefix(st, "l OK") {
			t.Fatalf("login: %q", st)
		}
		if _, st := c.cmd("b", "NOOP "+strings.Repeat("y", 2000)); !strings.HasPrefix(st, "b BAD [TOOBIG]") {
			t.Fatalf("after login: %q", st)
		}
		c.cmd("z", "LOGOUT")
		c.expectClosed()
		root := tp.connTrees(t, 1)[0]
		wantRefusalEvent(t, root, "command_too_big")
		if got := collect(t, tp.reader).sum("imapguard.connections.refused", "reason=command_too_big"); got != 2 {
			t.Errorf("refused metric %v, want 2", got)
		}
	})
	t.Run("tls_handshake", func(t *testing.T) {
		pki := newTLSPKI(t, "imap.test")
		tp := startTracedProxy(t, up, proxy.Options{TLSConfig: pki.serverConfig()}, limits.Options{})
		c := dialRaw(t, tp.Addr)
		c.greeting()
		if _, st := c.cmd("a", "STARTTLS"); !strings.HasPrefix(st, "a OK") {
			t.Fatalf("got %q", st)
		}
		c.send("this is not a TLS ClientHello\r\n")
		c.expectClosed()
		root := tp.connTrees(t, 1)[0]
		if got, want := root.shape(), "imapguard.connection(tls.handshake)"; got != want {
			t.Fatalf("span tree %s, want %s", got, want)
		}
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
	up := startUpstream(t, server.User{Username: "alice", Password: tracedPassword})
	pki := newTLSPKI(t, "imap.test")
	tp := startTracedProxy(t, up, proxy.Options{TLSConfig: pki.serverConfig()}, limits.Options{})
	c := dialRaw(t, tp.Addr)
	c.greeting()
	c.upgradeTLS("a", pki.clientConfig())
	if _, st := c.cmd("b", "LOGIN alice "+tracedPassword); !strings.HasPrefix(st, "b OK") {
		t.Fatalf("login %q", st)
	}
	c.cmd("z", "LOGOUT")
	c.expectClosed()
	root := tp.connTrees(t, 1)[0]
	if got, want := root.shape(), "imapguard.connection(tls.handshake imap.authenticate(upstream.dial upstream.login) imap.session)"; got != want {
		t.Fatalf("span tree %s, want %s", got, want)
	}
	wantAttr(t, root, "tls.protocol.version", "1.3")
	wantAttr(t, root.find("tls.handshake"), "tls.established", true)
}

// TestMetricsAfterSessions: the metrics after a scripted set of
// connections, and the open gauges back at zero.
func TestMetricsAfterSessions(t *testing.T) {
	up := startUpstream(t, server.User{Username: "alice", Password: tracedPassword, Messages: 3})
	tp := startTracedProxy(t, up, proxy.Options{}, limits.Options{MaxConnectionsPerIP: 2, MaxConnectionsPerUser: 5})

	a := login(t, tp.Addr, "alice", tracedPassword)
	a.cmd("f", "FETCH 1:* (BODY.PEEK[])")
	pre := dialRaw(t, tp.Addr)
	pre.greeting()
	m := collect(t, tp.reader)
	if got := m.gauge("imapguard.connections.open", "state=authenticated"); got != 1 {
		t.Errorf("open authenticated = %v", got)
	}
	if got := m.gauge("imapguard.connections.open", "state=preauth"); got != 1 {
		t.Errorf("open preauth = %v", got)
	}
	if got := m.gauge("imapguard.limit", "limit=max_connections_per_ip"); got != 2 {
		t.Errorf("limit gauge = %v", got)
	}
	if got := m.gauge("imapguard.address.connections.max"); got != 2 {
		t.Errorf("address max = %v", got)
	}
	refused := dialRaw(t, tp.Addr) // the third from 127.0.0.1
	refused.greeting()
	a.cmd("z", "LOGOUT")
	a.expectClosed()
	pre.cmd("z", "LOGOUT")
	pre.expectClosed()
	waitZero(t, tp.Limiter)
	tp.connTrees(t, 3)

	// The spans end just before the connections leave the registry.
	m = collectUntil(t, tp.reader, "no connection open", func(m metrics) bool {
		return m.gauge("imapguard.connections.open") == 0
	})
	if got := m.sum("imapguard.connections.accepted"); got != 2 {
		t.Errorf("accepted = %v", got)
	}
	if got := m.sum("imapguard.connections.refused", "reason=max_connections_per_ip"); got != 1 {
		t.Errorf("refused per ip = %v", got)
	}
	if got := m.sum("imapguard.auth.attempts", "result=success"); got != 1 {
		t.Errorf("auth success = %v", got)
	}
	if got := m.sum("imapguard.session.bytes", "direction=to_client"); got < 100 {
		t.Errorf("bytes to client = %v", got)
	}
	if got := m.count("imapguard.session.duration"); got != 1 {
		t.Errorf("session duration count = %v", got)
	}
	if got := m.count("imapguard.upstream.login.duration", "result=success"); got != 1 {
		t.Errorf("login duration count = %v", got)
	}
	if got := m.sum("imapguard.connections.closed", "outcome=refused"); got != 1 {
		t.Errorf("closed refused = %v", got)
	}
}

// metrics is one collection, flattened for lookups.
type metrics struct {
	t  *testing.T
	rm metricdata.ResourceMetrics
}

func collect(t *testing.T, r *sdkmetric.ManualReader) metrics {
	t.Helper()
	m := metrics{t: t}
	if err := r.Collect(context.Background(), &m.rm); err != nil {
		t.Fatal(err)
	}
	return m
}

// collectUntil collects until ok holds, failing after a deadline.
func collectUntil(t *testing.T, r *sdkmetric.ManualReader, what string, ok func(metrics) bool) metrics {
	t.Helper()
	var m metrics
	if !proxytest.Eventually(func() bool { m = collect(t, r); return ok(m) }) {
		t.Fatalf("metrics: %s: never", what)
	}
	return m
}

// matches reports whether set has every "key=value" of want.
func matches(set attribute.Set, want []string) bool {
	for _, w := range want {
		k, v, _ := strings.Cut(w, "=")
		got, ok := set.Value(attribute.Key(k))
		if !ok || got.String() != v {
			return false
		}
	}
	return true
}

// find returns the metric's data; a metric that is not there fails the
// test, so that a lookup cannot pass by finding nothing.
func (m metrics) find(name string) metricdata.Aggregation {
	m.t.Helper()
	for _, sm := range m.rm.ScopeMetrics {
		for _, mm := range sm.Metrics {
			if mm.Name == name {
				return mm.Data
			}
		}
	}
	m.t.Fatalf("no metric %s collected", name)
	return nil
}

// addPoints adds up the values of the points with the given attributes.
func addPoints[N int64 | float64](points []metricdata.DataPoint[N], want []string) float64 {
	var total float64
	for _, p := range points {
		if matches(p.Attributes, want) {
			total += float64(p.Value)
		}
	}
	return total
}

// sum adds up a counter's points with the given attributes (0 if none).
func (m metrics) sum(name string, want ...string) float64 {
	m.t.Helper()
	switch d := m.find(name).(type) {
	case metricdata.Sum[int64]:
		return addPoints(d.DataPoints, want)
	case metricdata.Sum[float64]:
		return addPoints(d.DataPoints, want)
	}
	m.t.Fatalf("metric %s is not a sum", name)
	return 0
}

// gauge adds up a gauge's points with the given attributes.
func (m metrics) gauge(name string, want ...string) float64 {
	m.t.Helper()
	switch d := m.find(name).(type) {
	case metricdata.Gauge[int64]:
		return addPoints(d.DataPoints, want)
	case metricdata.Gauge[float64]:
		return addPoints(d.DataPoints, want)
	}
	m.t.Fatalf("metric %s is not a gauge", name)
	return 0
}

// count adds up a histogram's counts with the given attributes.
func (m metrics) count(name string, want ...string) uint64 {
	m.t.Helper()
	d, ok := m.find(name).(metricdata.Histogram[float64])
	if !ok {
		m.t.Fatalf("metric %s is not a histogram", name)
	}
	var total uint64
	for _, p := range d.DataPoints {
		if matches(p.Attributes, want) {
			total += p.Count
		}
	}
	return total
}

// TestTraceAbruptEnds: the spans of a session end, and are exported, when
// the client resets the connection mid-session, when the upstream dies,
// and when the proxy shuts down.
func TestTraceAbruptEnds(t *testing.T) {
	up := startUpstream(t, server.User{Username: "alice", Password: tracedPassword, Messages: 1})

	t.Run("client reset", func(t *testing.T) {
		tp := startTracedProxy(t, up, proxy.Options{}, limits.Options{})
		c := login(t, tp.Addr, "alice", tracedPassword)
		c.send("f FETCH 1 (BODY.PEEK[])\r\n") // in flight when the client goes
		c.nc.(*net.TCPConn).SetLinger(0)
		c.nc.Close()
		root := tp.connTrees(t, 1)[0]
		if sess := root.find("imap.session"); sess == nil {
			t.Fatalf("no session span: %s", root.shape())
		}
		if v, _ := attrOf(root.s, "imapguard.outcome"); v.AsString() == "" {
			t.Errorf("no outcome on %v", root.s.Attributes)
		}
		waitZero(t, tp.Limiter)
	})
	t.Run("upstream dies", func(t *testing.T) {
		f := e2eForward(t, up)
		tp := startTracedProxy(t, f.ln.Addr().String(), proxy.Options{}, limits.Options{})
		c := login(t, tp.Addr, "alice", tracedPassword)
		c.cmd("n", "NOOP")
		f.cutAll()
		c.expectClosed()
		root := tp.connTrees(t, 1)[0]
		wantAttr(t, root, "imapguard.outcome", "upstream closed")
		wantAttr(t, root.find("imap.session"), "imapguard.session.ended_by", "upstream")
	})
	t.Run("proxy shutdown", func(t *testing.T) {
		tp := startTracedProxy(t, up, proxy.Options{}, limits.Options{})
		c := login(t, tp.Addr, "alice", tracedPassword)
		pre := dialRaw(t, tp.Addr)
		pre.greeting()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := tp.Server.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		c.line() // BYE
		c.expectClosed()
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
	up := startUpstream(t)
	tp := startTracedProxy(t, up, proxy.Options{MaxBadCommands: 10}, limits.Options{})
	c := dialRaw(t, tp.Addr)
	c.greeting()
	c.cmd("a", "AUTHENTICATE CRAM-MD5")
	c.send("b AUTHENTICATE PLAIN\r\n")
	c.line() // "+ "
	c.send("*\r\n")
	c.until("b")
	c.cmd("c", "AUTHENTICATE PLAIN !!notbase64!!")
	c.cmd("d", "LOGIN onlyuser")
	c.cmd("z", "LOGOUT")
	c.expectClosed()
	root := tp.connTrees(t, 1)[0]
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
	c := dialRaw(t, tp.Addr)
	c.greeting()
	if _, st := c.cmd("a", "LOGIN carol wrong-"+tracedPassword); !strings.HasPrefix(st, "a NO [AUTHENTICATIONFAILED]") {
		t.Fatalf("wrong password: %q", st)
	}
	c.send("b AUTHENTICATE PLAIN " + e2eB64("\x00carol\x00"+tracedPassword) + "\r\n")
	if _, st := c.until("b"); !strings.HasPrefix(st, "b OK") {
		t.Fatalf("login: %q", st)
	}
	c.cmd("s", "SELECT INBOX")
	c.cmd("z", "LOGOUT")
	c.expectClosed()

	root := tp.connTrees(t, 1)[0]
	want := "imapguard.connection(imap.authenticate(upstream.dial upstream.login) imap.authenticate(upstream.dial upstream.login) imap.session)"
	if got := root.shape(); got != want {
		t.Fatalf("span tree %s, want %s", got, want)
	}
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

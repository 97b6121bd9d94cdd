package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/imapguard/imapguard/limits"
)

// This file is the instrumentation of one connection: its spans (the
// root span, the TLS handshake, each authentication with the upstream
// dial and login under it, the relayed session) and the metrics recorded
// as it goes. Attribute names follow OpenTelemetry's semantic conventions
// where one exists (client.address, server.port, tls.protocol.version,
// enduser.id, error.type); the others are under "imapguard.". Passwords,
// SASL payloads and message data are never recorded: nothing here is
// handed a credential or a relayed byte.

// Authentication results: the "result" of imapguard.auth.attempts and
// imapguard.auth.result on the authenticate span.
const (
	authSuccess             = "success"
	authFailed              = "failed"
	authLimit               = "limit"
	authRefused             = "refused"
	authUnavailable         = "unavailable"
	authAuthorizationFailed = "authorization_failed"
	authPrivacyRequired     = "privacy_required"
	authMalformed           = "malformed"
	authCancelled           = "cancelled"
	authUnsupported         = "unsupported_mechanism"
	authAborted             = "aborted" // the client went away, or was kicked or shut down, mid-attempt
	authBlocked             = "blocked" // the brute-force defence refused it before the upstream was asked
)

// connTrace is the instrumentation of one connection.
type connTrace struct {
	tel       *telemetry
	ctx       context.Context // carries the root span
	span      trace.Span      // the connection's root span
	sessSpan  trace.Span      // the relayed session's, once logged in
	sessStart time.Time
	opts      *Options
}

// newConnTrace starts the connection's root span at c.since. Without
// tracing (a no-op tracer provider) no span is started and no attribute
// built: the spans of the connection are all the no-op span, whose
// methods do nothing, and its context carries none.
func newConnTrace(t *telemetry, c *conn) *connTrace {
	ct := &connTrace{tel: t, opts: c.opts}
	if !t.tracing {
		ct.ctx, ct.span = context.Background(), noSpan
		return ct
	}
	attrs := make([]attribute.KeyValue, 0, 8)
	attrs = append(attrs,
		attribute.Int64("imapguard.connection.id", int64(c.id)),
		attribute.String("imapguard.listener", c.listener),
		attribute.Bool("imapguard.implicit_tls", c.implicitTLS),
		attribute.String("network.transport", "tcp"),
	)
	attrs = appendHostPort(attrs, "client.address", "client.port", c.remote)
	attrs = appendHostPort(attrs, "server.address", "server.port", c.local)
	ct.ctx, ct.span = t.tracer.Start(context.Background(), spanConnection,
		trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(c.since), trace.WithAttributes(attrs...))
	return ct
}

// noSpan is the span of a connection without tracing: trace's no-op
// span, which SpanFromContext returns for a context without one.
var noSpan = trace.SpanFromContext(context.Background())

// start starts a span under ctx, or returns ctx and noSpan without
// tracing.
func (t *connTrace) start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	if !t.tel.tracing {
		return ctx, noSpan
	}
	return t.tel.tracer.Start(ctx, name, opts...)
}

// proxied replaces the root span's client and server addresses with
// those a PROXY header of version v carried, and records the peer (the
// balancer) as network.peer.*.
func (t *connTrace) proxied(client, server, peer net.Addr, v int) {
	if !t.span.IsRecording() {
		return
	}
	attrs := append(hostPort("client", client), hostPort("server", server)...)
	attrs = append(attrs, hostPort("network.peer", peer)...)
	attrs = append(attrs, attribute.Int("imapguard.proxy_protocol.version", v))
	t.span.SetAttributes(attrs...)
}

// traceID is the root span's trace id, for the connection's log lines
// (so that logs and traces join), or "" when it is not sampled.
func (t *connTrace) traceID() string {
	if sc := t.span.SpanContext(); sc.IsValid() && sc.IsSampled() {
		return sc.TraceID().String()
	}
	return ""
}

// accepted counts a connection the caps admitted.
func (t *connTrace) accepted(listener string) {
	t.tel.accepted.Add(context.Background(), 1, listenerAttrs.get(listener).add...)
}

// limitEvents records the limit checks of an admission as events on span.
func (t *connTrace) limitEvents(span trace.Span, checks []limits.Check, err error) {
	if !span.IsRecording() {
		return
	}
	for i, ch := range checks {
		exceeded := err != nil && i == len(checks)-1
		attrs := []attribute.KeyValue{
			attribute.String("imapguard.limit.name", ch.Limit),
			attribute.Int("imapguard.limit.count", ch.Count),
			attribute.Int("imapguard.limit.max", ch.Max),
			attribute.Bool("imapguard.limit.exceeded", exceeded),
		}
		span.AddEvent("limit", trace.WithAttributes(attrs...))
	}
	if errors.Is(err, limits.ErrUnavailable) {
		// [cluster] store = "redis" unreachable, redis_failure = "deny".
		span.AddEvent("cluster store unavailable")
	}
}

// refused counts a refusal. One that ends the connection marks the root
// span with its reason; one that leaves it open (BAD [TOOBIG], NO
// [UNAVAILABLE], NO [LIMIT]) is an event on it.
func (t *connTrace) refused(reason string, closing bool) {
	t.tel.refused.Add(context.Background(), 1, reasonAttrs.get(reason).add...)
	if closing {
		t.span.SetAttributes(attribute.String("imapguard.refused.reason", reason))
		return
	}
	t.span.AddEvent("refusal", trace.WithAttributes(attribute.String("imapguard.refused.reason", reason)))
}

// delayed counts a login held back by auth_failure_delay, and notes the
// delay on the attempt's span.
func (a *authSpan) delayed(d time.Duration) {
	a.t.tel.authDelayed.Add(context.Background(), 1)
	a.span.AddEvent("auth_failure_delay", trace.WithAttributes(attribute.Float64("imapguard.auth.delay", d.Seconds())))
}

// startHandshake starts the span of the client's TLS handshake.
func (t *connTrace) startHandshake(implicitTLS bool) trace.Span {
	if !t.tel.tracing {
		return noSpan
	}
	_, span := t.tel.tracer.Start(t.ctx, spanTLSHandshake, trace.WithAttributes(attribute.Bool("imapguard.implicit_tls", implicitTLS)))
	return span
}

// endHandshake ends it with the established connection's parameters
// (also on the root span), or with err.
func (t *connTrace) endHandshake(span trace.Span, st *tls.ConnectionState, err error) {
	if err != nil {
		endSpan(span, err)
		return
	}
	span.SetAttributes(tlsAttrs(*st)...)
	span.End()
	t.span.SetAttributes(tlsAttrs(*st)...)
}

// dialed records the time to connect to the upstream.
func (t *connTrace) dialed(d time.Duration, ok bool) {
	t.tel.dialTime.Record(context.Background(), d.Seconds(), okAttrs.get(ok).rec...)
}

// loginAnswered records the time the upstream took to answer a login.
func (t *connTrace) loginAnswered(d time.Duration, result string) {
	t.tel.loginTime.Record(context.Background(), d.Seconds(), resultAttrs.get(result).rec...)
}

// loggedIn names the user on the root span, with record_user.
func (t *connTrace) loggedIn(user string, recordUser bool) {
	if recordUser && t.span.IsRecording() {
		t.span.SetAttributes(attribute.String("enduser.id", user))
	}
}

// startSession starts the relayed session's span.
func (t *connTrace) startSession() {
	t.sessStart = time.Now()
	_, t.sessSpan = t.start(t.ctx, spanSession)
}

// connSummary is what the end of a connection records.
type connSummary struct {
	outcome      outcome
	refusedBy    string // the cap that refused the connection
	user         string
	recordUser   bool // record_user as in force now (SIGHUP)
	authFailures int
	badCommands  int
	res          *result // the session's, if relayed
}

// end ends the session's span and the root span, once, from finish:
// whichever way the connection ended, its spans end and are handed to the
// exporter.
func (t *connTrace) end(s connSummary) {
	if t.sessSpan != nil {
		res := s.res
		if res == nil { // logged in, but the relay never started
			res = &result{}
		}
		t.endSession(s.outcome, res)
	}
	o := s.outcome
	if s.refusedBy != "" {
		o = outcomeRefused
	}
	t.tel.closed.Add(context.Background(), 1, outcomeAttrs.get(o).add...)
	if !t.span.IsRecording() {
		t.span.End()
		return
	}
	t.span.SetAttributes(attribute.String("imapguard.outcome", o.String()),
		attribute.Int("imapguard.auth.failures", s.authFailures),
		attribute.Int("imapguard.bad_commands", s.badCommands))
	if s.user != "" && s.recordUser {
		t.span.SetAttributes(attribute.String("enduser.id", s.user))
	}
	switch info := o.info(); {
	case s.refusedBy != "":
		t.span.SetStatus(codes.Error, "refused: "+s.refusedBy)
		t.span.SetAttributes(attribute.String("error.type", s.refusedBy))
	case info.errorType != "":
		t.span.SetStatus(codes.Error, o.String())
		t.span.SetAttributes(attribute.String("error.type", info.errorType))
	case info.failed:
		t.span.SetStatus(codes.Error, o.String())
	}
	t.span.End()
}

// endSession ends the relayed session's span with the bytes each way and
// who ended it, and records its duration.
func (t *connTrace) endSession(o outcome, res *result) {
	t.tel.sessionTime.Record(context.Background(), time.Since(t.sessStart).Seconds())
	if !t.sessSpan.IsRecording() {
		t.sessSpan.End()
		return
	}
	attrs := []attribute.KeyValue{
		attribute.Int64("imapguard.bytes.to_upstream", res.toUpstream),
		attribute.Int64("imapguard.bytes.to_client", res.toClient),
		attribute.String("imapguard.session.ended_by", o.info().endedBy),
		attribute.String("imapguard.outcome", o.String()),
	}
	t.sessSpan.SetAttributes(attrs...)
	t.span.SetAttributes(attrs[2])
	if o.info().errorType != "" || o == outcomeConnectionError {
		t.sessSpan.SetStatus(codes.Error, o.String())
	}
	t.sessSpan.End()
}

// authSpan is one authentication attempt.
type authSpan struct {
	t    *connTrace
	ctx  context.Context
	span trace.Span
	mech string
}

// startAuth starts the span of one authentication attempt with the IMAP
// command (LOGIN or AUTHENTICATE) and mechanism (see attemptedMechanism),
// in ctx, whose cancellation (a kick, a shutdown) abandons the upstream
// exchange under it. The user is recorded only with record_user.
func (t *connTrace) startAuth(ctx context.Context, command, mech, user string) *authSpan {
	if !t.tel.tracing {
		return &authSpan{t: t, ctx: ctx, span: noSpan, mech: mech}
	}
	attrs := []attribute.KeyValue{attribute.String("imap.command", command), attribute.String("imapguard.auth.mechanism", mech)}
	if t.opts.RecordUser && user != "" {
		attrs = append(attrs, attribute.String("enduser.id", user))
	}
	ctx, span := t.tel.tracer.Start(ctx, spanAuthenticate, trace.WithAttributes(attrs...))
	return &authSpan{t: t, ctx: ctx, span: span, mech: mech}
}

// end records the attempt's result, and for a refusal the upstream's
// response code. A failure sets the status, with the result as its
// description: never free text, which may name the user.
func (a *authSpan) end(result, code string) {
	a.t.tel.authAttempts.Add(context.Background(), 1, attemptAttrs.get([2]string{a.mech, result}).add...)
	if !a.span.IsRecording() {
		a.span.End()
		return
	}
	a.span.SetAttributes(attribute.String("imapguard.auth.result", result))
	if code != "" {
		a.span.SetAttributes(attribute.String("imap.response_code", code))
	}
	if result != authSuccess {
		a.span.SetStatus(codes.Error, resultStatus(result, code))
		a.span.SetAttributes(attribute.String("error.type", result))
	}
	a.span.End()
}

// upstreamSpan starts a client span towards the upstream.
func (a *authSpan) upstreamSpan(name string) (context.Context, trace.Span) {
	if !a.t.tel.tracing {
		return a.ctx, noSpan
	}
	o := a.t.opts
	return a.t.tel.tracer.Start(a.ctx, name, upstreamSpanOpts.get([2]string{o.UpstreamTLS, o.UpstreamAddr})...)
}

// upstreamSpanOpts are the start options of the spans towards an upstream
// (kind and attributes), by TLS mode and address: the same for every
// login, made once.
var upstreamSpanOpts = newOptCache(func(k [2]string) []trace.SpanStartOption {
	mode, addr := k[0], k[1]
	if mode == "" {
		mode = "none"
	}
	attrs := []attribute.KeyValue{attribute.String("imapguard.upstream.tls", mode)}
	if host, port, err := net.SplitHostPort(addr); err == nil {
		p, _ := strconv.Atoi(port)
		attrs = append(attrs, attribute.String("server.address", host), attribute.Int("server.port", p))
	}
	return []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...)}
})

// endLoginSpan ends the upstream login's span with its result.
func endLoginSpan(span trace.Span, result, code string) {
	if !span.IsRecording() {
		span.End()
		return
	}
	span.SetAttributes(attribute.String("imapguard.auth.result", result))
	if code != "" {
		span.SetAttributes(attribute.String("imap.response_code", code))
	}
	if result != authSuccess {
		span.SetStatus(codes.Error, resultStatus(result, code))
	}
	span.End()
}

// resultStatus is a span status description from the fixed vocabulary:
// the result, and the upstream's response code if any.
func resultStatus(result, code string) string {
	if code != "" {
		return result + " [" + code + "]"
	}
	return result
}

// endSpan ends a span with err as its status, if any.
func endSpan(span trace.Span, err error) {
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// appendHostPort appends the address and port of a under the keys
// addrKey and portKey: from a *net.TCPAddr's fields, without formatting
// and parsing it again.
func appendHostPort(dst []attribute.KeyValue, addrKey, portKey attribute.Key, a net.Addr) []attribute.KeyValue {
	if ta, ok := a.(*net.TCPAddr); ok && ta.Zone == "" {
		return append(dst, addrKey.String(ta.IP.String()), portKey.Int(ta.Port))
	}
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return append(dst, addrKey.String(a.String()))
	}
	p, _ := strconv.Atoi(port)
	return append(dst, addrKey.String(host), portKey.Int(p))
}

// hostPort returns prefix.address and prefix.port for a.
func hostPort(prefix string, a net.Addr) []attribute.KeyValue {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return []attribute.KeyValue{attribute.String(prefix+".address", a.String())}
	}
	p, _ := strconv.Atoi(port)
	return []attribute.KeyValue{attribute.String(prefix+".address", host), attribute.Int(prefix+".port", p)}
}

// tlsAttrs describes an established TLS connection.
func tlsAttrs(st tls.ConnectionState) []attribute.KeyValue {
	v := strings.TrimPrefix(tls.VersionName(st.Version), "TLS ")
	attrs := []attribute.KeyValue{
		attribute.String("tls.protocol.name", "tls"),
		attribute.String("tls.protocol.version", v),
		attribute.String("tls.cipher", tls.CipherSuiteName(st.CipherSuite)),
		attribute.Bool("tls.established", true),
	}
	if st.NegotiatedProtocol != "" {
		attrs = append(attrs, attribute.String("tls.next_protocol", st.NegotiatedProtocol))
	}
	if st.ServerName != "" {
		attrs = append(attrs, attribute.String("tls.client.server_name", st.ServerName))
	}
	return attrs
}

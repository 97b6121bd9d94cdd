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
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/imapguard/imapguard/limits"
)

// This file is the proxy's instrumentation: the spans of a connection
// and the metrics, on the OpenTelemetry API only. Which SDK, exporters and
// sampler stand behind it is the command's business (package
// proxy/telemetry). Attribute names follow OpenTelemetry's semantic
// conventions where one exists (client.address, server.port,
// tls.protocol.version, enduser.id, error.type); the others are under
// "imapguard.". Passwords, SASL payloads and message data are never
// recorded: nothing here is handed a credential or a relayed byte.

// instrumentationName names the tracer and meter.
const instrumentationName = "github.com/imapguard/imapguard/proxy"

// Span names.
const (
	spanConnection   = "imapguard.connection"
	spanTLSHandshake = "tls.handshake"
	spanAuthenticate = "imap.authenticate"
	spanDial         = "upstream.dial"
	spanLogin        = "upstream.login"
	spanSession      = "imap.session"
)

// Refusal reasons: the "reason" of imapguard.connections.refused, and
// imapguard.refused.reason on the connection span.
const (
	reasonMaxConnections      = "max_connections"
	reasonMaxConnectionsPerIP = "max_connections_per_ip"
	reasonMaxPerUser          = "max_connections_per_user"
	reasonPreauthTimeout      = "preauth_timeout"
	reasonIdleTimeout         = "idle_timeout"
	reasonTLSHandshake        = "tls_handshake"
	reasonCommandTooBig       = "command_too_big"
	reasonUpstreamUnavailable = "upstream_unavailable"
	reasonBadCommands         = "too_many_bad_commands"
	reasonAuthFailures        = "too_many_auth_failures"
)

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
)

// telemetry holds the tracer and the instruments.
type telemetry struct {
	tracer trace.Tracer

	accepted     metric.Int64Counter
	refused      metric.Int64Counter
	closed       metric.Int64Counter
	authAttempts metric.Int64Counter
	dialTime     metric.Float64Histogram
	loginTime    metric.Float64Histogram
	sessionTime  metric.Float64Histogram
	reg          metric.Registration
}

// Bucket boundaries, in seconds: the SDK's default ones are meant for
// milliseconds.
var (
	upstreamBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}
	sessionBuckets  = []float64{1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400}
)

func noopTelemetry() *telemetry {
	t, _ := newTelemetry(nil, tracenoop.NewTracerProvider(), metricnoop.NewMeterProvider())
	return t
}

// Instrument makes the server trace with tp and measure with mp; call it
// before Serve. Without it the server records nothing.
func (s *Server) Instrument(tp trace.TracerProvider, mp metric.MeterProvider) error {
	if tp == nil {
		tp = tracenoop.NewTracerProvider()
	}
	if mp == nil {
		mp = metricnoop.NewMeterProvider()
	}
	t, err := newTelemetry(s, tp, mp)
	if err != nil {
		return err
	}
	if old := s.tel.Swap(t); old != nil && old.reg != nil {
		old.reg.Unregister()
	}
	return nil
}

func (s *Server) telemetry() *telemetry { return s.tel.Load() }

func newTelemetry(s *Server, tp trace.TracerProvider, mp metric.MeterProvider) (*telemetry, error) {
	m := mp.Meter(instrumentationName)
	t := &telemetry{tracer: tp.Tracer(instrumentationName)}
	var errs []error
	check := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	var err error
	t.accepted, err = m.Int64Counter("imapguard.connections.accepted", metric.WithUnit("{connection}"),
		metric.WithDescription("Client connections admitted by max_connections and max_connections_per_ip, by listener."))
	check(err)
	t.refused, err = m.Int64Counter("imapguard.connections.refused", metric.WithUnit("{refusal}"),
		metric.WithDescription("Clients turned away or cut off by the proxy, by reason: a cap, a timeout, a TLS handshake failure, an oversize command, an unavailable upstream, too many bad commands or failed logins."))
	check(err)
	t.closed, err = m.Int64Counter("imapguard.connections.closed", metric.WithUnit("{connection}"),
		metric.WithDescription("Client connections ended, by outcome (how they ended)."))
	check(err)
	t.authAttempts, err = m.Int64Counter("imapguard.auth.attempts", metric.WithUnit("{attempt}"),
		metric.WithDescription("Authentication attempts, by mechanism and result."))
	check(err)
	t.dialTime, err = m.Float64Histogram("imapguard.upstream.dial.duration", metric.WithUnit("s"),
		metric.WithDescription("Time to connect to the upstream: TCP, TLS as configured, and its greeting."),
		metric.WithExplicitBucketBoundaries(upstreamBuckets...))
	check(err)
	t.loginTime, err = m.Float64Histogram("imapguard.upstream.login.duration", metric.WithUnit("s"),
		metric.WithDescription("Time for the upstream to answer a login with the client's credentials, by result."),
		metric.WithExplicitBucketBoundaries(upstreamBuckets...))
	check(err)
	t.sessionTime, err = m.Float64Histogram("imapguard.session.duration", metric.WithUnit("s"),
		metric.WithDescription("Length of authenticated sessions, from login to end."),
		metric.WithExplicitBucketBoundaries(sessionBuckets...))
	check(err)

	open, err := m.Int64ObservableGauge("imapguard.connections.open", metric.WithUnit("{connection}"),
		metric.WithDescription("Client connections open now, by state (preauth, authenticated) and listener."))
	check(err)
	bytes, err := m.Int64ObservableCounter("imapguard.session.bytes", metric.WithUnit("By"),
		metric.WithDescription("Bytes relayed in authenticated sessions, by direction (to_upstream, to_client)."))
	check(err)
	caps, err := m.Int64ObservableGauge("imapguard.limit",
		metric.WithDescription("The caps in force, by limit (max_connections, max_connections_per_ip, max_connections_per_user, max_command_size), to set against the counts."))
	check(err)
	timeouts, err := m.Float64ObservableGauge("imapguard.timeout", metric.WithUnit("s"),
		metric.WithDescription("The timeouts in force, by timeout (preauth_timeout, idle_timeout)."))
	check(err)
	users, err := m.Int64ObservableGauge("imapguard.users", metric.WithUnit("{user}"),
		metric.WithDescription("Distinct users with an authenticated session."))
	check(err)
	perUserMax, err := m.Int64ObservableGauge("imapguard.user.sessions.max", metric.WithUnit("{session}"),
		metric.WithDescription("Sessions of the user who has most: compare with imapguard.limit{limit=max_connections_per_user}."))
	check(err)
	addrs, err := m.Int64ObservableGauge("imapguard.addresses", metric.WithUnit("{address}"),
		metric.WithDescription("Distinct client addresses (IPv6 by ipv6_prefix_length) with a connection."))
	check(err)
	perAddrMax, err := m.Int64ObservableGauge("imapguard.address.connections.max", metric.WithUnit("{connection}"),
		metric.WithDescription("Connections of the client address that has most: compare with imapguard.limit{limit=max_connections_per_ip}."))
	check(err)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if s == nil {
		return t, nil
	}
	t.reg, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		s.observe(o, open, bytes)
		lo := s.limiter.Options()
		po := s.options()
		for _, c := range []struct {
			name string
			v    int
		}{
			{"max_connections", lo.MaxConnections},
			{"max_connections_per_ip", lo.MaxConnectionsPerIP},
			{"max_connections_per_user", lo.MaxConnectionsPerUser},
			{"max_command_size", po.MaxCommandSize},
		} {
			o.ObserveInt64(caps, int64(c.v), metric.WithAttributes(attribute.String("limit", c.name)))
		}
		o.ObserveFloat64(timeouts, po.PreauthTimeout.Seconds(), metric.WithAttributes(attribute.String("timeout", "preauth_timeout")))
		o.ObserveFloat64(timeouts, po.IdleTimeout.Seconds(), metric.WithAttributes(attribute.String("timeout", "idle_timeout")))
		n := s.limiter.Counts()
		o.ObserveInt64(users, int64(n.Users))
		o.ObserveInt64(perUserMax, int64(n.MaxPerUser))
		o.ObserveInt64(addrs, int64(n.Addresses))
		o.ObserveInt64(perAddrMax, int64(n.MaxPerAddress))
		return nil
	}, open, bytes, caps, timeouts, users, perUserMax, addrs, perAddrMax)
	if err != nil {
		return nil, err
	}
	return t, nil
}

// observe reports the open connections by listener and state, and the
// bytes relayed: those of finished sessions plus the live ones', read
// under the same lock that moves a finished session's bytes into the
// total, so the sum never goes back.
func (s *Server) observe(o metric.Observer, open metric.Int64ObservableGauge, bytes metric.Int64ObservableCounter) {
	type key struct {
		listener string
		auth     bool
	}
	counts := map[key]int64{}
	s.mu.Lock()
	up, down := s.bytesDone[0], s.bytesDone[1]
	for ln := range s.listeners {
		// Zero series for every listener, so a dashboard sees 0, not
		// "no data".
		counts[key{ln.Addr().String(), false}] += 0
		counts[key{ln.Addr().String(), true}] += 0
	}
	for c := range s.conns {
		auth, u, d := c.relayed()
		counts[key{c.listener, auth}]++
		up += u
		down += d
	}
	s.mu.Unlock()
	for k, n := range counts {
		state := "preauth"
		if k.auth {
			state = "authenticated"
		}
		o.ObserveInt64(open, n, metric.WithAttributes(attribute.String("state", state), attribute.String("listener", k.listener)))
	}
	o.ObserveInt64(bytes, up, metric.WithAttributes(attribute.String("direction", "to_upstream")))
	o.ObserveInt64(bytes, down, metric.WithAttributes(attribute.String("direction", "to_client")))
}

// startConnSpan starts the connection's root span, in c.ctx, and puts its
// trace id on the connection's log lines so that logs and traces join.
func (c *conn) startConnSpan() {
	attrs := []attribute.KeyValue{
		attribute.Int64("imapguard.connection.id", int64(c.id)),
		attribute.String("imapguard.listener", c.listener),
		attribute.Bool("imapguard.implicit_tls", c.implicitTLS),
		attribute.String("network.transport", "tcp"),
	}
	attrs = append(attrs, hostPort("client", c.nc.RemoteAddr())...)
	attrs = append(attrs, hostPort("server", c.nc.LocalAddr())...)
	c.ctx, c.span = c.tel.tracer.Start(c.ctx, spanConnection,
		trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(c.since), trace.WithAttributes(attrs...))
	if sc := c.span.SpanContext(); sc.IsValid() && sc.IsSampled() {
		c.log = c.log.With("trace_id", sc.TraceID().String())
	}
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

// limitEvents records the limit checks of an admission as span events.
func limitEvents(span trace.Span, checks []limits.Check, err error) {
	for i, ch := range checks {
		exceeded := err != nil && i == len(checks)-1
		span.AddEvent("limit", trace.WithAttributes(
			attribute.String("imapguard.limit.name", ch.Limit),
			attribute.Int("imapguard.limit.count", ch.Count),
			attribute.Int("imapguard.limit.max", ch.Max),
			attribute.Bool("imapguard.limit.exceeded", exceeded),
		))
	}
}

// refuse counts a refusal that ends the connection and marks the
// connection span with its reason.
func (c *conn) refuse(reason string) {
	c.tel.refused.Add(context.Background(), 1, metric.WithAttributes(attribute.String("reason", reason)))
	c.span.SetAttributes(attribute.String("imapguard.refused.reason", reason))
}

// refuseCommand counts a refusal of one command or login that leaves the
// connection open (BAD [TOOBIG], NO [UNAVAILABLE], NO [LIMIT]), as an
// event on the connection span.
func (c *conn) refuseCommand(reason string) {
	c.tel.refused.Add(context.Background(), 1, metric.WithAttributes(attribute.String("reason", reason)))
	c.span.AddEvent("refusal", trace.WithAttributes(attribute.String("imapguard.refused.reason", reason)))
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

// failedOutcomes are the outcomes that set the connection span's status
// to Error: the proxy refused or cut off the client, or something broke.
var failedOutcomes = map[string]string{
	"preauth timeout":                  reasonPreauthTimeout,
	"idle timeout":                     reasonIdleTimeout,
	"command too big":                  reasonCommandTooBig,
	"tls handshake failed":             reasonTLSHandshake,
	"too many invalid commands":        reasonBadCommands,
	"too many authentication failures": reasonAuthFailures,
}

// endConnSpan ends the connection span with the outcome, once, from
// finish: whichever way the connection ended, the span ends and is
// handed to the exporter.
func (c *conn) endConnSpan() {
	c.mu.Lock()
	outcome, user, refusedBy := c.outcome, c.user, c.refusedBy
	c.mu.Unlock()
	if outcome == "" {
		outcome = "closed"
	}
	if refusedBy != "" {
		outcome = "refused"
	}
	c.span.SetAttributes(attribute.String("imapguard.outcome", outcome),
		attribute.Int("imapguard.auth.failures", c.authFailures),
		attribute.Int("imapguard.bad_commands", c.badCommands))
	if user != "" && c.srv.options().RecordUser { // as in force now (SIGHUP)
		c.span.SetAttributes(attribute.String("enduser.id", user))
	}
	switch reason, failed := failedOutcomes[outcome]; {
	case refusedBy != "":
		c.span.SetStatus(codes.Error, "refused: "+refusedBy)
		c.span.SetAttributes(attribute.String("error.type", refusedBy))
	case failed:
		c.span.SetStatus(codes.Error, outcome)
		c.span.SetAttributes(attribute.String("error.type", reason))
	case outcome == "client error" || outcome == "connection error":
		c.span.SetStatus(codes.Error, outcome)
	}
	c.tel.closed.Add(context.Background(), 1, metric.WithAttributes(attribute.String("outcome", strings.ReplaceAll(outcome, " ", "_"))))
	c.span.End()
}

// endedBy says who ended a session with this outcome: the client, the
// upstream or the proxy.
func endedBy(outcome string) string {
	switch outcome {
	case "client closed", "client error", "logout":
		return "client"
	case "upstream closed":
		return "upstream"
	case "connection error":
		return "unknown"
	}
	return "proxy"
}

// endSessionSpan ends the relayed session's span with the bytes each way
// and who ended it, and records its duration.
func (c *conn) endSessionSpan() {
	if c.sessSpan == nil {
		return
	}
	_, up, down := c.relayed()
	c.mu.Lock()
	outcome := c.outcome
	c.mu.Unlock()
	by := endedBy(outcome)
	attrs := []attribute.KeyValue{
		attribute.Int64("imapguard.bytes.to_upstream", up),
		attribute.Int64("imapguard.bytes.to_client", down),
		attribute.String("imapguard.session.ended_by", by),
		attribute.String("imapguard.outcome", outcome),
	}
	c.sessSpan.SetAttributes(attrs...)
	c.span.SetAttributes(attrs[2])
	if _, failed := failedOutcomes[outcome]; failed || outcome == "connection error" {
		c.sessSpan.SetStatus(codes.Error, outcome)
	}
	c.sessSpan.End()
	c.tel.sessionTime.Record(context.Background(), since(c.sessStart))
}

// authSpan is one authentication attempt.
type authSpan struct {
	c    *conn
	ctx  context.Context
	span trace.Span
	mech string
}

// startAuth starts the span of one authentication attempt with the IMAP
// command (LOGIN or AUTHENTICATE) and mechanism (see attemptedMechanism).
// The user is recorded only with record_user.
func (c *conn) startAuth(command, mech, user string) *authSpan {
	attrs := []attribute.KeyValue{attribute.String("imap.command", command), attribute.String("imapguard.auth.mechanism", mech)}
	if c.opts.RecordUser && user != "" {
		attrs = append(attrs, attribute.String("enduser.id", user))
	}
	ctx, span := c.tel.tracer.Start(c.ctx, spanAuthenticate, trace.WithAttributes(attrs...))
	return &authSpan{c: c, ctx: ctx, span: span, mech: mech}
}

// end records the attempt's result, and for a refusal the upstream's
// response code. A failure sets the status, with the result as its
// description: never free text, which may name the user.
func (a *authSpan) end(result, code string) {
	a.span.SetAttributes(attribute.String("imapguard.auth.result", result))
	if code != "" {
		a.span.SetAttributes(attribute.String("imap.response_code", code))
	}
	if result != authSuccess {
		msg := result
		if code != "" {
			msg += " [" + code + "]"
		}
		a.span.SetStatus(codes.Error, msg)
		a.span.SetAttributes(attribute.String("error.type", result))
	}
	a.c.tel.authAttempts.Add(context.Background(), 1, metric.WithAttributes(
		attribute.String("mechanism", a.mech), attribute.String("result", result)))
	a.span.End()
}

// upstreamSpan starts a client span towards the upstream.
func (a *authSpan) upstreamSpan(name string) (context.Context, trace.Span) {
	attrs := []attribute.KeyValue{attribute.String("imapguard.upstream.tls", upstreamTLSMode(a.c.opts.UpstreamTLS))}
	if host, port, err := net.SplitHostPort(a.c.opts.UpstreamAddr); err == nil {
		p, _ := strconv.Atoi(port)
		attrs = append(attrs, attribute.String("server.address", host), attribute.Int("server.port", p))
	}
	return a.c.tel.tracer.Start(a.ctx, name, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
}

func upstreamTLSMode(m string) string {
	if m == "" {
		return "none"
	}
	return m
}

// endLoginSpan ends the upstream login's span with its result.
func endLoginSpan(span trace.Span, result, code string) {
	span.SetAttributes(attribute.String("imapguard.auth.result", result))
	if code != "" {
		span.SetAttributes(attribute.String("imap.response_code", code))
	}
	if result != authSuccess {
		msg := result
		if code != "" {
			msg += " [" + code + "]"
		}
		span.SetStatus(codes.Error, msg)
	}
	span.End()
}

// endSpan ends a span with err as its status, if any.
func endSpan(span trace.Span, err error) {
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// since returns the seconds since t, for the duration histograms.
func since(t time.Time) float64 { return time.Since(t).Seconds() }

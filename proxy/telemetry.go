package proxy

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
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

// telemetry holds the tracer and the instruments.
type telemetry struct {
	tracer trace.Tracer
	// tracing is false with a no-op tracer provider: then a connection
	// starts no span and builds no span attribute (trace.go).
	tracing bool

	accepted     metric.Int64Counter
	refused      metric.Int64Counter
	closed       metric.Int64Counter
	authAttempts metric.Int64Counter
	authDelayed  metric.Int64Counter
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
	if err := s.instrumentDrain(mp); err != nil {
		return err
	}
	if err := s.instrumentBackends(mp); err != nil {
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
	_, noop := tp.(tracenoop.TracerProvider)
	t := &telemetry{tracer: tp.Tracer(instrumentationName), tracing: !noop}
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
	t.authDelayed, err = m.Int64Counter("imapguard.auth.delayed", metric.WithUnit("{attempt}"),
		metric.WithDescription("Logins held back by auth_failure_delay before the upstream was asked, because their address had failed logins; those refused outright are in imapguard.connections.refused (max_auth_failures_per_ip, max_auth_failures_per_user)."))
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
	// Counts only: one gauge holds one unit, so that sum() and ratios
	// over imapguard_limit mean something (issue 12); the command size
	// cap, in bytes, has a gauge of its own.
	caps, err := m.Int64ObservableGauge("imapguard.limit",
		metric.WithDescription("The caps on counts in force, by limit (max_connections, max_connections_per_ip, max_connections_per_user, max_connections_per_user_ip (0: off), and with the brute-force defence max_auth_failures_per_ip and max_auth_failures_per_user; not the overrides), to set against the counts."))
	check(err)
	commandSize, err := m.Int64ObservableGauge("imapguard.max_command_size", metric.WithUnit("By"),
		metric.WithDescription("The max_command_size in force: the largest command a client may send, in bytes."))
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
	tracked, err := m.Int64ObservableGauge("imapguard.auth.tracked", metric.WithUnit("{key}"),
		metric.WithDescription("Keys held by the brute-force defence, by table (address, user: with failed logins; known: user and address pairs that logged in), each at most auth_tracking_entries."))
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
			{"max_connections_per_user_ip", lo.MaxConnectionsPerUserIP},
		} {
			o.ObserveInt64(caps, int64(c.v), metric.WithAttributes(attribute.String("limit", c.name)))
		}
		o.ObserveInt64(commandSize, int64(po.MaxCommandSize))
		o.ObserveFloat64(timeouts, po.PreauthTimeout.Seconds(), metric.WithAttributes(attribute.String("timeout", "preauth_timeout")))
		o.ObserveFloat64(timeouts, po.IdleTimeout.Seconds(), metric.WithAttributes(attribute.String("timeout", "idle_timeout")))
		n := s.limiter.Counts()
		o.ObserveInt64(users, int64(n.Users))
		o.ObserveInt64(perUserMax, int64(n.MaxPerUser))
		o.ObserveInt64(addrs, int64(n.Addresses))
		o.ObserveInt64(perAddrMax, int64(n.MaxPerAddress))
		if s.tracker != nil {
			ao := s.tracker.Options()
			o.ObserveInt64(caps, int64(ao.MaxPerIP), metric.WithAttributes(attribute.String("limit", "max_auth_failures_per_ip")))
			o.ObserveInt64(caps, int64(ao.MaxPerUser), metric.WithAttributes(attribute.String("limit", "max_auth_failures_per_user")))
			tc := s.tracker.Counts()
			o.ObserveInt64(tracked, int64(tc.Addresses), metric.WithAttributes(attribute.String("table", "address")))
			o.ObserveInt64(tracked, int64(tc.Users), metric.WithAttributes(attribute.String("table", "user")))
			o.ObserveInt64(tracked, int64(tc.Known), metric.WithAttributes(attribute.String("table", "known")))
		}
		return nil
	}, open, bytes, caps, commandSize, timeouts, users, perUserMax, addrs, perAddrMax, tracked)
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

package telemetry

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imapguard/imapguard/test/otlpreceiver"
	"github.com/imapguard/imapguard/test/proxytest"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

const testScope = "github.com/imapguard/imapguard/proxy/telemetry"

// TestMain clears the OpenTelemetry variables of the environment the tests
// run in, so that only the variables a test sets with t.Setenv apply.
func TestMain(m *testing.M) {
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "OTEL_") {
			os.Unsetenv(name)
		}
	}
	os.Exit(m.Run())
}

// setup calls Setup and registers a Shutdown for tests that fail early.
func setup(t *testing.T, o Options) *Telemetry {
	t.Helper()
	tel, err := Setup(context.Background(), o)
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	return tel
}

// shutdown flushes tel, failing the test on error.
func shutdown(t *testing.T, tel *Telemetry) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := tel.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// emit records the span "imap.session" and adds 3 to the counter
// "imapguard.connections.refused", and returns the span's context.
func emit(t *testing.T, tel *Telemetry) trace.SpanContext {
	t.Helper()
	ctx := context.Background()
	_, span := tel.TracerProvider.Tracer(testScope).Start(ctx, "imap.session",
		trace.WithAttributes(attribute.String("imap.user", "alice"), attribute.Int("imap.commands", 7)))
	span.End()
	refused, err := tel.MeterProvider.Meter(testScope).Int64Counter("imapguard.connections.refused",
		metric.WithUnit("{connection}"))
	if err != nil {
		t.Fatal(err)
	}
	refused.Add(ctx, 3, metric.WithAttributes(attribute.String("reason", "max_connections")))
	return span.SpanContext()
}

// checkSpan asserts that the span emit records arrived with the resource
// service.name wantService.
func checkSpan(t *testing.T, r *otlpreceiver.Receiver, wantService string) {
	t.Helper()
	got := r.Snapshot()
	span, res := got.FindSpan("imap.session")
	if span == nil {
		t.Fatalf("span imap.session not received; got %d spans", got.CountSpans())
	}
	a := otlpreceiver.Attrs(span.GetAttributes())
	if got, want := a["imap.user"], "alice"; got != want {
		t.Errorf("span attribute imap.user: got %v; want %v", got, want)
	}
	if got, want := a["imap.commands"], int64(7); got != want {
		t.Errorf("span attribute imap.commands: got %v; want %v", got, want)
	}
	checkResource(t, otlpreceiver.Attrs(res.GetAttributes()), wantService)
}

func checkResource(t *testing.T, ra map[string]any, wantService string) {
	t.Helper()
	if got := ra["service.name"]; got != wantService {
		t.Errorf("resource service.name: got %v; want %v", got, wantService)
	}
	if v, _ := ra["service.version"].(string); v == "" {
		t.Errorf("resource service.version: got %q; want non-empty", v)
	}
	if v, _ := ra["host.name"].(string); v == "" {
		t.Errorf("resource host.name: got %q; want non-empty", v)
	}
}

// checkMetric asserts that the counter emit adds to arrived with value 3.
func checkMetric(t *testing.T, r *otlpreceiver.Receiver, wantService string) {
	t.Helper()
	got := r.Snapshot()
	m, res := got.FindMetric("imapguard.connections.refused")
	if m == nil {
		t.Fatalf("metric imapguard.connections.refused not received; got %d resource metrics", len(got.ResourceMetrics))
	}
	if got, want := m.GetUnit(), "{connection}"; got != want {
		t.Errorf("unit: got %q; want %q", got, want)
	}
	sum := m.GetSum()
	if sum == nil || len(sum.GetDataPoints()) != 1 {
		t.Fatalf("got %v; want a sum with one data point", m)
	}
	dp := sum.GetDataPoints()[0]
	if got, want := dp.GetAsInt(), int64(3); got != want {
		t.Errorf("value: got %d; want %d", got, want)
	}
	if got, want := otlpreceiver.Attrs(dp.GetAttributes())["reason"], "max_connections"; got != want {
		t.Errorf("attribute reason: got %v; want %v", got, want)
	}
	checkResource(t, otlpreceiver.Attrs(res.GetAttributes()), wantService)
}

func TestOTLPHTTP(t *testing.T) {
	tests := []struct {
		name      string
		endpoint  func(srv *httptest.Server) string
		insecure  bool
		env       map[string]string
		wantPaths []string
		wantGzip  bool
	}{{
		name:      "url",
		endpoint:  func(srv *httptest.Server) string { return srv.URL },
		wantPaths: []string{"/v1/traces", "/v1/metrics"},
	}, {
		name:      "url with base path",
		endpoint:  func(srv *httptest.Server) string { return srv.URL + "/otlp" },
		wantPaths: []string{"/otlp/v1/traces", "/otlp/v1/metrics"},
	}, {
		name:      "url with base path and slash",
		endpoint:  func(srv *httptest.Server) string { return srv.URL + "/otlp/" },
		wantPaths: []string{"/otlp/v1/traces", "/otlp/v1/metrics"},
	}, {
		name:      "host:port insecure",
		endpoint:  func(srv *httptest.Server) string { return srv.Listener.Addr().String() },
		insecure:  true,
		wantPaths: []string{"/v1/traces", "/v1/metrics"},
	}, {
		// The exporters' own variables keep working beside the options.
		name:      "gzip from environment",
		endpoint:  func(srv *httptest.Server) string { return srv.URL },
		env:       map[string]string{"OTEL_EXPORTER_OTLP_COMPRESSION": "gzip"},
		wantPaths: []string{"/v1/traces", "/v1/metrics"},
		wantGzip:  true,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			r, srv := otlpreceiver.NewHTTP(t)
			tel := setup(t, Options{
				Traces:         SignalOTLP,
				Metrics:        SignalOTLP,
				OTLPEndpoint:   tt.endpoint(srv),
				OTLPProtocol:   ProtocolHTTPProtobuf,
				OTLPInsecure:   tt.insecure,
				SampleRatio:    1,
				ServiceVersion: "v1.2.3",
			})
			emit(t, tel)
			shutdown(t, tel)
			checkSpan(t, r, "imapguard")
			checkMetric(t, r, "imapguard")
			got := r.Snapshot()
			paths := got.Paths
			for _, want := range tt.wantPaths {
				if !slices.Contains(paths, want) {
					t.Errorf("paths posted to: got %q; want %q among them", paths, want)
				}
			}
			for _, p := range paths {
				if !slices.Contains(tt.wantPaths, p) {
					t.Errorf("posted to %q; want only %q", p, tt.wantPaths)
				}
			}
			for _, enc := range got.Encodings {
				if got := enc == "gzip"; got != tt.wantGzip {
					t.Errorf("Content-Encoding: got %q; want gzip %v", enc, tt.wantGzip)
				}
			}
		})
	}
}

func TestOTLPGRPC(t *testing.T) {
	tests := []struct {
		name     string
		endpoint func(addr string) string
		insecure bool
	}{
		{name: "host:port insecure", endpoint: func(addr string) string { return addr }, insecure: true},
		{name: "http url", endpoint: func(addr string) string { return "http://" + addr }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, addr := otlpreceiver.NewGRPC(t)
			tel := setup(t, Options{
				Traces:       SignalOTLP,
				Metrics:      SignalOTLP,
				OTLPEndpoint: tt.endpoint(addr),
				OTLPProtocol: ProtocolGRPC,
				OTLPInsecure: tt.insecure,
				SampleRatio:  1,
			})
			emit(t, tel)
			shutdown(t, tel)
			checkSpan(t, r, "imapguard")
			checkMetric(t, r, "imapguard")
		})
	}
}

// TestEnvironment checks that the standard variables apply where the
// options leave the choice open.
func TestEnvironment(t *testing.T) {
	t.Run("endpoint and service name", func(t *testing.T) {
		r, srv := otlpreceiver.NewHTTP(t)
		t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
		t.Setenv("OTEL_SERVICE_NAME", "edge-proxy")
		t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attributes,deployment.environment.name=staging")
		tel := setup(t, Options{Traces: SignalOTLP, Metrics: SignalOTLP, SampleRatio: 1})
		emit(t, tel)
		shutdown(t, tel)
		checkSpan(t, r, "edge-proxy")
		checkMetric(t, r, "edge-proxy")
		_, res := r.Snapshot().FindSpan("imap.session")
		if got, want := otlpreceiver.Attrs(res.GetAttributes())["deployment.environment.name"], "staging"; got != want {
			t.Errorf("deployment.environment.name: got %v; want %v", got, want)
		}
	})

	t.Run("resource attributes", func(t *testing.T) {
		r, srv := otlpreceiver.NewHTTP(t)
		t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attributes")
		tel := setup(t, Options{Traces: SignalOTLP, OTLPEndpoint: srv.URL, SampleRatio: 1})
		emit(t, tel)
		shutdown(t, tel)
		checkSpan(t, r, "from-attributes")
	})

	t.Run("protocol grpc", func(t *testing.T) {
		r, addr := otlpreceiver.NewGRPC(t)
		t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", ProtocolGRPC)
		tel := setup(t, Options{Traces: SignalOTLP, Metrics: SignalOTLP, OTLPEndpoint: addr, OTLPInsecure: true, SampleRatio: 1})
		emit(t, tel)
		shutdown(t, tel)
		checkSpan(t, r, "imapguard")
		checkMetric(t, r, "imapguard")
	})

	t.Run("protocol and endpoint per signal", func(t *testing.T) {
		grpcR, addr := otlpreceiver.NewGRPC(t)
		httpR, srv := otlpreceiver.NewHTTP(t)
		t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", ProtocolHTTPProtobuf)
		t.Setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", ProtocolGRPC)
		t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://"+addr)
		// A signal's own endpoint variable is used as it is.
		t.Setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", srv.URL+"/custom/v1/metrics")
		tel := setup(t, Options{Traces: SignalOTLP, Metrics: SignalOTLP, SampleRatio: 1})
		emit(t, tel)
		shutdown(t, tel)
		checkSpan(t, grpcR, "imapguard")
		checkMetric(t, httpR, "imapguard")
		if paths := httpR.Snapshot().Paths; !slices.Contains(paths, "/custom/v1/metrics") {
			t.Errorf("metrics posted to %q; want /custom/v1/metrics", paths)
		}
	})

	t.Run("option beats environment", func(t *testing.T) {
		r, srv := otlpreceiver.NewHTTP(t)
		t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", ProtocolGRPC)
		t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
		tel := setup(t, Options{Traces: SignalOTLP, OTLPEndpoint: srv.URL, OTLPProtocol: ProtocolHTTPProtobuf, SampleRatio: 1})
		emit(t, tel)
		shutdown(t, tel)
		checkSpan(t, r, "imapguard")
	})

	// Sampling: the counter is the control, showing that the receiver got
	// the final export, so that no span means none was sampled.
	samplers := []struct {
		name        string
		env         string
		ratio       float64
		wantSampled bool
	}{
		{name: "sampler always_off beats ratio 1", env: "always_off", ratio: 1},
		{name: "sampler always_on beats ratio 0", env: "always_on", ratio: 0, wantSampled: true},
		{name: "ratio 0", ratio: 0},
		{name: "ratio 1", ratio: 1, wantSampled: true},
	}
	for _, tt := range samplers {
		t.Run(tt.name, func(t *testing.T) {
			r, srv := otlpreceiver.NewHTTP(t)
			if tt.env != "" {
				t.Setenv("OTEL_TRACES_SAMPLER", tt.env)
			}
			tel := setup(t, Options{Traces: SignalOTLP, Metrics: SignalOTLP, OTLPEndpoint: srv.URL, SampleRatio: tt.ratio})
			sc := emit(t, tel)
			shutdown(t, tel)
			checkMetric(t, r, "imapguard")
			if got := sc.IsSampled(); got != tt.wantSampled {
				t.Errorf("sampled: got %v; want %v", got, tt.wantSampled)
			}
			want := 0
			if tt.wantSampled {
				want = 1
			}
			if got := r.Snapshot().CountSpans(); got != want {
				t.Errorf("spans received: got %d; want %d", got, want)
			}
		})
	}
}

// TestParentBased checks that a sampled parent's decision is followed
// whatever the ratio.
func TestParentBased(t *testing.T) {
	tel := setup(t, Options{Traces: SignalStdout, Stdout: &bytes.Buffer{}, SampleRatio: 0})
	parent := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{1},
		SpanID:     trace.SpanID{1},
		TraceFlags: trace.FlagsSampled,
		Remote:     true,
	})
	ctx := trace.ContextWithRemoteSpanContext(context.Background(), parent)
	_, span := tel.TracerProvider.Tracer(testScope).Start(ctx, "child")
	span.End()
	if !span.SpanContext().IsSampled() {
		t.Errorf("child of a sampled parent: got not sampled; want sampled")
	}
	shutdown(t, tel)
}

func TestSDKDisabled(t *testing.T) {
	t.Setenv("OTEL_SDK_DISABLED", "TRUE")
	r, srv := otlpreceiver.NewHTTP(t)
	tel := setup(t, Options{Traces: SignalOTLP, Metrics: SignalOTLP, OTLPEndpoint: srv.URL, SampleRatio: 1, Prometheus: true})
	if _, ok := tel.TracerProvider.(tracenoop.TracerProvider); !ok {
		t.Errorf("TracerProvider: got %T; want a no-op provider", tel.TracerProvider)
	}
	emit(t, tel)
	// Prometheus still works: it sends nothing anywhere.
	families := scrape(t, tel.MetricsHandler)
	if _, ok := families["imapguard_connections_refused_total"]; !ok {
		t.Errorf("Prometheus: imapguard_connections_refused_total missing")
	}
	shutdown(t, tel)
	if paths := r.Snapshot().Paths; len(paths) != 0 {
		t.Errorf("OTLP with OTEL_SDK_DISABLED: got posts to %q; want none", paths)
	}
}

func TestStdout(t *testing.T) {
	var buf bytes.Buffer
	tel := setup(t, Options{Traces: SignalStdout, Stdout: &buf, SampleRatio: 1})
	names := []string{"imap.session", "imap.login", "imap.relay"}
	for _, name := range names {
		_, span := tel.TracerProvider.Tracer(testScope).Start(context.Background(), name)
		span.End()
	}
	shutdown(t, tel)

	var got []string
	sc := bufio.NewScanner(&buf)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var span struct{ Name string }
		if err := json.Unmarshal(sc.Bytes(), &span); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		got = append(got, span.Name)
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Errorf("span lines: got %q; want %q", got, names)
	}
}

func TestNone(t *testing.T) {
	for _, o := range []Options{
		{},
		{Traces: SignalNone, Metrics: SignalNone},
	} {
		tel, err := Setup(context.Background(), o)
		if err != nil {
			t.Fatalf("Setup(%+v): %v", o, err)
		}
		if _, ok := tel.TracerProvider.(tracenoop.TracerProvider); !ok {
			t.Errorf("TracerProvider: got %T; want a no-op provider", tel.TracerProvider)
		}
		if _, ok := tel.MeterProvider.(metricnoop.MeterProvider); !ok {
			t.Errorf("MeterProvider: got %T; want a no-op provider", tel.MeterProvider)
		}
		if tel.MetricsHandler != nil {
			t.Errorf("MetricsHandler: got %T; want nil", tel.MetricsHandler)
		}
		emit(t, tel)
		for range 2 {
			if err := tel.Shutdown(context.Background()); err != nil {
				t.Errorf("Shutdown: got %v; want nil", err)
			}
		}
	}
	var zero *Telemetry
	if err := zero.Shutdown(context.Background()); err != nil {
		t.Errorf("nil Telemetry Shutdown: got %v; want nil", err)
	}
	if err := new(Telemetry).Shutdown(context.Background()); err != nil {
		t.Errorf("zero Telemetry Shutdown: got %v; want nil", err)
	}
}

func TestShutdownTwice(t *testing.T) {
	r, srv := otlpreceiver.NewHTTP(t)
	tel := setup(t, Options{Traces: SignalOTLP, Metrics: SignalOTLP, OTLPEndpoint: srv.URL, SampleRatio: 1, Prometheus: true})
	emit(t, tel)
	shutdown(t, tel)
	shutdown(t, tel)
	checkSpan(t, r, "imapguard")
}

func TestInvalidOptions(t *testing.T) {
	tests := []struct {
		name string
		o    Options
		env  map[string]string
	}{
		{name: "unknown protocol", o: Options{Traces: SignalOTLP, OTLPProtocol: "http/json"}},
		{name: "unknown protocol, signals off", o: Options{OTLPProtocol: "thrift"}},
		{name: "unknown protocol from environment", o: Options{Traces: SignalOTLP},
			env: map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}},
		{name: "unknown metrics protocol from environment", o: Options{Metrics: SignalOTLP},
			env: map[string]string{"OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "udp"}},
		{name: "unknown traces", o: Options{Traces: "jaeger"}},
		{name: "unknown metrics", o: Options{Metrics: "stdout"}},
		{name: "endpoint without port", o: Options{Traces: SignalOTLP, OTLPEndpoint: "collector"}},
		{name: "endpoint scheme", o: Options{Traces: SignalOTLP, OTLPEndpoint: "ftp://collector:21"}},
		{name: "endpoint without host", o: Options{Traces: SignalOTLP, OTLPEndpoint: "http:///v1"}},
		{name: "ratio above 1", o: Options{Traces: SignalOTLP, SampleRatio: 1.5}},
		{name: "ratio below 0", o: Options{Traces: SignalOTLP, SampleRatio: -0.1}},
		{name: "negative interval", o: Options{Metrics: SignalOTLP, MetricsInterval: -time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			tel, err := Setup(context.Background(), tt.o)
			if !errors.Is(err, errInvalidOption) {
				t.Errorf("Setup: got %v, %v; want an error wrapping %v", tel, err, errInvalidOption)
			}
		})
	}
}

// TestExportErrorLogged checks that a failed export reaches the Logger.
func TestExportErrorLogged(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		// 400 is not retried (OTLP specification, "Failures").
		http.Error(w, "refused by test", http.StatusBadRequest)
	}))
	t.Cleanup(srv.Close)
	var logs proxytest.Buffer
	tel := setup(t, Options{
		Traces:       SignalOTLP,
		OTLPEndpoint: srv.URL,
		SampleRatio:  1,
		Logger:       slog.New(slog.NewTextHandler(&logs, nil)),
	})
	emit(t, tel)
	// The batch processor reports the failed export to the error handler
	// and Shutdown returns normally.
	_ = tel.Shutdown(context.Background())
	if got := logs.String(); !strings.Contains(got, "telemetry: export failed") || !strings.Contains(got, "400") {
		t.Errorf("log: got %q; want an export failure with status 400", got)
	}
}

// TestShutdownDeadline checks that Shutdown gives up when its context is
// done, even if the collector never answers.
func TestShutdownDeadline(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, req *http.Request) {
		select {
		case <-release:
		case <-req.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // runs before srv.Close
	tel := setup(t, Options{Traces: SignalOTLP, Metrics: SignalOTLP, OTLPEndpoint: srv.URL, SampleRatio: 1})
	emit(t, tel)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := tel.Shutdown(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown: got %v; want %v", err, context.DeadlineExceeded)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Shutdown took %v; want about 300ms", d)
	}
}

func TestBuildVersion(t *testing.T) {
	rev := "0123456789abcdef0123456789abcdef01234567"
	tests := []struct {
		name string
		bi   *debug.BuildInfo
		ok   bool
		want string
	}{
		{name: "no build info", want: "devel"},
		{name: "module version", ok: true, want: "v1.4.0",
			bi: &debug.BuildInfo{Main: debug.Module{Version: "v1.4.0"}, Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: rev}}}},
		{name: "revision", ok: true, want: "0123456789ab",
			bi: &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: "false"}}}},
		{name: "modified revision", ok: true, want: "0123456789ab+dirty",
			bi: &debug.BuildInfo{Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: "true"}}}},
		{name: "nothing", ok: true, want: "devel",
			bi: &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := buildVersion(tt.bi, tt.ok); got != tt.want {
				t.Errorf("got %q; want %q", got, tt.want)
			}
		})
	}
}

// TestResourceSchema guards against a semconv import that no longer matches
// the SDK's: the merge would then fail and drop the schema URL.
func TestResourceSchema(t *testing.T) {
	var logs proxytest.Buffer
	res := newResource(context.Background(), "", slog.New(slog.NewTextHandler(&logs, nil)))
	if got := logs.String(); got != "" {
		t.Errorf("log: got %q; want nothing", got)
	}
	if got, want := res.SchemaURL(), semconv.SchemaURL; got != want {
		t.Errorf("schema URL: got %q; want %q", got, want)
	}
	for _, key := range []attribute.Key{"service.name", "service.version", "host.name", "telemetry.sdk.language", "process.runtime.name"} {
		if v, ok := res.Set().Value(key); !ok || v.String() == "" {
			t.Errorf("resource %s: got %q; want a value", key, v.String())
		}
	}
}

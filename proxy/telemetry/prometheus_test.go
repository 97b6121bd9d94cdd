package telemetry

import (
	"context"
	"net/http"
	"net/http/httptest"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// scrape GETs h and parses the text exposition.
func scrape(t *testing.T, h http.Handler) map[string]*dto.MetricFamily {
	t.Helper()
	if h == nil {
		t.Fatal("MetricsHandler is nil")
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics: got status %d; want 200; body %q", rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type: got %q; want text/plain", ct)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(rec.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return families
}

// label returns the value of m's label name.
func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// TestPrometheusNames checks the OTel-to-Prometheus names documented on
// newPrometheus.
func TestPrometheusNames(t *testing.T) {
	tel := setup(t, Options{Prometheus: true})
	ctx := context.Background()
	meter := tel.MeterProvider.Meter(testScope)

	refused, err := meter.Int64Counter("imapguard.connections.refused", metric.WithUnit("{connection}"))
	if err != nil {
		t.Fatal(err)
	}
	refused.Add(ctx, 2, metric.WithAttributes(attribute.String("reason", "max_connections")))
	refused.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", "max_connections")))

	dial, err := meter.Float64Histogram("imapguard.upstream.dial.duration", metric.WithUnit("s"))
	if err != nil {
		t.Fatal(err)
	}
	dial.Record(ctx, 0.004)
	dial.Record(ctx, 0.25)

	open, err := meter.Int64UpDownCounter("imapguard.connections.open", metric.WithUnit("{connection}"))
	if err != nil {
		t.Fatal(err)
	}
	open.Add(ctx, 5)
	open.Add(ctx, -2)

	bytes, err := meter.Int64Counter("imapguard.session.bytes", metric.WithUnit("By"))
	if err != nil {
		t.Fatal(err)
	}
	bytes.Add(ctx, 1024, metric.WithAttributes(attribute.String("direction", "upstream")))

	families := scrape(t, tel.MetricsHandler)

	one := func(name string, typ dto.MetricType) *dto.Metric {
		t.Helper()
		f, ok := families[name]
		if !ok {
			var names []string
			for n := range families {
				if strings.HasPrefix(n, "imapguard") {
					names = append(names, n)
				}
			}
			t.Fatalf("family %s missing; imapguard families: %q", name, names)
		}
		if f.GetType() != typ {
			t.Errorf("%s: got type %v; want %v", name, f.GetType(), typ)
		}
		if len(f.GetMetric()) != 1 {
			t.Fatalf("%s: got %d series; want 1", name, len(f.GetMetric()))
		}
		m := f.GetMetric()[0]
		// No scope labels, and no empty ones (issue 12).
		for _, l := range m.GetLabel() {
			if strings.HasPrefix(l.GetName(), "otel_scope_") || l.GetValue() == "" {
				t.Errorf("%s: label %s=%q; want no otel_scope_* and no empty labels", name, l.GetName(), l.GetValue())
			}
		}
		return m
	}

	m := one("imapguard_connections_refused_total", dto.MetricType_COUNTER)
	if got, want := m.GetCounter().GetValue(), 3.0; got != want {
		t.Errorf("refused: got %v; want %v", got, want)
	}
	if got, want := label(m, "reason"), "max_connections"; got != want {
		t.Errorf("refused reason: got %q; want %q", got, want)
	}

	m = one("imapguard_upstream_dial_duration_seconds", dto.MetricType_HISTOGRAM)
	if got, want := m.GetHistogram().GetSampleCount(), uint64(2); got != want {
		t.Errorf("dial count: got %d; want %d", got, want)
	}
	if got, want := m.GetHistogram().GetSampleSum(), 0.254; got != want {
		t.Errorf("dial sum: got %v; want %v", got, want)
	}

	m = one("imapguard_connections_open", dto.MetricType_GAUGE)
	if got, want := m.GetGauge().GetValue(), 3.0; got != want {
		t.Errorf("open: got %v; want %v", got, want)
	}

	m = one("imapguard_session_bytes_total", dto.MetricType_COUNTER)
	if got, want := m.GetCounter().GetValue(), 1024.0; got != want {
		t.Errorf("bytes: got %v; want %v", got, want)
	}

	target, ok := families["target_info"]
	if !ok || len(target.GetMetric()) != 1 {
		t.Fatalf("target_info: got %v; want one series", target)
	}
	if got, want := label(target.GetMetric()[0], "service_name"), "imapguard"; got != want {
		t.Errorf("target_info service_name: got %q; want %q", got, want)
	}

	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total", "process_resident_memory_bytes"} {
		if _, ok := families[name]; !ok {
			t.Errorf("family %s missing", name)
		}
	}
}

// TestPrometheusRegistries checks that each Setup has a registry of its
// own: two can coexist, and neither sees the other's metrics.
func TestPrometheusRegistries(t *testing.T) {
	a := setup(t, Options{Prometheus: true})
	b := setup(t, Options{Prometheus: true})
	c, err := a.MeterProvider.Meter(testScope).Int64Counter("only.in.a")
	if err != nil {
		t.Fatal(err)
	}
	c.Add(context.Background(), 1)
	if _, ok := scrape(t, a.MetricsHandler)["only_in_a_total"]; !ok {
		t.Errorf("a: only_in_a_total missing")
	}
	if _, ok := scrape(t, b.MetricsHandler)["only_in_a_total"]; ok {
		t.Errorf("b: got a's only_in_a_total")
	}
}

// TestBuildInfo checks imapguard_build_info{version,revision,goversion} 1
// (issue 12), with the version Options.ServiceVersion gives.
func TestBuildInfo(t *testing.T) {
	tel := setup(t, Options{Prometheus: true, ServiceVersion: "v1.2.3"})
	f, ok := scrape(t, tel.MetricsHandler)["imapguard_build_info"]
	if !ok {
		t.Fatal("family imapguard_build_info missing")
	}
	if f.GetType() != dto.MetricType_GAUGE || len(f.GetMetric()) != 1 {
		t.Fatalf("imapguard_build_info: got %v with %d series; want one gauge", f.GetType(), len(f.GetMetric()))
	}
	m := f.GetMetric()[0]
	if got := m.GetGauge().GetValue(); got != 1 {
		t.Errorf("imapguard_build_info: got %v; want 1", got)
	}
	want := ReadBuild()
	want.Version = "v1.2.3"
	got := Build{Version: label(m, "version"), Revision: label(m, "revision"), GoVersion: label(m, "goversion")}
	if got != want {
		t.Errorf("imapguard_build_info labels: got %+v; want %+v", got, want)
	}
	if n := len(m.GetLabel()); n != 3 {
		t.Errorf("imapguard_build_info: got %d labels (%v); want 3", n, m.GetLabel())
	}
}

func TestBuildOf(t *testing.T) {
	rev := "0123456789abcdef0123456789abcdef01234567"
	goVersion := runtime.Version()
	tests := []struct {
		name string
		bi   *debug.BuildInfo
		ok   bool
		want Build
	}{
		{name: "no build info", want: Build{"devel", "unknown", goVersion}},
		{name: "module version", ok: true, want: Build{"v1.4.0", rev, goVersion},
			bi: &debug.BuildInfo{Main: debug.Module{Version: "v1.4.0"}, Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: rev}}}},
		{name: "modified revision", ok: true, want: Build{"0123456789ab+dirty", rev + "+dirty", goVersion},
			bi: &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: "true"}}}},
		{name: "no VCS", ok: true, want: Build{"devel", "unknown", goVersion},
			bi: &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{{Key: "vcs.modified", Value: "true"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := buildOf(tt.bi, tt.ok); got != tt.want {
				t.Errorf("got %+v; want %+v", got, tt.want)
			}
		})
	}
}

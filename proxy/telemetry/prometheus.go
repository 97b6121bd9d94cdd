package telemetry

import (
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// newPrometheus builds a Prometheus reader on a registry of its own (never
// the global default one, so that several can coexist, in tests for one),
// with the Go runtime and process collectors and imapguard_build_info
// beside it, and the handler serving that registry.
//
// Names are translated the exporter's default way
// (otlptranslator.UnderscoreEscapingWithSuffixes): dots become underscores,
// the unit is appended as a word unless it is an annotation in braces, and
// monotonic counters get _total. So, checked in TestPrometheusNames:
//
//	counter   imapguard.connections.refused   {refusal}     imapguard_connections_refused_total
//	histogram imapguard.upstream.dial.duration s            imapguard_upstream_dial_duration_seconds_{bucket,sum,count}
//	gauge     imapguard.connections.open      {connection}  imapguard_connections_open
//	counter   imapguard.session.bytes         By            imapguard_session_bytes_total
//
// The series carry no otel_scope_* labels (otelprom.WithoutScopeInfo):
// every imapguard metric comes from the one meter of package proxy, so the
// name said nothing a metric name does not, and its version and schema URL
// were empty labels on every series (issue 12). The OTLP push keeps the
// scope, where it is part of the data model rather than a label. Should a
// second meter ever be added, its metric names must not collide with the
// proxy's: without the scope label two such series would be one.
// The resource is exposed once as target_info (an OpenTelemetry
// convention Prometheus understands), and imapguard_build_info says which
// build runs, the Prometheus way (see buildInfoCollector).
func newPrometheus(logger *slog.Logger, build Build) (sdkmetric.Reader, http.Handler, error) {
	reg := prometheus.NewRegistry()
	for _, c := range []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfoCollector(build),
	} {
		if err := reg.Register(c); err != nil {
			return nil, nil, fmt.Errorf("telemetry: prometheus: %w", err)
		}
	}
	exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo())
	if err != nil {
		return nil, nil, fmt.Errorf("telemetry: prometheus: %w", err)
	}
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog: promLogger{logger},
		// Counts failed scrapes in promhttp_metric_handler_errors_total.
		Registry: reg,
	})
	return exp, h, nil
}

// promLogger adapts slog to promhttp's Println-style error log.
type promLogger struct{ l *slog.Logger }

func (p promLogger) Println(v ...any) {
	p.l.Error("telemetry: prometheus scrape", "err", strings.TrimSuffix(fmt.Sprintln(v...), "\n"))
}

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
// with the Go runtime and process collectors beside it, and the handler
// serving that registry.
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
// Every series also carries otel_scope_name (and _version, _schema_url when
// set) labels, and the resource is exposed once as target_info.
func newPrometheus(logger *slog.Logger) (sdkmetric.Reader, http.Handler, error) {
	reg := prometheus.NewRegistry()
	for _, c := range []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(c); err != nil {
			return nil, nil, fmt.Errorf("telemetry: prometheus: %w", err)
		}
	}
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
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

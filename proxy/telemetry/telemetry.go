// Package telemetry builds the OpenTelemetry SDK providers imapguard uses.
//
// The proxy package sees only the OpenTelemetry API (a trace.TracerProvider
// and a metric.MeterProvider are injected into it); this package owns
// everything behind them: the resource, the sampler, the span processor and
// exporters, the metric readers, the Prometheus scrape handler, and the final
// flush at shutdown. cmd/imapguard maps its TOML [telemetry] table onto
// [Options]; nothing here reads configuration files.
//
// The standard OpenTelemetry environment variables keep working the way
// users of other OpenTelemetry software expect, wherever an option leaves a
// choice open:
//
//   - OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES override the built-in
//     resource attributes (service.name = "imapguard", service.version,
//     host.name).
//   - OTEL_TRACES_SAMPLER (and _ARG), when set, replaces the sampler built
//     from [Options.SampleRatio].
//   - OTEL_BSP_* tune the batch span processor; OTEL_METRIC_EXPORT_INTERVAL
//     sets the push period when [Options.MetricsInterval] is zero.
//   - OTEL_EXPORTER_OTLP_(TRACES_|METRICS_)PROTOCOL choose the OTLP protocol
//     when [Options.OTLPProtocol] is empty.
//   - OTEL_EXPORTER_OTLP_(TRACES_|METRICS_)ENDPOINT, _HEADERS, _INSECURE,
//     _CERTIFICATE, _COMPRESSION, _TIMEOUT … are read by the exporters
//     themselves; an explicit [Options.OTLPEndpoint] replaces only the
//     endpoint variables (and, when it is a URL, the insecure ones).
//   - OTEL_SDK_DISABLED=true turns off tracing and the OTLP metric push; see
//     [Setup] for what stays on.
//
// Setup installs a global error handler (otel.SetErrorHandler) and logger
// (otel.SetLogger), since that is the only way the SDK reports export
// failures at run time; it never sets the global TracerProvider,
// MeterProvider or propagator.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// Values of [Options.Traces] and [Options.Metrics].
const (
	SignalNone   = "none"
	SignalStdout = "stdout" // traces only
	SignalOTLP   = "otlp"
)

// Values of [Options.OTLPProtocol]: the two protocols the Go OTLP exporters
// implement (http/json is not one of them).
const (
	ProtocolGRPC         = "grpc"
	ProtocolHTTPProtobuf = "http/protobuf"
)

// errInvalidOption is wrapped by every error Setup returns for a bad option
// or a bad environment variable.
var errInvalidOption = errors.New("telemetry: invalid option")

// Options configures [Setup]. The zero value turns everything off.
type Options struct {
	// Traces selects the span exporter: "none" (or ""), "stdout" (one JSON
	// object per span on Stdout) or "otlp".
	Traces string
	// Metrics is "otlp" to also push metrics over OTLP; "none" (or "") pushes
	// nothing. Prometheus is independent of it.
	Metrics string
	// OTLPEndpoint is where OTLP traces and metrics go. Empty: the exporters
	// read OTEL_EXPORTER_OTLP_(TRACES_|METRICS_)ENDPOINT themselves, falling
	// back to localhost:4318 (http/protobuf) or localhost:4317 (grpc).
	// "host:port": that address, in plain text when OTLPInsecure.
	// "http(s)://host:port[/base]": the scheme decides TLS (http is plain
	// text, OTLPInsecure is ignored); for http/protobuf the signal path
	// /v1/traces or /v1/metrics is appended to /base, as the OTLP
	// specification does for OTEL_EXPORTER_OTLP_ENDPOINT; grpc ignores the
	// path.
	OTLPEndpoint string
	// OTLPProtocol is "grpc" or "http/protobuf". Empty: per signal,
	// OTEL_EXPORTER_OTLP_TRACES_PROTOCOL (resp. _METRICS_PROTOCOL), else
	// OTEL_EXPORTER_OTLP_PROTOCOL, else "http/protobuf".
	OTLPProtocol string
	// OTLPInsecure sends OTLP in plain text to a host:port endpoint.
	OTLPInsecure bool
	// SampleRatio is the fraction of new traces sampled, 0..1 (0 samples
	// none, unlike most zero values here); a span with a parent follows the
	// parent's decision instead. Ignored when OTEL_TRACES_SAMPLER is set.
	SampleRatio float64
	// MetricsInterval is the OTLP metric push period. Zero: the SDK's
	// default, OTEL_METRIC_EXPORT_INTERVAL or else 60s.
	MetricsInterval time.Duration
	// Prometheus builds a Prometheus reader and [Telemetry.MetricsHandler].
	Prometheus bool
	// ServiceVersion is the resource's service.version. Empty: the main
	// module's version from the build information, else the short VCS
	// revision (with "+dirty" for a modified tree), else "devel".
	ServiceVersion string
	// Revision is the VCS revision imapguard_build_info shows. Empty: the
	// build information's (ReadBuild). The binary passes what -version
	// prints, so that the two agree.
	Revision string
	// Stdout receives spans when Traces is "stdout". Nil: os.Stdout.
	Stdout io.Writer
	// Logger receives errors the SDK reports at run time (failed exports)
	// and the Prometheus handler's errors. Nil: they are discarded.
	Logger *slog.Logger
}

// Telemetry holds the providers built by [Setup]. Its fields are never nil
// except MetricsHandler.
type Telemetry struct {
	// TracerProvider is a no-op provider when traces are "none" or the SDK
	// is disabled.
	TracerProvider trace.TracerProvider
	// MeterProvider is a no-op provider when there is neither an OTLP push
	// nor a Prometheus reader.
	MeterProvider metric.MeterProvider
	// MetricsHandler serves the Prometheus text exposition of the
	// MeterProvider's metrics plus the Go runtime and process collectors;
	// nil unless Options.Prometheus.
	MetricsHandler http.Handler

	mu        sync.Mutex
	shutdowns []func(context.Context) error
}

// Setup builds the providers o describes. It does not connect anywhere:
// exporters connect on their first export, and failures then go to
// o.Logger.
//
// With OTEL_SDK_DISABLED=true the TracerProvider is a no-op and nothing is
// pushed over OTLP, but a requested Prometheus reader and MetricsHandler are
// still built. The variable is meant to stop the SDK from sending telemetry
// (for instance fleet-wide, or in tests); a Prometheus scrape sends nothing,
// is configured in imapguard's own file, and an operator who set the
// variable for an OTLP collector would not expect the health dashboard to
// go blank. This is a deliberate departure from the letter of the
// specification, which disables every signal.
func Setup(ctx context.Context, o Options) (*Telemetry, error) {
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := validate(o); err != nil {
		return nil, err
	}
	o.Traces = normalize(o.Traces)
	o.Metrics = normalize(o.Metrics)
	// The SDK reports export failures only through the global error
	// handler, and some diagnostics through its global logr logger (at slog
	// levels below Info except for errors). Both are process-wide: the last
	// Setup's Logger receives them.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		logger.Warn("telemetry: export failed", "err", err)
	}))
	otel.SetLogger(logr.FromSlogHandler(logger.Handler()))

	disabled := sdkDisabled()
	if disabled {
		o.Traces = SignalNone
		o.Metrics = SignalNone
	}

	t := &Telemetry{
		TracerProvider: tracenoop.NewTracerProvider(),
		MeterProvider:  metricnoop.NewMeterProvider(),
	}
	if o.Traces == SignalNone && o.Metrics == SignalNone && !o.Prometheus {
		return t, nil
	}

	res := newResource(ctx, o.ServiceVersion, logger)

	// On error, undo what was built so far (exporters may own connections).
	fail := func(err error) (*Telemetry, error) {
		return nil, errors.Join(err, t.Shutdown(ctx))
	}

	if o.Traces != SignalNone {
		exp, err := newSpanExporter(ctx, o)
		if err != nil {
			return fail(err)
		}
		opts := []sdktrace.TracerProviderOption{
			sdktrace.WithResource(res),
			// The batch processor reads OTEL_BSP_* itself; it is used for
			// stdout too, so that writing a span never blocks a connection.
			sdktrace.WithBatcher(exp),
		}
		// NewTracerProvider applies OTEL_TRACES_SAMPLER first and then our
		// options, so an explicit WithSampler would override the variable:
		// pass one only when the variable is unset
		// (sdk/trace/provider.go, tracerProviderOptionsFromEnv).
		if strings.TrimSpace(os.Getenv("OTEL_TRACES_SAMPLER")) == "" {
			opts = append(opts, sdktrace.WithSampler(
				sdktrace.ParentBased(sdktrace.TraceIDRatioBased(o.SampleRatio))))
		}
		tp := sdktrace.NewTracerProvider(opts...)
		t.TracerProvider = tp
		t.shutdowns = append(t.shutdowns, tp.Shutdown)
	}

	var readers []sdkmetric.Option
	if o.Metrics == SignalOTLP {
		exp, err := newMetricExporter(ctx, o)
		if err != nil {
			return fail(err)
		}
		var ropts []sdkmetric.PeriodicReaderOption
		if o.MetricsInterval > 0 {
			ropts = append(ropts, sdkmetric.WithInterval(o.MetricsInterval))
		}
		readers = append(readers, sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp, ropts...)))
	}
	if o.Prometheus {
		build := ReadBuild()
		if o.ServiceVersion != "" {
			build.Version = o.ServiceVersion
		}
		if o.Revision != "" {
			build.Revision = o.Revision
		}
		reader, handler, err := newPrometheus(logger, build)
		if err != nil {
			return fail(err)
		}
		readers = append(readers, sdkmetric.WithReader(reader))
		t.MetricsHandler = handler
	}
	if len(readers) > 0 {
		mp := sdkmetric.NewMeterProvider(append(readers, sdkmetric.WithResource(res))...)
		t.MeterProvider = mp
		t.shutdowns = append(t.shutdowns, mp.Shutdown)
	}
	return t, nil
}

// Shutdown flushes and stops the exporters: spans still queued in the batch
// processor are exported and the metric readers make a final collection and
// export. It gives up when ctx is done. Only the first call does anything;
// later calls, and calls on a no-op Telemetry, return nil.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	shutdowns := t.shutdowns
	t.shutdowns = nil
	t.mu.Unlock()

	var errs []error
	for _, shutdown := range shutdowns {
		if err := shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("telemetry: shutdown: %w", err)
	}
	return nil
}

// validate checks the options that can be checked without the environment,
// reporting all problems at once.
func validate(o Options) error {
	var errs []error
	switch o.Traces {
	case "", SignalNone, SignalStdout, SignalOTLP:
	default:
		errs = append(errs, fmt.Errorf("%w: traces %q: want none, stdout or otlp", errInvalidOption, o.Traces))
	}
	switch o.Metrics {
	case "", SignalNone, SignalOTLP:
	default:
		errs = append(errs, fmt.Errorf("%w: metrics %q: want none or otlp", errInvalidOption, o.Metrics))
	}
	if o.OTLPProtocol != "" {
		if _, err := checkProtocol(o.OTLPProtocol, "otlp protocol"); err != nil {
			errs = append(errs, err)
		}
	}
	if o.OTLPEndpoint != "" {
		if _, err := parseEndpoint(o.OTLPEndpoint); err != nil {
			errs = append(errs, err)
		}
	}
	if math.IsNaN(o.SampleRatio) || o.SampleRatio < 0 || o.SampleRatio > 1 {
		errs = append(errs, fmt.Errorf("%w: sample ratio %v: want 0..1", errInvalidOption, o.SampleRatio))
	}
	if o.MetricsInterval < 0 {
		errs = append(errs, fmt.Errorf("%w: metrics interval %v: want > 0", errInvalidOption, o.MetricsInterval))
	}
	return errors.Join(errs...)
}

// normalize maps the empty signal names to "none".
func normalize(s string) string {
	if s == "" {
		return SignalNone
	}
	return s
}

// sdkDisabled reports OTEL_SDK_DISABLED, which the specification defines as
// true only for the case-insensitive value "true".
func sdkDisabled() bool {
	return strings.EqualFold(strings.TrimSpace(os.Getenv("OTEL_SDK_DISABLED")), "true")
}

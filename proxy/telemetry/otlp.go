package telemetry

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"

	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// Signal paths of OTLP/HTTP (OTLP specification, "OTLP/HTTP Request").
const (
	tracesPath  = "/v1/traces"
	metricsPath = "/v1/metrics"
)

// endpoint is a parsed Options.OTLPEndpoint: exactly one field is set.
type endpoint struct {
	hostPort string   // "host:port"
	url      *url.URL // "http(s)://host:port[/base]"
}

func parseEndpoint(s string) (endpoint, error) {
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil {
			return endpoint{}, fmt.Errorf("%w: otlp endpoint %q: %v", errInvalidOption, s, err)
		}
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			return endpoint{}, fmt.Errorf("%w: otlp endpoint %q: want http(s)://host:port[/base]", errInvalidOption, s)
		}
		return endpoint{url: u}, nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" || port == "" {
		return endpoint{}, fmt.Errorf("%w: otlp endpoint %q: want host:port or http(s)://host:port[/base]", errInvalidOption, s)
	}
	return endpoint{hostPort: s}, nil
}

// signalURL appends an OTLP/HTTP signal path to the endpoint URL's base
// path, as the specification does for OTEL_EXPORTER_OTLP_ENDPOINT. The
// exporters' WithEndpointURL takes the path as it is (a URL without one
// posts to "/"), so the path is added here.
func (e endpoint) signalURL(path string) string {
	u := *e.url
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	u.RawPath = ""
	return u.String()
}

// resolveProtocol picks the OTLP protocol of one signal: the option, else
// the signal's variable, else OTEL_EXPORTER_OTLP_PROTOCOL, else
// http/protobuf (the specification's default).
func resolveProtocol(option, signalVar string) (string, error) {
	if option != "" {
		return checkProtocol(option, "otlp protocol")
	}
	for _, name := range []string{signalVar, "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if v := strings.TrimSpace(os.Getenv(name)); v != "" {
			return checkProtocol(v, name)
		}
	}
	return ProtocolHTTPProtobuf, nil
}

func checkProtocol(p, what string) (string, error) {
	switch p {
	case ProtocolGRPC, ProtocolHTTPProtobuf:
		return p, nil
	}
	return "", fmt.Errorf("%w: %s %q: want grpc or http/protobuf", errInvalidOption, what, p)
}

// newSpanExporter builds the exporter for o.Traces, "stdout" or "otlp".
// With no endpoint option the OTLP exporters read their environment
// variables themselves.
func newSpanExporter(ctx context.Context, o Options) (sdktrace.SpanExporter, error) {
	if o.Traces == SignalStdout {
		w := o.Stdout
		if w == nil {
			w = os.Stdout
		}
		// Not pretty-printed: one JSON object per line.
		exp, err := stdouttrace.New(stdouttrace.WithWriter(w))
		if err != nil {
			return nil, fmt.Errorf("telemetry: stdout trace exporter: %w", err)
		}
		return exp, nil
	}
	protocol, ep, err := resolveTarget(o, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if err != nil {
		return nil, err
	}
	var exp sdktrace.SpanExporter
	if protocol == ProtocolGRPC {
		exp, err = otlptracegrpc.New(ctx, endpointOptions(o, ep, "",
			otlptracegrpc.WithEndpointURL, otlptracegrpc.WithEndpoint, otlptracegrpc.WithInsecure)...)
	} else {
		exp, err = otlptracehttp.New(ctx, endpointOptions(o, ep, tracesPath,
			otlptracehttp.WithEndpointURL, otlptracehttp.WithEndpoint, otlptracehttp.WithInsecure)...)
	}
	if err != nil {
		return nil, fmt.Errorf("telemetry: otlp trace exporter (%s): %w", protocol, err)
	}
	return exp, nil
}

// newMetricExporter builds the OTLP metric exporter, resolving protocol and
// endpoint as newSpanExporter does.
func newMetricExporter(ctx context.Context, o Options) (sdkmetric.Exporter, error) {
	protocol, ep, err := resolveTarget(o, "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL")
	if err != nil {
		return nil, err
	}
	var exp sdkmetric.Exporter
	if protocol == ProtocolGRPC {
		exp, err = otlpmetricgrpc.New(ctx, endpointOptions(o, ep, "",
			otlpmetricgrpc.WithEndpointURL, otlpmetricgrpc.WithEndpoint, otlpmetricgrpc.WithInsecure)...)
	} else {
		exp, err = otlpmetrichttp.New(ctx, endpointOptions(o, ep, metricsPath,
			otlpmetrichttp.WithEndpointURL, otlpmetrichttp.WithEndpoint, otlpmetrichttp.WithInsecure)...)
	}
	if err != nil {
		return nil, fmt.Errorf("telemetry: otlp metric exporter (%s): %w", protocol, err)
	}
	return exp, nil
}

// resolveTarget resolves a signal's protocol (signalVar is its protocol
// variable) and parses the endpoint key; an empty key gives the zero
// endpoint, leaving the exporter to its environment variables.
func resolveTarget(o Options, signalVar string) (protocol string, ep endpoint, err error) {
	if protocol, err = resolveProtocol(o.OTLPProtocol, signalVar); err != nil {
		return "", endpoint{}, err
	}
	if o.OTLPEndpoint != "" {
		if ep, err = parseEndpoint(o.OTLPEndpoint); err != nil {
			return "", endpoint{}, err
		}
	}
	return protocol, ep, nil
}

// endpointOptions turns the endpoint into one exporter's options, given
// that exporter's option constructors: a URL as it is (gRPC: path "",
// host and port from it, http meaning plain text) or with the signal path
// appended (HTTP); a host:port with otlp_insecure as plain text. The four
// OTLP exporters have the same options under different types.
func endpointOptions[O any](o Options, ep endpoint, path string, withURL, withEndpoint func(string) O, withInsecure func() O) []O {
	switch {
	case ep.url != nil && path == "":
		return []O{withURL(ep.url.String())}
	case ep.url != nil:
		return []O{withURL(ep.signalURL(path))}
	case ep.hostPort != "" && o.OTLPInsecure:
		return []O{withEndpoint(ep.hostPort), withInsecure()}
	case ep.hostPort != "":
		return []O{withEndpoint(ep.hostPort)}
	}
	return nil
}

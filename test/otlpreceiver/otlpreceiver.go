// Package otlpreceiver is an in-process OpenTelemetry collector for
// imapguard's tests: it receives OTLP traces and metrics over HTTP
// (protobuf, gzip aware) or gRPC (plain text) on 127.0.0.1:0 and records
// them for assertions. It is test support only; no production code
// imports it. Users: proxy/telemetry's tests and the end-to-end tests of
// package test, which run the real binary against it, and the benchmark
// harness (test/bench), which serves [NewCounting]'s [Receiver.Handler]
// as the local collector imapguard traces to and keeps counts only.
//
// Exporters return from an export only after the receiver answered, so
// once the SDK's Shutdown has returned (or the process that exported has
// exited) everything sent is recorded: no waiting needed.
package otlpreceiver

import (
	"compress/gzip"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	colmetric "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricpb "go.opentelemetry.io/proto/otlp/metrics/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// The OTLP/HTTP signal paths (OTLP specification, "OTLP/HTTP Request").
const (
	TracesPath  = "/v1/traces"
	MetricsPath = "/v1/metrics"
)

// Receiver collects what OTLP exporters send it. It is safe for
// concurrent use.
type Receiver struct {
	mu        sync.Mutex
	paths     []string
	encodings []string
	raw       [][]byte
	traces    []*coltrace.ExportTraceServiceRequest
	metrics   []*colmetric.ExportMetricsServiceRequest

	// countOnly keeps counts and nothing else (NewCounting).
	countOnly bool
	counts    Counts
}

// Counts are the totals of what a Receiver got, kept in every mode.
type Counts struct {
	// Requests is every OTLP/HTTP request and gRPC export, refused ones
	// included; Rejected those answered with an error (wrong path,
	// undecodable body).
	Requests, Rejected int64
	// TraceExports and MetricExports are the accepted export requests of
	// each signal, Spans the spans in the trace exports.
	TraceExports, MetricExports, Spans int64
	// Bytes is the size of the accepted request bodies, un-gzipped.
	Bytes int64
}

// NewCounting returns a Receiver that keeps only [Counts]: it decodes
// each export as a collector would and throws it away, so that its
// memory stays flat however long the exporter runs (a benchmark). Serve
// it with [Receiver.Handler]; Snapshot and Raw stay empty, apart from
// the paths of refused requests.
func NewCounting() *Receiver {
	return &Receiver{countOnly: true}
}

// Handler returns r's OTLP/HTTP handler, for a server of the caller's
// own (NewHTTP serves it with an httptest server).
func (r *Receiver) Handler() http.Handler {
	return http.HandlerFunc(r.serveHTTP)
}

// Counts returns r's totals so far.
func (r *Receiver) Counts() Counts {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counts
}

// Snapshot is a copy of what a Receiver got so far.
type Snapshot struct {
	// Paths holds the URL path of each OTLP/HTTP request, in order,
	// including paths that were answered 404; "grpc" for each gRPC export.
	Paths []string
	// Encodings holds the Content-Encoding of each OTLP/HTTP request.
	Encodings       []string
	ResourceSpans   []*tracepb.ResourceSpans
	ResourceMetrics []*metricpb.ResourceMetrics
}

// Snapshot returns a copy of what r received so far.
func (r *Receiver) Snapshot() Snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := Snapshot{
		Paths:     append([]string(nil), r.paths...),
		Encodings: append([]string(nil), r.encodings...),
	}
	for _, req := range r.traces {
		s.ResourceSpans = append(s.ResourceSpans, req.GetResourceSpans()...)
	}
	for _, req := range r.metrics {
		s.ResourceMetrics = append(s.ResourceMetrics, req.GetResourceMetrics()...)
	}
	return s
}

// Raw returns the body of every request received, in order: for OTLP/HTTP
// the body as posted, un-gzipped; for gRPC the export request marshalled
// again (same fields, so the same strings). Tests grep it for secrets.
func (r *Receiver) Raw() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.raw...)
}

func (r *Receiver) add(path string, raw []byte, m proto.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.counts.Requests++
	switch m := m.(type) {
	case *coltrace.ExportTraceServiceRequest:
		r.counts.TraceExports++
		r.counts.Bytes += int64(len(raw))
		for _, rs := range m.GetResourceSpans() {
			for _, ss := range rs.GetScopeSpans() {
				r.counts.Spans += int64(len(ss.GetSpans()))
			}
		}
	case *colmetric.ExportMetricsServiceRequest:
		r.counts.MetricExports++
		r.counts.Bytes += int64(len(raw))
	default:
		r.counts.Rejected++
	}
	if r.countOnly {
		if m == nil {
			r.paths = append(r.paths, path)
		}
		return
	}
	r.paths = append(r.paths, path)
	if raw != nil {
		r.raw = append(r.raw, raw)
	}
	switch m := m.(type) {
	case *coltrace.ExportTraceServiceRequest:
		r.traces = append(r.traces, m)
	case *colmetric.ExportMetricsServiceRequest:
		r.metrics = append(r.metrics, m)
	}
}

// NewHTTP starts an OTLP/HTTP (protobuf) receiver on 127.0.0.1:0, closed
// by t.Cleanup. It accepts the signal paths under any base path, so that
// tests can check where the exporter posted; its URL is the endpoint to
// configure.
func NewHTTP(t testing.TB) (*Receiver, *httptest.Server) {
	t.Helper()
	r := &Receiver{}
	srv := httptest.NewServer(http.HandlerFunc(r.serveHTTP))
	t.Cleanup(srv.Close)
	return r, srv
}

func (r *Receiver) serveHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		http.Error(w, "want POST", http.StatusMethodNotAllowed)
		return
	}
	enc := req.Header.Get("Content-Encoding")
	r.mu.Lock()
	if !r.countOnly {
		r.encodings = append(r.encodings, enc)
	}
	r.mu.Unlock()
	var body io.Reader = req.Body
	if enc == "gzip" {
		zr, err := gzip.NewReader(req.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	data, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var in, out proto.Message
	switch {
	case strings.HasSuffix(req.URL.Path, TracesPath):
		in, out = &coltrace.ExportTraceServiceRequest{}, &coltrace.ExportTraceServiceResponse{}
	case strings.HasSuffix(req.URL.Path, MetricsPath):
		in, out = &colmetric.ExportMetricsServiceRequest{}, &colmetric.ExportMetricsServiceResponse{}
	default:
		// Recorded, so that a wrong path shows in the test failure.
		r.add(req.URL.Path, data, nil)
		http.NotFound(w, req)
		return
	}
	if err := proto.Unmarshal(data, in); err != nil {
		r.add(req.URL.Path, data, nil)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.add(req.URL.Path, data, in)
	resp, err := proto.Marshal(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(resp)
}

// NewGRPC starts an OTLP/gRPC receiver (trace and metrics services, plain
// text) on 127.0.0.1:0, stopped by t.Cleanup, and returns it with its
// host:port.
func NewGRPC(t testing.TB) (*Receiver, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &Receiver{}
	s := grpc.NewServer()
	coltrace.RegisterTraceServiceServer(s, grpcTraceService{r: r})
	colmetric.RegisterMetricsServiceServer(s, grpcMetricsService{r: r})
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Stop()
		if err := <-served; err != nil {
			t.Errorf("grpc Serve: %v", err)
		}
	})
	return r, ln.Addr().String()
}

// addGRPC records a gRPC export, with the message marshalled again as its
// raw form.
func (r *Receiver) addGRPC(m proto.Message) {
	raw, err := proto.Marshal(m)
	if err != nil {
		// Cannot happen for a message gRPC just unmarshalled; keep the
		// message anyway and mark the gap in Raw.
		raw = []byte("otlpreceiver: marshal: " + err.Error())
	}
	r.add("grpc", raw, m)
}

type grpcTraceService struct {
	coltrace.UnimplementedTraceServiceServer
	r *Receiver
}

func (s grpcTraceService) Export(_ context.Context, req *coltrace.ExportTraceServiceRequest) (*coltrace.ExportTraceServiceResponse, error) {
	s.r.addGRPC(req)
	return &coltrace.ExportTraceServiceResponse{}, nil
}

type grpcMetricsService struct {
	colmetric.UnimplementedMetricsServiceServer
	r *Receiver
}

func (s grpcMetricsService) Export(_ context.Context, req *colmetric.ExportMetricsServiceRequest) (*colmetric.ExportMetricsServiceResponse, error) {
	s.r.addGRPC(req)
	return &colmetric.ExportMetricsServiceResponse{}, nil
}

// Span is a received span with the resource it was exported under.
type Span struct {
	*tracepb.Span
	Resource *resourcepb.Resource
}

// Spans returns every received span, in the order received.
func (s Snapshot) Spans() []Span {
	var spans []Span
	for _, rs := range s.ResourceSpans {
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				spans = append(spans, Span{Span: sp, Resource: rs.GetResource()})
			}
		}
	}
	return spans
}

// FindSpan returns the first span named name and its resource, or nils.
func (s Snapshot) FindSpan(name string) (*tracepb.Span, *resourcepb.Resource) {
	for _, sp := range s.Spans() {
		if sp.GetName() == name {
			return sp.Span, sp.Resource
		}
	}
	return nil, nil
}

// CountSpans returns the number of spans received.
func (s Snapshot) CountSpans() int {
	return len(s.Spans())
}

// FindMetric returns the last metric named name (with cumulative
// temporality the final export holds the latest value) and its resource,
// or nils.
func (s Snapshot) FindMetric(name string) (*metricpb.Metric, *resourcepb.Resource) {
	var found *metricpb.Metric
	var res *resourcepb.Resource
	for _, rm := range s.ResourceMetrics {
		for _, sm := range rm.GetScopeMetrics() {
			for _, m := range sm.GetMetrics() {
				if m.GetName() == name {
					found, res = m, rm.GetResource()
				}
			}
		}
	}
	return found, res
}

// Attrs flattens OTLP key-values into a map: strings as string, ints as
// int64, bools as bool, doubles as float64, anything else as the text
// form of its value.
func Attrs(kvs []*commonpb.KeyValue) map[string]any {
	m := make(map[string]any, len(kvs))
	for _, kv := range kvs {
		switch v := kv.GetValue().GetValue().(type) {
		case *commonpb.AnyValue_StringValue:
			m[kv.GetKey()] = v.StringValue
		case *commonpb.AnyValue_IntValue:
			m[kv.GetKey()] = v.IntValue
		case *commonpb.AnyValue_BoolValue:
			m[kv.GetKey()] = v.BoolValue
		case *commonpb.AnyValue_DoubleValue:
			m[kv.GetKey()] = v.DoubleValue
		default:
			m[kv.GetKey()] = kv.GetValue().String()
		}
	}
	return m
}

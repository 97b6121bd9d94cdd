package telemetry

import (
	"compress/gzip"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
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

// receiver collects what OTLP exporters send it. Exporters return from an
// export only after the receiver answered, so once Telemetry.Shutdown has
// returned everything sent is recorded: no waiting needed.
type receiver struct {
	mu        sync.Mutex
	paths     []string
	encodings []string // Content-Encoding of each OTLP/HTTP request
	traces    []*coltrace.ExportTraceServiceRequest
	metrics   []*colmetric.ExportMetricsServiceRequest
}

func (r *receiver) addTraces(path string, req *coltrace.ExportTraceServiceRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.paths = append(r.paths, path)
	r.traces = append(r.traces, req)
}

func (r *receiver) addMetrics(path string, req *colmetric.ExportMetricsServiceRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.paths = append(r.paths, path)
	r.metrics = append(r.metrics, req)
}

// snapshot returns the received paths, resource spans and resource metrics.
func (r *receiver) snapshot() ([]string, []*tracepb.ResourceSpans, []*metricpb.ResourceMetrics) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var spans []*tracepb.ResourceSpans
	for _, req := range r.traces {
		spans = append(spans, req.GetResourceSpans()...)
	}
	var metrics []*metricpb.ResourceMetrics
	for _, req := range r.metrics {
		metrics = append(metrics, req.GetResourceMetrics()...)
	}
	return append([]string(nil), r.paths...), spans, metrics
}

// newHTTPReceiver starts an OTLP/HTTP (protobuf) receiver on 127.0.0.1:0.
// It accepts the signal paths under any base path, so that tests can check
// where the exporter posted.
func newHTTPReceiver(t *testing.T) (*receiver, *httptest.Server) {
	t.Helper()
	r := &receiver{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodPost {
			http.Error(w, "want POST", http.StatusMethodNotAllowed)
			return
		}
		r.mu.Lock()
		r.encodings = append(r.encodings, req.Header.Get("Content-Encoding"))
		r.mu.Unlock()
		var body io.Reader = req.Body
		if req.Header.Get("Content-Encoding") == "gzip" {
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
		var resp proto.Message
		switch {
		case strings.HasSuffix(req.URL.Path, tracesPath):
			m := &coltrace.ExportTraceServiceRequest{}
			if err := proto.Unmarshal(data, m); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			r.addTraces(req.URL.Path, m)
			resp = &coltrace.ExportTraceServiceResponse{}
		case strings.HasSuffix(req.URL.Path, metricsPath):
			m := &colmetric.ExportMetricsServiceRequest{}
			if err := proto.Unmarshal(data, m); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			r.addMetrics(req.URL.Path, m)
			resp = &colmetric.ExportMetricsServiceResponse{}
		default:
			// Recorded, so that a wrong path shows in the test failure.
			r.mu.Lock()
			r.paths = append(r.paths, req.URL.Path)
			r.mu.Unlock()
			http.NotFound(w, req)
			return
		}
		out, err := proto.Marshal(resp)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(srv.Close)
	return r, srv
}

type grpcTraceService struct {
	coltrace.UnimplementedTraceServiceServer
	r *receiver
}

func (s grpcTraceService) Export(_ context.Context, req *coltrace.ExportTraceServiceRequest) (*coltrace.ExportTraceServiceResponse, error) {
	s.r.addTraces("grpc", req)
	return &coltrace.ExportTraceServiceResponse{}, nil
}

type grpcMetricsService struct {
	colmetric.UnimplementedMetricsServiceServer
	r *receiver
}

func (s grpcMetricsService) Export(_ context.Context, req *colmetric.ExportMetricsServiceRequest) (*colmetric.ExportMetricsServiceResponse, error) {
	s.r.addMetrics("grpc", req)
	return &colmetric.ExportMetricsServiceResponse{}, nil
}

// newGRPCReceiver starts an OTLP/gRPC receiver (trace and metrics services,
// plain text) on 127.0.0.1:0 and returns it with its host:port.
func newGRPCReceiver(t *testing.T) (*receiver, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &receiver{}
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

// attrs flattens OTLP key-values whose values are strings, ints or bools
// into a map of their string forms.
func attrs(kvs []*commonpb.KeyValue) map[string]any {
	m := make(map[string]any, len(kvs))
	for _, kv := range kvs {
		switch v := kv.GetValue().GetValue().(type) {
		case *commonpb.AnyValue_StringValue:
			m[kv.GetKey()] = v.StringValue
		case *commonpb.AnyValue_IntValue:
			m[kv.GetKey()] = v.IntValue
		case *commonpb.AnyValue_BoolValue:
			m[kv.GetKey()] = v.BoolValue
		default:
			m[kv.GetKey()] = kv.GetValue().String()
		}
	}
	return m
}

// findSpan returns the first span named name and its resource.
func findSpan(rss []*tracepb.ResourceSpans, name string) (*tracepb.Span, *resourcepb.Resource) {
	for _, rs := range rss {
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				if s.GetName() == name {
					return s, rs.GetResource()
				}
			}
		}
	}
	return nil, nil
}

func countSpans(rss []*tracepb.ResourceSpans) int {
	n := 0
	for _, rs := range rss {
		for _, ss := range rs.GetScopeSpans() {
			n += len(ss.GetSpans())
		}
	}
	return n
}

// findMetric returns the last metric named name (the final export holds
// the latest cumulative value) and its resource.
func findMetric(rms []*metricpb.ResourceMetrics, name string) (*metricpb.Metric, *resourcepb.Resource) {
	var found *metricpb.Metric
	var res *resourcepb.Resource
	for _, rm := range rms {
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

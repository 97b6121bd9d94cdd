package otlpreceiver

import (
	"bytes"
	"compress/gzip"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

func exportRequest(spanName string) *coltrace.ExportTraceServiceRequest {
	return &coltrace.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{{
			Name: spanName,
			Attributes: []*commonpb.KeyValue{{
				Key: "n", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: 7}},
			}},
		}}}},
	}}}
}

// TestHTTPGzip checks that a gzipped body is decoded, recorded as spans and
// kept un-gzipped in Raw, and that a wrong path is recorded.
func TestHTTPGzip(t *testing.T) {
	r, srv := NewHTTP(t)
	body, err := proto.Marshal(exportRequest("marker-span"))
	if err != nil {
		t.Fatal(err)
	}
	var zipped bytes.Buffer
	zw := gzip.NewWriter(&zipped)
	if _, err := zw.Write(body); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	post := func(path string, body []byte, gz bool) int {
		req, err := http.NewRequest(http.MethodPost, srv.URL+path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-protobuf")
		if gz {
			req.Header.Set("Content-Encoding", "gzip")
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := post("/base"+TracesPath, zipped.Bytes(), true); got != http.StatusOK {
		t.Errorf("POST traces: got status %d; want 200", got)
	}
	if got := post("/v1/logs", body, false); got != http.StatusNotFound {
		t.Errorf("POST logs: got status %d; want 404", got)
	}

	s := r.Snapshot()
	if want := []string{"/base/v1/traces", "/v1/logs"}; !slices.Equal(s.Paths, want) {
		t.Errorf("paths: got %q; want %q", s.Paths, want)
	}
	if want := []string{"gzip", ""}; !slices.Equal(s.Encodings, want) {
		t.Errorf("encodings: got %q; want %q", s.Encodings, want)
	}
	span, _ := s.FindSpan("marker-span")
	if span == nil {
		t.Fatalf("span marker-span: not found among %d spans", s.CountSpans())
	}
	if got, want := Attrs(span.GetAttributes())["n"], int64(7); got != want {
		t.Errorf("attribute n: got %v; want %v", got, want)
	}
	raw := r.Raw()
	if len(raw) != 2 {
		t.Fatalf("Raw: got %d bodies; want 2", len(raw))
	}
	if !bytes.Equal(raw[0], body) {
		t.Errorf("Raw: got first body %q; want the un-gzipped body %q", raw[0], body)
	}
}

// TestCounting checks that a counting receiver counts spans and export
// requests, keeps no span and no body, and still names a refused path.
func TestCounting(t *testing.T) {
	r := NewCounting()
	srv := httptest.NewServer(r.Handler())
	defer srv.Close()
	req := exportRequest("a")
	req.ResourceSpans[0].ScopeSpans[0].Spans = append(req.ResourceSpans[0].ScopeSpans[0].Spans, &tracepb.Span{Name: "b"})
	body, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	// An empty body is an empty metrics export.
	for _, p := range []struct {
		path string
		body []byte
	}{{TracesPath, body}, {TracesPath, body}, {MetricsPath, nil}, {"/v1/logs", body}} {
		resp, err := srv.Client().Post(srv.URL+p.path, "application/x-protobuf", bytes.NewReader(p.body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	want := Counts{Requests: 4, Rejected: 1, TraceExports: 2, MetricExports: 1, Spans: 4, Bytes: 2 * int64(len(body))}
	if got := r.Counts(); got != want {
		t.Errorf("Counts: got %+v; want %+v", got, want)
	}
	s := r.Snapshot()
	if s.CountSpans() != 0 || len(r.Raw()) != 0 || !slices.Equal(s.Paths, []string{"/v1/logs"}) {
		t.Errorf("counting receiver kept %d spans, %d bodies, paths %q; want none, none, the refused path", s.CountSpans(), len(r.Raw()), s.Paths)
	}
}

package test

import (
	"context"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/imapguard/imapguard/cmd/imapd/server"
	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/test/proxytest"
)

// TestMetricsAfterSessions: the metrics after a scripted set of
// connections, and the open gauges back at zero.
func TestMetricsAfterSessions(t *testing.T) {
	up := proxytest.Imapd(t, server.User{Username: "alice", Password: tracedPassword, Messages: 3})
	tp := startTracedProxy(t, up, proxy.Options{MaxCommandSize: 20000}, limits.Options{MaxConnectionsPerIP: 2, MaxConnectionsPerUser: 5})

	a := proxytest.Login(t, tp.Addr, "alice", tracedPassword)
	a.Cmd("f", "FETCH 1:* (BODY.PEEK[])")
	pre := proxytest.Dial(t, tp.Addr)
	pre.Greeting()
	collect(t, tp.reader).want(t, []metricWant{
		{"gauge", "imapguard.connections.open", []string{"state=authenticated"}, 1},
		{"gauge", "imapguard.connections.open", []string{"state=preauth"}, 1},
		{"gauge", "imapguard.limit", []string{"limit=max_connections_per_ip"}, 2},
		{"gauge", "imapguard.address.connections.max", nil, 2},
		// Bytes have a gauge of their own, not a series among the
		// counts (issue 12).
		{"gauge", "imapguard.max_command_size", nil, 20000},
		{"gauge", "imapguard.limit", []string{"limit=max_command_size"}, 0},
	})
	refused := proxytest.Dial(t, tp.Addr) // the third from 127.0.0.1
	refused.ExpectPrefix("* BYE [UNAVAILABLE]")
	a.Logout("z")
	pre.Logout("z")
	proxytest.WaitZero(t, tp.Limiter)
	tp.connTrees(t, 3)

	// The spans end just before the connections leave the registry.
	m := collectUntil(t, tp.reader, "no connection open", func(m metrics) bool {
		return m.gauge("imapguard.connections.open") == 0
	})
	m.want(t, []metricWant{
		{"sum", "imapguard.connections.accepted", nil, 2},
		{"sum", "imapguard.connections.refused", []string{"reason=max_connections_per_ip"}, 1},
		{"sum", "imapguard.auth.attempts", []string{"result=success"}, 1},
		{"sum>=", "imapguard.session.bytes", []string{"direction=to_client"}, 100},
		{"count", "imapguard.session.duration", nil, 1},
		{"count", "imapguard.upstream.login.duration", []string{"result=success"}, 1},
		{"sum", "imapguard.connections.closed", []string{"outcome=refused"}, 1},
	})
}

// metricWant is one expected value: of a "sum", a "gauge", a histogram's
// "count", or a sum that must be at least the value ("sum>=").
type metricWant struct {
	kind, name string
	attrs      []string // "key=value"
	value      float64
}

// want checks each of wants.
func (m metrics) want(t *testing.T, wants []metricWant) {
	t.Helper()
	for _, w := range wants {
		var got float64
		switch w.kind {
		case "count":
			got = float64(m.count(w.name, w.attrs...))
		case "sum", "sum>=":
			got = m.sum(w.name, w.attrs...)
		default:
			got = m.gauge(w.name, w.attrs...)
		}
		if got != w.value && (w.kind != "sum>=" || got < w.value) {
			t.Errorf("%s %s%q = %v; want %s %v", w.kind, w.name, w.attrs, got, w.kind, w.value)
		}
	}
}

// metrics is one collection, flattened for lookups.
type metrics struct {
	t  *testing.T
	rm metricdata.ResourceMetrics
}

func collect(t *testing.T, r *sdkmetric.ManualReader) metrics {
	t.Helper()
	m := metrics{t: t}
	if err := r.Collect(context.Background(), &m.rm); err != nil {
		t.Fatal(err)
	}
	return m
}

// collectUntil collects until ok holds, failing after a deadline.
func collectUntil(t *testing.T, r *sdkmetric.ManualReader, what string, ok func(metrics) bool) metrics {
	t.Helper()
	var m metrics
	if !proxytest.Eventually(func() bool { m = collect(t, r); return ok(m) }) {
		t.Fatalf("metrics: %s: never", what)
	}
	return m
}

// matches reports whether set has every "key=value" of want.
func matches(set attribute.Set, want []string) bool {
	for _, w := range want {
		k, v, _ := strings.Cut(w, "=")
		got, ok := set.Value(attribute.Key(k))
		if !ok || got.String() != v {
			return false
		}
	}
	return true
}

// find returns the metric's data; a metric that is not there fails the
// test, so that a lookup cannot pass by finding nothing.
func (m metrics) find(name string) metricdata.Aggregation {
	m.t.Helper()
	for _, sm := range m.rm.ScopeMetrics {
		for _, mm := range sm.Metrics {
			if mm.Name == name {
				return mm.Data
			}
		}
	}
	m.t.Fatalf("no metric %s collected", name)
	return nil
}

// addPoints adds up the values of the points with the given attributes.
func addPoints[N int64 | float64](points []metricdata.DataPoint[N], want []string) float64 {
	var total float64
	for _, p := range points {
		if matches(p.Attributes, want) {
			total += float64(p.Value)
		}
	}
	return total
}

// sum adds up a counter's points with the given attributes (0 if none).
func (m metrics) sum(name string, want ...string) float64 {
	m.t.Helper()
	return m.add("sum", name, want)
}

// gauge adds up a gauge's points with the given attributes.
func (m metrics) gauge(name string, want ...string) float64 {
	m.t.Helper()
	return m.add("gauge", name, want)
}

// add adds up the points with the given attributes of a metric of kind
// "sum" or "gauge", and fails the test if the metric is of another kind.
func (m metrics) add(kind, name string, want []string) float64 {
	m.t.Helper()
	var found string
	var total float64
	switch d := m.find(name).(type) {
	case metricdata.Sum[int64]:
		found, total = "sum", addPoints(d.DataPoints, want)
	case metricdata.Sum[float64]:
		found, total = "sum", addPoints(d.DataPoints, want)
	case metricdata.Gauge[int64]:
		found, total = "gauge", addPoints(d.DataPoints, want)
	case metricdata.Gauge[float64]:
		found, total = "gauge", addPoints(d.DataPoints, want)
	}
	if found != kind {
		m.t.Fatalf("metric %s is not a %s", name, kind)
	}
	return total
}

// count adds up a histogram's counts with the given attributes.
func (m metrics) count(name string, want ...string) uint64 {
	m.t.Helper()
	d, ok := m.find(name).(metricdata.Histogram[float64])
	if !ok {
		m.t.Fatalf("metric %s is not a histogram", name)
	}
	var total uint64
	for _, p := range d.DataPoints {
		if matches(p.Attributes, want) {
			total += p.Count
		}
	}
	return total
}

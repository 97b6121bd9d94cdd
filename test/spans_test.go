package test

// A proxy instrumented with in-memory OpenTelemetry exporters, and the
// span trees and attributes the trace tests check.

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/test/proxytest"
)

// tracedProxy is a proxy whose spans go to an in-memory exporter and
// whose metrics to a manual reader.
type tracedProxy struct {
	*proxytest.Proxy
	spans  *tracetest.InMemoryExporter
	reader *sdkmetric.ManualReader
}

func startTracedProxy(t *testing.T, upstream string, opts proxy.Options, lim limits.Options) *tracedProxy {
	t.Helper()
	return startTracedProxyWith(t, proxytest.Config{Upstream: upstream, Options: opts, Limits: lim})
}

// startTracedProxyWith is startTracedProxy with a whole proxytest.Config
// (its Setup is replaced).
func startTracedProxyWith(t *testing.T, cfg proxytest.Config) *tracedProxy {
	t.Helper()
	tp := &tracedProxy{spans: tracetest.NewInMemoryExporter(), reader: sdkmetric.NewManualReader()}
	// A syncer exports each span as it ends.
	provider := sdktrace.NewTracerProvider(sdktrace.WithSyncer(tp.spans))
	meters := sdkmetric.NewMeterProvider(sdkmetric.WithReader(tp.reader))
	t.Cleanup(func() {
		provider.Shutdown(context.Background())
		meters.Shutdown(context.Background())
	})
	cfg.Setup = func(s *proxy.Server) {
		if err := s.Instrument(provider, meters); err != nil {
			t.Fatal(err)
		}
	}
	tp.Proxy = proxytest.Start(t, cfg)
	return tp
}

// spanNode is an exported span with its children, for checking trees.
type spanNode struct {
	s        tracetest.SpanStub
	children []*spanNode
}

// connTrees waits until n connection spans have ended and returns their
// trees, in the order they started.
func (tp *tracedProxy) connTrees(t *testing.T, n int) []*spanNode {
	t.Helper()
	var roots []*spanNode
	if !proxytest.Eventually(func() bool { roots = tp.trees(); return len(roots) >= n }) {
		t.Fatalf("%d connection spans ended, want %d", len(roots), n)
	}
	sort.Slice(roots, func(i, j int) bool { return roots[i].s.StartTime.Before(roots[j].s.StartTime) })
	for _, r := range roots {
		r.sort()
	}
	return roots
}

// tree waits for the first connection span to end and returns its tree,
// whose shape (see spanNode.shape) must be want unless want is "".
func (tp *tracedProxy) tree(t *testing.T, want string) *spanNode {
	t.Helper()
	root := tp.connTrees(t, 1)[0]
	if got := root.shape(); want != "" && got != want {
		t.Fatalf("span tree %s, want %s", got, want)
	}
	return root
}

// trees returns the trees of the connection spans exported so far.
func (tp *tracedProxy) trees() []*spanNode {
	stubs := tp.spans.GetSpans()
	var roots []*spanNode
	byID := map[string]*spanNode{}
	for _, s := range stubs {
		byID[s.SpanContext.SpanID().String()] = &spanNode{s: s}
	}
	for _, s := range stubs {
		node := byID[s.SpanContext.SpanID().String()]
		if parent, ok := byID[s.Parent.SpanID().String()]; ok && s.Parent.IsValid() {
			parent.children = append(parent.children, node)
		} else if s.Name == "imapguard.connection" {
			roots = append(roots, node)
		}
	}
	return roots
}

func (n *spanNode) sort() {
	sort.Slice(n.children, func(i, j int) bool { return n.children[i].s.StartTime.Before(n.children[j].s.StartTime) })
	for _, c := range n.children {
		c.sort()
	}
}

// shape renders the tree's span names, children in parentheses.
func (n *spanNode) shape() string {
	if len(n.children) == 0 {
		return n.s.Name
	}
	parts := make([]string, len(n.children))
	for i, c := range n.children {
		parts[i] = c.shape()
	}
	return n.s.Name + "(" + strings.Join(parts, " ") + ")"
}

func (n *spanNode) find(name string) *spanNode {
	if n.s.Name == name {
		return n
	}
	for _, c := range n.children {
		if f := c.find(name); f != nil {
			return f
		}
	}
	return nil
}

func attrOf(s tracetest.SpanStub, key string) (attribute.Value, bool) {
	for _, kv := range s.Attributes {
		if string(kv.Key) == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

func wantAttr(t *testing.T, n *spanNode, key string, want any) {
	t.Helper()
	v, ok := attrOf(n.s, key)
	if !ok {
		t.Errorf("span %s has no %s; attributes %v", n.s.Name, key, n.s.Attributes)
		return
	}
	if got := v.String(); got != fmt.Sprint(want) {
		t.Errorf("span %s: %s = %s, want %v", n.s.Name, key, got, want)
	}
}

// limitEvent returns the span's "limit" event for the named limit.
func limitEvent(t *testing.T, n *spanNode, limit string) map[string]string {
	t.Helper()
	for _, e := range n.s.Events {
		m := map[string]string{}
		for _, kv := range e.Attributes {
			m[string(kv.Key)] = kv.Value.String()
		}
		if e.Name == "limit" && m["imapguard.limit.name"] == limit {
			return m
		}
	}
	t.Fatalf("span %s has no limit event for %s: %v", n.s.Name, limit, n.s.Events)
	return nil
}

// wantRefusalEvent checks that a refusal that left the connection open
// is an event on the span, not its reason.
func wantRefusalEvent(t *testing.T, n *spanNode, reason string) {
	t.Helper()
	if v, ok := attrOf(n.s, "imapguard.refused.reason"); ok {
		t.Errorf("span %s has imapguard.refused.reason %s; the connection was not refused", n.s.Name, v.String())
	}
	for _, e := range n.s.Events {
		for _, kv := range e.Attributes {
			if e.Name == "refusal" && string(kv.Key) == "imapguard.refused.reason" && kv.Value.String() == reason {
				return
			}
		}
	}
	t.Errorf("span %s has no refusal event for %s: %v", n.s.Name, reason, n.s.Events)
}

// everyString returns every attribute, event and status text of all
// spans, for the secret-leak check.
func everyString(stubs tracetest.SpanStubs) string {
	var b strings.Builder
	for _, s := range stubs {
		fmt.Fprintln(&b, s.Name, s.Status.Description)
		for _, kv := range s.Attributes {
			fmt.Fprintln(&b, kv.Key, kv.Value.String())
		}
		for _, e := range s.Events {
			fmt.Fprintln(&b, e.Name)
			for _, kv := range e.Attributes {
				fmt.Fprintln(&b, kv.Key, kv.Value.String())
			}
		}
	}
	return b.String()
}

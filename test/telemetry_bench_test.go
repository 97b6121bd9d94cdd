package test

import (
	"context"
	"fmt"
	rtmetrics "runtime/metrics"
	"strings"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/imapguard/imapguard/cmd/imapd/server"
	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/test/proxytest"
)

// discardExporter takes spans and drops them: the cost measured is the
// proxy's and the SDK's, not an exporter's network.
type discardExporter struct{}

func (discardExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discardExporter) Shutdown(context.Context) error                             { return nil }

// BenchmarkLoginTelemetry measures a whole connection through the proxy
// (greeting, LOGIN, NOOP, LOGOUT against the bundled upstream, on
// loopback) without telemetry and with every span sampled and metrics
// collected, to show what instrumentation costs per connection:
//
//	go test -run '^$' -bench LoginTelemetry -benchmem ./test
//
// "direct" is the same session against the upstream without the proxy:
// the client's and the upstream's share, to subtract from the other two.
// goroutines/op counts the goroutines created per session in the whole
// process (runtime/metrics), so "off" minus "direct" is what the proxy
// starts per login.
func BenchmarkLoginTelemetry(b *testing.B) {
	up := server.Start(b, server.Options{Users: []server.User{{Username: "alice", Password: "secret"}}, InsecureAuth: true})
	b.Run("direct", func(b *testing.B) {
		g := goroutinesCreated()
		b.ResetTimer()
		for b.Loop() {
			if err := benchSession(up); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(goroutinesCreated()-g)/float64(b.N), "goroutines/op")
	})
	for _, mode := range []string{"off", "traced"} {
		b.Run(mode, func(b *testing.B) {
			var setup func(*proxy.Server)
			if mode == "traced" {
				tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(discardExporter{}))
				mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
				b.Cleanup(func() {
					tp.Shutdown(context.Background())
					mp.Shutdown(context.Background())
				})
				setup = func(s *proxy.Server) {
					if err := s.Instrument(tp, mp); err != nil {
						b.Fatal(err)
					}
				}
			}
			p := proxytest.Start(b, proxytest.Config{Upstream: up, Setup: setup})
			g := goroutinesCreated()
			b.ResetTimer()
			for b.Loop() {
				if err := benchSession(p.Addr); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(goroutinesCreated()-g)/float64(b.N), "goroutines/op")
		})
	}
}

// goroutinesCreated is the number of goroutines the process has created
// since it started.
func goroutinesCreated() uint64 {
	s := []rtmetrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
	rtmetrics.Read(s)
	if s[0].Value.Kind() != rtmetrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// benchSession runs one short session and waits for the close.
func benchSession(addr string) error {
	c, err := proxytest.DialClient("", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if g, err := c.Line(); err != nil || !strings.HasPrefix(g, "* OK") {
		return fmt.Errorf("greeting %q: %v", g, err)
	}
	if _, st, err := c.Cmd("a", "LOGIN alice secret"); err != nil || !strings.HasPrefix(st, "a OK") {
		return fmt.Errorf("LOGIN: %q %v", st, err)
	}
	// NOOP and LOGOUT in one write.
	if err := c.Send("b NOOP\r\nc LOGOUT\r\n"); err != nil {
		return err
	}
	if _, st, err := c.Until("b"); err != nil || !strings.HasPrefix(st, "b OK") {
		return fmt.Errorf("NOOP: %q %v", st, err)
	}
	if _, st, err := c.Until("c"); err != nil || !strings.HasPrefix(st, "c OK") {
		return fmt.Errorf("LOGOUT: %q %v", st, err)
	}
	return c.ExpectClosed()
}

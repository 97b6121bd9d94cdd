package test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

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
func BenchmarkLoginTelemetry(b *testing.B) {
	up := server.Start(b, server.Options{Users: []server.User{{Username: "alice", Password: "secret"}}, InsecureAuth: true})
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
			b.ResetTimer()
			for b.Loop() {
				if err := benchSession(p.Addr); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// benchSession runs one short session and waits for the close.
func benchSession(addr string) error {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(nc)
	expect := func(prefix string) error {
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				return err
			}
			if strings.HasPrefix(l, prefix) {
				return nil
			}
			if !strings.HasPrefix(l, "* ") && !strings.HasPrefix(l, "b OK") {
				return errors.New("unexpected " + strings.TrimSpace(l))
			}
		}
	}
	if err := expect("* OK"); err != nil {
		return err
	}
	io.WriteString(nc, "a LOGIN alice secret\r\n")
	if err := expect("a OK"); err != nil {
		return err
	}
	io.WriteString(nc, "b NOOP\r\nc LOGOUT\r\n")
	if err := expect("c OK"); err != nil {
		return err
	}
	_, err = br.ReadString('\n')
	if err == io.EOF {
		return nil
	}
	return err
}

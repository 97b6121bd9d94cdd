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
	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy"
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
			srv := proxy.New(proxy.Options{UpstreamAddr: up}, limits.New(limits.Options{}), nil)
			if mode == "traced" {
				tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(discardExporter{}))
				mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
				defer tp.Shutdown(context.Background())
				defer mp.Shutdown(context.Background())
				if err := srv.Instrument(tp, mp); err != nil {
					b.Fatal(err)
				}
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- srv.Serve(ln) }()
			defer func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				srv.Shutdown(ctx)
				if err := <-done; err != nil && !errors.Is(err, proxy.ErrServerClosed) {
					b.Error(err)
				}
			}()
			b.ResetTimer()
			for b.Loop() {
				if err := benchSession(ln.Addr().String()); err != nil {
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

package proxy

import (
	"bytes"
	"log/slog"
	"net"
	"testing"
	"time"
)

// TestPrefixHandlerSameOutput checks that a connection's loggers write
// what the loggers made by With did, byte for byte, in both formats:
// the fail2ban filter and anyone's log parsing rely on the fields and
// their order.
func TestPrefixHandlerSameOutput(t *testing.T) {
	noTime := func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}
	client := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 50123}
	via := &net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 443}
	for _, format := range []string{"text", "json"} {
		var want, got bytes.Buffer
		newLog := func(b *bytes.Buffer) *slog.Logger {
			o := &slog.HandlerOptions{ReplaceAttr: noTime, Level: slog.LevelDebug}
			if format == "json" {
				return slog.New(slog.NewJSONHandler(b, o))
			}
			return slog.New(slog.NewTextHandler(b, o))
		}
		lines := func(c, proxied *slog.Logger, login func(*slog.Logger, ...any) *slog.Logger) {
			c.Info("connection refused", "reason", "too many", "limit", "max_connections", "count", 3, "max", 3)
			l := login(c, "user", "alice smith", "mechanism", "PLAIN", "session", "abc=")
			l.Info("authentication failed", "upstream_time", 1500*time.Microsecond, "detail", "x\"y")
			login(l, "backend", "b1").Info("logged in", "upstream_time", time.Millisecond)
			c.Debug("client read failed", "err", net.ErrClosed)
			c.WithGroup("g").Info("grouped", "k", "v")
			proxied.Info("connection closed", "duration", time.Second, "outcome", "logout",
				"user", "alice", "bytes_to_upstream", int64(10), "bytes_to_client", int64(20))
		}
		wl := newLog(&want)
		lines(wl.With("conn", uint64(7), "client", client.String(), "trace_id", "0af7"),
			wl.With("conn", uint64(8), "client", client.String(), "via", via.String()),
			func(l *slog.Logger, args ...any) *slog.Logger { return l.With(args...) })
		gl := newLog(&got)
		lines(connLogger(gl, 7, client, nil, "0af7"), connLogger(gl, 8, client, via, ""),
			func(l *slog.Logger, args ...any) *slog.Logger {
				var attrs []slog.Attr
				for i := 0; i+1 < len(args); i += 2 {
					attrs = append(attrs, slog.Any(args[i].(string), args[i+1]))
				}
				return withPrefix(l, attrs...)
			})
		if got.String() != want.String() {
			t.Errorf("%s: got\n%s\nwant\n%s", format, got.String(), want.String())
		}
		if want.Len() == 0 {
			t.Errorf("%s: nothing written", format)
		}
	}
}

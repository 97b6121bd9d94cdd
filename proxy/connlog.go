package proxy

import (
	"context"
	"log/slog"
	"net"
)

// prefixHandler writes its attributes in front of each record's own, as
// the handler Logger.With makes would, but at each line instead of in
// advance: slog's text and JSON handlers format the attributes of a With
// into a new handler (a copy, a buffer), and the command's handler that
// follows reloads (cmd/imapguard/logger.go) rebuilds its chain for each
// new logger. A connection's loggers write a line or two each, so
// formatting in advance is pure cost. The output is the same, field for
// field (TestPrefixHandlerSameOutput).
type prefixHandler struct {
	next  slog.Handler
	attrs []slog.Attr
}

// withPrefix returns a logger writing through log's handler with attrs
// in front of every line.
func withPrefix(log *slog.Logger, attrs ...slog.Attr) *slog.Logger {
	next := log.Handler()
	if p, ok := next.(*prefixHandler); ok {
		return slog.New(p.WithAttrs(attrs))
	}
	return slog.New(&prefixHandler{next: next, attrs: attrs})
}

func (h *prefixHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

func (h *prefixHandler) Handle(ctx context.Context, r slog.Record) error {
	nr := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	nr.AddAttrs(h.attrs...)
	r.Attrs(func(a slog.Attr) bool {
		nr.AddAttrs(a)
		return true
	})
	return h.next.Handle(ctx, nr)
}

// WithAttrs adds attrs after the handler's own (Logger.With).
func (h *prefixHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	all := make([]slog.Attr, 0, len(h.attrs)+len(attrs))
	return &prefixHandler{next: h.next, attrs: append(append(all, h.attrs...), attrs...)}
}

// WithGroup puts what follows in a group: the attributes so far are
// handed to the next handler first, so they stay outside it.
func (h *prefixHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return h.next.WithAttrs(h.attrs).WithGroup(name)
}

// connLogger is a connection's logger: its id, the client's address (and
// the peer's, via, behind a trusted PROXY header), and the trace id when
// its root span is sampled, in front of every line.
func connLogger(log *slog.Logger, id uint64, client, via net.Addr, traceID string) *slog.Logger {
	attrs := make([]slog.Attr, 0, 4)
	attrs = append(attrs, slog.Uint64("conn", id), slog.String("client", client.String()))
	if via != nil {
		attrs = append(attrs, slog.String("via", via.String()))
	}
	if traceID != "" {
		attrs = append(attrs, slog.String("trace_id", traceID))
	}
	return slog.New(&prefixHandler{next: log.Handler(), attrs: attrs})
}

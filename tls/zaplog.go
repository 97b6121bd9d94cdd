package imaptls

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// newZapLogger gives certmagic (which logs with zap) a logger that writes
// to h, so its lines land in imapguard's log with its format and level;
// each carries logger=certmagic or certmagic.NAME (obtain, handshake,
// maintenance, acme_client, ...).
func newZapLogger(h slog.Handler) *zap.Logger {
	return zap.New(slogCore{h: h})
}

// slogCore is a zapcore.Core that hands each entry to a slog.Handler.
type slogCore struct {
	h slog.Handler
}

func slogLevel(l zapcore.Level) slog.Level {
	switch {
	case l <= zapcore.DebugLevel:
		return slog.LevelDebug
	case l == zapcore.InfoLevel:
		return slog.LevelInfo
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	default: // error, dpanic, panic, fatal: zap itself panics or exits after Write
		return slog.LevelError
	}
}

func (c slogCore) Enabled(l zapcore.Level) bool {
	return c.h.Enabled(context.Background(), slogLevel(l))
}

func (c slogCore) With(fields []zapcore.Field) zapcore.Core {
	return slogCore{h: c.h.WithAttrs(zapAttrs(fields))}
}

func (c slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c slogCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	r := slog.NewRecord(e.Time, slogLevel(e.Level), e.Message, 0)
	name := "certmagic"
	if e.LoggerName != "" {
		name += "." + strings.TrimPrefix(e.LoggerName, ".") // acmez's loggers are named ".acme_client"
	}
	r.AddAttrs(slog.String("logger", name))
	r.AddAttrs(zapAttrs(fields)...)
	return c.h.Handle(context.Background(), r)
}

func (slogCore) Sync() error { return nil }

// zapAttrs converts fields one by one, keeping their order, through zap's
// own map encoder (which knows every field type).
func zapAttrs(fields []zapcore.Field) []slog.Attr {
	attrs := make([]slog.Attr, 0, len(fields))
	for _, f := range fields {
		enc := zapcore.NewMapObjectEncoder()
		f.AddTo(enc)
		if v, ok := enc.Fields[f.Key]; ok && len(enc.Fields) == 1 {
			attrs = append(attrs, slog.Any(f.Key, v))
			continue
		}
		// Several keys (zap.Error's errorVerbose) or none (zap.Skip).
		for _, k := range slices.Sorted(maps.Keys(enc.Fields)) {
			attrs = append(attrs, slog.Any(k, enc.Fields[k]))
		}
	}
	return attrs
}

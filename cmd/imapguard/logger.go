package main

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"

	"github.com/imapguard/imapguard/config"
)

// logSwitch is the process's logger, whose [log] a reload changes: the
// level through a slog.LevelVar, and the format by swapping the handler
// that every logger derived from it (With, WithGroup) writes through.
type logSwitch struct {
	level  slog.LevelVar
	w      io.Writer
	base   atomic.Pointer[baseHandler]
	logger *slog.Logger
}

// baseHandler is the text or JSON handler in use; a new one for each
// change of format.
type baseHandler struct {
	format string
	h      slog.Handler
}

func newLogSwitch(c config.Log, w io.Writer) *logSwitch {
	s := &logSwitch{w: w}
	s.Set(c)
	s.logger = slog.New(&switchHandler{sw: s})
	return s
}

// newLogger returns a logger for c, writing to w.
func newLogger(c config.Log, w io.Writer) *slog.Logger { return newLogSwitch(c, w).logger }

// Logger returns the logger.
func (s *logSwitch) Logger() *slog.Logger { return s.logger }

// Set applies c: at once for every logger derived from this one.
func (s *logSwitch) Set(c config.Log) {
	s.level.Set(parseLevel(c.Level))
	if b := s.base.Load(); b != nil && b.format == c.Format {
		return
	}
	opts := &slog.HandlerOptions{Level: &s.level}
	var h slog.Handler = slog.NewTextHandler(s.w, opts)
	if c.Format == "json" {
		h = slog.NewJSONHandler(s.w, opts)
	}
	s.base.Store(&baseHandler{format: c.Format, h: h})
}

func parseLevel(level string) slog.Level {
	switch level {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// switchHandler writes through the logSwitch's current handler, with the
// attributes and groups of its With and WithGroup calls applied to it,
// rebuilt once after each change of format.
type switchHandler struct {
	sw    *logSwitch
	ops   []func(slog.Handler) slog.Handler
	built atomic.Pointer[builtHandler]
}

type builtHandler struct {
	base *baseHandler
	h    slog.Handler
}

func (h *switchHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.sw.level.Level() }

func (h *switchHandler) Handle(ctx context.Context, r slog.Record) error {
	return h.current().Handle(ctx, r)
}

func (h *switchHandler) current() slog.Handler {
	base := h.sw.base.Load()
	if b := h.built.Load(); b != nil && b.base == base {
		return b.h
	}
	out := base.h
	for _, op := range h.ops {
		out = op(out)
	}
	h.built.Store(&builtHandler{base: base, h: out})
	return out
}

func (h *switchHandler) with(op func(slog.Handler) slog.Handler) *switchHandler {
	ops := make([]func(slog.Handler) slog.Handler, len(h.ops), len(h.ops)+1)
	copy(ops, h.ops)
	return &switchHandler{sw: h.sw, ops: append(ops, op)}
}

func (h *switchHandler) WithAttrs(as []slog.Attr) slog.Handler {
	if len(as) == 0 {
		return h
	}
	return h.with(func(b slog.Handler) slog.Handler { return b.WithAttrs(as) })
}

func (h *switchHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return h.with(func(b slog.Handler) slog.Handler { return b.WithGroup(name) })
}

package imaptls

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"testing"

	"go.uber.org/zap"
)

func TestZapToSlog(t *testing.T) {
	var buf bytes.Buffer
	h := slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})
	zl := newZapLogger(h).Named("obtain").With(zap.String("identifier", "mail.example.test"))

	zl.Debug("hidden") // below the handler's level
	zl.Info("obtaining certificate", zap.Int("attempt", 2), zap.Strings("names", []string{"a", "b"}))
	zl.Error("failed", zap.Error(errors.New("boom")))

	var lines []map[string]any
	for _, l := range bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n")) {
		var m map[string]any
		if err := json.Unmarshal(l, &m); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 2 {
		t.Fatalf("got %d lines; want 2 (debug filtered out):\n%s", len(lines), buf.String())
	}
	want := []map[string]any{
		{"level": "INFO", "msg": "obtaining certificate", "logger": "certmagic.obtain", "identifier": "mail.example.test", "attempt": float64(2)},
		{"level": "ERROR", "msg": "failed", "logger": "certmagic.obtain", "identifier": "mail.example.test", "error": "boom"},
	}
	for i, w := range want {
		for k, v := range w {
			if got := lines[i][k]; got != v {
				t.Errorf("line %d: %s = %v; want %v", i, k, got, v)
			}
		}
	}
	if names, _ := lines[0]["names"].([]any); len(names) != 2 {
		t.Errorf("names = %v; want [a b]", lines[0]["names"])
	}
}

package certs

import (
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"go.uber.org/zap"
)

func TestZapToSlog(t *testing.T) {
	var buf lockedBuffer
	zl := newZapLogger(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
	zl.Named("handshake").With(zap.String("remote_ip", "192.0.2.7")).Debug("suppressed below Info")
	zl.Named("obtain").With(zap.String("identifier", "a.test")).Error("could not get certificate", zap.Error(errors.New("boom")), zap.Int("attempt", 3))
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("got %d log lines, want 1 (debug suppressed):\n%s", len(lines), buf.String())
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"level": "ERROR", "msg": "could not get certificate", "logger": "obtain",
		"identifier": "a.test", "error": "boom", "attempt": float64(3), "component": "certmagic",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("field %q: got %v, want %v", k, got[k], v)
		}
	}
}

package cluster

import (
	"context"
	"log"
	"log/slog"
	"strings"
)

// memberlist logs through a *log.Logger with "[LEVEL] memberlist: …" lines.
// newMemberlistLogger maps those levels onto slog, and names secret key
// mismatches explicitly, since memberlist only says a message could not be
// decrypted.
func newMemberlistLogger(l *slog.Logger) *log.Logger {
	return log.New(logWriter{l}, "", 0)
}

type logWriter struct{ l *slog.Logger }

func (w logWriter) Write(b []byte) (int, error) {
	line := strings.TrimSpace(string(b))
	level := slog.LevelInfo
	for _, p := range [...]struct {
		tag   string
		level slog.Level
	}{
		{"[DEBUG]", slog.LevelDebug}, {"[INFO]", slog.LevelInfo}, {"[WARN]", slog.LevelWarn}, {"[ERR]", slog.LevelError},
	} {
		if rest, ok := strings.CutPrefix(line, p.tag); ok {
			level, line = p.level, strings.TrimSpace(rest)
			break
		}
	}
	line = strings.TrimPrefix(line, "memberlist: ")
	ctx := context.Background()
	if isKeyMismatchText(line) {
		// Not an error of this node: a peer (or a stranger) with another key.
		w.l.Log(ctx, slog.LevelWarn, "gossip rejected: secret key mismatch with a peer", "detail", line)
		return len(b), nil
	}
	if w.l.Enabled(ctx, level) {
		w.l.Log(ctx, level, line, "source", "memberlist")
	}
	return len(b), nil
}

package cluster

import (
	"context"
	"log"
	"log/slog"
	"maps"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
)

// repeatWindow is how long an identical memberlist message is collapsed
// after it was logged. A partitioned peer makes memberlist report the same
// failure on every probe, gossip round and push/pull (issue 13: 20 ERROR
// lines in 31 s); one line per message and peer per window, then a count,
// says the same without drowning the rest of the log.
const repeatWindow = 30 * time.Second

// maxRepeatKeys bounds the messages tracked in one window; beyond it lines
// are logged as they come (a flood of distinct messages is news itself).
const maxRepeatKeys = 256

// memberlist logs through a *log.Logger with "[LEVEL] memberlist: …" lines.
// memberlistLog maps those levels onto slog, names secret key mismatches
// explicitly (memberlist only says a message could not be decrypted), and
// collapses repeats: the first occurrence of a message is logged at once,
// identical ones within repeatWindow are counted, and the count is logged
// (with the last text) when the window ends. Safe for concurrent use.
type memberlistLog struct {
	l   *slog.Logger
	now func() time.Time

	mu   sync.Mutex // guards seen
	seen map[string]*repeat
}

// repeat is one message being collapsed.
type repeat struct {
	level  slog.Level
	msg    string // slog message of the summary
	attrs  []any  // of the last suppressed occurrence
	logged time.Time
	n      int // suppressed since logged
}

func newMemberlistLog(l *slog.Logger, now func() time.Time) *memberlistLog {
	return &memberlistLog{l: l, now: now, seen: make(map[string]*repeat)}
}

// logger returns the *log.Logger memberlist writes to.
func (w *memberlistLog) logger() *log.Logger { return log.New(w, "", 0) }

// Volatile parts of memberlist lines that must not make otherwise identical
// messages distinct: the ephemeral local port of a connection ("read tcp
// 10.0.0.1:41234->10.0.0.2:7946") and the remote port of an accepted
// stream ("from=10.0.0.2:53122"). The peer's address stays in the key, so
// repeats collapse per peer.
var (
	localPortRE = regexp.MustCompile(`:\d+->`)
	fromPortRE  = regexp.MustCompile(`(from=\S+):\d+`)
)

func (w *memberlistLog) Write(b []byte) (int, error) {
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
	msg, attrs := line, []any{"source", "memberlist"}
	if isKeyMismatchText(line) {
		// Not an error of this node: a peer (or a stranger) with another key.
		level, msg, attrs = slog.LevelWarn, "gossip rejected: secret key mismatch with a peer", []any{"detail", line}
	}
	if !w.l.Enabled(context.Background(), level) {
		return len(b), nil
	}
	key := level.String() + " " + fromPortRE.ReplaceAllString(localPortRE.ReplaceAllString(line, ":*->"), "$1")
	if w.admit(key, level, msg, attrs) {
		w.l.Log(context.Background(), level, msg, attrs...)
	}
	return len(b), nil
}

// admit records one occurrence of key and reports whether to log it now.
// It also summarises the messages whose window has ended.
func (w *memberlistLog) admit(key string, level slog.Level, msg string, attrs []any) bool {
	now := w.now()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.flushLocked(now)
	if r, ok := w.seen[key]; ok {
		r.n++
		r.msg, r.attrs = msg, attrs
		return false
	}
	if len(w.seen) < maxRepeatKeys {
		w.seen[key] = &repeat{level: level, msg: msg, attrs: attrs, logged: now}
	}
	return true
}

// flush logs the counts of the messages whose window has ended; the
// cluster's housekeeping loop calls it so a count is not held back until
// the next memberlist line.
func (w *memberlistLog) flush() {
	now := w.now()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.flushLocked(now)
}

func (w *memberlistLog) flushLocked(now time.Time) {
	// Sorted: summaries of one flush come out in a stable order.
	for _, key := range slices.Sorted(maps.Keys(w.seen)) {
		r := w.seen[key]
		if now.Sub(r.logged) < repeatWindow {
			continue
		}
		if r.n == 0 {
			delete(w.seen, key)
			continue
		}
		// The summary opens the next window: a failure that goes on is
		// one line per window, not two.
		attrs := append(r.attrs[:len(r.attrs):len(r.attrs)], "repeated", r.n, "within", repeatWindow.String())
		w.l.Log(context.Background(), r.level, r.msg, attrs...)
		r.logged, r.n = now, 0
	}
}

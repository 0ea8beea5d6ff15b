package cluster

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

type logRecord struct {
	Level    string `json:"level"`
	Msg      string `json:"msg"`
	Repeated int    `json:"repeated"`
	Detail   string `json:"detail"`
}

func records(t *testing.T, b *bytes.Buffer) []logRecord {
	t.Helper()
	var out []logRecord
	for _, line := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if line == "" {
			continue
		}
		var r logRecord
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, r)
	}
	return out
}

// TestMemberlistLogCollapsesRepeats: a partition makes memberlist repeat
// the same failure on every probe; identical lines (per peer, ephemeral
// ports aside) are logged once per window, then as one count.
func TestMemberlistLogCollapsesRepeats(t *testing.T) {
	const (
		pingA = "[ERR] memberlist: Failed fallback TCP ping: timeout 1s: read tcp 10.77.0.11:%d->10.77.0.12:7946: i/o timeout"
		pingB = "[ERR] memberlist: Failed fallback TCP ping: timeout 1s: read tcp 10.77.0.11:%d->10.77.0.13:7946: i/o timeout"
		pull  = "[ERR] memberlist: Failed push/pull merge: dial failed from=10.77.0.12:%d"
		key   = "[ERR] memberlist: Decrypt packet failed: no installed keys could decrypt the message from=10.77.0.14:7946"
	)
	type want struct {
		msg      string // substring of the record's msg
		repeated int
	}
	tests := []struct {
		name   string
		lines  []string      // written 0.5 s apart
		after  time.Duration // then the clock moves this far and flush runs
		want   []want
		levels string // every record's level
	}{
		{
			name:  "20 identical in a window: one line, then the count",
			lines: repeatLine(pingA, 20), after: repeatWindow,
			want: []want{{"Failed fallback TCP ping", 0}, {"Failed fallback TCP ping", 19}}, levels: "ERROR",
		},
		{
			name:  "window not over: the count waits",
			lines: repeatLine(pingA, 5), after: time.Second,
			want: []want{{"Failed fallback TCP ping", 0}}, levels: "ERROR",
		},
		{
			name:  "per peer: two peers, two lines each",
			lines: append(repeatLine(pingA, 3), repeatLine(pingB, 3)...), after: repeatWindow,
			want: []want{{"10.77.0.12", 0}, {"10.77.0.13", 0}, {"10.77.0.12", 2}, {"10.77.0.13", 2}}, levels: "ERROR",
		},
		{
			name:  "accepted stream's remote port ignored",
			lines: repeatLine(pull, 4), after: repeatWindow,
			want: []want{{"Failed push/pull merge", 0}, {"Failed push/pull merge", 3}}, levels: "ERROR",
		},
		{
			name:  "single line: no count",
			lines: repeatLine(pingA, 1), after: 2 * repeatWindow,
			want: []want{{"Failed fallback TCP ping", 0}}, levels: "ERROR",
		},
		{
			name:  "key mismatch named, and collapsed",
			lines: repeatLine(key, 6), after: repeatWindow,
			want: []want{{"secret key mismatch", 0}, {"secret key mismatch", 5}}, levels: "WARN",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			clock := &fakeClock{t: time.Unix(1_800_000_000, 0)}
			w := newMemberlistLog(slog.New(slog.NewJSONHandler(&buf, nil)), clock.now)
			lg := w.logger()
			for _, l := range tt.lines {
				lg.Print(l)
				clock.add(500 * time.Millisecond)
			}
			clock.add(tt.after)
			w.flush()
			got := records(t, &buf)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d lines %+v, want %d %+v", len(got), got, len(tt.want), tt.want)
			}
			for i, r := range got {
				text := r.Msg + " " + r.Detail
				if !strings.Contains(text, tt.want[i].msg) || r.Repeated != tt.want[i].repeated || r.Level != tt.levels {
					t.Errorf("line %d: got %s %q repeated=%d, want %s %q repeated=%d",
						i, r.Level, text, r.Repeated, tt.levels, tt.want[i].msg, tt.want[i].repeated)
				}
			}
		})
	}
}

// TestMemberlistLogOngoingFailure: a failure that goes on is one line per
// window (the count), not one per occurrence.
func TestMemberlistLogOngoingFailure(t *testing.T) {
	var buf bytes.Buffer
	clock := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	w := newMemberlistLog(slog.New(slog.NewJSONHandler(&buf, nil)), clock.now)
	lg := w.logger()
	const every = 500 * time.Millisecond
	span := 3 * repeatWindow
	for d := time.Duration(0); d < span; d += every {
		lg.Printf("[ERR] memberlist: Failed to send gossip to 10.77.0.12:7946: write udp 10.77.0.11:%d->10.77.0.12:7946: sendto: no route to host", 40000+d/every)
		clock.add(every)
	}
	clock.add(repeatWindow)
	w.flush()
	got := records(t, &buf)
	total := 0
	for _, r := range got {
		if r.Repeated == 0 {
			total++ // logged as it happened
		}
		total += r.Repeated // a summary stands for the suppressed ones
	}
	if want := int(span / every); total != want || len(got) > 4 {
		t.Fatalf("got %d lines accounting for %d occurrences, want at most 4 lines accounting for %d: %+v", len(got), total, want, got)
	}
}

func repeatLine(format string, n int) []string {
	out := make([]string, n)
	for i := range out {
		if strings.Contains(format, "%d") {
			out[i] = fmt.Sprintf(format, 40000+i)
		} else {
			out[i] = format
		}
	}
	return out
}

package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// flakyTarget answers 200 while healthy, 503 otherwise.
func flakyTarget(t *testing.T) (*atomic.Bool, string) {
	var healthy atomic.Bool
	healthy.Store(true)
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		if !healthy.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	return &healthy, srv.URL + "/readyz"
}

func webhookSink(t *testing.T) (chan ProbeEvent, string) {
	ch := make(chan ProbeEvent, 16)
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		var ev ProbeEvent
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		if err := json.NewDecoder(r.Body).Decode(&ev); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		ch <- ev
	})
	return ch, srv.URL + "/hook"
}

func TestProberIncidentAndWebhook(t *testing.T) {
	healthy, target := flakyTarget(t)
	_, other := flakyTarget(t)
	events, hook := webhookSink(t)
	clock := &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC)}
	p, err := NewProber(ProbeConfig{Targets: []string{target, other}, Webhook: hook, Timeout: 5 * time.Second, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t0 := clock.Now()
	// Checks every 60 s: up, down, down, up, up.
	for i, up := range []bool{true, false, false, true, true} {
		healthy.Store(up)
		checks := p.Check(context.Background())
		if checks[0].Up != up || !checks[1].Up {
			t.Fatalf("round %d: checks %+v, want target up=%v and the other up", i, checks, up)
		}
		clock.Advance(time.Minute)
	}

	wantEvents := []struct {
		state, prev string
		at          time.Time
	}{{"down", "up", t0.Add(time.Minute)}, {"up", "down", t0.Add(3 * time.Minute)}}
	for i, w := range wantEvents {
		select {
		case ev := <-events:
			if ev.Target != target || ev.State != w.state || ev.Previous != w.prev || !ev.At.Equal(w.at) {
				t.Errorf("event %d: got %s %s<-%s at %v, want %s %s<-%s at %v", i, ev.Target, ev.State, ev.Previous, ev.At,
					target, w.state, w.prev, w.at)
			}
			if w.state == "up" && (ev.Incident.Duration != 2*time.Minute || ev.Incident.Open || !ev.Incident.Start.Equal(t0.Add(time.Minute))) {
				t.Errorf("recovery event incident %+v, want 2m closed from t0+1m", ev.Incident)
			}
			if w.state == "down" && (ev.Check.Status != 503 || ev.Incident.Reason != "status 503" || !ev.Incident.Open) {
				t.Errorf("down event %+v, want status 503 and an open incident", ev)
			}
		default:
			t.Fatalf("webhook received %d events, want %d", i, len(wantEvents))
		}
	}
	if len(events) != 0 {
		t.Errorf("%d extra webhook events", len(events))
	}

	rep := p.Report()
	r := rep[0]
	if r.Checks != 5 || r.Up != 3 || r.Uptime != 60 || r.State != "up" {
		t.Errorf("report %+v: want 5 checks, 3 up, 60%% uptime, state up", r)
	}
	if len(r.Incidents) != 1 {
		t.Fatalf("incidents %+v, want 1", r.Incidents)
	}
	in := r.Incidents[0]
	if !in.Start.Equal(t0.Add(time.Minute)) || !in.End.Equal(t0.Add(3*time.Minute)) || in.Duration != 2*time.Minute || in.Open {
		t.Errorf("incident %+v, want t0+1m..t0+3m, 2m, closed", in)
	}
	if r.Downtime != 2*time.Minute || r.Avg <= 0 || r.P95 < r.Avg/2 || r.Max < r.P95 {
		t.Errorf("downtime %v avg %v p95 %v max %v", r.Downtime, r.Avg, r.P95, r.Max)
	}
	if o := rep[1]; o.Uptime != 100 || len(o.Incidents) != 0 {
		t.Errorf("other target %+v, want 100%% up without incidents", o)
	}

	var buf bytes.Buffer
	if err := WriteProbeReport(&buf, rep); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "60.000%") || !strings.Contains(buf.String(), "incident "+target) {
		t.Errorf("report text:\n%s", buf.String())
	}
}

func TestProberFirstCheckDownAndOpenIncident(t *testing.T) {
	healthy, target := flakyTarget(t)
	healthy.Store(false)
	clock := &fakeClock{now: time.Unix(1e9, 0)}
	var got []ProbeEvent
	p, err := NewProber(ProbeConfig{Targets: []string{target}, Now: clock.Now, OnEvent: func(e ProbeEvent) { got = append(got, e) }})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		p.Check(context.Background())
		clock.Advance(30 * time.Second)
	}
	if len(got) != 1 || got[0].State != "down" || got[0].Previous != "unknown" {
		t.Errorf("events %+v, want one down from unknown", got)
	}
	r := p.Report()[0]
	if len(r.Incidents) != 1 || !r.Incidents[0].Open || r.Incidents[0].Duration != time.Minute || r.Uptime != 0 {
		t.Errorf("report %+v, want one open 1m incident and 0%% uptime", r)
	}
}

func TestProbeCLIOnce(t *testing.T) {
	healthy, target := flakyTarget(t)
	for _, tc := range []struct {
		up   bool
		code int
		want string
	}{{true, ExitOK, "UP  "}, {false, ExitViolated, "DOWN"}} {
		healthy.Store(tc.up)
		var out, errb bytes.Buffer
		code := ProbeCLI(context.Background(), []string{"--targets", target, "--once", "--timeout", "2s"}, &out, &errb)
		if code != tc.code || !strings.Contains(out.String(), tc.want) {
			t.Errorf("up=%v: exit %d output %q %q, want %d and %q", tc.up, code, out.String(), errb.String(), tc.code, tc.want)
		}
	}
	jsonPath := filepath.Join(t.TempDir(), "probe.json")
	var out, errb bytes.Buffer
	if code := ProbeCLI(context.Background(), []string{"--targets", target + "," + target + "?b", "--once", "--json", jsonPath}, &out, &errb); code != ExitViolated {
		t.Errorf("down targets with --json: exit %d, want %d (%s)", code, ExitViolated, errb.String())
	}
	var doc struct{ Targets []TargetReport }
	if b, err := os.ReadFile(jsonPath); err != nil || json.Unmarshal(b, &doc) != nil || len(doc.Targets) != 2 || doc.Targets[0].State != "down" {
		t.Errorf("probe json report %+v: %v", doc, err)
	}
	out.Reset()
	if code := ProbeCLI(context.Background(), []string{"--once"}, &out, &errb); code != ExitUsage {
		t.Errorf("no targets: exit %d, want %d", code, ExitUsage)
	}
}

// TestProbeCLIRun runs the loop with a short interval until three rounds
// were printed, then cancels it and expects the final report.
func TestProbeCLIRun(t *testing.T) {
	_, target := flakyTarget(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &syncBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- ProbeCLI(ctx, []string{"--targets", target, "--interval", "20ms"}, out, &bytes.Buffer{})
	}()
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(out.String(), "UP  ") < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than 3 rounds within 10s:\n%s", out.String())
		}
		time.Sleep(10 * time.Millisecond) // polling, bounded by the deadline
	}
	cancel()
	if code := <-done; code != ExitOK {
		t.Errorf("exit %d, want 0", code)
	}
	if !strings.Contains(out.String(), "100.000%") {
		t.Errorf("final report missing:\n%s", out.String())
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// TestProbeCLIToken: with admin.token set the admin listener answers 401
// to a probe without the token; --token and --token-file send it as a
// bearer token, and bad token flags are usage errors.
func TestProbeCLIToken(t *testing.T) {
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer s3cret" {
			w.WriteHeader(http.StatusUnauthorized)
		}
	})
	target := srv.URL + "/readyz"
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good, empty := file("good", "s3cret\n"), file("empty", " \n")
	for _, tc := range []struct {
		name  string
		flags []string
		want  int
	}{
		{"no token", nil, ExitViolated},
		{"token", []string{"--token", "s3cret"}, ExitOK},
		{"wrong token", []string{"--token", "nope"}, ExitViolated},
		{"token file with newline", []string{"--token-file", good}, ExitOK},
		{"missing token file", []string{"--token-file", filepath.Join(dir, "absent")}, ExitUsage},
		{"empty token file", []string{"--token-file", empty}, ExitUsage},
		{"both", []string{"--token", "s3cret", "--token-file", good}, ExitUsage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			args := append([]string{"--targets", target, "--once", "--timeout", "2s"}, tc.flags...)
			if got := ProbeCLI(context.Background(), args, &out, &errb); got != tc.want {
				t.Errorf("probe %v: got exit %d, want %d (%s%s)", tc.flags, got, tc.want, out.String(), errb.String())
			}
		})
	}
}

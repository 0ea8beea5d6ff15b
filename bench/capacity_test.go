package bench

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestCapacityOfLimitedServer searches the capacity of a server that
// processes at most `conc` requests at a time for `service` each: it can
// sustain conc/service req/s and queues beyond that.
func TestCapacityOfLimitedServer(t *testing.T) {
	const (
		conc    = 4
		service = 20 * time.Millisecond
		want    = conc / 0.020 // 200 req/s
	)
	srv := limitedServer(t, conc, service)
	slo, err := ParseSLO("p95<60ms,errors=0")
	if err != nil {
		t.Fatal(err)
	}
	var steps []float64
	cr, err := runner(t, Config{Timeout: 2 * time.Second}, srv.URL).Capacity(context.Background(), CapacityConfig{
		SLO: slo, Start: 50, StepDuration: 750 * time.Millisecond,
		OnStep: func(r *Result) { steps = append(steps, r.Scenario.From) },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("steps %v, capacity %.0f/s, limit %.0f/s", steps, cr.Rate, cr.Limit)
	if !within(cr.Rate, want, 0.25) {
		t.Errorf("capacity %.0f req/s, want %.0f ±25%%", cr.Rate, want)
	}
	if !cr.Bracketed || (cr.Limit-cr.Rate)/cr.Rate > 0.05 {
		t.Errorf("bracketed %v with limit %.0f: want the breaking rate within 5%% of %.0f", cr.Bracketed, cr.Limit, cr.Rate)
	}
	if cr.Best == nil || !cr.Best.Verdict.Held {
		t.Errorf("best step %+v, want a step whose SLO held", cr.Best)
	}
	if len(steps) < 4 || steps[0] != 50 || steps[1] != 100 {
		t.Errorf("steps %v, want a doubling ramp from 50 then a bisection", steps)
	}
}

// limitedServer processes at most conc requests at a time, for service
// each, queueing the rest: its capacity is conc/service req/s.
func limitedServer(t *testing.T, conc int, service time.Duration) *httptest.Server {
	sem := make(chan struct{}, conc)
	return server(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case sem <- struct{}{}:
		case <-r.Context().Done():
			return
		}
		time.Sleep(service)
		<-sem
	})
}

// TestRushAgainstLimitedServer ramps 50 -> 350 req/s over 2 s against a
// 200 req/s server: the rate crosses the capacity at t = 1 s, so the first
// second is served as offered and fast, and in the second the achieved rate
// flattens at the capacity while a queue (75 requests by the end) raises the
// latency of the requests scheduled then.
func TestRushAgainstLimitedServer(t *testing.T) {
	srv := limitedServer(t, 4, 20*time.Millisecond)
	res, err := runner(t, Config{Timeout: 3 * time.Second}, srv.URL).Run(context.Background(), Rush(50, 350, 2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Timeline) < 3 {
		t.Fatalf("timeline has %d buckets, want >= 3 (the queue drains after the ramp)", len(res.Timeline))
	}
	b0, b1 := res.Timeline[0], res.Timeline[1]
	if !within(b0.OfferedRate, 125, 0.03) || !within(b1.OfferedRate, 275, 0.03) {
		t.Errorf("offered %.0f/s then %.0f/s, want 125 then 275", b0.OfferedRate, b1.OfferedRate)
	}
	if !within(b0.AchievedRate, b0.OfferedRate, 0.1) {
		t.Errorf("first second achieved %.0f/s, want the offered %.0f/s", b0.AchievedRate, b0.OfferedRate)
	}
	// The bounds leave room for a busy machine, whose sleeps overshoot and
	// lower the real capacity a little.
	if b1.AchievedRate < 130 || b1.AchievedRate > 230 {
		t.Errorf("second second achieved %.0f/s, want about the 200/s capacity", b1.AchievedRate)
	}
	if b0.P99 > 150*time.Millisecond || b1.P99 < 200*time.Millisecond {
		t.Errorf("p99 %v then %v, want < 150ms below capacity and >= 200ms above it", b0.P99, b1.P99)
	}
	if res.Errors != 0 || res.Responses != res.Offered {
		t.Errorf("errors %d, responses %d of %d: the queue should drain within the timeout", res.Errors, res.Responses, res.Offered)
	}
}

func TestCapacityConfigErrors(t *testing.T) {
	r := runner(t, Config{}, "http://127.0.0.1:1/")
	slo, _ := ParseSLO("p99<1s")
	for _, cc := range []CapacityConfig{{}, {SLO: slo, Start: 100, Max: 10}, {SLO: slo, Precision: 2}} {
		if _, err := r.Capacity(context.Background(), cc); err == nil {
			t.Errorf("Capacity(%+v): err nil", cc)
		}
	}
}

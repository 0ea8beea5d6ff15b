package bench

import (
	"context"
	"net/http"
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
	sem := make(chan struct{}, conc)
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case sem <- struct{}{}:
		case <-r.Context().Done():
			return
		}
		time.Sleep(service)
		<-sem
	})
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

func TestCapacityConfigErrors(t *testing.T) {
	r := runner(t, Config{}, "http://127.0.0.1:1/")
	slo, _ := ParseSLO("p99<1s")
	for _, cc := range []CapacityConfig{{}, {SLO: slo, Start: 100, Max: 10}, {SLO: slo, Precision: 2}} {
		if _, err := r.Capacity(context.Background(), cc); err == nil {
			t.Errorf("Capacity(%+v): err nil", cc)
		}
	}
}

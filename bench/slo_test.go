package bench

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseSLO(t *testing.T) {
	tests := []struct {
		in      string
		want    []Clause
		wantErr string // substring of the error
	}{
		{in: "p95<250ms,p99<500ms,errors=0", want: []Clause{
			{Text: "p95<250ms", Metric: "p95", Quantile: 95, Op: OpLess, Value: float64(250 * time.Millisecond)},
			{Text: "p99<500ms", Metric: "p99", Quantile: 99, Op: OpLess, Value: float64(500 * time.Millisecond)},
			{Text: "errors=0", Metric: "errors", Op: OpEqual, Value: 0},
		}},
		{in: " p99.9 <= 1s , max<2s", want: []Clause{
			{Text: "p99.9<=1s", Metric: "p99.9", Quantile: 99.9, Op: OpLessEq, Value: float64(time.Second)},
			{Text: "max<2s", Metric: "max", Op: OpLess, Value: float64(2 * time.Second)},
		}},
		{in: "errors<0.1%,hit_ratio>=90%,avg<20ms,achieved>=0.99,errors==3", want: []Clause{
			{Text: "errors<0.1%", Metric: "errors", Op: OpLess, Value: 0.001, Percent: true},
			{Text: "hit_ratio>=90%", Metric: "hit_ratio", Op: OpGreaterEq, Value: 0.9},
			{Text: "avg<20ms", Metric: "mean", Op: OpLess, Value: float64(20 * time.Millisecond)},
			{Text: "achieved>=0.99", Metric: "achieved", Op: OpGreaterEq, Value: 0.99},
			{Text: "errors==3", Metric: "errors", Op: OpEqual, Value: 3},
		}},
		{in: "", wantErr: "empty expression"},
		{in: "p95<250", wantErr: "not a duration with a unit"},
		{in: "p95", wantErr: "want <metric><op><value>"},
		{in: "<250ms", wantErr: "want <metric><op><value>"},
		{in: "p95<", wantErr: "missing value"},
		{in: "p95!=1s", wantErr: "unknown operator"},
		{in: "p101<1s", wantErr: "percentile"},
		{in: "p0<1s", wantErr: "percentile"},
		{in: "pxx<1s", wantErr: "percentile"},
		{in: "latency<1s", wantErr: "unknown metric"},
		{in: "errors=-1", wantErr: "errors takes a count"},
		{in: "errors=1.5", wantErr: "errors takes a count"},
		{in: "hit_ratio>120%", wantErr: "between 0% and 100%"},
		{in: "p95<250ms,,errors=0", wantErr: "empty clause"},
		{in: "p95<-1s", wantErr: "not a duration"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseSLO(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrBadSLO) {
					t.Fatalf("ParseSLO(%q) error %v, want ErrBadSLO containing %q", tc.in, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseSLO(%q): %v", tc.in, err)
			}
			if len(got.Clauses) != len(tc.want) {
				t.Fatalf("got %d clauses %+v, want %d", len(got.Clauses), got.Clauses, len(tc.want))
			}
			for i := range tc.want {
				if got.Clauses[i] != tc.want[i] {
					t.Errorf("clause %d: got %+v, want %+v", i, got.Clauses[i], tc.want[i])
				}
			}
		})
	}
}

func TestSLOEvaluate(t *testing.T) {
	res := &Result{
		Offered: 1000, Responses: 990, Errors: 10, HitRatio: 0.93,
		Latency: Latency{Mean: 30 * time.Millisecond, Max: 900 * time.Millisecond, Quantiles: []Quantile{
			{50, 20 * time.Millisecond}, {95, 240 * time.Millisecond}, {99, 600 * time.Millisecond}, {100, 900 * time.Millisecond},
		}},
	}
	tests := []struct {
		slo  string
		held bool
	}{
		{"p95<250ms", true},
		{"p95<240ms", false},
		{"p95<=240ms", true},
		{"p99<500ms", false},
		{"p50<25ms,p95<250ms", true},
		{"p95<250ms,errors=0", false},
		{"errors<=10", true},
		{"errors<1%", false},
		{"errors<=1%", true},
		{"hit_ratio>=90%", true},
		{"hit_ratio>95%", false},
		{"mean<50ms,max<1s", true},
		{"achieved>=99%", true},
		{"achieved>99%", false},
		{"p97<500ms", false}, // no 97th quantile stored: the 99th (600ms) is the upper bound used
	}
	for _, tc := range tests {
		t.Run(tc.slo, func(t *testing.T) {
			slo, err := ParseSLO(tc.slo)
			if err != nil {
				t.Fatal(err)
			}
			v := slo.Evaluate(res)
			if v.Held != tc.held {
				t.Errorf("held %v, want %v (%s)", v.Held, tc.held, v)
			}
			if prefix := map[bool]string{true: "SLO held:", false: "SLO VIOLATED:"}[tc.held]; !strings.HasPrefix(v.String(), prefix) {
				t.Errorf("verdict line %q, want prefix %q", v, prefix)
			}
		})
	}
}

func FuzzParseSLO(f *testing.F) {
	for _, s := range []string{"p95<250ms,p99<500ms,errors=0", "errors<0.1%", "hit_ratio>=90%", "p99.99<=1s", "", ",", "p<", "max<1h2m"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		slo, err := ParseSLO(s)
		if err != nil {
			if !errors.Is(err, ErrBadSLO) {
				t.Fatalf("error %v does not wrap ErrBadSLO", err)
			}
			return
		}
		// A parsed SLO evaluates without panicking and round-trips.
		_ = slo.Evaluate(&Result{}).String()
		again, err := ParseSLO(slo.String())
		if err != nil || len(again.Clauses) != len(slo.Clauses) {
			t.Fatalf("round trip of %q: %v", slo.String(), err)
		}
	})
}

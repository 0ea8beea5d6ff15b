package bench

import (
	"context"
	"fmt"
	"time"
)

// CapacityConfig configures a capacity search.
type CapacityConfig struct {
	// SLO decides whether a rate is sustainable. Required.
	SLO SLO

	// Start is the first rate tried, in req/s. Default 50.
	Start float64

	// Max bounds the search, in req/s: when the SLO still holds at Max the
	// search stops and reports Max with Bracketed false. Default 1e6.
	Max float64

	// StepDuration is the length of each steady step. Default 10 s.
	StepDuration time.Duration

	// Precision ends the bisection once (high-low)/low <= Precision.
	// Default 0.05 (±5 %).
	Precision float64

	// MaxSteps bounds the number of steps. Default 40.
	MaxSteps int

	// OnStep, when set, is called after every step with its result (the
	// Verdict is filled). It must not block.
	OnStep func(*Result)
}

// CapacityResult is the outcome of a capacity search.
type CapacityResult struct {
	// Rate is the highest offered rate, in req/s, at which the SLO held;
	// zero when it held at no rate tried.
	Rate float64 `json:"rate"`
	// Bracketed is true when the SLO broke at a rate at most Precision above
	// Rate, i.e. Rate is the capacity and not just a lower bound.
	Bracketed bool `json:"bracketed"`
	// Limit is the lowest rate at which the SLO broke (0 if none did).
	Limit float64 `json:"limit"`
	SLO   string  `json:"slo"`
	// Best is the step run at Rate; Steps are all steps in order.
	Best  *Result   `json:"best,omitempty"`
	Steps []*Result `json:"steps"`
}

func (cc *CapacityConfig) fill() error {
	if len(cc.SLO.Clauses) == 0 {
		return fmt.Errorf("%w: capacity search needs an SLO", ErrBadConfig)
	}
	if cc.Start == 0 {
		cc.Start = 50
	}
	if cc.Max == 0 {
		cc.Max = 1e6
	}
	if cc.StepDuration == 0 {
		cc.StepDuration = 10 * time.Second
	}
	if cc.Precision == 0 {
		cc.Precision = 0.05
	}
	if cc.MaxSteps == 0 {
		cc.MaxSteps = 40
	}
	switch {
	case cc.Start < 0 || cc.Max < cc.Start:
		return fmt.Errorf("%w: capacity range %v..%v req/s is empty", ErrBadConfig, cc.Start, cc.Max)
	case cc.StepDuration < 0 || cc.Precision <= 0 || cc.Precision >= 1 || cc.MaxSteps < 2:
		return fmt.Errorf("%w: step %v, precision %v, max steps %d out of range", ErrBadConfig, cc.StepDuration, cc.Precision, cc.MaxSteps)
	}
	return nil
}

// Capacity searches for the highest steady rate at which cc.SLO holds:
// it doubles the rate from cc.Start until the SLO breaks, then bisects
// between the last rate that held and the first that broke until they are
// within cc.Precision. Each step is a separate steady run, so a queue built
// by an overloaded step drains (in-flight requests are awaited) before the
// next one starts.
func (r *Runner) Capacity(ctx context.Context, cc CapacityConfig) (*CapacityResult, error) {
	if err := cc.fill(); err != nil {
		return nil, err
	}
	out := &CapacityResult{SLO: cc.SLO.String()}
	step := func(rate float64) (bool, error) {
		sc := Steady(rate, cc.StepDuration)
		sc.Name = fmt.Sprintf("capacity %.0f/s", rate)
		res, err := r.Run(ctx, sc)
		if err != nil {
			return false, err
		}
		v := cc.SLO.Evaluate(res)
		res.Verdict = &v
		out.Steps = append(out.Steps, res)
		if cc.OnStep != nil {
			cc.OnStep(res)
		}
		if v.Held && rate >= out.Rate {
			out.Rate, out.Best = rate, res
		}
		return v.Held, nil
	}
	lo, hi := 0.0, 0.0 // last rate that held, first that broke
	for rate := cc.Start; len(out.Steps) < cc.MaxSteps; rate = min(rate*2, cc.Max) {
		held, err := step(rate)
		if err != nil {
			return out, err
		}
		if !held {
			hi = rate
			break
		}
		lo = rate
		if rate >= cc.Max {
			return out, nil
		}
	}
	if hi == 0 {
		return out, nil // step budget spent while ramping
	}
	if lo == 0 { // broke at the first step: bisect down towards zero
		lo = cc.Start / 16
	}
	for (hi-lo)/lo > cc.Precision && len(out.Steps) < cc.MaxSteps {
		mid := (lo + hi) / 2
		held, err := step(mid)
		if err != nil {
			return out, err
		}
		if held {
			lo = mid
		} else {
			hi = mid
		}
	}
	out.Limit = hi
	out.Bracketed = out.Rate > 0 && (hi-out.Rate)/out.Rate <= cc.Precision
	return out, nil
}

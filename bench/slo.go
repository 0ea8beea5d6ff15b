package bench

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// ErrBadSLO is wrapped by every error ParseSLO returns.
var ErrBadSLO = errors.New("bad slo")

// Op is a comparison operator of an SLO clause.
type Op string

// The operators an SLO clause may use. "==" is accepted as a spelling of "=".
const (
	OpLess      Op = "<"
	OpLessEq    Op = "<="
	OpGreater   Op = ">"
	OpGreaterEq Op = ">="
	OpEqual     Op = "="
)

// Clause is one parsed SLO condition such as "p95<250ms".
//
// Metric is one of "pNN" (a latency percentile, e.g. p50, p99.9), "mean",
// "max", "errors", "hit_ratio" or "achieved". Latency metrics compare a
// time.Duration (Value is in nanoseconds); "errors" compares a count, or a
// fraction of all requests when Percent is set; "hit_ratio" (hits among
// responses that carried a Cache-Status header) and "achieved" (completed
// requests over offered requests) compare a fraction in [0, 1], written as a
// percentage or a plain fraction.
type Clause struct {
	Text     string  `json:"text"`
	Metric   string  `json:"metric"`
	Quantile float64 `json:"quantile,omitempty"` // percent, for pNN
	Op       Op      `json:"op"`
	Value    float64 `json:"value"`
	Percent  bool    `json:"percent,omitempty"` // "errors" given as a fraction
}

// SLO is a conjunction of clauses: it holds when every clause holds.
type SLO struct {
	Clauses []Clause `json:"clauses"`
}

// ParseSLO parses a comma-separated list of clauses, for example
// "p95<250ms,p99<500ms,errors=0". Spaces are ignored. An empty string is an
// error: an SLO that checks nothing would always pass.
func ParseSLO(s string) (SLO, error) {
	var slo SLO
	s = strings.Join(strings.Fields(s), "")
	if s == "" {
		return slo, fmt.Errorf("%w: empty expression (example: p95<250ms,errors=0)", ErrBadSLO)
	}
	for _, part := range strings.Split(s, ",") {
		c, err := parseClause(part)
		if err != nil {
			return SLO{}, err
		}
		slo.Clauses = append(slo.Clauses, c)
	}
	return slo, nil
}

// String returns the canonical text of the SLO.
func (s SLO) String() string {
	parts := make([]string, len(s.Clauses))
	for i, c := range s.Clauses {
		parts[i] = c.Text
	}
	return strings.Join(parts, ",")
}

func parseClause(text string) (Clause, error) {
	c := Clause{Text: text}
	if text == "" {
		return c, fmt.Errorf("%w: empty clause (two commas in a row?)", ErrBadSLO)
	}
	i := strings.IndexAny(text, "<>=!")
	if i <= 0 {
		return c, fmt.Errorf("%w: clause %q: want <metric><op><value>, e.g. p99<500ms", ErrBadSLO, text)
	}
	metric, rest := strings.ToLower(text[:i]), text[i:]
	switch {
	case strings.HasPrefix(rest, "<="), strings.HasPrefix(rest, ">="), strings.HasPrefix(rest, "=="):
		c.Op, rest = Op(rest[:2]), rest[2:]
		if c.Op == "==" {
			c.Op = OpEqual
		}
	case strings.HasPrefix(rest, "<"), strings.HasPrefix(rest, ">"), strings.HasPrefix(rest, "="):
		c.Op, rest = Op(rest[:1]), rest[1:]
	default:
		return c, fmt.Errorf("%w: clause %q: unknown operator (use <, <=, >, >=, =)", ErrBadSLO, text)
	}
	if rest == "" {
		return c, fmt.Errorf("%w: clause %q: missing value after %s", ErrBadSLO, text, c.Op)
	}
	switch {
	case metric == "max" || metric == "mean" || metric == "avg":
		if metric == "avg" {
			metric = "mean"
		}
		c.Metric = metric
		return c, c.parseDuration(rest)
	case strings.HasPrefix(metric, "p"):
		q, err := strconv.ParseFloat(metric[1:], 64)
		if err != nil || math.IsNaN(q) || q <= 0 || q > 100 {
			return c, fmt.Errorf("%w: clause %q: percentile %q must be p<number> with 0 < number <= 100", ErrBadSLO, text, metric)
		}
		c.Metric, c.Quantile = metric, q
		return c, c.parseDuration(rest)
	case metric == "errors" || metric == "error" || metric == "error_rate":
		c.Metric = "errors"
		if strings.HasSuffix(rest, "%") {
			c.Percent = true
			return c, c.parseFraction(rest)
		}
		if metric == "error_rate" {
			c.Percent = true
			return c, c.parseFraction(rest)
		}
		n, err := strconv.ParseUint(rest, 10, 63)
		if err != nil {
			return c, fmt.Errorf("%w: clause %q: errors takes a count (errors=0) or a percentage (errors<0.1%%)", ErrBadSLO, text)
		}
		c.Value = float64(n)
		return c, nil
	case metric == "hit_ratio" || metric == "hits" || metric == "achieved":
		if metric == "hits" {
			metric = "hit_ratio"
		}
		c.Metric = metric
		return c, c.parseFraction(rest)
	}
	return c, fmt.Errorf("%w: clause %q: unknown metric %q (want pNN, mean, max, errors, hit_ratio, achieved)", ErrBadSLO, text, metric)
}

func (c *Clause) parseDuration(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return fmt.Errorf("%w: clause %q: %q is not a duration with a unit (e.g. 250ms, 1.5s)", ErrBadSLO, c.Text, s)
	}
	c.Value = float64(d)
	return nil
}

// parseFraction accepts "95%" or "0.95".
func (c *Clause) parseFraction(s string) error {
	pct := strings.HasSuffix(s, "%")
	v, err := strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64)
	if pct {
		v /= 100
	}
	if err != nil || math.IsNaN(v) || v < 0 || v > 1 {
		return fmt.Errorf("%w: clause %q: %q is not a fraction between 0%% and 100%%", ErrBadSLO, c.Text, s)
	}
	c.Value = v
	return nil
}

// Measured is what an SLO is evaluated against; *Result implements it.
type Measured interface {
	// LatencyAt returns the latency at percentile q (0 < q <= 100).
	LatencyAt(q float64) time.Duration
	// Metric returns "mean" and "max" latencies in nanoseconds, "errors" as
	// a count, "error_rate", "hit_ratio" and "achieved" as fractions, and
	// false for an unknown name.
	Metric(name string) (float64, bool)
}

// ClauseVerdict is the outcome of one clause.
type ClauseVerdict struct {
	Clause Clause  `json:"clause"`
	Actual float64 `json:"actual"` // same unit as Clause.Value
	Held   bool    `json:"held"`
}

// Verdict is the outcome of an SLO against one measurement.
type Verdict struct {
	Held    bool            `json:"held"`
	Clauses []ClauseVerdict `json:"clauses"`
}

// Evaluate checks every clause against m.
func (s SLO) Evaluate(m Measured) Verdict {
	v := Verdict{Held: true}
	for _, c := range s.Clauses {
		var actual float64
		switch {
		case c.Quantile > 0:
			actual = float64(m.LatencyAt(c.Quantile))
		case c.Metric == "errors" && c.Percent:
			actual, _ = m.Metric("error_rate")
		default:
			actual, _ = m.Metric(c.Metric)
		}
		held := compare(actual, c.Op, c.Value)
		v.Clauses = append(v.Clauses, ClauseVerdict{Clause: c, Actual: actual, Held: held})
		v.Held = v.Held && held
	}
	return v
}

func compare(a float64, op Op, b float64) bool {
	switch op {
	case OpLess:
		return a < b
	case OpLessEq:
		return a <= b
	case OpGreater:
		return a > b
	case OpGreaterEq:
		return a >= b
	case OpEqual:
		return a == b
	}
	return false
}

// String is the one-line verdict, e.g.
// "SLO held: p95 12.1ms<250ms ok, errors 0=0 ok".
func (v Verdict) String() string {
	var b strings.Builder
	if v.Held {
		b.WriteString("SLO held: ")
	} else {
		b.WriteString("SLO VIOLATED: ")
	}
	for i, cv := range v.Clauses {
		if i > 0 {
			b.WriteString(", ")
		}
		mark := "ok"
		if !cv.Held {
			mark = "FAIL"
		}
		fmt.Fprintf(&b, "%s %s%s%s %s", cv.Clause.Metric, cv.Clause.format(cv.Actual), cv.Clause.Op,
			cv.Clause.format(cv.Clause.Value), mark)
	}
	return b.String()
}

func (c Clause) format(v float64) string {
	switch {
	case c.Quantile > 0 || c.Metric == "mean" || c.Metric == "max":
		return fmtDur(time.Duration(v))
	case c.Metric == "errors" && !c.Percent:
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	return strconv.FormatFloat(v*100, 'g', 4, 64) + "%"
}

// fmtDur prints a duration with three significant digits.
func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return strconv.FormatFloat(d.Seconds(), 'f', 2, 64) + "s"
	case d >= time.Millisecond:
		return strconv.FormatFloat(float64(d)/1e6, 'f', 1, 64) + "ms"
	}
	return strconv.FormatFloat(float64(d)/1e3, 'f', 0, 64) + "µs"
}

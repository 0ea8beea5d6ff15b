package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is everything one invocation measured, the unit of the JSON and
// HTML reports.
type Report struct {
	Title     string          `json:"title"`
	Generated time.Time       `json:"generated"`
	Results   []*Result       `json:"results"`
	Capacity  *CapacityResult `json:"capacity,omitempty"`
}

// WriteJSON writes the report as indented JSON.
func (rep *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(rep); err != nil {
		return fmt.Errorf("writing json report: %w", err)
	}
	return nil
}

// ReadReport decodes a report written by WriteJSON. Decoded results answer
// LatencyAt from their stored quantiles.
func ReadReport(r io.Reader) (*Report, error) {
	var rep Report
	if err := json.NewDecoder(r).Decode(&rep); err != nil {
		return nil, fmt.Errorf("reading json report: %w", err)
	}
	return &rep, nil
}

// WriteText writes the human summary of one run, in the manner of hosted
// load-test services: hits, successes, errors by kind, data transferred,
// average rate and its per-day extrapolation, latency, and the timeline.
func WriteText(w io.Writer, r *Result) error {
	ew := &errWriter{w: w}
	sc := r.Scenario
	ew.printf("%s: ", r.Name)
	switch {
	case sc.Connections > 0:
		ew.printf("closed loop, %d connections, %v\n", sc.Connections, sc.Duration)
	case sc.Duration <= 10*time.Millisecond: // a flash crowd
		ew.printf("burst of %d requests within %v\n", r.Offered, sc.Duration)
	case sc.From == sc.To:
		ew.printf("%.0f req/s for %v\n", sc.From, sc.Duration)
	default:
		ew.printf("%.0f -> %.0f req/s over %v\n", sc.From, sc.To, sc.Duration)
	}
	ew.printf("  hits %d, successful %d, errors %d%s\n", r.Offered, r.OK, r.Errors, errorList(r.ErrorKinds))
	ew.printf("  rate offered %.1f/s, achieved %.1f/s (%s hits/day); elapsed %v, max in flight %d\n",
		r.OfferedRate, r.AchievedRate, humanCount(r.AchievedRate*86400), r.Elapsed.Round(time.Millisecond), r.MaxInFlight)
	ew.printf("  data in %s, out %s\n", humanBytes(r.BytesIn), humanBytes(r.BytesOut))
	if r.CacheStatusResponses > 0 {
		ew.printf("  cache hit ratio %.1f%% (%d of %d responses with Cache-Status)\n",
			100*r.HitRatio, r.Hits, r.CacheStatusResponses)
	}
	if len(r.OriginRequests) > 0 {
		ew.printf("  origin requests %d%s\n", sumCounts(r.OriginRequests), originList(r.OriginRequests))
	}
	l := r.Latency
	ew.printf("  latency min %s mean %s p50 %s p90 %s p95 %s p99 %s p99.9 %s max %s\n",
		fmtDur(l.Min), fmtDur(l.Mean), fmtDur(l.P50), fmtDur(l.P90), fmtDur(l.P95), fmtDur(l.P99), fmtDur(l.P999), fmtDur(l.Max))
	if len(r.Timeline) > 1 {
		ew.printf("  timeline (by scheduled time; achieved by completion time):\n")
		tw := tabwriter.NewWriter(ew, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "    t\toffered/s\tachieved/s\tp50\tp95\tp99\tmax\terrors\t")
		for _, b := range sample(r.Timeline, 30) {
			p50, p95, p99, mx := "-", "-", "-", "-" // no request scheduled in the bucket got an answer
			if b.Max > 0 {
				p50, p95, p99, mx = fmtDur(b.P50), fmtDur(b.P95), fmtDur(b.P99), fmtDur(b.Max)
			}
			fmt.Fprintf(tw, "    %s\t%.0f\t%.0f\t%s\t%s\t%s\t%s\t%d\t\n", b.Start.Round(time.Millisecond), b.OfferedRate, b.AchievedRate,
				p50, p95, p99, mx, b.ErrorCount())
		}
		tw.Flush()
	}
	if r.Verdict != nil {
		ew.printf("  %s\n", r.Verdict)
	}
	return ew.err
}

// WriteCapacityText summarises a capacity search, one line per step.
func WriteCapacityText(w io.Writer, c *CapacityResult) error {
	ew := &errWriter{w: w}
	tw := tabwriter.NewWriter(ew, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "step\toffered/s\tachieved/s\tp50\tp95\tp99\terrors\tSLO\t")
	for i, s := range c.Steps {
		verdict := "held"
		if s.Verdict != nil && !s.Verdict.Held {
			verdict = "VIOLATED"
		}
		fmt.Fprintf(tw, "%d\t%.0f\t%.1f\t%s\t%s\t%s\t%d\t%s\t\n", i+1, s.Scenario.From, s.AchievedRate,
			fmtDur(s.Latency.P50), fmtDur(s.Latency.P95), fmtDur(s.Latency.P99), s.Errors, verdict)
	}
	tw.Flush()
	switch {
	case c.Rate == 0:
		ew.printf("capacity: the SLO %s held at no rate tried (lowest %.0f/s)\n", c.SLO, c.Limit)
	case c.Bracketed:
		ew.printf("capacity: %.0f req/s with %s (broke at %.0f req/s)\n", c.Rate, c.SLO, c.Limit)
	default:
		ew.printf("capacity: at least %.0f req/s with %s (search limit reached)\n", c.Rate, c.SLO)
	}
	return ew.err
}

// WriteTable writes one comparison row per result: rate, latency, errors,
// origin requests and hit ratio.
func WriteTable(w io.Writer, results []*Result) error {
	ew := &errWriter{w: w}
	tw := tabwriter.NewWriter(ew, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "run\treq/s\tp50\tp99\terrors\torigin reqs\thit ratio\t")
	for _, r := range results {
		origin := "-"
		if r.OriginRequests != nil {
			origin = strconv.FormatInt(sumCounts(r.OriginRequests), 10)
		}
		hit := "-"
		if r.CacheStatusResponses > 0 {
			hit = fmt.Sprintf("%.1f%%", 100*r.HitRatio)
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%s\t%s\t%d\t%s\t%s\t\n", r.Name, r.AchievedRate, fmtDur(r.Latency.P50),
			fmtDur(r.Latency.P99), r.Errors, origin, hit)
	}
	tw.Flush()
	return ew.err
}

type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}

func (e *errWriter) printf(format string, args ...any) { fmt.Fprintf(e, format, args...) }

func errorList(kinds map[string]int64) string {
	var parts []string
	for _, k := range sortedKinds(kinds) {
		if n := kinds[k]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, n))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

func originList(m map[string]int64) string {
	if len(m) > 8 {
		return fmt.Sprintf(" over %d objects", len(m))
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

func sumCounts(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// sample returns at most n buckets, evenly spaced, always the last one.
func sample(b []Bucket, n int) []Bucket {
	if len(b) <= n {
		return b
	}
	out := make([]Bucket, 0, n)
	for i := range n {
		out = append(out, b[i*(len(b)-1)/(n-1)])
	}
	return out
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

func humanCount(v float64) string {
	switch {
	case v >= 1e9:
		return fmt.Sprintf("%.1fG", v/1e9)
	case v >= 1e6:
		return fmt.Sprintf("%.1fM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

package bench

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// Result holds every figure of one run. Durations are in nanoseconds in
// JSON (field names end in _ns); rates are per second.
type Result struct {
	Name     string    `json:"name"`
	Scenario Scenario  `json:"scenario"`
	Start    time.Time `json:"start"`
	// Elapsed runs from the start to the last response (the scheduling
	// window plus the tail of requests in flight at its end).
	Elapsed time.Duration `json:"elapsed_ns"`
	// MaxInFlight is the bound used for the run (closed loop: connections).
	MaxInFlight int `json:"max_in_flight"`

	Offered   int64 `json:"offered"`   // requests scheduled
	Sent      int64 `json:"sent"`      // requests sent (Offered minus client-overload)
	Responses int64 `json:"responses"` // complete HTTP responses, any status
	OK        int64 `json:"ok"`        // responses with status < 400
	Errors    int64 `json:"errors"`    // all errors, every kind
	// ErrorKinds counts errors by kind (Kind* constants); kinds with zero
	// errors are present too, so that tables have stable columns.
	ErrorKinds map[string]int64 `json:"error_kinds"`

	BytesIn  int64 `json:"bytes_in"`  // read from connections, headers and TLS included
	BytesOut int64 `json:"bytes_out"` // written to connections

	// CacheStatusResponses counts responses carrying a Cache-Status header;
	// Hits those whose Cache-Status says "hit". HitRatio is Hits over
	// CacheStatusResponses, 0 when no response carried the header.
	CacheStatusResponses int64   `json:"cache_status_responses"`
	Hits                 int64   `json:"hits"`
	HitRatio             float64 `json:"hit_ratio"`

	// OfferedRate is Offered / Scenario.Duration. AchievedRate is Responses
	// over Elapsed (to the last response), so that a burst (flash crowd)
	// reports the rate it was actually served at, and a tail of slow
	// responses lowers it as it should.
	OfferedRate  float64 `json:"offered_rate"`
	AchievedRate float64 `json:"achieved_rate"`

	Latency  Latency  `json:"latency"`
	Timeline []Bucket `json:"timeline"`

	// OriginRequests, when known, counts the requests the origin received
	// during the run per path (filled by callers that can read the origin's
	// counters, e.g. the CLI's --origin-counts).
	OriginRequests map[string]int64 `json:"origin_requests,omitempty"`

	// Verdict is set by callers that evaluated an SLO.
	Verdict *Verdict `json:"verdict,omitempty"`

	hist *hdr.Histogram // nil for results decoded from JSON
}

// Latency summarises the latency distribution, measured from each
// request's intended send time.
type Latency struct {
	Min       time.Duration `json:"min_ns"`
	Mean      time.Duration `json:"mean_ns"`
	P50       time.Duration `json:"p50_ns"`
	P90       time.Duration `json:"p90_ns"`
	P95       time.Duration `json:"p95_ns"`
	P99       time.Duration `json:"p99_ns"`
	P999      time.Duration `json:"p999_ns"`
	Max       time.Duration `json:"max_ns"`
	Quantiles []Quantile    `json:"quantiles"` // the distribution, for plots and for SLOs on decoded results
	Count     int64         `json:"count"`     // requests in the distribution
}

// Quantile is one point of the latency distribution.
type Quantile struct {
	Percent float64       `json:"percent"`
	Latency time.Duration `json:"latency_ns"`
}

var reportedQuantiles = [...]float64{1, 5, 10, 25, 50, 75, 90, 95, 97.5, 99, 99.5, 99.9, 99.99, 99.999, 100}

// Bucket is one interval of the timeline. Offered, OK, Errors and the
// latency percentiles belong to the requests *scheduled* in the interval, so
// a stall is charged to the requests that met it; Responses counts the
// responses *received* in the interval (the achieved throughput).
type Bucket struct {
	Start        time.Duration    `json:"start_ns"` // offset from the run's start
	Width        time.Duration    `json:"width_ns"`
	Offered      int64            `json:"offered"`
	OK           int64            `json:"ok"`
	Responses    int64            `json:"responses"`
	Errors       map[string]int64 `json:"errors,omitempty"` // non-zero kinds only
	OfferedRate  float64          `json:"offered_rate"`
	AchievedRate float64          `json:"achieved_rate"`
	P50          time.Duration    `json:"p50_ns"`
	P95          time.Duration    `json:"p95_ns"`
	P99          time.Duration    `json:"p99_ns"`
	Max          time.Duration    `json:"max_ns"`
}

// ErrorCount sums the bucket's errors.
func (b Bucket) ErrorCount() int64 {
	var n int64
	for _, v := range b.Errors {
		n += v
	}
	return n
}

// LatencyAt returns the latency at percentile q (0 < q <= 100). For a
// result decoded from JSON it returns the smallest recorded quantile at or
// above q, an upper bound.
func (r *Result) LatencyAt(q float64) time.Duration {
	if r.hist != nil {
		return us(r.hist.ValueAtQuantile(q))
	}
	for _, p := range r.Latency.Quantiles {
		if p.Percent >= q {
			return p.Latency
		}
	}
	return r.Latency.Max
}

// Metric implements Measured.
func (r *Result) Metric(name string) (float64, bool) {
	switch name {
	case "mean":
		return float64(r.Latency.Mean), true
	case "max":
		return float64(r.Latency.Max), true
	case "errors":
		return float64(r.Errors), true
	case "error_rate":
		if r.Offered == 0 {
			return 0, true
		}
		return float64(r.Errors) / float64(r.Offered), true
	case "hit_ratio":
		return r.HitRatio, true
	case "achieved":
		if r.Offered == 0 {
			return 0, true
		}
		return float64(r.Responses) / float64(r.Offered), true
	}
	return 0, false
}

func us(v int64) time.Duration { return time.Duration(v) * time.Microsecond }

// summarize fills a Latency from a histogram.
func summarize(h *hdr.Histogram) Latency {
	l := Latency{Count: h.TotalCount()}
	if l.Count == 0 {
		return l
	}
	l.Min, l.Max = us(h.Min()), us(h.Max())
	l.Mean = time.Duration(h.Mean() * float64(time.Microsecond))
	l.P50, l.P90, l.P95 = us(h.ValueAtQuantile(50)), us(h.ValueAtQuantile(90)), us(h.ValueAtQuantile(95))
	l.P99, l.P999 = us(h.ValueAtQuantile(99)), us(h.ValueAtQuantile(99.9))
	for _, q := range reportedQuantiles {
		l.Quantiles = append(l.Quantiles, Quantile{Percent: q, Latency: us(h.ValueAtQuantile(q))})
	}
	return l
}

// result assembles the Result once every worker has finished.
func (rn *run) result(end time.Time) *Result {
	h, _ := rn.merge()
	r := &Result{
		Name:        rn.sc.Name,
		Scenario:    rn.sc,
		Start:       rn.start,
		Elapsed:     end.Sub(rn.start),
		MaxInFlight: rn.maxInFlight,
		ErrorKinds:  make(map[string]int64, numKinds),
		BytesIn:     rn.bytesIn.Load(),
		BytesOut:    rn.bytesOut.Load(),
		Latency:     summarize(h),
		hist:        h,
	}
	var errs [numKinds]int64
	for _, sh := range rn.shards {
		sh.mu.Lock()
		r.Responses += sh.responses
		r.OK += sh.ok
		r.CacheStatusResponses += sh.cacheResp
		r.Hits += sh.hits
		for k, n := range sh.errs {
			errs[k] += n
		}
		sh.mu.Unlock()
	}
	for k, n := range errs {
		r.ErrorKinds[kindNames[k]] = n
		r.Errors += n
	}
	r.Timeline = rn.timeline.buckets(end.Sub(rn.start))
	for _, b := range r.Timeline {
		r.Offered += b.Offered
	}
	r.Sent = r.Offered - errs[kOverload]
	if r.CacheStatusResponses > 0 {
		r.HitRatio = float64(r.Hits) / float64(r.CacheStatusResponses)
	}
	r.OfferedRate = float64(r.Offered) / rn.sc.Duration.Seconds()
	r.AchievedRate = float64(r.Responses) / max(r.Elapsed, rn.sc.Duration).Seconds()
	return r
}

// timeline keeps per-interval counters and histograms, indexed by offset
// from the run's start.
type timeline struct {
	width      time.Duration
	maxLatency int64
	b          []tbucket
}

type tbucket struct {
	offered   atomic.Int64 // by intended time
	ok        atomic.Int64 // by intended time
	responses atomic.Int64 // by completion time
	errs      [numKinds]atomic.Int64

	mu   sync.Mutex     // guards hist
	hist *hdr.Histogram // by intended time; allocated on first use
}

func newTimeline(width, span time.Duration, maxLatency int64) *timeline {
	n := int(span/width) + 1
	return &timeline{width: width, maxLatency: maxLatency, b: make([]tbucket, n)}
}

func (t *timeline) at(off time.Duration) *tbucket {
	i := int(off / t.width)
	return &t.b[min(max(i, 0), len(t.b)-1)]
}

func (t *timeline) record(sched, done time.Duration, lat int64, rec bool, kind int, resp bool) {
	b := t.at(sched)
	if kind == kNone {
		b.ok.Add(1)
	} else {
		b.errs[kind].Add(1)
	}
	if resp {
		t.at(done).responses.Add(1)
	}
	if !rec {
		return
	}
	b.mu.Lock()
	if b.hist == nil {
		b.hist = hdr.New(1, t.maxLatency, bucketHistSigFigs)
	}
	b.hist.RecordValue(lat) //nolint:errcheck // caller clamps
	b.mu.Unlock()
}

func (t *timeline) totals() (offered, responses int64) {
	for i := range t.b {
		offered += t.b[i].offered.Load()
		responses += t.b[i].responses.Load()
	}
	return offered, responses
}

// buckets exports the intervals up to elapsed, dropping trailing empty ones.
func (t *timeline) buckets(elapsed time.Duration) []Bucket {
	n := min(int(elapsed/t.width)+1, len(t.b))
	out := make([]Bucket, 0, n)
	for i := range n {
		tb := &t.b[i]
		b := Bucket{
			Start:     time.Duration(i) * t.width,
			Width:     t.width,
			Offered:   tb.offered.Load(),
			OK:        tb.ok.Load(),
			Responses: tb.responses.Load(),
		}
		for k := range tb.errs {
			if v := tb.errs[k].Load(); v > 0 {
				if b.Errors == nil {
					b.Errors = map[string]int64{}
				}
				b.Errors[kindNames[k]] = v
			}
		}
		secs := t.width.Seconds()
		b.OfferedRate, b.AchievedRate = float64(b.Offered)/secs, float64(b.Responses)/secs
		tb.mu.Lock()
		if h := tb.hist; h != nil {
			b.P50, b.P95, b.P99, b.Max = us(h.ValueAtQuantile(50)), us(h.ValueAtQuantile(95)), us(h.ValueAtQuantile(99)), us(h.Max())
		}
		tb.mu.Unlock()
		out = append(out, b)
	}
	for len(out) > 0 {
		last := out[len(out)-1]
		if last.Offered != 0 || last.Responses != 0 || last.OK != 0 || len(last.Errors) != 0 {
			break
		}
		out = out[:len(out)-1]
	}
	return out
}

// sortedKinds returns error kinds in a fixed order for tables.
func sortedKinds(m map[string]int64) []string {
	order := map[string]int{}
	for i, k := range kindNames {
		order[k] = i
	}
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Slice(ks, func(i, j int) bool {
		oi, iok := order[ks[i]]
		oj, jok := order[ks[j]]
		if iok != jok {
			return iok
		}
		if oi != oj {
			return oi < oj
		}
		return ks[i] < ks[j]
	})
	return ks
}

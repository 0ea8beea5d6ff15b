package edge

import (
	"io"
	"math"
	"net/http"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// TestMetricsAfterTraffic drives each outcome through a real node and checks
// the counters and the histogram's per-outcome counts on GET /metrics.
func TestMetricsAfterTraffic(t *testing.T) {
	clk := newTestClock()
	o := newTestOrigin(t, clk, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/c":
			static("cached", "Cache-Control: max-age=600", `ETag: "c"`)(w, r)
		case "/s":
			static("swr", "Cache-Control: max-age=1, stale-while-revalidate=600", `ETag: "s"`)(w, r)
		case "/p":
			static("private", "Cache-Control: no-store")(w, r)
		case "/e":
			panic(http.ErrAbortHandler) // the connection dies without an answer: 502
		default:
			io.WriteString(w, "ok")
		}
	})
	n := newTestNode(t, o.srv.URL, clk, nil)
	base := "http://" + n.Addr()

	steps := []struct {
		method, path string
		hdr          []string
		status       int
		want         string // cache label of the request
	}{
		{"GET", "/c", nil, 200, "miss"},
		{"GET", "/c", nil, 200, "hit"},
		{"HEAD", "/c", nil, 200, "hit"},
		{"GET", "/c", []string{`If-None-Match: "c"`}, 304, "hit"},
		{"GET", "/c", []string{"Range: bytes=0-1"}, 206, "hit"},
		{"GET", "/p", nil, 200, "pass"},
		{"POST", "/form", nil, 200, "pass"},
		{"GET", "/e", nil, 502, "error"},
		{"GET", "/s", nil, 200, "miss"},
		{"ADVANCE", "", nil, 0, ""},
		{"GET", "/s", nil, 200, "stale"}, // and ONE background revalidation: a 304
	}
	wantHist := map[string]int{}
	for _, s := range steps {
		if s.method == "ADVANCE" {
			clk.advance(10 * time.Second)
			continue
		}
		r, _ := do(t, s.method, base+s.path, s.hdr...)
		if r.StatusCode != s.status {
			t.Fatalf("%s %s: got %d, want %d (Cache-Status %q)", s.method, s.path, r.StatusCode, s.status, csOf(r))
		}
		waitFor(t, "fills and revalidations to finish", 5*time.Second, func() bool { return n.pipe.flights.Len() == 0 })
		wantHist[s.want]++
	}

	m := scrape(t, "http://"+n.AdminAddr()+"/metrics")
	for name, want := range map[string]float64{
		`edgeshield_requests_total{proto="h1"}`:                       10,
		`edgeshield_requests_total{proto="h2"}`:                       0,
		`edgeshield_requests_total{proto="h3"}`:                       0,
		"edgeshield_cache_hits_total":                                 5, // 4 hits, 1 stale
		"edgeshield_cache_misses_total":                               4, // /c, /p, /e, /s
		"edgeshield_cache_stale_served_total":                         1,
		"edgeshield_cache_passes_total":                               1, // /p; the POST is not a GET/HEAD miss
		"edgeshield_origin_fetches_total":                             6, // /c, /p, POST, /e, /s, /s revalidation
		"edgeshield_origin_errors_total":                              1,
		"edgeshield_errors_total":                                     1,
		"edgeshield_coalesced_waiters_total":                          0,
		"edgeshield_cache_revalidated_total":                          1,
		"edgeshield_cache_background_revalidations_total":             1,
		"edgeshield_cache_entries":                                    2,
		"edgeshield_cache_max_bytes":                                  64 << 20,
		"edgeshield_fetches_in_flight":                                0,
		"edgeshield_draining":                                         0,
		"edgeshield_cluster_alive_members":                            0,
		`edgeshield_info{node="edge-test",version="` + Version + `"}`: 1,
	} {
		if got, ok := m[name]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", name, got, ok, want)
		}
	}
	for _, label := range outcomeLabels[outHit:] {
		key := `edgeshield_request_duration_seconds_count{cache="` + label + `"}`
		if got, want := m[key], float64(wantHist[label]); got != want {
			t.Errorf("%s = %v, want %v", key, got, want)
		}
	}
}

// TestMetricsCoverStats keeps statMetrics and Stats in step: every numeric
// field of Stats has one metric (or is listed in derivedStats), each metric
// reads its own field, and each is on /metrics.
func TestMetricsCoverStats(t *testing.T) {
	// Give every numeric field a distinct value, so a metric reading the
	// wrong field shows.
	var s Stats
	want := map[string]float64{}
	v := reflect.ValueOf(&s).Elem()
	for i := 0; i < v.NumField(); i++ {
		f, fv := v.Type().Field(i), v.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		val := float64(i + 1)
		switch fv.Kind() {
		case reflect.Int, reflect.Int64:
			fv.SetInt(int64(val))
		case reflect.Uint64:
			fv.SetUint(uint64(val))
		case reflect.Float64:
			fv.SetFloat(val)
		case reflect.Bool:
			fv.SetBool(true)
			val = 1
		case reflect.String:
			continue
		default:
			t.Fatalf("Stats.%s: kind %s; teach this test (and statMetrics) about it", f.Name, fv.Kind())
		}
		if name == "" || name == "-" {
			t.Fatalf("Stats.%s has no json name", f.Name)
		}
		want[name] = val
	}
	seenStat, seenName := map[string]bool{}, map[string]bool{}
	for _, m := range statMetrics {
		w, ok := want[m.stat]
		if !ok {
			t.Errorf("metric %s exposes %q, which is not a numeric Stats field", m.name, m.stat)
			continue
		}
		if seenStat[m.stat] || seenName[m.name+m.labels] {
			t.Errorf("metric %s{%s} (%s) listed twice", m.name, m.labels, m.stat)
		}
		seenStat[m.stat], seenName[m.name+m.labels] = true, true
		if got := m.value(&s); got != w {
			t.Errorf("metric %s reads %v, want Stats.%s's %v", m.name, got, m.stat, w)
		}
		if (m.typ == "counter") != strings.HasSuffix(m.name, "_total") || !strings.HasPrefix(m.name, "edgeshield_") {
			t.Errorf("metric %s (%s): want the edgeshield_ prefix, and _total exactly on counters", m.name, m.typ)
		}
	}
	for name := range want {
		if _, derived := derivedStats[name]; !seenStat[name] && !derived {
			t.Errorf("Stats field %q has no metric: add a line to statMetrics", name)
		}
	}

	o := newTestOrigin(t, nil, static("x"))
	n := newTestNode(t, o.srv.URL, nil, nil)
	m := scrape(t, "http://"+n.AdminAddr()+"/metrics")
	for _, sm := range statMetrics {
		key := sm.name
		if sm.labels != "" {
			key += "{" + sm.labels + "}"
		}
		if _, ok := m[key]; !ok {
			t.Errorf("%s missing from /metrics", key)
		}
	}
}

// TestMetricsAccess: /metrics follows the admin listener's rule: with
// admin.token, the bearer token or 401; off loopback, no token is a
// configuration error.
func TestMetricsAccess(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Origin.URL = "http://127.0.0.1:1"
	cfg.Admin.Listen = "0.0.0.0:9090"
	cfg.Admin.Token = ""
	if err := cfg.Validate("", nil); err == nil || !strings.Contains(err.Error(), "admin.token") {
		t.Errorf("admin.listen off loopback without a token: got %v, want an admin.token error", err)
	}

	o := newTestOrigin(t, nil, static("x"))
	n := newTestNode(t, o.srv.URL, nil, func(c *Config) { c.Admin.Token = "s3cret" })
	url := "http://" + n.AdminAddr() + "/metrics"
	for _, h := range [][]string{nil, {"Authorization: Bearer wrong"}, {"Authorization: s3cret"}} {
		if r, b := get(t, url, h...); r.StatusCode != http.StatusUnauthorized || strings.Contains(b, "edgeshield_") {
			t.Errorf("headers %q: got %d, want 401 and no figures", h, r.StatusCode)
		}
	}
	r, b := get(t, url, "Authorization: Bearer s3cret")
	if r.StatusCode != 200 || r.Header.Get("Content-Type") != metricsContentType {
		t.Fatalf("with token: got %d %q, want 200 %q", r.StatusCode, r.Header.Get("Content-Type"), metricsContentType)
	}
	parseExposition(t, b)
}

// TestFreshHitObserved: a hit served through handle (the benchmark's path)
// lands in the hit series.
func TestFreshHitObserved(t *testing.T) {
	o := newTestOrigin(t, nil, static("hit me", "Cache-Control: max-age=3600"))
	n := newTestNode(t, o.srv.URL, nil, nil)
	ctx := warmHit(t, n, "/h")
	before := n.pipe.latency[outHit].count()
	ctx.Response.Reset()
	n.pipe.handle(ctx)
	if got := n.pipe.latency[outHit].count(); got != before+1 {
		t.Errorf("hit series count %d after one more hit, want %d", got, before+1)
	}
}

func (h *durationHistogram) count() uint64 {
	var c uint64
	for i := range h.counts {
		c += h.counts[i].Load()
	}
	return c
}

func TestDurationBuckets(t *testing.T) {
	var r requestDurations
	for _, d := range []time.Duration{0, 100 * time.Microsecond, 100*time.Microsecond + 1, 300 * time.Millisecond, time.Minute, -time.Second} {
		r.observe(outMiss, d)
	}
	r.observe(outNone, time.Second) // not recorded
	m := parseExposition(t, string(r.appendTo(nil)))
	for le, want := range map[string]float64{"0.0001": 3, "0.00025": 4, "0.25": 4, "0.5": 5, "10": 5, "+Inf": 6} {
		key := `edgeshield_request_duration_seconds_bucket{cache="miss",le="` + le + `"}`
		if m[key] != want {
			t.Errorf("%s = %v, want %v", key, m[key], want)
		}
	}
	sum := m[`edgeshield_request_duration_seconds_sum{cache="miss"}`]
	if want := (200*time.Microsecond + 1 + 300*time.Millisecond + time.Minute).Seconds(); math.Abs(sum-want) > 1e-9 {
		t.Errorf("sum = %v, want %v", sum, want)
	}
}

func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	r, b := get(t, url)
	if r.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", url, r.StatusCode, b)
	}
	if ct := r.Header.Get("Content-Type"); ct != metricsContentType {
		t.Errorf("Content-Type %q, want %q", ct, metricsContentType)
	}
	return parseExposition(t, b)
}

var (
	reName   = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
	reSample = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$`)
	reLabel  = regexp.MustCompile(`^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)`)
)

// parseExposition checks text against the Prometheus text format (0.0.4)
// strictly (no github.com/prometheus/common in this module): every family
// has HELP then TYPE before its samples, names and labels are well formed,
// values parse, no sample repeats, counters end in _total, and each
// histogram's le buckets increase, their counts never decrease, and the
// last is +Inf and equals _count. It returns the samples by their name and
// labels as written.
func parseExposition(t *testing.T, text string) map[string]float64 {
	t.Helper()
	if !strings.HasSuffix(text, "\n") {
		t.Fatalf("exposition does not end with a newline")
	}
	samples := map[string]float64{}
	families := map[string]string{} // name → type
	var family, typ, help string
	type hist struct {
		les    []float64
		counts []float64
		count  float64
		hasCnt bool
		hasSum bool
	}
	hists := map[string]*hist{} // family + labels without le
	for i, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		fail := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("line %d %q: "+format, append([]any{i + 1, line}, args...)...)
		}
		switch {
		case strings.HasPrefix(line, "# HELP "):
			name, text, ok := strings.Cut(strings.TrimPrefix(line, "# HELP "), " ")
			if !ok || !reName.MatchString(name) || strings.TrimSpace(text) == "" {
				fail("want # HELP <name> <text>")
			}
			if _, dup := families[name]; dup {
				fail("family %s described twice", name)
			}
			family, typ, help = name, "", text
			families[name] = ""
		case strings.HasPrefix(line, "# TYPE "):
			name, ty, ok := strings.Cut(strings.TrimPrefix(line, "# TYPE "), " ")
			if !ok || name != family || typ != "" || help == "" {
				fail("want # TYPE right after the family's # HELP")
			}
			switch ty {
			case "counter":
				if !strings.HasSuffix(name, "_total") {
					fail("counter without _total")
				}
			case "gauge", "histogram":
			default:
				fail("unknown type %q", ty)
			}
			typ = ty
			families[name] = ty
		case strings.HasPrefix(line, "#") || line == "":
			fail("unexpected comment or empty line")
		default:
			sm := reSample.FindStringSubmatch(line)
			if sm == nil {
				fail("want name{labels} value")
			}
			name, labels, val := sm[1], sm[2], sm[3]
			if typ == "" {
				fail("sample before its family's # TYPE")
			}
			suffix := strings.TrimPrefix(name, family)
			switch {
			case typ == "histogram" && (suffix == "_bucket" || suffix == "_sum" || suffix == "_count"):
			case suffix == "" && name == family:
			default:
				fail("sample of another family than %s", family)
			}
			v, err := strconv.ParseFloat(val, 64)
			if err != nil {
				fail("value: %v", err)
			}
			le, rest := "", []string{}
			if labels != "" {
				ls := labels[1 : len(labels)-1]
				seen := map[string]bool{}
				for ls != "" {
					lm := reLabel.FindStringSubmatch(ls)
					if lm == nil {
						fail("malformed labels at %q", ls)
					}
					if seen[lm[1]] {
						fail("label %s repeated", lm[1])
					}
					seen[lm[1]] = true
					if lm[1] == "le" {
						le = lm[2]
					} else {
						rest = append(rest, lm[1]+"="+lm[2])
					}
					ls = ls[len(lm[0]):]
				}
			}
			key := name + labels
			if _, dup := samples[key]; dup {
				fail("sample repeated")
			}
			samples[key] = v
			if typ != "histogram" {
				if le != "" {
					fail("le label outside a histogram")
				}
				continue
			}
			hk := family + "{" + strings.Join(rest, ",") + "}"
			h := hists[hk]
			if h == nil {
				h = &hist{}
				hists[hk] = h
			}
			switch suffix {
			case "_bucket":
				if le == "" || h.hasCnt || h.hasSum {
					fail("bucket without le, or after _sum/_count")
				}
				b, err := strconv.ParseFloat(le, 64)
				if err != nil {
					fail("le: %v", err)
				}
				if n := len(h.les); n > 0 && (b <= h.les[n-1] || v < h.counts[n-1]) {
					fail("le must increase and counts never decrease")
				}
				h.les, h.counts = append(h.les, b), append(h.counts, v)
			case "_sum":
				h.hasSum = true
			case "_count":
				h.count, h.hasCnt = v, true
			}
		}
	}
	for k, h := range hists {
		n := len(h.les)
		if n == 0 || !math.IsInf(h.les[n-1], 1) || !h.hasSum || !h.hasCnt || h.counts[n-1] != h.count {
			t.Fatalf("histogram %s: want buckets ending with le=\"+Inf\" equal to _count, and _sum", k)
		}
	}
	return samples
}

// BenchmarkObserve is what timing adds to a public request: one clock read
// (the start time is also the request's clock, see requestTime) and two
// atomic adds.
func BenchmarkObserve(b *testing.B) {
	var r requestDurations
	start := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		r.observe(outHit, time.Since(start)%time.Millisecond)
	}
}

// BenchmarkObserveParallel: the same from every core at once (shared
// counters, as for the Stats counters).
func BenchmarkObserveParallel(b *testing.B) {
	var r requestDurations
	start := time.Now()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r.observe(outHit, time.Since(start)%time.Millisecond)
		}
	})
}

// TestPanicRecoveredAndCounted: a panic in a handler answers 500, is
// counted in /stats and /metrics, and the node keeps serving.
func TestPanicRecoveredAndCounted(t *testing.T) {
	o := newTestOrigin(t, nil, static("ok", "Cache-Control: max-age=60"))
	n := newTestNode(t, o.srv.URL, nil, nil)
	var ctx fasthttp.RequestCtx
	func() {
		defer n.pipe.recoverPanic(&ctx)
		panic("boom")
	}()
	if ctx.Response.StatusCode() != fasthttp.StatusInternalServerError {
		t.Errorf("after a panic: status %d, want 500", ctx.Response.StatusCode())
	}
	if got := n.Stats().Panics; got != 1 {
		t.Errorf("stats panics = %d, want 1", got)
	}
	if _, b := get(t, "http://"+n.AdminAddr()+"/metrics"); !strings.Contains(b, "\nedgeshield_panics_total 1\n") {
		t.Errorf("/metrics does not show edgeshield_panics_total 1")
	}
	if r, b := get(t, "http://"+n.Addr()+"/x"); r.StatusCode != 200 || b != "ok" {
		t.Errorf("after a panic: %d %q, want the node still serving", r.StatusCode, b)
	}
}

package edge

import (
	"math"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// GET /metrics on the admin listener: the Stats figures and the public
// listener's response-time histogram in the Prometheus text exposition
// format (version 0.0.4).
//
// The exposition is written here rather than with github.com/VictoriaMetrics/metrics:
// its PrometheusHistogram takes a mutex on every Update (the fresh-hit path
// must take no lock), and it writes "# HELP" / "# TYPE" lines only when the
// process-wide metrics.ExposeMetadata switch is on, and then without help
// text. What is left to write is a few appends.

// metricsContentType is the media type of the text exposition format.
const metricsContentType = "text/plain; version=0.0.4; charset=utf-8"

// outcome is how the node answered a public request: the cache label of
// edgeshield_request_duration_seconds. The function that writes the response
// returns it (serveCacheable lists them), so the label is what the handler
// decided.
type outcome uint8

const (
	outNone  outcome = iota // not observed (health checks)
	outHit                  // from a stored response: fresh, or stale as the client allowed; 304, HEAD and ranges too
	outStale                // stale-while-revalidate, stale-if-error
	outMiss                 // forwarded; the upstream's answer, shared and stored when cacheable (304 refreshes too)
	outPass                 // forwarded unshared: unsafe methods, uncacheable answers, hit-for-pass
	outError                // the node's own error: upstream failure (502, 503, 504), refused request, panic
	numOutcomes
)

var outcomeLabels = [numOutcomes]string{"", "hit", "stale", "miss", "pass", "error"}

// outcome maps the Cache-Status of an answer from a stored entry.
func (cs cacheStatus) outcome() outcome {
	switch cs {
	case csHit:
		return outHit
	case csHitStale, csStaleErr, csStaleDown:
		return outStale
	default: // csFwd, csRevalidated: the upstream was asked
		return outMiss
	}
}

// durationBuckets are the upper bounds ("le") of
// edgeshield_request_duration_seconds: from 100 µs (a hit takes a few µs
// inside the node) to 10 s, with the 250 ms SLO among them. Read-only.
var durationBuckets = [...]time.Duration{
	100 * time.Microsecond, 250 * time.Microsecond, 500 * time.Microsecond,
	time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond,
	10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond,
	time.Second, 2500 * time.Millisecond, 5 * time.Second, 10 * time.Second,
}

// durationHistogram is one outcome's series: fixed buckets of atomic
// counters, so an observation is two atomic adds (no lock, no allocation).
type durationHistogram struct {
	// sum comes first so that it shares a cache line with the first
	// buckets, where most requests land: one line bounces between cores
	// rather than two.
	sum atomic.Int64 // nanoseconds
	// counts[i] counts durations in (durationBuckets[i-1], durationBuckets[i]];
	// the last one those over the largest bound. Cumulated when written.
	counts [len(durationBuckets) + 1]atomic.Uint64
}

// requestDurations is the response-time histogram of the public listeners,
// indexed by outcome (outNone unused). The zero value is ready to use.
type requestDurations [numOutcomes]durationHistogram

func (r *requestDurations) observe(o outcome, d time.Duration) {
	if o == outNone || o >= numOutcomes {
		return
	}
	d = max(d, 0)
	i := 0
	for i < len(durationBuckets) && d > durationBuckets[i] {
		i++
	}
	h := &r[o]
	h.counts[i].Add(1)
	h.sum.Add(int64(d))
}

const durationMetric = "edgeshield_request_duration_seconds"

// appendTo writes the histogram. Buckets are read one by one while requests
// go on, so _count is taken from the buckets (it equals the +Inf bucket, as
// the format requires); _sum may include an observation or two more.
func (r *requestDurations) appendTo(dst []byte) []byte {
	dst = appendFamily(dst, durationMetric, "histogram",
		"Response time of the public listeners by cache outcome (hit, stale, miss, pass, error): "+
			"from the start of the request handler to its return, i.e. time to first byte inside the node. "+
			"fasthttp writes the response after the handler returns, so the client's read (and a streamed body) is not included. "+
			"Health-check requests are not counted.")
	for o := outHit; o < numOutcomes; o++ {
		h := &r[o]
		label := outcomeLabels[o]
		var (
			cum uint64
			le  [24]byte
		)
		for i, b := range durationBuckets {
			cum += h.counts[i].Load()
			dst = appendBucket(dst, label, strconv.AppendFloat(le[:0], b.Seconds(), 'f', -1, 64), cum)
		}
		cum += h.counts[len(durationBuckets)].Load()
		dst = appendBucket(dst, label, []byte("+Inf"), cum)
		dst = append(dst, durationMetric+`_sum{cache="`...)
		dst = append(dst, label...)
		dst = append(dst, `"} `...)
		dst = appendValue(dst, time.Duration(h.sum.Load()).Seconds())
		dst = append(dst, '\n')
		dst = append(dst, durationMetric+`_count{cache="`...)
		dst = append(dst, label...)
		dst = append(dst, `"} `...)
		dst = strconv.AppendUint(dst, cum, 10)
		dst = append(dst, '\n')
	}
	return dst
}

func appendBucket(dst []byte, label string, le []byte, count uint64) []byte {
	dst = append(dst, durationMetric+`_bucket{cache="`...)
	dst = append(dst, label...)
	dst = append(dst, `",le="`...)
	dst = append(dst, le...)
	dst = append(dst, `"} `...)
	dst = strconv.AppendUint(dst, count, 10)
	return append(dst, '\n')
}

// statMetric exposes one Stats field.
type statMetric struct {
	stat   string // the Stats field's json name (TestMetricsCoverStats matches them)
	name   string // metric name: counters end in _total; units are bytes and seconds
	labels string // `key="value"` of one series of a labelled family; "" for none
	typ    string // "counter" or "gauge"
	help   string
	value  func(*Stats) float64
}

// statMetrics lists every numeric Stats field once: adding a figure to
// Stats is one line here, and TestMetricsCoverStats fails until it is.
var statMetrics = [...]statMetric{
	// One family, a series per protocol: their sum is Stats.Requests
	// (derivedStats), so sum(edgeshield_requests_total) counts requests once.
	{"requests_h1", "edgeshield_requests_total", `proto="h1"`, "counter", requestsHelp, func(s *Stats) float64 { return float64(s.RequestsH1) }},
	{"requests_h2", "edgeshield_requests_total", `proto="h2"`, "counter", requestsHelp, func(s *Stats) float64 { return float64(s.RequestsH2) }},
	{"requests_h3", "edgeshield_requests_total", `proto="h3"`, "counter", requestsHelp, func(s *Stats) float64 { return float64(s.RequestsH3) }},
	{"hits", "edgeshield_cache_hits_total", "", "counter", "GET and HEAD requests answered from the cache, fresh or stale.", func(s *Stats) float64 { return float64(s.Hits) }},
	{"misses", "edgeshield_cache_misses_total", "", "counter", "GET and HEAD requests that needed the upstream (miss, validation, pass).", func(s *Stats) float64 { return float64(s.Misses) }},
	{"stale_served", "edgeshield_cache_stale_served_total", "", "counter", "Stale answers: stale-while-revalidate and stale-if-error.", func(s *Stats) float64 { return float64(s.StaleServed) }},
	{"passes", "edgeshield_cache_passes_total", "", "counter", "GET and HEAD misses fetched without sharing (uncacheable answers, hit-for-pass).", func(s *Stats) float64 { return float64(s.Passes) }},
	{"origin_fetches", "edgeshield_origin_fetches_total", "", "counter", "Requests sent upstream (the origin, or the key's owner in a cluster), background revalidations included.", func(s *Stats) float64 { return float64(s.OriginFetches) }},
	{"origin_errors", "edgeshield_origin_errors_total", "", "counter", "Upstream fetches that failed (connection, timeout, broken body).", func(s *Stats) float64 { return float64(s.OriginErrors) }},
	{"origin_up", "edgeshield_origin_up", "", "gauge", "1 while the origin is judged up (origin.health_check and real requests), else 0.", func(s *Stats) float64 { return b2f(s.OriginUp) }},
	{"origin_short_circuited", "edgeshield_origin_short_circuited_total", "", "counter", "Origin fetches not sent because the origin was down (answered stale or 502 at once).", func(s *Stats) float64 { return float64(s.OriginShortCircuited) }},
	{"origin_checks", "edgeshield_origin_checks_total", "", "counter", "Active origin health checks run.", func(s *Stats) float64 { return float64(s.OriginChecks) }},
	{"origin_check_failures", "edgeshield_origin_check_failures_total", "", "counter", "Active origin health checks that failed.", func(s *Stats) float64 { return float64(s.OriginCheckFailures) }},
	{"origin_checks_kicked", "edgeshield_origin_checks_kicked_total", "", "counter", "Origin health checks run early because a request failed at the transport level.", func(s *Stats) float64 { return float64(s.OriginChecksKicked) }},
	{"origin_downs", "edgeshield_origin_downs_total", "", "counter", "Times the origin was marked down.", func(s *Stats) float64 { return float64(s.OriginDowns) }},
	{"coalesced_waiters", "edgeshield_coalesced_waiters_total", "", "counter", "Requests that waited on another request's upstream fetch instead of making their own.", func(s *Stats) float64 { return float64(s.CoalescedWaiters) }},
	{"in_flight", "edgeshield_fetches_in_flight", "", "gauge", "Shared upstream fetches in progress.", func(s *Stats) float64 { return float64(s.InFlight) }},
	{"revalidated", "edgeshield_cache_revalidated_total", "", "counter", "Stale entries refreshed by a 304 from the upstream.", func(s *Stats) float64 { return float64(s.Revalidated) }},
	{"background_revalidations", "edgeshield_cache_background_revalidations_total", "", "counter", "Revalidations started in the background (stale-while-revalidate).", func(s *Stats) float64 { return float64(s.BackgroundRevalidations) }},
	{"errors", "edgeshield_errors_total", "", "counter", "Error responses (502, 503, 504) sent because the upstream failed.", func(s *Stats) float64 { return float64(s.Errors) }},
	{"panics", "edgeshield_panics_total", "", "counter", "Panics recovered in request handlers and background fills (a bug worth reporting if not 0).", func(s *Stats) float64 { return float64(s.Panics) }},
	{"entries", "edgeshield_cache_entries", "", "gauge", "Entries in the cache (Vary markers included).", func(s *Stats) float64 { return float64(s.Entries) }},
	{"bytes", "edgeshield_cache_bytes", "", "gauge", "Size of the cached entries.", func(s *Stats) float64 { return float64(s.Bytes) }},
	{"max_bytes", "edgeshield_cache_max_bytes", "", "gauge", "Cache size limit (cache.max_bytes).", func(s *Stats) float64 { return float64(s.MaxBytes) }},
	{"evicted", "edgeshield_cache_evicted_total", "", "counter", "Entries evicted to make room.", func(s *Stats) float64 { return float64(s.Evicted) }},
	{"rejected", "edgeshield_cache_rejected_total", "", "counter", "Entries refused by the cache's admission policy.", func(s *Stats) float64 { return float64(s.Rejected) }},
	{"offheap_objects", "edgeshield_offheap_objects", "", "gauge", "Bodies kept in memory files (cache.offheap_min_size), evicted ones still being sent included.", func(s *Stats) float64 { return float64(s.OffheapObjects) }},
	{"offheap_bytes", "edgeshield_offheap_bytes", "", "gauge", "Size of the bodies kept in memory files.", func(s *Stats) float64 { return float64(s.OffheapBytes) }},
	{"sendfile_bytes", "edgeshield_sendfile_bytes_total", "", "counter", "Body bytes sent with sendfile(2).", func(s *Stats) float64 { return float64(s.SendfileBytes) }},
	{"offheap_leaked", "edgeshield_offheap_leaked_total", "", "counter", "Memory-file bodies closed by the garbage collector (a reference never released: a bug if not 0).", func(s *Stats) float64 { return float64(s.OffheapLeaked) }},
	{"purge_tombstones", "edgeshield_purge_tombstones", "", "gauge", "Purges remembered as tombstones.", func(s *Stats) float64 { return float64(s.Tombstones) }},
	{"rate_limited", "edgeshield_rate_limited_total", "", "counter", "Requests answered 429 by server.rate_limit.", func(s *Stats) float64 { return float64(s.RateLimited) }},
	{"rate_limit_clients", "edgeshield_rate_limit_clients", "", "gauge", "Client IPs whose rate-limit buckets are remembered (bounded; refilled ones are dropped).", func(s *Stats) float64 { return float64(s.RateLimitClients) }},
	{"conns_refused_per_ip", "edgeshield_conns_refused_per_ip_total", "", "counter", "Connections closed at accept because their client IP had server.max_conns_per_ip open.", func(s *Stats) float64 { return float64(s.ConnsRefused) }},
	{"conn_limit_clients", "edgeshield_conn_limit_clients", "", "gauge", "Client IPs with open connections (counted only while server.max_conns_per_ip is on).", func(s *Stats) float64 { return float64(s.ConnLimitClients) }},
	{"request_bodies_too_large", "edgeshield_request_bodies_too_large_total", "", "counter", "Requests answered 413: body larger than server.max_request_body.", func(s *Stats) float64 { return float64(s.BodiesTooLarge) }},
	{"draining", "edgeshield_draining", "", "gauge", "1 while the node drains (shutting down), else 0.", func(s *Stats) float64 { return b2f(s.Draining) }},
	{"cluster_alive", "edgeshield_cluster_alive_members", "", "gauge", "Alive cluster members (0 without a cluster).", func(s *Stats) float64 { return float64(s.ClusterAlive) }},
	{"peer_forwards", "edgeshield_peer_forwards_total", "", "counter", "Misses forwarded to the key's owner.", func(s *Stats) float64 { return float64(s.PeerForwards) }},
	{"peer_forward_failures", "edgeshield_peer_forward_failures_total", "", "counter", "Forwards to an owner that failed (the next owner or the origin answered).", func(s *Stats) float64 { return float64(s.PeerForwardFailures) }},
	{"shield_hops_served", "edgeshield_shield_hops_served_total", "", "counter", "Requests from cluster peers served on the peer listener.", func(s *Stats) float64 { return float64(s.ShieldHopsServed) }},
	{"shield_hops_refused", "edgeshield_shield_hops_refused_total", "", "counter", "Requests refused on the peer listener (unsigned, forged or stale signatures).", func(s *Stats) float64 { return float64(s.ShieldHopsRefused) }},
	{"hot_keys", "edgeshield_hot_keys", "", "gauge", "Keys in the hot-key table kept for warm restarts (cache.warm_keys).", func(s *Stats) float64 { return float64(s.HotKeys) }},
	{"warm_prefetched", "edgeshield_warm_prefetched_total", "", "counter", "Objects prefetched by warm-ups (from peers' caches; a single node's warm file: the origin).", func(s *Stats) float64 { return float64(s.WarmPrefetched) }},
	{"warm_bytes", "edgeshield_warm_prefetched_bytes_total", "", "counter", "Body bytes prefetched by warm-ups.", func(s *Stats) float64 { return float64(s.WarmBytes) }},
	{"warm_not_on_peers", "edgeshield_warm_not_on_peers_total", "", "counter", "Warm-up prefetches no peer could answer from its cache (left to real traffic).", func(s *Stats) float64 { return float64(s.WarmNotOnPeers) }},
}

const requestsHelp = "Requests received on the public listeners (health checks included), by the protocol the client spoke: " +
	"h1 (HTTP/1.x, plain or over TLS), h2 (HTTP/2), h3 (HTTP/3)."

// derivedStats are Stats fields deliberately not exposed, with the query
// that gives them from the series above.
var derivedStats = map[string]string{
	"requests":  "sum(edgeshield_requests_total)",
	"hit_ratio": "rate(edgeshield_cache_hits_total[5m]) / (rate(edgeshield_cache_hits_total[5m]) + rate(edgeshield_cache_misses_total[5m]))",
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// exposition writes GET /metrics from a stats source and the public
// listeners' response-time histogram; it knows nothing else of the node.
type exposition struct {
	stats   func() Stats
	latency *requestDurations
}

// appendTo writes the whole exposition.
func (e exposition) appendTo(dst []byte) []byte {
	s := e.stats()
	dst = appendFamily(dst, "edgeshield_info", "gauge", "Always 1; the labels name the node and its version.")
	dst = append(dst, `edgeshield_info{node="`...)
	dst = appendLabelValue(dst, s.Node)
	dst = append(dst, `",version="`...)
	dst = appendLabelValue(dst, Version)
	dst = append(dst, "\"} 1\n"...)
	for i := range statMetrics {
		m := &statMetrics[i]
		// The series of a labelled family are listed together: its HELP
		// and TYPE come once, before the first.
		if i == 0 || statMetrics[i-1].name != m.name {
			dst = appendFamily(dst, m.name, m.typ, m.help)
		}
		dst = append(dst, m.name...)
		if m.labels != "" {
			dst = append(dst, '{')
			dst = append(dst, m.labels...)
			dst = append(dst, '}')
		}
		dst = append(dst, ' ')
		dst = appendValue(dst, m.value(&s))
		dst = append(dst, '\n')
	}
	return e.latency.appendTo(dst)
}

func (e exposition) serve(ctx *fasthttp.RequestCtx) {
	ctx.Response.Header.Set("Cache-Control", "no-store")
	ctx.SetContentType(metricsContentType)
	ctx.SetBody(e.appendTo(make([]byte, 0, 16<<10)))
}

func appendFamily(dst []byte, name, typ, help string) []byte {
	dst = append(dst, "# HELP "...)
	dst = append(dst, name...)
	dst = append(dst, ' ')
	dst = append(dst, helpEscaper.Replace(help)...)
	dst = append(dst, "\n# TYPE "...)
	dst = append(dst, name...)
	dst = append(dst, ' ')
	dst = append(dst, typ...)
	return append(dst, '\n')
}

// Escapes of the text format: HELP text escapes backslash and newline,
// label values the double quote too.
var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

func appendLabelValue(dst []byte, v string) []byte { return append(dst, labelEscaper.Replace(v)...) }

// appendValue writes integers without an exponent (all Stats figures are
// integers below 2^53 in practice), anything else in the shortest form.
func appendValue(dst []byte, v float64) []byte {
	if v == math.Trunc(v) && math.Abs(v) < 1<<53 {
		return strconv.AppendInt(dst, int64(v), 10)
	}
	return strconv.AppendFloat(dst, v, 'g', -1, 64)
}

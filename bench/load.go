package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
	"github.com/valyala/fasthttp"
)

// Sentinel errors of Runner.
var (
	// ErrBadConfig is wrapped by New and Run for invalid Config or Scenario values.
	ErrBadConfig = errors.New("bad bench config")
)

// Error kinds, the keys of Result.ErrorKinds and Bucket.Errors.
const (
	KindTimeout   = "timeout"         // no complete response within Config.Timeout
	KindConnect   = "connect"         // the TCP connection could not be established
	KindReset     = "reset"           // the connection was closed or reset mid-exchange
	KindStatus5xx = "status-5xx"      // a 5xx response
	KindStatus4xx = "status-4xx"      // a 4xx response
	KindOverload  = "client-overload" // not sent: MaxInFlight requests were already in flight
	KindOther     = "other"           // any other error (TLS, protocol, …)
)

var kindNames = [...]string{KindTimeout, KindConnect, KindReset, KindStatus5xx, KindStatus4xx, KindOverload, KindOther}

const (
	kTimeout = iota
	kConnect
	kReset
	k5xx
	k4xx
	kOverload
	kOther
	numKinds
	kNone = -1
)

// Limits and defaults of Config.
const (
	DefaultTimeout      = 5 * time.Second
	DefaultMaxInFlight  = 10_000 // cap of the derived MaxInFlight
	minMaxInFlight      = 16
	DefaultConnections  = 64 // closed-loop connections of the CLI's --max-throughput mode
	maxTimelineBuckets  = 600
	maxBodyBytes        = 256 << 20
	histSigFigs         = 3 // overall histograms: 0.1 % resolution
	bucketHistSigFigs   = 2 // timeline histograms: 1 %, 8× smaller
	progressInterval    = time.Second
	defaultBucketWidth  = time.Second
	defaultUserAgent    = "edgeshield-bench/1"
	scheduleCtxCheckMod = 256
)

// Config configures a Runner. The zero value of every field but Targets is
// a usable default.
type Config struct {
	// Targets chooses the URL of each request. Required.
	Targets Targets

	// Method is the request method. Default "GET".
	Method string

	// Header holds extra request headers. A "Host" entry replaces the Host
	// header (the connection still goes to the URL's host), which lets a
	// run address a virtual host through an IP address.
	Header http.Header

	// Timeout bounds each request from send to the end of the response
	// body. Default DefaultTimeout.
	Timeout time.Duration

	// DisableKeepAlive sends "Connection: close" so that every request
	// opens a new connection (and, for https, a new TLS handshake).
	DisableKeepAlive bool

	// TLS configures https targets. Nil verifies against the system roots.
	TLS *tls.Config

	// MaxInFlight bounds concurrent requests of open-loop runs; a request
	// due while the bound is reached counts as KindOverload. Zero derives it
	// from the scenario: peak rate × Timeout (the most that can be in flight
	// while the server answers within the timeout), clamped to
	// [16, DefaultMaxInFlight].
	MaxInFlight int

	// BucketWidth is the width of timeline buckets. Default one second,
	// widened so that a run has at most 600 buckets.
	BucketWidth time.Duration

	// Seed makes target picks (weighted, Zipf) reproducible. Zero means 1.
	Seed uint64

	// Progress, when set, is called about once per second during a run from
	// a single goroutine. It must not block.
	Progress func(Progress)
}

// Progress is a snapshot of a running scenario.
type Progress struct {
	Elapsed      time.Duration
	OfferedRate  float64       // req/s scheduled during the last interval
	AchievedRate float64       // responses/s received during the last interval
	P99          time.Duration // over the run so far
	Errors       int64         // so far
}

// Scenario describes the offered load of one run.
type Scenario struct {
	// Name labels the run in reports, e.g. "steady" or "nginx 64k".
	Name string `json:"name"`

	// From and To are the offered rates in requests per second at the start
	// and the end of the run; the rate ramps linearly between them (a rush).
	// A steady run has From == To.
	From float64 `json:"from"`
	To   float64 `json:"to"`

	// Duration is the length of the scheduling window. Requests in flight
	// at its end are awaited (up to the timeout) and counted.
	Duration time.Duration `json:"duration_ns"`

	// Connections > 0 selects closed-loop maximum-throughput mode: that many
	// workers each send their next request as soon as the previous one
	// completes, and From/To are ignored. Closed-loop latencies hide server
	// stalls (coordinated omission); use this mode for throughput only.
	Connections int `json:"connections,omitempty"`
}

// Steady offers rate requests per second for d.
func Steady(rate float64, d time.Duration) Scenario {
	return Scenario{Name: "steady", From: rate, To: rate, Duration: d}
}

// Rush ramps the offered rate linearly from `from` to `to` req/s over d.
func Rush(from, to float64, d time.Duration) Scenario {
	return Scenario{Name: "rush", From: from, To: to, Duration: d}
}

// MaxThroughput runs conns closed-loop connections for d.
func MaxThroughput(conns int, d time.Duration) Scenario {
	return Scenario{Name: "max-throughput", Connections: conns, Duration: d}
}

// FlashCrowd sends n requests within one millisecond: n clients arriving
// at once, e.g. at a cold cache, where an edge should coalesce them into one
// origin request per object. With several round-robin URLs each gets an
// equal share of the n requests.
func FlashCrowd(n int) Scenario {
	// n-0.5 per millisecond puts exactly n intended times inside the window.
	rate := (float64(n) - 0.5) * 1000
	return Scenario{Name: "flash crowd", From: rate, To: rate, Duration: time.Millisecond}
}

func (s Scenario) validate() error {
	switch {
	case s.Duration <= 0:
		return fmt.Errorf("%w: duration %v must be positive", ErrBadConfig, s.Duration)
	case s.Connections < 0:
		return fmt.Errorf("%w: connections %d must not be negative", ErrBadConfig, s.Connections)
	case s.Connections > 0:
		return nil
	case s.From < 0 || s.To < 0 || math.IsNaN(s.From) || math.IsNaN(s.To) || math.IsInf(s.From+s.To, 0):
		return fmt.Errorf("%w: rates %v..%v must be finite and non-negative", ErrBadConfig, s.From, s.To)
	case s.From == 0 && s.To == 0:
		return fmt.Errorf("%w: offered rate is zero", ErrBadConfig)
	}
	return nil
}

// offset returns the intended send time of request n (0-based) relative to
// the start: the t at which the integral of the rate, From·t + (To-From)·t²/(2·D),
// reaches n. The rationalised root 2n / (a + √(a² + 2bn)) stays exact for
// steady runs (b = 0) and avoids cancellation for gentle ramps.
func (s Scenario) offset(n uint64) time.Duration {
	if n == 0 {
		return 0
	}
	a := s.From
	b := (s.To - s.From) / s.Duration.Seconds()
	disc := a*a + 2*b*float64(n)
	if disc < 0 { // a ramp down reached rate zero
		return math.MaxInt64
	}
	den := a + math.Sqrt(disc)
	if den <= 0 {
		return math.MaxInt64
	}
	t := 2 * float64(n) / den
	if t*1e9 >= float64(math.MaxInt64) {
		return math.MaxInt64
	}
	return time.Duration(t * 1e9)
}

// Runner executes scenarios against the configured targets.
type Runner struct {
	cfg Config
}

// New validates cfg and fills its defaults.
func New(cfg Config) (*Runner, error) {
	if cfg.Targets == nil {
		return nil, fmt.Errorf("%w: no targets", ErrBadConfig)
	}
	if cfg.Method == "" {
		cfg.Method = http.MethodGet
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("%w: timeout %v must be positive", ErrBadConfig, cfg.Timeout)
	}
	if cfg.MaxInFlight < 0 {
		return nil, fmt.Errorf("%w: max in-flight %d must not be negative", ErrBadConfig, cfg.MaxInFlight)
	}
	if cfg.BucketWidth < 0 {
		return nil, fmt.Errorf("%w: bucket width %v must not be negative", ErrBadConfig, cfg.BucketWidth)
	}
	if cfg.BucketWidth == 0 {
		cfg.BucketWidth = defaultBucketWidth
	}
	if cfg.Seed == 0 {
		cfg.Seed = 1
	}
	cfg.Header = cfg.Header.Clone()
	return &Runner{cfg: cfg}, nil
}

// Config returns the configuration with defaults filled in.
func (r *Runner) Config() Config { return r.cfg }

// Run executes one scenario and returns its result. It returns early, with
// the partial result and ctx's error, when ctx is done. Run may be called
// concurrently; each run has its own connections.
func (r *Runner) Run(ctx context.Context, sc Scenario) (*Result, error) {
	if err := sc.validate(); err != nil {
		return nil, err
	}
	rn := r.newRun(sc)
	defer rn.client.CloseIdleConnections()
	rn.start = time.Now()
	stopProgress := rn.startProgress()
	var err error
	if sc.Connections > 0 {
		err = rn.closedLoop(ctx)
	} else {
		err = rn.openLoop(ctx)
	}
	rn.wg.Wait()
	end := time.Now()
	stopProgress()
	return rn.result(end), err
}

// run is the state of one Runner.Run.
type run struct {
	cfg         Config
	sc          Scenario
	client      *fasthttp.Client
	maxInFlight int
	start       time.Time
	maxLatency  int64 // µs, histogram ceiling

	inflight atomic.Int64 // requests queued or being executed
	bytesIn  atomic.Int64 // bytes read from connections
	bytesOut atomic.Int64 // bytes written to connections

	host    string      // Host header override, from Config.Header
	headers [][2]string // other extra headers, in a stable order

	jobs    chan job
	wg      sync.WaitGroup // workers
	spawned int            // workers started; scheduler goroutine only

	shards   []*shard
	timeline *timeline
}

type job struct {
	url string
	at  time.Time // intended send time
}

// shard holds totals for a subset of workers; a few shards instead of one
// histogram per worker because a worker count in the thousands would cost
// 140 KB each.
type shard struct {
	mu        sync.Mutex // guards all fields
	hist      *hdr.Histogram
	responses int64
	ok        int64
	cacheResp int64 // responses carrying Cache-Status
	hits      int64
	errs      [numKinds]int64
}

func (r *Runner) newRun(sc Scenario) *run {
	rn := &run{cfg: r.cfg, sc: sc}
	rn.maxLatency = max(4*r.cfg.Timeout, time.Minute).Microseconds()
	for _, k := range slices.Sorted(maps.Keys(r.cfg.Header)) {
		for _, v := range r.cfg.Header[k] {
			if http.CanonicalHeaderKey(k) == "Host" {
				rn.host = v
				continue
			}
			rn.headers = append(rn.headers, [2]string{k, v})
		}
	}
	rn.maxInFlight = r.cfg.MaxInFlight
	if sc.Connections > 0 {
		rn.maxInFlight = sc.Connections
	} else if rn.maxInFlight == 0 {
		peak := max(sc.From, sc.To)
		rn.maxInFlight = int(math.Min(math.Ceil(peak*r.cfg.Timeout.Seconds()), DefaultMaxInFlight))
		rn.maxInFlight = max(rn.maxInFlight, minMaxInFlight)
	}
	n := 2 * runtime.GOMAXPROCS(0)
	for range n {
		rn.shards = append(rn.shards, &shard{hist: hdr.New(1, rn.maxLatency, histSigFigs)})
	}
	width := r.cfg.BucketWidth
	if span := sc.Duration + r.cfg.Timeout; span/width > maxTimelineBuckets {
		width = (span + maxTimelineBuckets - 1) / maxTimelineBuckets
	}
	rn.timeline = newTimeline(width, sc.Duration+r.cfg.Timeout+width, rn.maxLatency)
	rn.client = &fasthttp.Client{
		Name:                      defaultUserAgent,
		DialTimeout:               rn.dial,
		TLSConfig:                 r.cfg.TLS,
		MaxConnsPerHost:           rn.maxInFlight,
		MaxIdleConnDuration:       30 * time.Second,
		ReadBufferSize:            16 << 10,
		WriteBufferSize:           16 << 10,
		MaxResponseBodySize:       maxBodyBytes,
		StreamResponseBody:        true, // bodies are drained, never held: 1 MiB × thousands of workers would not fit
		DisablePathNormalizing:    true, // request exactly the URL the user gave
		MaxIdemponentCallAttempts: 1,
		// Never retry: a retried request would turn a server error into a
		// slow success and hide it from the error counts.
		RetryIfErr: func(*fasthttp.Request, int, error) (bool, bool) { return false, false },
	}
	return rn
}

// connectError marks dial failures so that classify can tell them apart
// from failures of an established connection.
type connectError struct{ err error }

func (e *connectError) Error() string { return "connect: " + e.err.Error() }
func (e *connectError) Unwrap() error { return e.err }

func (rn *run) dial(addr string, timeout time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, &connectError{err}
	}
	return &countingConn{Conn: c, in: &rn.bytesIn, out: &rn.bytesOut}, nil
}

// countingConn counts bytes on the wire (TLS records included, since TLS is
// layered above it), which is what "data transferred" means to a network.
type countingConn struct {
	net.Conn
	in, out *atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.in.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.out.Add(int64(n))
	return n, err
}

// openLoop schedules requests at their intended times until the scenario's
// window ends or ctx is done.
func (rn *run) openLoop(ctx context.Context) error {
	rn.jobs = make(chan job, rn.maxInFlight)
	defer close(rn.jobs)
	rnd := rand.New(rand.NewPCG(rn.cfg.Seed, 0x9e3779b97f4a7c15))
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for n := uint64(0); ; n++ {
		off := rn.sc.offset(n)
		if off >= rn.sc.Duration {
			return nil
		}
		at := rn.start.Add(off)
		if wait := time.Until(at); wait > 0 {
			// Never send early: latency is measured from `at`. Sending late
			// is harmless, the delay is charged to the request.
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-timer.C:
			}
		} else if n%scheduleCtxCheckMod == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		rn.dispatch(job{url: rn.cfg.Targets.Pick(n, rnd), at: at})
	}
}

// dispatch hands j to a worker, starting one when every worker is busy, or
// counts it as client overload when MaxInFlight requests are in flight.
// Only the scheduler goroutine increments inflight, so check-then-add is safe.
func (rn *run) dispatch(j job) {
	b := rn.timeline.at(j.at.Sub(rn.start))
	b.offered.Add(1)
	if rn.inflight.Load() >= int64(rn.maxInFlight) {
		b.errs[kOverload].Add(1)
		sh := rn.shards[0]
		sh.mu.Lock()
		sh.errs[kOverload]++
		sh.mu.Unlock()
		return
	}
	if n := rn.inflight.Add(1); n > int64(rn.spawned) {
		rn.spawnWorker(nil)
	}
	rn.jobs <- j // never blocks: capacity maxInFlight ≥ inflight
}

func (rn *run) spawnWorker(loop func(*worker)) {
	w := &worker{rn: rn, sh: rn.shards[rn.spawned%len(rn.shards)], id: rn.spawned}
	rn.spawned++
	rn.wg.Add(1)
	go func() {
		defer rn.wg.Done()
		w.req = fasthttp.AcquireRequest()
		w.resp = fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(w.req)
		defer fasthttp.ReleaseResponse(w.resp)
		if loop != nil {
			loop(w)
			return
		}
		for j := range rn.jobs {
			w.do(j)
			rn.inflight.Add(-1)
		}
	}()
}

// closedLoop runs Scenario.Connections workers back to back.
func (rn *run) closedLoop(ctx context.Context) error {
	deadline := rn.start.Add(rn.sc.Duration)
	var seq atomic.Uint64
	for i := range rn.sc.Connections {
		rn.spawnWorker(func(w *worker) {
			rnd := rand.New(rand.NewPCG(rn.cfg.Seed, uint64(i)))
			for ctx.Err() == nil {
				now := time.Now()
				if !now.Before(deadline) {
					return
				}
				n := seq.Add(1) - 1
				rn.timeline.at(now.Sub(rn.start)).offered.Add(1)
				w.do(job{url: rn.cfg.Targets.Pick(n, rnd), at: now})
			}
		})
	}
	rn.wg.Wait()
	return ctx.Err()
}

type worker struct {
	rn   *run
	sh   *shard
	id   int
	req  *fasthttp.Request
	resp *fasthttp.Response
}

// do executes one request and records it.
func (w *worker) do(j job) {
	rn, req, resp := w.rn, w.req, w.resp
	req.Reset()
	resp.Reset()
	req.SetRequestURI(j.url)
	req.Header.SetMethod(rn.cfg.Method)
	if rn.host != "" {
		req.Header.SetHost(rn.host)
		req.UseHostHeader = true
	}
	for _, h := range rn.headers {
		req.Header.Add(h[0], h[1])
	}
	if rn.cfg.DisableKeepAlive {
		req.SetConnectionClose()
	}
	err := rn.client.DoTimeout(req, resp, rn.cfg.Timeout)
	status := 0
	if err == nil {
		status = resp.StatusCode()
		err = resp.BodyWriteTo(io.Discard) // closes a streamed body, returning the connection
	} else {
		resp.CloseBodyStream() //nolint:errcheck // nothing to report about a failed exchange
	}
	end := time.Now()
	kind := classify(err, status)
	hasCS, hit := false, false
	if err == nil {
		if v := resp.Header.Peek("Cache-Status"); len(v) > 0 {
			hasCS, hit = true, cacheHit(v)
		}
	}
	lat := end.Sub(j.at).Microseconds()
	// Latency covers every request that reached the server: responses of any
	// status, resets and timeouts (at the time they were abandoned), so slow
	// failures cannot flatter the percentiles. Connect errors never did.
	record := kind != kConnect
	lat = min(max(lat, 1), rn.maxLatency)

	sh := w.sh
	sh.mu.Lock()
	if record {
		sh.hist.RecordValue(lat) //nolint:errcheck // clamped to the range above
	}
	if status != 0 && err == nil {
		sh.responses++
	}
	if kind == kNone {
		sh.ok++
	} else {
		sh.errs[kind]++
	}
	if hasCS {
		sh.cacheResp++
		if hit {
			sh.hits++
		}
	}
	sh.mu.Unlock()
	rn.timeline.record(j.at.Sub(rn.start), end.Sub(rn.start), lat, record, kind, status != 0 && err == nil)
}

// classify maps the outcome of one exchange to an error kind or kNone.
func classify(err error, status int) int {
	if err == nil {
		switch {
		case status >= 500:
			return k5xx
		case status >= 400:
			return k4xx
		}
		return kNone
	}
	var ce *connectError
	var ne net.Error
	switch {
	case errors.As(err, &ce):
		return kConnect
	case errors.Is(err, fasthttp.ErrTimeout), errors.Is(err, fasthttp.ErrDialTimeout),
		errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return kTimeout
	case errors.Is(err, syscall.ECONNREFUSED):
		return kConnect
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, fasthttp.ErrConnectionClosed), errors.Is(err, net.ErrClosed):
		return kReset
	}
	return kOther
}

// cacheHit reports whether a Cache-Status field value (RFC 9211) says the
// response was a hit. The last list member is the cache closest to the
// client (RFC 9211 §2), i.e. the edge being measured; "hit" is a boolean
// parameter of that member (§2.1). It does not allocate.
func cacheHit(v []byte) bool {
	if i := bytes.LastIndexByte(v, ','); i >= 0 {
		v = v[i+1:]
	}
	i := bytes.IndexByte(v, ';')
	if i < 0 {
		return false // a cache name without parameters
	}
	for params := v[i+1:]; len(params) > 0; {
		p := params
		if j := bytes.IndexByte(params, ';'); j >= 0 {
			p, params = params[:j], params[j+1:]
		} else {
			params = nil
		}
		p = bytes.TrimSpace(p)
		if string(p) == "hit" || string(p) == "hit=?1" { // no allocation: compiler-optimised comparison
			return true
		}
	}
	return false
}

// startProgress calls cfg.Progress once per interval until the returned
// stop function is called; stop waits for the goroutine.
func (rn *run) startProgress() (stop func()) {
	if rn.cfg.Progress == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(progressInterval)
		defer t.Stop()
		var lastOffered, lastResp int64
		last := rn.start
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				off, resp := rn.timeline.totals()
				dt := now.Sub(last).Seconds()
				h, errs := rn.merge()
				rn.cfg.Progress(Progress{
					Elapsed:      now.Sub(rn.start),
					OfferedRate:  float64(off-lastOffered) / dt,
					AchievedRate: float64(resp-lastResp) / dt,
					P99:          time.Duration(h.ValueAtQuantile(99)) * time.Microsecond,
					Errors:       errs,
				})
				lastOffered, lastResp, last = off, resp, now
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// merge returns the merged histogram and error total of all shards.
func (rn *run) merge() (*hdr.Histogram, int64) {
	h := hdr.New(1, rn.maxLatency, histSigFigs)
	var errs int64
	for _, sh := range rn.shards {
		sh.mu.Lock()
		h.Merge(sh.hist)
		for _, n := range sh.errs {
			errs += n
		}
		sh.mu.Unlock()
	}
	return h, errs
}

package origin

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeshield/edgeshield/internal/conf"
	"github.com/valyala/fasthttp"
)

// ErrDown is returned instead of sending a request while Health holds the
// circuit open: the upstream failed its checks and has not passed enough
// since to be trusted again. Nothing was sent. The edge answers 502 (or
// serves stale).
var ErrDown = errors.New("origin down (health checks failing)")

// ErrUnhealthy: an HTTP health check got an answer outside 2xx and 3xx.
var ErrUnhealthy = errors.New("origin health check failed")

// Check probes the upstream once, outside the connection pool and its
// MaxConns slots (a saturated pool is not a sick upstream). It opens a
// connection (TCP, plus the TLS handshake for https) and, when path is not
// empty, sends "GET path" with "Connection: close" and reads the response
// headers: a status outside 200–399 is ErrUnhealthy. host is the Host
// header ("" means the upstream URL's host). The context bounds the whole
// check. Errors are classified like Do's.
func (c *Client) Check(ctx context.Context, path, host string) error {
	if c.closed.Load() {
		return fmt.Errorf("%w: client closed", ErrRefused)
	}
	nc, err := c.dialContextTLS(ctx, c.addr)
	if err != nil {
		return classify(err)
	}
	defer nc.Close()
	if path == "" {
		return nil
	}
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(aLongTimeAgo) })
	defer stop()

	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	req.Header.SetMethod(fasthttp.MethodGet)
	req.SetRequestURI(path)
	if host == "" {
		host = c.host
	}
	req.Header.SetHost(host)
	req.Header.SetConnectionClose()
	if c.cfg.Name != "" {
		req.Header.SetUserAgent(c.cfg.Name + " health-check")
	}
	bw := bufio.NewWriterSize(nc, 1024)
	if err := req.Write(bw); err != nil {
		return classify(ctxOr(ctx, err))
	}
	if err := bw.Flush(); err != nil {
		return classify(ctxOr(ctx, err))
	}
	var h fasthttp.ResponseHeader
	if err := h.Read(bufio.NewReaderSize(nc, c.cfg.MaxHeaderBytes)); err != nil {
		return classify(ctxOr(ctx, err))
	}
	if st := h.StatusCode(); st < 200 || st > 399 {
		return fmt.Errorf("%w: GET %s answered %d", ErrUnhealthy, path, st)
	}
	return nil
}

// ctxOr prefers the context's error (a deadline is a timeout) over the I/O
// error the aborted read or write reported.
func ctxOr(ctx context.Context, err error) error {
	if ce := ctx.Err(); ce != nil {
		return fmt.Errorf("%w (%v)", ce, err)
	}
	return err
}

// HealthConfig configures a Health. Zero values select the defaults.
type HealthConfig struct {
	// Interval between active checks. Zero turns active checks off: the
	// upstream is then judged by real requests only (for readiness), and
	// the circuit never opens (nothing would find out that it is back).
	Interval time.Duration `yaml:"interval"`
	// Timeout bounds one check. Zero means the smaller of Interval and 2s.
	Timeout time.Duration `yaml:"timeout"`
	// Rise is how many consecutive successful checks bring a down upstream
	// back. Zero means 2.
	Rise int `yaml:"rise"`
	// Fall is how many consecutive failed active checks mark the upstream
	// down (with checks off: consecutive transport failures of real
	// requests). Zero means 3.
	Fall int `yaml:"fall"`
	// Check performs one active check (Client.Check, in production).
	Check func(ctx context.Context) error `yaml:"-"`
	// OnChange, when set, is called on every transition, outside any lock,
	// with the new state and the failure that caused it (nil when up).
	OnChange func(up bool, cause error) `yaml:"-"`
}

// Health tracks whether the upstream is usable, in the manner of HAProxy's
// rise/fall: with active checks, only checks decide. Fall consecutive
// failed checks mark the upstream down; while it is down no request is sent
// (Open) until Rise consecutive checks pass. Real requests never change the
// state: one bad URL (a handler that resets, a 503 from a deploy) must not
// take the whole site down, and nginx likewise ignores max_fails when an
// upstream group has a single server. A real request that failed at the
// transport level (refused, reset, timeout) only asks for a check at once,
// so an origin that really went away is noticed within Fall quick checks
// instead of Fall intervals. An HTTP answer of any status proves the
// upstream is up and asks for nothing.
//
// With active checks off (Interval 0) the circuit never opens, and the
// state only informs readiness: Fall consecutive transport failures of real
// requests mark the upstream down, any answer marks it up.
//
// It starts up. It is safe for concurrent use.
type Health struct {
	cfg HealthConfig
	up  atomic.Bool

	mu      sync.Mutex // guards fails, oks, lastErr, lastCheck and the transitions of up
	fails   int        // consecutive failures (checks, or with checks off, requests)
	oks     int        // consecutive successful checks
	lastErr error
	// lastCheck is when the last check started: a request failure asks for
	// another only once Interval/4 has passed, so a URL that always fails
	// raises the check rate at most fourfold.
	lastCheck time.Time

	kick chan struct{} // a request failed: check now (buffered 1, never blocks)

	checks, checkFailures, downs, kicked atomic.Uint64

	// base is cancelled by Close: it ends the check loop and cuts a check
	// in progress short.
	base    context.Context
	closeFn context.CancelFunc
	wg      sync.WaitGroup
}

// HealthState is a snapshot of a Health, for readiness and stats.
type HealthState struct {
	Up bool
	// ConsecutiveFailures counts failures since the last success.
	ConsecutiveFailures int
	// LastError is the most recent failure ("" if none since the last
	// success).
	LastError string
	// LastCheck is when the last active check started (zero before the
	// first, and always with checks off).
	LastCheck time.Time
	// Checks and CheckFailures count active checks; Downs counts the
	// transitions to down; Kicked counts checks run early because a real
	// request failed at the transport level.
	Checks, CheckFailures, Downs, Kicked uint64
}

// DefaultHealthConfig is the recommended active check (the edge's
// default): every 2s, 1s each, down after 3 failures, up after 2 passes.
// The zero HealthConfig instead has checks off.
func DefaultHealthConfig() HealthConfig {
	return HealthConfig{Interval: 2 * time.Second, Timeout: time.Second, Rise: 2, Fall: 3}
}

// Validate checks cfg; errors are *conf.FieldError values naming the yaml
// key.
func (cfg *HealthConfig) Validate() error {
	for _, d := range []struct {
		field string
		v     int64
	}{{"interval", int64(cfg.Interval)}, {"timeout", int64(cfg.Timeout)}, {"rise", int64(cfg.Rise)}, {"fall", int64(cfg.Fall)}} {
		if d.v < 0 {
			return conf.Errorf(d.field, "must not be negative (0 means the default)")
		}
	}
	if cfg.Interval > 0 && cfg.Timeout > cfg.Interval {
		return conf.Errorf("timeout", "must be at most interval (%s), got %s", cfg.Interval, cfg.Timeout)
	}
	return nil
}

// NewHealth returns a Health that is up and, when cfg.Interval is set,
// runs its first check at once and then every Interval until Close.
func NewHealth(cfg HealthConfig) (*Health, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("origin: health: %w", err)
	}
	if cfg.Interval > 0 && cfg.Check == nil {
		return nil, errors.New("origin: health: active checks need a Check function")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = min(cfg.Interval, 2*time.Second)
	}
	if cfg.Rise == 0 {
		cfg.Rise = 2
	}
	if cfg.Fall == 0 {
		cfg.Fall = 3
	}
	h := &Health{cfg: cfg, kick: make(chan struct{}, 1)}
	h.base, h.closeFn = context.WithCancel(context.Background())
	h.up.Store(true)
	if cfg.Interval > 0 {
		h.wg.Add(1)
		go h.run()
	}
	return h, nil
}

// Up reports whether the upstream is judged usable.
func (h *Health) Up() bool { return h.up.Load() }

// Open reports whether requests should not be sent: the upstream is down
// and active checks will tell when it is back.
func (h *Health) Open() bool { return h.cfg.Interval > 0 && !h.up.Load() }

// Observe records the outcome of a real request. With active checks it
// never changes the state: a transport failure (ErrRefused, ErrReset,
// ErrTimeout) asks for a check at once, anything else is ignored. Failures
// that say nothing about the upstream (our own connection limit, an invalid
// request, a client's failed upload, a cancelled caller, ErrDown itself, a
// malformed answer) are ignored in both modes.
func (h *Health) Observe(err error) {
	transport := err != nil && (errors.Is(err, ErrRefused) || errors.Is(err, ErrReset) || errors.Is(err, ErrTimeout)) &&
		!errors.Is(err, context.Canceled) && !errors.Is(err, ErrRequestBody)
	if h.cfg.Interval > 0 {
		if transport {
			select {
			case h.kick <- struct{}{}:
			default: // a check is already asked for
			}
		}
		return
	}
	if err == nil || transport {
		h.record(err, false)
	}
}

func (h *Health) record(err error, check bool) {
	var changed, nowUp bool
	h.mu.Lock()
	if err == nil {
		h.fails, h.lastErr = 0, nil
		h.oks++
		// A check must pass Rise times in a row; without checks, a real
		// request that got an answer is proof enough.
		if !h.up.Load() && (!check || h.oks >= h.cfg.Rise) {
			h.up.Store(true)
			changed, nowUp = true, true
		}
	} else {
		h.oks = 0
		h.fails++
		h.lastErr = err
		if h.up.Load() && h.fails >= h.cfg.Fall {
			h.up.Store(false)
			h.downs.Add(1)
			changed = true
		}
	}
	h.mu.Unlock()
	if changed && h.cfg.OnChange != nil {
		h.cfg.OnChange(nowUp, err)
	}
}

// State returns a snapshot.
func (h *Health) State() HealthState {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := HealthState{
		Up:                  h.up.Load(),
		ConsecutiveFailures: h.fails,
		Checks:              h.checks.Load(),
		CheckFailures:       h.checkFailures.Load(),
		Downs:               h.downs.Load(),
		Kicked:              h.kicked.Load(),
		LastCheck:           h.lastCheck,
	}
	if h.lastErr != nil {
		s.LastError = h.lastErr.Error()
	}
	return s
}

func (h *Health) run() {
	defer h.wg.Done()
	t := time.NewTicker(h.cfg.Interval)
	defer t.Stop()
	for {
		h.checkOnce()
		if !h.waitNext(t) {
			return
		}
	}
}

// waitNext waits for the next check: the ticker's, or one a failed request
// asks for once it is due (a kick that comes too soon is dropped, so a URL
// that always fails cannot make checks run back to back). It reports false
// when the Health is closing.
func (h *Health) waitNext(t *time.Ticker) bool {
	for {
		select {
		case <-h.base.Done():
			return false
		case <-t.C:
			return true
		case <-h.kick:
			if h.kickDue() {
				h.kicked.Add(1)
				return true
			}
		}
	}
}

// kickDue reports whether a request failure may start a check now: the
// last one started at least Interval/4 ago.
func (h *Health) kickDue() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return time.Since(h.lastCheck) >= h.cfg.Interval/4
}

func (h *Health) checkOnce() {
	h.mu.Lock()
	h.lastCheck = time.Now()
	h.mu.Unlock()
	ctx, cancel := context.WithTimeout(h.base, h.cfg.Timeout)
	err := h.cfg.Check(ctx)
	cancel()
	if h.base.Err() != nil {
		return // closing: a cancelled check says nothing
	}
	h.checks.Add(1)
	if err != nil {
		h.checkFailures.Add(1)
	}
	h.record(err, true)
}

// Close stops the active checks and waits for a check in progress. It is
// safe to call more than once.
func (h *Health) Close() {
	h.closeFn()
	h.wg.Wait()
}

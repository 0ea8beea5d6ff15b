package origin

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

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
	// upstream is then judged by real requests only, and the circuit never
	// opens (nothing would find out that it is back).
	Interval time.Duration
	// Timeout bounds one check. Zero means the smaller of Interval and 2s.
	Timeout time.Duration
	// Rise is how many consecutive successful checks bring a down upstream
	// back. Zero means 2.
	Rise int
	// Fall is how many consecutive failures, of checks or of real requests,
	// mark the upstream down. Zero means 3.
	Fall int
	// Check performs one active check (Client.Check, in production).
	Check func(ctx context.Context) error
	// OnChange, when set, is called on every transition, outside any lock,
	// with the new state and the failure that caused it (nil when up).
	OnChange func(up bool, cause error)
}

// Health tracks whether the upstream is usable, from active checks and from
// the outcome of real requests, in the manner of HAProxy's rise/fall and
// nginx's max_fails: Fall consecutive failures mark it down; while active
// checks run, a down upstream is not sent requests (Open) until Rise
// consecutive checks pass; a real request that succeeds marks it up at
// once. It starts up. It is safe for concurrent use.
type Health struct {
	cfg HealthConfig
	up  atomic.Bool

	mu      sync.Mutex // guards fails, oks, lastErr and the transitions of up
	fails   int        // consecutive failures
	oks     int        // consecutive successful checks
	lastErr error

	checks, checkFailures, downs atomic.Uint64

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
	// Checks and CheckFailures count active checks; Downs counts the
	// transitions to down.
	Checks, CheckFailures, Downs uint64
}

// NewHealth returns a Health that is up and, when cfg.Interval is set,
// runs its first check at once and then every Interval until Close.
func NewHealth(cfg HealthConfig) (*Health, error) {
	if cfg.Interval < 0 || cfg.Timeout < 0 || cfg.Rise < 0 || cfg.Fall < 0 {
		return nil, errors.New("origin: health: negative interval, timeout, rise or fall")
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
	h := &Health{cfg: cfg}
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

// Observe records the outcome of a real request. Failures that say nothing
// about the upstream (our own connection limit, an invalid request, a
// cancelled caller, ErrDown itself) are ignored.
func (h *Health) Observe(err error) {
	if err != nil && (errors.Is(err, ErrBusy) || errors.Is(err, ErrInvalidRequest) || errors.Is(err, ErrRequestBody) ||
		errors.Is(err, ErrDown) || errors.Is(err, context.Canceled)) {
		return
	}
	h.record(err, false)
}

func (h *Health) record(err error, check bool) {
	var changed, nowUp bool
	h.mu.Lock()
	if err == nil {
		h.fails, h.lastErr = 0, nil
		h.oks++
		// A check must pass Rise times in a row; a real request that got
		// an answer is proof enough.
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
		select {
		case <-h.base.Done():
			return
		case <-t.C:
		}
	}
}

func (h *Health) checkOnce() {
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

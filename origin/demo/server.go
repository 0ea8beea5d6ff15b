package demo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// Sentinel errors, for errors.Is.
var (
	// ErrInvalidConfig wraps every validation error returned by New.
	ErrInvalidConfig = errors.New("demo origin: invalid config")
	// ErrStarted is returned by Start when the server is already listening.
	ErrStarted = errors.New("demo origin: already started")
	// ErrClosed is returned by Start after Close.
	ErrClosed = errors.New("demo origin: closed")

	errNegativeOffset = errors.New("demo origin: negative offset")
)

const (
	serverName = "edgeshield-demo-origin"

	// maxFaultDuration bounds every injected wait (Fault.Delay, X-Origin-Delay,
	// X-Origin-Stall, chunkdelay) so that a typo cannot park a connection for
	// hours; Close interrupts them anyway.
	maxFaultDuration = 10 * time.Minute

	// closeTimeout bounds how long Close waits for in-flight requests. Every
	// wait inside the handler ends when Close starts, so only a client that
	// refuses to read its response can hold Close this long.
	closeTimeout = 5 * time.Second
)

// Config configures a Server. The zero value serves the embedded sample site
// with no added latency and no faults.
type Config struct {
	// Root is a directory served instead of the embedded sample site, with the
	// same header rules chosen by file extension. Lookups go through os.Root,
	// so neither ".." nor symbolic links can escape it, and a path with a
	// segment starting with "." (".git", ".env") is never served. A request
	// for a directory serves its index.html. "" serves the embedded site.
	Root string

	// Latency is waited before every response except those of the control
	// endpoints /__origin/counts and /__origin/reset, which stay fast so tests
	// can always read counters. Zero means none; it must be within 0..10m.
	Latency time.Duration

	// Faults are fault-injection rules, evaluated in order for every request
	// except the control endpoints; see Fault. nil means none.
	Faults []Fault

	// Logger receives lifecycle and error logs, and one Debug record per
	// request (method, uri, status, outcome). nil discards them.
	Logger *slog.Logger
}

// Fault is one fault-injection rule. Rules are evaluated in order; every rule
// whose PathPrefix matches rolls its Rate independently, and the first one that
// fires is applied (so later rules only see the requests earlier ones spared).
// A fired rule first waits Delay, then resets the connection if Reset is set,
// else answers with Status if it is non-zero, else serves the request normally.
type Fault struct {
	// PathPrefix selects requests whose path starts with it. "" matches every
	// path; otherwise it must start with "/".
	PathPrefix string
	// Status, when non-zero, replaces the response with a short text/plain
	// body and this status code (200..599).
	Status int
	// Delay is waited before responding; it adds to Config.Latency and to an
	// X-Origin-Delay request header. 0 means none; at most 10 minutes.
	Delay time.Duration
	// Reset closes the connection without any response (with SO_LINGER 0, so
	// the client sees a TCP RST). It takes precedence over Status.
	Reset bool
	// Rate is the probability in [0, 1] that the rule fires for a matching
	// request. 0 means 1: a rule without a rate always fires.
	Rate float64
}

// Server is the demo origin. Its methods are safe for concurrent use.
type Server struct {
	cfg     Config
	log     *slog.Logger
	objects map[string]*object // embedded site by path; the map is read-only after New
	root    *os.Root           // Config.Root opened; nil for the embedded site
	etags   etagCache          // content-hash ETags of Root files
	srv     *fasthttp.Server
	done    chan struct{} // closed by Close: every wait in a handler ends early
	down    atomic.Bool   // SetDown

	countMu  sync.Mutex // guards counts
	counts   counters
	hijackWG sync.WaitGroup // hijack handlers (reset, stall) in flight

	life      sync.Mutex    // guards ln, closed, and hijackWG.Add against Close
	ln        net.Listener  // set by Start
	closed    bool          // set by Close
	serveDone chan struct{} // closed when the Serve goroutine returns
}

// New validates cfg, fills defaults and returns a Server that is not yet
// listening; call Start, or mount Handler in a server of your own.
func New(cfg Config) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	// The caller keeps its slice; later changes to it must not race with
	// request handling.
	cfg.Faults = slices.Clone(cfg.Faults)
	s := &Server{
		cfg:    cfg,
		log:    cfg.Logger,
		done:   make(chan struct{}),
		counts: newCounters(),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if cfg.Root != "" {
		root, err := os.OpenRoot(cfg.Root)
		if err != nil {
			return nil, fmt.Errorf("%w: root: %w", ErrInvalidConfig, err)
		}
		s.root = root
		s.etags = etagCache{m: make(map[string]etagEntry)}
	} else {
		objs, err := sampleSite()
		if err != nil {
			return nil, err
		}
		s.objects = objs
	}
	s.srv = &fasthttp.Server{
		Handler: s.handle,
		Name:    serverName,
		// Without this fasthttp adds "Content-Type: text/plain" to responses
		// that have none, including 304s, and a cache merging the 304's
		// headers into its stored response (RFC 9111 §4.3.4) would then
		// overwrite the real type.
		NoDefaultContentType: true,
		// Idle keep-alive connections live longer than a typical client pool's
		// idle timeout, so the client, not the origin, closes them; that avoids
		// the race of a request sent on a connection the origin is closing.
		IdleTimeout: 90 * time.Second,
		ReadTimeout: 30 * time.Second,
		// fasthttp's 4 KiB default refuses (431) request heads that an edge
		// forwarding real cookies and tracing headers easily exceeds; common
		// origins accept 8 to 16 KiB.
		ReadBufferSize: 16 << 10,
		// No WriteTimeout: stalls and slow chunked bodies are the point here.
		CloseOnShutdown: true,
		Logger:          fasthttpLogger{s.log},
	}
	return s, nil
}

func (c *Config) validate() error {
	if c.Latency < 0 {
		return fmt.Errorf("%w: latency %v is negative", ErrInvalidConfig, c.Latency)
	}
	if c.Latency > maxFaultDuration {
		return fmt.Errorf("%w: latency %v exceeds %v", ErrInvalidConfig, c.Latency, maxFaultDuration)
	}
	for i, f := range c.Faults {
		if err := f.validate(); err != nil {
			return fmt.Errorf("%w: fault %d: %w", ErrInvalidConfig, i, err)
		}
	}
	return nil
}

func (f *Fault) validate() error {
	switch {
	case f.PathPrefix != "" && !strings.HasPrefix(f.PathPrefix, "/"):
		return fmt.Errorf("path prefix %q does not start with /", f.PathPrefix)
	case f.Status != 0 && (f.Status < 200 || f.Status > 599):
		return fmt.Errorf("status %d outside 200..599", f.Status)
	case f.Delay < 0 || f.Delay > maxFaultDuration:
		return fmt.Errorf("delay %v outside 0..%v", f.Delay, maxFaultDuration)
	case math.IsNaN(f.Rate) || f.Rate < 0 || f.Rate > 1:
		return fmt.Errorf("rate %v outside [0, 1]", f.Rate)
	case f.Status == 0 && f.Delay == 0 && !f.Reset:
		return errors.New("has no effect: set Status, Delay or Reset")
	}
	return nil
}

// Start listens on addr (for example "127.0.0.1:0") and serves in a
// background goroutine until Close.
func (s *Server) Start(addr string) error {
	s.life.Lock()
	defer s.life.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.ln != nil {
		return ErrStarted
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("demo origin: listen on %s: %w", addr, err)
	}
	s.ln = ln
	s.serveDone = make(chan struct{})
	go func() {
		defer close(s.serveDone)
		if err := s.srv.Serve(ln); err != nil {
			s.log.Error("demo origin: serve", "err", err)
		}
	}()
	s.log.Info("demo origin listening", "addr", ln.Addr().String(), "root", s.cfg.Root)
	return nil
}

// Addr returns the listening "host:port" after Start, "" before.
func (s *Server) Addr() string {
	s.life.Lock()
	defer s.life.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// URL returns "http://" + Addr().
func (s *Server) URL() string { return "http://" + s.Addr() }

// Close stops listening, ends every injected wait at once, waits for in-flight
// requests (at most 5 s) and for the serve goroutine, and releases the Root
// directory. It is idempotent; calls after the first return nil.
func (s *Server) Close() error {
	s.life.Lock()
	if s.closed {
		s.life.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	started := s.ln != nil
	s.life.Unlock()

	var errs []error
	if started {
		ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		if err := s.srv.ShutdownWithContext(ctx); err != nil {
			errs = append(errs, fmt.Errorf("demo origin: shutdown: %w", err))
		}
		cancel()
		<-s.serveDone
	}
	s.hijackWG.Wait()
	if s.root != nil {
		if err := s.root.Close(); err != nil {
			errs = append(errs, fmt.Errorf("demo origin: close root: %w", err))
		}
	}
	s.log.Info("demo origin closed")
	return errors.Join(errs...)
}

// Handler returns the request handler, for tests that mount the origin in a
// fasthttp server of their own (for example on fasthttputil.InmemoryListener).
// Close still ends its injected waits and waits for its hijacked connections.
func (s *Server) Handler() func(*fasthttp.RequestCtx) { return s.handle }

// SetDown simulates an outage: while down, every request (control endpoints
// included) has its connection reset without a response and is not counted.
func (s *Server) SetDown(down bool) { s.down.Store(down) }

// handle is the single entry point.
func (s *Server) handle(ctx *fasthttp.RequestCtx) {
	defer s.recoverPanic(ctx)
	outcome := s.serve(ctx)
	// Guarded: building the attributes would allocate on every request.
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		status := ctx.Response.StatusCode()
		if outcome == "reset" || outcome == "down" {
			status = 0 // nothing was sent
		}
		s.log.Debug("demo origin: request", "method", string(ctx.Method()), "uri", string(ctx.RequestURI()),
			"status", status, "outcome", outcome)
	}
}

// serve handles one request in the order documented in the package comment
// and says how it ended: "served", "reset", "down" or "stalled".
func (s *Server) serve(ctx *fasthttp.RequestCtx) string {
	if s.down.Load() {
		s.resetConn(ctx)
		return "down"
	}
	path := ctx.Path()
	switch string(path) {
	case "/__origin/counts":
		s.serveCounts(ctx)
		return "served"
	case "/__origin/reset":
		s.serveReset(ctx)
		return "served"
	}
	internal := bytes.HasPrefix(path, []byte("/__origin/"))
	if !internal {
		s.count(ctx.Method(), path)
	}
	plan, err := s.planFaults(ctx, path)
	if err != nil {
		plainError(ctx, fasthttp.StatusBadRequest, err.Error())
		return "served"
	}
	s.wait(s.cfg.Latency + plan.delay)
	if plan.reset {
		s.resetConn(ctx)
		return "reset"
	}
	switch {
	case plan.status != 0:
		plainError(ctx, plan.status, fmt.Sprintf("injected fault: status %d", plan.status))
	case internal:
		s.serveInternal(ctx, path)
	case bytes.HasPrefix(path, []byte("/dyn/")):
		s.serveDyn(ctx)
	default:
		s.serveContent(ctx, path)
	}
	if plan.stall > 0 {
		s.stall(ctx, plan.stall)
		return "stalled"
	}
	return "served"
}

// wait blocks for d, or until Close starts.
func (s *Server) wait(d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.done:
	}
}

// recoverPanic turns a handler panic into a 500: fasthttp has no recovery of
// its own, and one bad request must not take the process (and every test
// sharing it) down.
func (s *Server) recoverPanic(ctx *fasthttp.RequestCtx) {
	if r := recover(); r != nil {
		s.log.Error("demo origin: handler panic", "panic", r, "uri", string(ctx.RequestURI()), "stack", string(debug.Stack()))
		// Undo a reset or stall registered before the panic: the client
		// gets the 500.
		ctx.HijackSetNoResponse(false)
		ctx.Hijack(nil)
		ctx.Response.Reset()
		plainError(ctx, fasthttp.StatusInternalServerError, "internal error")
	}
}

// serveInternal answers /__origin/* paths other than the control endpoints.
func (s *Server) serveInternal(ctx *fasthttp.RequestCtx, path []byte) {
	if string(path) != "/__origin/health" {
		plainError(ctx, fasthttp.StatusNotFound, "not found")
		return
	}
	if !ctx.IsGet() && !ctx.IsHead() {
		methodNotAllowed(ctx, "GET, HEAD")
		return
	}
	ctx.Response.Header.Set(fasthttp.HeaderCacheControl, "no-store")
	ctx.SetContentType("text/plain; charset=utf-8")
	ctx.SetBodyString("ok\n")
}

// serveContent answers a static object of the embedded site or of Root.
func (s *Server) serveContent(ctx *fasthttp.RequestCtx, path []byte) {
	if !ctx.IsGet() && !ctx.IsHead() {
		methodNotAllowed(ctx, "GET, HEAD")
		return
	}
	var (
		e   entity
		ok  bool
		err error
	)
	if s.root != nil {
		e, ok, err = s.rootEntity(string(path))
	} else {
		e, ok = s.siteEntity(path)
	}
	switch {
	case err != nil:
		s.log.Error("demo origin: read file", "path", string(path), "err", err)
		plainError(ctx, fasthttp.StatusInternalServerError, "cannot read file")
	case !ok:
		plainError(ctx, fasthttp.StatusNotFound, "not found")
	default:
		serveEntity(ctx, e)
	}
}

// plainError writes a short text/plain body. It sets no Cache-Control, as a
// typical origin does for errors.
func plainError(ctx *fasthttp.RequestCtx, status int, msg string) {
	ctx.SetStatusCode(status)
	ctx.SetContentType("text/plain; charset=utf-8")
	ctx.SetBodyString(msg + "\n")
}

// methodNotAllowed answers 405 with the Allow header RFC 9110 §15.5.6 requires.
func methodNotAllowed(ctx *fasthttp.RequestCtx, allow string) {
	ctx.Response.Header.Set(fasthttp.HeaderAllow, allow)
	plainError(ctx, fasthttp.StatusMethodNotAllowed, "method not allowed")
}

// fasthttpLogger routes fasthttp's internal messages to slog.
type fasthttpLogger struct{ l *slog.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) {
	f.l.Warn(fmt.Sprintf(format, args...), "component", "fasthttp")
}

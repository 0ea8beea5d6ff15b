// Package edge is an Edgeshield node: the fasthttp listeners, the caching
// reverse-proxy pipeline (lookup, coalesced origin fetch, store), the admin
// and health endpoints, configuration loading and graceful drain.
//
// Concurrency: a Node is safe for concurrent use once Start has returned.
// Every goroutine it starts (listeners, background fills and revalidations)
// is stopped by Shutdown, which is safe to call more than once.
// *fasthttp.RequestCtx values never leave the handler that received them;
// whatever outlives a request (stored entries, flights) is copied first.
package edge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeshield/edgeshield/cache"
	"github.com/edgeshield/edgeshield/edge/certs"
	"github.com/edgeshield/edgeshield/origin"
	"github.com/edgeshield/edgeshield/origin/demo"
	"github.com/valyala/fasthttp"
)

// Version is the software version, set by the build (-ldflags -X).
var Version = "dev"

// shieldHopHeader marks a request forwarded by a cluster peer; it is never
// forwarded to the origin.
const shieldHopHeader = "X-Edgeshield-Hop"

// Node is one edge node.
type Node struct {
	cfg  Config
	log  *slog.Logger
	name string
	via  string // our Via member, "1.1 <name>"

	viaBytes   []byte
	healthPath string
	encodings  [][]byte       // cache.accept_encodings, lower-cased: the values normalizeAcceptEncoding writes
	trusted    []netip.Prefix // server.trusted_proxies

	store   *cache.Store
	blobs   *cache.Blobs // off-heap bodies (cache.offheap_min_size)
	purges  *cache.Purges
	policy  cache.Policy
	origin  *origin.Client
	health  *origin.Health // the origin's state, from checks and real requests
	access  *accessLog     // nil when log.access is off
	flights *origin.Group
	hfp     hitForPass
	latency requestDurations // the public listeners' response times (GET /metrics)
	stats   counters
	demo    *demo.Server // when origin.url is "demo"

	public, admin     *fasthttp.Server
	plain             *fasthttp.Server // plain HTTP beside HTTPS (challenges, redirect)
	publicLn, adminLn net.Listener
	tlsLn             net.Listener
	certs             *certs.Manager
	peers             *peerSet       // nil without a cluster
	listeners         []net.Listener // every listener given to serve (Start, before Shutdown)
	serveWG           sync.WaitGroup // listener goroutines
	fillsWG           sync.WaitGroup // background fills and revalidations

	now          func() time.Time // the clock; injectable for tests
	realClock    bool             // now is time.Now (see requestTime)
	stopMaint    chan struct{}    // closed by Shutdown: ends the maintenance loop
	draining     atomic.Bool
	shutdownOnce sync.Once
	shutdownErr  error
}

// Options are the parts of a node that are not configuration.
type Options struct {
	// Logger receives the node's logs; nil builds one from cfg.Log on stderr.
	Logger *slog.Logger
	// Clock replaces time.Now (tests drive freshness with it); nil = time.Now.
	Clock func() time.Time
}

// New builds a node from a validated configuration. It starts nothing but
// the demo origin when origin.url is "demo"; call Start to listen.
func New(cfg Config, opts Options) (*Node, error) {
	if err := cfg.Validate("", nil); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: opts.Logger, now: opts.Clock}
	if n.now == nil {
		n.now, n.realClock = time.Now, true
	}
	if n.log == nil {
		n.log = NewLogger(cfg.Log, os.Stderr)
	}
	n.name = cfg.Name
	if n.name == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "edgeshield"
		}
		n.name = h
	}
	n.via = "1.1 " + n.name + " (edgeshield)"
	n.viaBytes = []byte(n.via)
	n.healthPath = cfg.Server.HealthPath
	for _, c := range cfg.Cache.AcceptEncodings {
		n.encodings = append(n.encodings, []byte(strings.ToLower(c)))
	}
	for _, p := range cfg.Server.TrustedProxies {
		pfx, _ := parseTrustedProxy(p) // Validate checked it
		n.trusted = append(n.trusted, pfx)
	}

	store, err := cache.NewStore(cache.StoreConfig{MaxBytes: int64(cfg.Cache.MaxBytes)})
	if err != nil {
		return nil, fmt.Errorf("cache store: %w", err)
	}
	n.store = store
	n.blobs = cache.NewBlobs(cache.BlobFileBudget())
	n.purges = cache.NewPurges(cfg.Cache.PurgeTTL.D())
	n.policy = cache.Policy{
		StoreSetCookie:    cfg.Cache.StoreSetCookie,
		HeuristicFraction: cfg.Cache.HeuristicFraction,
		MaxHeuristic:      cfg.Cache.MaxHeuristic.D(),
	}
	n.flights = origin.NewGroup()
	n.hfp = hitForPass{ttl: cfg.Cache.HitForPass.D(), m: map[string]time.Time{}}

	originURL := cfg.Origin.URL
	if originURL == "demo" {
		d, err := demo.New(demo.Config{Logger: n.log.With("component", "demo-origin")})
		if err != nil {
			n.store.Close()
			return nil, fmt.Errorf("demo origin: %w", err)
		}
		if err := d.Start("127.0.0.1:0"); err != nil {
			n.store.Close()
			return nil, fmt.Errorf("demo origin: %w", err)
		}
		n.demo = d
		originURL = d.URL()
		n.cfg.Origin.URL = originURL
	}
	var tlsConf *tls.Config
	if cfg.Origin.CAFile != "" {
		pem, err := os.ReadFile(cfg.Origin.CAFile)
		if err != nil {
			n.closeParts()
			return nil, &ConfigError{Key: "origin.ca_file", Msg: err.Error()}
		}
		pool, _ := x509.SystemCertPool()
		if pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			n.closeParts()
			return nil, &ConfigError{Key: "origin.ca_file", Msg: "no PEM certificates in " + cfg.Origin.CAFile}
		}
		tlsConf = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	client, err := origin.NewClient(origin.ClientConfig{
		URL:             originURL,
		ConnectTimeout:  cfg.Origin.ConnectTimeout.D(),
		HeaderTimeout:   cfg.Origin.HeaderTimeout.D(),
		IdleReadTimeout: cfg.Origin.IdleReadTimeout.D(),
		MaxConns:        cfg.Origin.MaxConns,
		MaxConnWait:     cfg.Origin.MaxConnWait.D(),
		TLS:             tlsConf,
		Name:            "edgeshield/" + Version,
	})
	if err != nil {
		n.closeParts()
		return nil, &ConfigError{Key: "origin.url", Msg: err.Error()}
	}
	n.origin = client
	if n.health, err = n.newHealth(); err != nil {
		n.closeParts()
		return nil, &ConfigError{Key: "origin.health_check", Msg: err.Error()}
	}

	if cfg.Log.Access != "" {
		if n.access, err = newAccessLog(cfg.Log.Access, cfg.Log.AccessFormat); err != nil {
			n.closeParts()
			return nil, &ConfigError{Key: "log.access", Msg: err.Error()}
		}
	}

	n.public = n.newPublicServer(n.handle)
	n.admin = &fasthttp.Server{
		Handler:               n.handleAdmin,
		Name:                  "edgeshield-admin",
		NoDefaultServerHeader: true,
		ReadTimeout:           10 * time.Second,
		WriteTimeout:          10 * time.Second,
		IdleTimeout:           30 * time.Second,
		MaxRequestBodySize:    1 << 20,
		CloseOnShutdown:       true,
		Logger:                fasthttpLogger{n.log},
	}
	return n, nil
}

func (n *Node) newPublicServer(h fasthttp.RequestHandler) *fasthttp.Server {
	c := n.cfg.Server
	return &fasthttp.Server{
		Handler:               h,
		Name:                  "edgeshield",
		NoDefaultServerHeader: true,
		NoDefaultContentType:  true,
		ReadTimeout:           c.ReadTimeout.D(),
		WriteTimeout:          c.WriteTimeout.D(),
		IdleTimeout:           c.IdleTimeout.D(),
		ReadBufferSize:        int(c.MaxHeaderBytes),
		MaxRequestBodySize:    int(c.MaxBodyBytes),
		Concurrency:           c.Concurrency,
		CloseOnShutdown:       true,
		Logger:                fasthttpLogger{n.log},
		ErrorHandler:          n.badRequest,
	}
}

// Start opens the public (and, with TLS, HTTPS) and admin listeners and
// serves in the background.
func (n *Node) Start() error {
	ln, err := net.Listen("tcp", n.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", n.cfg.Listen, err)
	}
	n.publicLn = ln
	var tlsLn net.Listener
	if n.cfg.TLS.Enabled() {
		if tlsLn, err = net.Listen("tcp", n.cfg.TLS.Listen); err != nil {
			ln.Close()
			return fmt.Errorf("tls listen %s: %w", n.cfg.TLS.Listen, err)
		}
	}
	if n.cfg.Admin.Listen != "" {
		aln, err := net.Listen("tcp", n.cfg.Admin.Listen)
		if err != nil {
			ln.Close()
			if tlsLn != nil {
				tlsLn.Close()
			}
			return fmt.Errorf("admin listen %s: %w", n.cfg.Admin.Listen, err)
		}
		n.adminLn = aln
		n.serve(n.admin, aln, "admin")
	}
	if tlsLn != nil {
		if err := n.startTLS(ln, tlsLn); err != nil {
			ln.Close()
			tlsLn.Close()
			return err
		}
	} else {
		n.serve(n.public, ln, "public")
	}
	if n.cfg.Cluster.Enabled {
		if err := n.startCluster(); err != nil {
			n.closeListeners()
			return err
		}
	}
	n.stopMaint = make(chan struct{})
	n.serveWG.Add(1)
	go n.maintain()
	n.log.Info("edge node started", "name", n.name, "listen", ln.Addr().String(), "tls", n.TLSAddr(),
		"admin", n.AdminAddr(), "origin", n.cfg.Origin.URL, "cache_max_bytes", n.cfg.Cache.MaxBytes.String(), "version", Version)
	return nil
}

func (n *Node) serve(s *fasthttp.Server, ln net.Listener, what string) {
	n.listeners = append(n.listeners, ln)
	n.serveWG.Add(1)
	go func() {
		defer n.serveWG.Done()
		if err := s.Serve(ln); err != nil && !errors.Is(err, net.ErrClosed) {
			n.log.Error("listener stopped", "listener", what, "err", err)
		}
	}()
}

// Addr is the public listener's address ("" before Start).
func (n *Node) Addr() string {
	if n.publicLn == nil {
		return ""
	}
	return n.publicLn.Addr().String()
}

// AdminAddr is the admin listener's address ("" when disabled).
func (n *Node) AdminAddr() string {
	if n.adminLn == nil {
		return ""
	}
	return n.adminLn.Addr().String()
}

// OriginURL is the origin in use (the demo origin's address for "demo").
func (n *Node) OriginURL() string { return n.cfg.Origin.URL }

// Name is the node's name as used in Cache-Status and Via.
func (n *Node) Name() string { return n.name }

// Shutdown drains the node: readiness turns 503 at once, the node waits the
// configured drain delay (so health checkers and DNS notice), stops
// accepting, lets in-flight requests and background fills finish (bounded
// by ctx), then releases everything. Safe to call more than once.
func (n *Node) Shutdown(ctx context.Context) error {
	n.shutdownOnce.Do(func() { n.shutdownErr = n.shutdown(ctx) })
	return n.shutdownErr
}

func (n *Node) shutdown(ctx context.Context) error {
	n.draining.Store(true)
	if d := n.cfg.Server.DrainDelay.D(); d > 0 && n.publicLn != nil {
		n.log.Info("draining: readiness is 503; waiting before closing listeners", "delay", d)
		select {
		case <-time.After(d):
		case <-ctx.Done():
		}
	}
	if n.stopMaint != nil {
		close(n.stopMaint)
	}
	var errs []error
	if n.peers != nil {
		// Leave before we stop accepting: peers pick other owners at once.
		if err := n.peers.c.Leave(2 * time.Second); err != nil {
			errs = append(errs, fmt.Errorf("cluster leave: %w", err))
		}
	}
	if n.publicLn != nil {
		errs = append(errs, n.public.ShutdownWithContext(ctx))
	}
	if n.peers != nil {
		errs = append(errs, n.peers.srv.ShutdownWithContext(ctx))
	}
	if n.plain != nil {
		errs = append(errs, n.plain.ShutdownWithContext(ctx))
	}
	if n.adminLn != nil {
		errs = append(errs, n.admin.ShutdownWithContext(ctx))
	}
	// fasthttp's Shutdown only closes the listeners its Serve has already
	// registered: a Serve goroutine that had not reached that point (a
	// shutdown right after Start) would accept forever. Closing them here
	// too ends every Serve.
	for _, ln := range n.listeners {
		ln.Close()
	}
	n.serveWG.Wait()
	done := make(chan struct{})
	go func() { n.fillsWG.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		// An already expired ctx must not report fills that are done:
		// select picks at random among ready cases.
		select {
		case <-done:
		default:
			errs = append(errs, fmt.Errorf("background fills still running: %w", ctx.Err()))
		}
	}
	n.closeParts()
	n.log.Info("edge node stopped", "name", n.name)
	return errors.Join(errs...)
}

// closeListeners stops whatever Start had begun serving when a later step
// of Start fails.
func (n *Node) closeListeners() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n.public.ShutdownWithContext(ctx)
	if n.plain != nil {
		n.plain.ShutdownWithContext(ctx)
	}
	if n.adminLn != nil {
		n.admin.ShutdownWithContext(ctx)
	}
	if n.publicLn != nil {
		n.publicLn.Close()
	}
	n.serveWG.Wait()
}

func (n *Node) closeParts() {
	if n.peers != nil {
		n.peers.c.Close()
		n.peers.close()
	}
	if n.certs != nil {
		n.certs.Close()
	}
	if n.health != nil {
		n.health.Close()
	}
	if n.access != nil {
		if err := n.access.Close(); err != nil {
			n.log.Warn("access log", "err", err)
		}
	}
	if n.origin != nil {
		n.origin.Close()
	}
	if n.demo != nil {
		n.demo.Close()
	}
	if n.store != nil {
		n.store.Close()
	}
}

// maintain makes purges permanent before their tombstones expire: every
// half purge TTL it applies the tombstones to every resident entry (an entry
// nobody asked for since the purge would otherwise become servable again
// when its tombstone is dropped), then drops expired tombstones.
func (n *Node) maintain() {
	defer n.serveWG.Done()
	defer n.recoverBackground("maintenance")
	every := n.cfg.Cache.PurgeTTL.D() / 2
	if every < time.Second {
		every = time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-n.stopMaint:
			return
		case <-t.C:
			inv, del := n.store.Sweep(n.purges)
			pruned := n.purges.Prune(n.now())
			if inv+del+pruned > 0 {
				n.log.Debug("purge sweep", "invalidated", inv, "deleted", del, "tombstones_dropped", pruned)
			}
		}
	}
}

// upstream sends a fetch to the origin, unless its health check holds the
// circuit open: then nothing is sent and the caller answers stale or 502 at
// once. The outcome feeds the origin's health.
func (n *Node) upstream(ctx context.Context, host []byte, req *origin.Request) (*origin.Response, error) {
	if n.health.Open() {
		n.stats.originShortCircuited.Add(1)
		return nil, origin.ErrDown
	}
	resp, err := n.origin.Do(ctx, req)
	n.health.Observe(err)
	return resp, err
}

// newHealth starts the origin's health tracking (origin.health_check).
func (n *Node) newHealth() (*origin.Health, error) {
	hc := n.cfg.Origin.HealthCheck
	host := ""
	if h := n.cfg.Origin.HostHeader; h != "pass" && h != "origin" {
		host = h
	}
	return origin.NewHealth(origin.HealthConfig{
		Interval: hc.Interval.D(),
		Timeout:  hc.Timeout.D(),
		Rise:     hc.Rise,
		Fall:     hc.Fall,
		Check: func(ctx context.Context) error {
			return n.origin.Check(ctx, hc.Path, host)
		},
		OnChange: func(up bool, cause error) {
			if up {
				n.log.Info("origin is up", "origin", n.cfg.Origin.URL)
			} else {
				n.log.Warn("origin is down; misses are answered from stale copies or with 502 until it passes its checks",
					"origin", n.cfg.Origin.URL, "err", cause, "active_checks", hc.Interval > 0)
			}
		},
	})
}

// badRequest answers requests fasthttp could not parse: 431 for oversized
// headers, 413 for oversized bodies, 408 on read timeout, else 400. The
// node stays up whatever the bytes.
func (n *Node) badRequest(ctx *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	status := fasthttp.StatusBadRequest
	switch {
	case errors.As(err, &small):
		status = fasthttp.StatusRequestHeaderFieldsTooLarge
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		status = fasthttp.StatusRequestEntityTooLarge
	default:
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			status = fasthttp.StatusRequestTimeout
		}
	}
	n.log.Debug("malformed request", "status", status, "err", err, "remote", ctx.RemoteAddr().String())
	ctx.Error(fasthttp.StatusMessage(status)+"\n", status)
	ctx.SetConnectionClose()
}

// NewLogger builds the slog logger described by c.
func NewLogger(c LogConfig, w io.Writer) *slog.Logger {
	var lvl slog.Level
	switch c.Level {
	case "debug":
		lvl = slog.LevelDebug
	case "warn":
		lvl = slog.LevelWarn
	case "error":
		lvl = slog.LevelError
	default:
		lvl = slog.LevelInfo
	}
	ho := &slog.HandlerOptions{Level: lvl}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, ho))
	}
	return slog.New(slog.NewTextHandler(w, ho))
}

// fasthttpLogger adapts slog to fasthttp's Logger.
type fasthttpLogger struct{ l *slog.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) {
	f.l.Warn(fmt.Sprintf(format, args...), "component", "fasthttp")
}

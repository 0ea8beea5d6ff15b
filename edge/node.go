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
	encodings  [][]byte       // cache.accept_encodings, lower-cased
	aeFields   [][]byte       // per set of encodings (bit i: encodings[i]), the Accept-Encoding value normalizeAcceptEncoding writes
	compress   *compressor    // cache.compress; nil when off
	trusted    []netip.Prefix // server.trusted_proxies

	store   *cache.Store
	blobs   *cache.Blobs // off-heap bodies (cache.offheap_min_size)
	purges  *cache.Purges
	policy  cache.Policy
	origin  *origin.Client
	health  *origin.Health // the origin's state, from checks and real requests
	access  *accessLog     // nil when log.access is off
	purger  *purger        // local and cluster-wide purges
	api     *admin         // the admin listener's endpoints
	flights *flights
	hfp     hitForPass
	latency requestDurations // the public listeners' response times (GET /metrics)
	stats   counters
	rate    *rateLimiter // server.rate_limit; nil when off
	conns   *connLimiter // server.max_conns_per_ip; nil when off

	public, admin     *fasthttp.Server
	plain             *fasthttp.Server // plain HTTP beside HTTPS (challenges, redirect)
	publicLn, adminLn net.Listener
	tlsLn             net.Listener
	certs             *certs.Manager
	fronts            fronts          // HTTP/2 and HTTP/3 (h2.go, h3.go)
	peers             *peerSet        // nil without a cluster
	listeners         []net.Listener  // every listener given to serve (Start, before Shutdown)
	serveWG           sync.WaitGroup  // listener goroutines
	base              context.Context // every upstream call and background task; cancelled by Shutdown
	cancelBase        context.CancelFunc
	bgMu              sync.Mutex     // guards bgClosed and bgWG.Add
	bgClosed          bool           // Shutdown began: no new background work
	bgStuck           bool           // background work outlived its cancellation: the store stays open
	bgWG              sync.WaitGroup // fills, revalidations, body drains (goBackground)
	bgRunning         atomic.Int64   // goBackground tasks that have not returned yet

	now          func() time.Time // the clock; injectable for tests
	realClock    bool             // now is time.Now (see requestTime)
	stopMaint    chan struct{}    // closed by Shutdown: ends the maintenance loop
	draining     atomic.Bool
	opts         Options      // the hooks (Listen, ListenPacket)
	sockMu       sync.Mutex   // guards sockets
	sockets      []*socket    // every listening socket opened (handover.go)
	handingOver  atomic.Bool  // Handover began: Connection: close, no drain delay
	openConns    atomic.Int64 // connections accepted on sockets and not closed yet
	shutdownOnce sync.Once
	shutdownErr  error
}

// Options are the parts of a node that are not configuration.
type Options struct {
	// Logger receives the node's logs; nil builds one from cfg.Log on stderr.
	Logger *slog.Logger
	// Clock replaces time.Now (tests drive freshness with it); nil = time.Now.
	Clock func() time.Time
	// Listen opens every TCP listener (public, HTTPS, admin, peer); nil
	// means net.Listen. cmd/edgeshield passes tableflip's, so that an
	// upgraded process inherits the sockets (handover.go).
	Listen func(network, addr string) (net.Listener, error)
	// ListenPacket opens the HTTP/3 UDP socket; nil means net.ListenPacket.
	ListenPacket func(network, addr string) (net.PacketConn, error)
}

// New builds a node from a validated configuration; call Start to listen.
// origin.url must be a URL: "demo" is for the caller to resolve (see
// cmd/edgeshield), so that this package never imports the demo origin.
func New(cfg Config, opts Options) (*Node, error) {
	if err := cfg.Validate("", nil); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: opts.Logger, now: opts.Clock, opts: opts}
	n.base, n.cancelBase = context.WithCancel(context.Background())
	if n.now == nil {
		n.now, n.realClock = time.Now, true
	}
	if n.log == nil {
		n.log = NewLogger(cfg.Log, os.Stderr)
	}
	n.initHeaders()

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
	n.flights = n.newFlights()
	if cfg.Server.RateLimit.Rate > 0 {
		n.rate = newRateLimiter(cfg.Server.RateLimit)
	}
	if cfg.Server.MaxConnsPerIP > 0 {
		n.conns = newConnLimiter(cfg.Server.MaxConnsPerIP)
	}
	n.hfp = hitForPass{ttl: cfg.Cache.HitForPass.D(), m: map[string]time.Time{}}

	if err := n.newOrigin(); err != nil {
		n.closeParts()
		return nil, err
	}

	if cfg.Log.Access != "" {
		if n.access, err = newAccessLog(cfg.Log.Access, cfg.Log.AccessFormat); err != nil {
			n.closeParts()
			return nil, &ConfigError{Key: "log.access", Msg: err.Error()}
		}
	}

	n.purger = &purger{store: n.store, purges: n.purges, hfp: &n.hfp, now: n.now, log: n.log}
	n.api = n.newAdmin()
	n.public = n.newPublicServer(n.handleH1)
	n.admin = newAdminServer(n.closeOnHandover(n.api.handle), n.log)
	return n, nil
}

// newAdminServer is the admin listener's server: small fixed limits, as
// operators and scrapers send small requests.
func newAdminServer(h fasthttp.RequestHandler, log *slog.Logger) *fasthttp.Server {
	return &fasthttp.Server{
		Handler:               h,
		Name:                  "edgeshield-admin",
		NoDefaultServerHeader: true,
		ReadTimeout:           10 * time.Second,
		WriteTimeout:          10 * time.Second,
		IdleTimeout:           30 * time.Second,
		MaxRequestBodySize:    1 << 20,
		CloseOnShutdown:       true,
		Logger:                fasthttpLogger{log},
		SecureErrorLogMessage: true,
	}
}

// newAdmin builds the admin API from the parts it reads; Start adds the
// cluster and TLS parts when they are on.
func (n *Node) newAdmin() *admin {
	return &admin{
		token:        n.cfg.Admin.Token,
		node:         n.name,
		store:        n.store,
		health:       n.health,
		draining:     &n.draining,
		stats:        n.Stats,
		metrics:      exposition{stats: n.Stats, latency: &n.latency},
		purger:       n.purger,
		tlsMode:      n.cfg.TLS.Mode,
		recoverPanic: n.recoverPanic,
	}
}

// serveReadiness answers the public health path (server.health_path) as
// /readyz does.
func (n *Node) serveReadiness(ctx *fasthttp.RequestCtx) { n.api.serveReadiness(ctx) }

func (n *Node) newPublicServer(h fasthttp.RequestHandler) *fasthttp.Server {
	c := n.cfg.Server
	s := &fasthttp.Server{
		// NoDefaultDate: the node writes Date itself, the origin's on
		// cached responses (RFC 9110 §6.6.1; see date.go). The front
		// door (frontdoor.go) checks framing before anything else.
		Handler:               n.closeOnHandover(n.withDate(n.frontDoor(h))),
		Name:                  "edgeshield",
		NoDefaultServerHeader: true,
		NoDefaultContentType:  true,
		NoDefaultDate:         true,
		ReadTimeout:           c.ReadTimeout.D(),
		WriteTimeout:          c.WriteTimeout.D(),
		IdleTimeout:           c.IdleTimeout.D(),
		ReadBufferSize:        int(c.MaxHeaderBytes),
		// Bodies reach the handler as a stream (at most 8 KiB read ahead)
		// and go to the origin as they arrive (pass, attachBody): memory
		// per upload stays bounded whatever its size. fasthttp then enforces
		// no limit itself; attachBody applies MaxRequestBody.
		StreamRequestBody:  true,
		MaxRequestBodySize: int(c.MaxRequestBody),
		// Pre-parsing would buffer multipart uploads (up to 16 MiB in
		// memory each) and forward a re-encoded form, not the client's bytes.
		DisablePreParseMultipartForm: true,
		ExpectHandler:                n.expectContinue,
		Concurrency:                  c.Concurrency,
		CloseOnShutdown:              true,
		Logger:                       fasthttpLogger{n.log},
		ErrorHandler:                 n.withDateOnError(n.badRequest),
		SecureErrorLogMessage:        true, // parse errors must not quote request bytes (secrets) into logs
	}
	if n.conns != nil {
		s.ConnState = n.conns.connState
	}
	return s
}

// Start opens the public (and, with TLS, HTTPS) and admin listeners and
// serves in the background. Every part (TLS, cluster) is built before the
// first listener serves: a request that arrived while the cluster glue was
// half built used to meet a nil member list (a panic, a 500 from /readyz).
func (n *Node) Start() error {
	lns, err := n.listen()
	if err != nil {
		return err
	}
	if lns.tls != nil {
		if err := n.buildTLS(lns.tls); err != nil {
			lns.close()
			return err
		}
	}
	if n.cfg.Cluster.Enabled {
		if err := n.startCluster(); err != nil {
			lns.close()
			n.closeListeners()
			return err
		}
	}
	if lns.admin != nil {
		n.adminLn = lns.admin
		n.serve(n.admin, lns.admin, "admin")
	}
	if lns.tls != nil {
		n.serveTLS(lns.public, lns.tls)
	} else {
		n.serve(n.public, lns.public, "public")
	}
	n.stopMaint = make(chan struct{})
	n.serveWG.Add(1)
	go n.maintain()
	n.log.Info("edge node started", "name", n.name, "listen", lns.public.Addr().String(), "tls", n.TLSAddr(),
		"admin", n.AdminAddr(), "origin", n.cfg.Origin.URL, "cache_max_bytes", n.cfg.Cache.MaxBytes.String(), "version", Version)
	return nil
}

// listeners are the node's bound sockets before anything serves on them.
type listeners struct{ public, tls, admin net.Listener }

func (l listeners) close() {
	for _, ln := range []net.Listener{l.public, l.tls, l.admin} {
		if ln != nil {
			ln.Close()
		}
	}
}

// listen binds the public, HTTPS and admin listeners (all or none). The
// public ones count connections per client address (server.max_conns_per_ip).
func (n *Node) listen() (listeners, error) {
	var l listeners
	var err error
	if l.public, err = n.listenTCP(n.cfg.Listen); err != nil {
		return l, fmt.Errorf("listen %s: %w", n.cfg.Listen, err)
	}
	if n.conns != nil {
		l.public = n.conns.listener(l.public)
	}
	n.publicLn = l.public
	if n.cfg.TLS.Enabled() {
		if l.tls, err = n.listenTCP(n.cfg.TLS.Listen); err != nil {
			l.close()
			return listeners{}, fmt.Errorf("tls listen %s: %w", n.cfg.TLS.Listen, err)
		}
		if n.conns != nil {
			l.tls = n.conns.listener(l.tls)
		}
	}
	if n.cfg.Admin.Listen != "" {
		if l.admin, err = n.listenTCP(n.cfg.Admin.Listen); err != nil {
			l.close()
			return listeners{}, fmt.Errorf("admin listen %s: %w", n.cfg.Admin.Listen, err)
		}
	}
	return l, nil
}

func (n *Node) serve(s *fasthttp.Server, ln net.Listener, what string) {
	if what != "admin" {
		ln = frontListener{ln} // strict framing before fasthttp's parser (frontdoor.go)
	}
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

// OriginURL is the origin in use.
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
	// A handover needs no delay: the new process accepts on the same sockets.
	if d := n.cfg.Server.DrainDelay.D(); d > 0 && n.publicLn != nil && !n.handingOver.Load() {
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
	errs = append(errs, n.stopFronts(ctx))
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
	if err := n.stopBackground(ctx); err != nil {
		errs = append(errs, err)
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
	if n.store != nil && !n.bgStuck {
		// Not under a fill still writing: ristretto's Close races a
		// concurrent Set (stopBackground).
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
			if n.rate != nil {
				n.rate.sweep(n.now().UnixNano())
			}
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

// initHeaders derives the node's name, Via member and the per-request
// tables of accepted codings and trusted proxies from the configuration.
func (n *Node) initHeaders() {
	cfg := n.cfg
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
	n.aeFields = make([][]byte, 1<<len(n.encodings))
	for set := range n.aeFields {
		n.aeFields[set] = cache.AppendEncodingField(nil, uint(set), n.encodings)
	}
	n.compress = newCompressor(cfg.Cache, n.encodings)
	for _, p := range cfg.Server.TrustedProxies {
		pfx, _ := parseTrustedProxy(p) // Validate checked it
		n.trusted = append(n.trusted, pfx)
	}
}

// newOrigin builds the origin client and its health from cfg.Origin (the
// caller closes the node's parts when it fails).
func (n *Node) newOrigin() error {
	cfg := n.cfg
	if cfg.Origin.URL == "demo" {
		// The caller (cmd/edgeshield) starts the demo origin and passes
		// its URL: the node is never in the business of test servers.
		return errors.New(`origin.url "demo" is resolved by the caller: start the demo origin and set its URL`)
	}
	var tlsConf *tls.Config
	if cfg.Origin.CAFile != "" {
		pem, err := os.ReadFile(cfg.Origin.CAFile)
		if err != nil {
			return &ConfigError{Key: "origin.ca_file", Msg: err.Error()}
		}
		pool, _ := x509.SystemCertPool()
		if pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return &ConfigError{Key: "origin.ca_file", Msg: "no PEM certificates in " + cfg.Origin.CAFile}
		}
		tlsConf = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	oc := cfg.Origin.ClientConfig // the operator's keys; the rest is the node's
	oc.TLS = tlsConf
	oc.Name = "edgeshield/" + Version
	client, err := origin.NewClient(oc)
	if err != nil {
		return &ConfigError{Key: "origin.url", Msg: err.Error()}
	}
	n.origin = client
	if n.health, err = n.newHealth(); err != nil {
		return &ConfigError{Key: "origin.health_check", Msg: err.Error()}
	}
	return nil
}

// newHealth starts the origin's health tracking (origin.health_check).
func (n *Node) newHealth() (*origin.Health, error) {
	hc := n.cfg.Origin.HealthCheck
	host := ""
	if h := n.cfg.Origin.HostHeader; h != "pass" && h != "origin" {
		host = h
	}
	hcc := hc.HealthConfig
	hcc.Check = func(ctx context.Context) error {
		return n.origin.Check(ctx, hc.Path, host)
	}
	hcc.OnChange = func(up bool, cause error) {
		if up {
			n.log.Info("origin is up", "origin", n.cfg.Origin.URL)
		} else {
			n.log.Warn("origin is down; misses are answered from stale copies or with 502 until it passes its checks",
				"origin", n.cfg.Origin.URL, "err", cause, "active_checks", hc.Interval > 0)
		}
	}
	return origin.NewHealth(hcc)
}

// badRequest answers requests fasthttp could not parse or the front door
// refused (frontdoor.go: its status, 400, 501 or 505): 431 for oversized
// headers, 413 for oversized bodies, 408 on read timeout, else 400. The
// node stays up whatever the bytes, and the connection is closed.
func (n *Node) badRequest(ctx *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	var framing *framingError
	status := fasthttp.StatusBadRequest
	switch {
	case errors.As(err, &framing):
		status = framing.status
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
	if n.log.Enabled(context.Background(), slog.LevelDebug) {
		n.log.Debug("malformed request", "status", status, "err", redactSecrets(err.Error()), "remote", ctx.RemoteAddr().String())
	}
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

// Its messages can quote request bytes (a malformed request's fields):
// sensitive field values are redacted.
func (f fasthttpLogger) Printf(format string, args ...any) {
	f.l.Warn(redactSecrets(fmt.Sprintf(format, args...)), "component", "fasthttp")
}

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
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeshield/edgeshield/edge/certs"
	"github.com/edgeshield/edgeshield/origin"
	"github.com/valyala/fasthttp"
)

// Version is the software version, set by the build (-ldflags -X).
var Version = "dev"

// shieldHopHeader marks a request forwarded by a cluster peer; it is never
// forwarded to the origin.
const shieldHopHeader = "X-Edgeshield-Hop"

// Node is one edge node. It assembles its parts and runs them: the request
// pipeline (pipeline.go) every front hands its requests to, the fronts
// (HTTP/1.1 on fasthttp, HTTP/2 and HTTP/3 in h2.go and h3.go), the admin
// API (admin.go), the cluster glue (cluster.go), TLS (tls.go) and the
// background work they start (background.go).
type Node struct {
	cfg  Config
	log  *slog.Logger
	name string

	pipe   *pipeline    // lookup, flights, store, write
	bg     *background  // fills, revalidations, body drains; stopped by Shutdown
	purger *purger      // local and cluster-wide purges
	api    *admin       // the admin listener's endpoints
	conns  *connLimiter // server.max_conns_per_ip; nil when off

	public, admin     *fasthttp.Server
	plain             *fasthttp.Server // plain HTTP beside HTTPS (challenges, redirect)
	publicLn, adminLn net.Listener
	tlsLn             net.Listener
	certs             *certs.Manager
	fronts            fronts         // HTTP/2 and HTTP/3 (h2.go, h3.go)
	peers             *peerSet       // nil without a cluster (the pipeline forwards through it)
	listeners         []net.Listener // every listener given to serve (Start, before Shutdown)
	serveWG           sync.WaitGroup // listener goroutines

	reload       reloader       // SIGHUP, POST /reload (reload.go)
	level        *slog.LevelVar // log.level, when the node can change it (Options)
	stopMaint    chan struct{}  // closed by Shutdown: ends the maintenance loop
	opts         Options        // the hooks (Listen, ListenPacket)
	sockMu       sync.Mutex     // guards sockets
	sockets      []*socket      // every listening socket opened (handover.go)
	handingOver  atomic.Bool    // Handover began: Connection: close, no drain delay
	openConns    atomic.Int64   // connections accepted on sockets and not closed yet
	shutdownOnce sync.Once
	shutdownErr  error
}

// Options are the parts of a node that are not configuration.
type Options struct {
	// Logger receives the node's logs; nil builds one from cfg.Log on stderr.
	Logger *slog.Logger
	// Clock replaces time.Now (tests drive freshness with it); nil = time.Now.
	Clock func() time.Time
	// LogLevel is Logger's level, for a reload's log.level to change; nil
	// with a Logger: log.level needs a restart. (A node that builds its
	// own logger has one.)
	LogLevel *slog.LevelVar
	// LoadConfig re-reads the configuration the node was started from
	// (file, environment, flags), validated, for SIGHUP and POST /reload
	// (ReloadConfig); nil: those answer that there is no source.
	LoadConfig func() (Config, error)
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
	n := &Node{cfg: cfg, log: opts.Logger, name: nodeName(cfg), level: opts.LogLevel, opts: opts}
	n.reload.load = opts.LoadConfig
	if n.log == nil {
		n.log, n.level = NewLeveledLogger(cfg.Log, os.Stderr)
	}
	n.bg = newBackground(n.log)
	pipe, err := newPipeline(n.cfg, n.name, n.log, opts.Clock, n.bg)
	if err != nil {
		return nil, err
	}
	n.pipe = pipe
	n.initWarm()
	if cfg.Server.MaxConnsPerIP > 0 {
		n.conns = newConnLimiter(cfg.Server.MaxConnsPerIP)
	}
	n.purger = &purger{store: pipe.store, purges: pipe.purges, hfp: &pipe.hfp, now: pipe.now, log: n.log}
	n.api = n.newAdmin()
	pipe.readiness = n.api.serveReadiness
	n.public = n.newPublicServer(n.handleH1)
	n.admin = newAdminServer(n.closeOnHandover(n.api.handle), n.log)
	return n, nil
}

// nodeName is node.name, or the host name when it is empty.
func nodeName(cfg Config) string {
	if cfg.Name != "" {
		return cfg.Name
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "edgeshield"
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
		store:        n.pipe.store,
		health:       func() *origin.Health { return n.pipe.set().health },
		draining:     &n.pipe.draining,
		stats:        n.Stats,
		metrics:      exposition{stats: n.Stats, latency: &n.pipe.latency},
		purger:       n.purger,
		tlsMode:      n.cfg.TLS.Mode,
		reload:       n.ReloadConfig,
		config:       func() Config { return *n.pipe.conf() },
		recoverPanic: n.pipe.recoverPanic,
	}
}

func (n *Node) newPublicServer(h fasthttp.RequestHandler) *fasthttp.Server {
	c := n.cfg.Server
	s := &fasthttp.Server{
		// NoDefaultDate: the node writes Date itself, the origin's on
		// cached responses (RFC 9110 §6.6.1; see date.go). The front
		// door (frontdoor.go) checks framing before anything else.
		Handler:               n.closeOnHandover(n.pipe.withDate(n.pipe.frontDoor(h))),
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
		ExpectHandler:                n.pipe.expectContinue,
		Concurrency:                  c.Concurrency,
		CloseOnShutdown:              true,
		Logger:                       fasthttpLogger{n.log},
		ErrorHandler:                 n.pipe.withDateOnError(n.pipe.badRequest),
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
		n.serve(n.public, n.startH2C(lns.public), "public")
	}
	n.stopMaint = make(chan struct{})
	n.serveWG.Add(1)
	go n.maintain()
	n.startWarm()
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
func (n *Node) OriginURL() string { return n.pipe.conf().Origin.URL }

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
	n.pipe.draining.Store(true)
	n.warmShutdown(ctx) // before the drain delay: peers prefetch from us meanwhile
	// A handover needs no delay: the new process accepts on the same sockets.
	if d := n.pipe.conf().Server.DrainDelay.D(); d > 0 && n.publicLn != nil && !n.handingOver.Load() {
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
	if err := n.bg.stop(ctx); err != nil {
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
	n.pipe.close(n.bg.stuck)
}

// maintain makes purges permanent before their tombstones expire: every
// half purge TTL it applies the tombstones to every resident entry (an entry
// nobody asked for since the purge would otherwise become servable again
// when its tombstone is dropped), then drops expired tombstones.
func (n *Node) maintain() {
	defer n.serveWG.Done()
	defer n.bg.recover("maintenance")
	every := sweepEvery(n.pipe.purges.TTL())
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-n.stopMaint:
			return
		case <-t.C:
			if e := sweepEvery(n.pipe.purges.TTL()); e != every { // a reload changed cache.purge_ttl
				every = e
				t.Reset(every)
			}
			inv, del := n.pipe.store.Sweep(n.pipe.purges)
			pruned := n.pipe.purges.Prune(n.pipe.now())
			if rate := n.pipe.set().rate; rate != nil {
				rate.sweep(n.pipe.now().UnixNano())
			}
			if inv+del+pruned > 0 {
				n.log.Debug("purge sweep", "invalidated", inv, "deleted", del, "tombstones_dropped", pruned)
			}
		}
	}
}

// sweepEvery is how often maintain makes purges permanent: twice per
// tombstone lifetime, at most once a second.
func sweepEvery(purgeTTL time.Duration) time.Duration { return max(purgeTTL/2, time.Second) }

// NewLogger builds the slog logger described by c.
func NewLogger(c LogConfig, w io.Writer) *slog.Logger {
	l, _ := NewLeveledLogger(c, w)
	return l
}

// NewLeveledLogger builds the slog logger described by c, and the level
// it logs at, for a reload to change (Options.LogLevel).
func NewLeveledLogger(c LogConfig, w io.Writer) (*slog.Logger, *slog.LevelVar) {
	lv := new(slog.LevelVar)
	lv.Set(logLevel(c.Level))
	ho := &slog.HandlerOptions{Level: lv}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, ho)), lv
	}
	return slog.New(slog.NewTextHandler(w, ho)), lv
}

// fasthttpLogger adapts slog to fasthttp's Logger.
type fasthttpLogger struct{ l *slog.Logger }

// Its messages can quote request bytes (a malformed request's fields):
// sensitive field values are redacted.
func (f fasthttpLogger) Printf(format string, args ...any) {
	f.l.Warn(redactSecrets(fmt.Sprintf(format, args...)), "component", "fasthttp")
}

package edge

// The request pipeline: every front (HTTP/1.1 on fasthttp, HTTP/2, HTTP/3)
// hands its requests to pipeline.handle, which runs them top-down:
//
//	handle (proxy.go)          readiness, rate limit, sanitize, method
//	  serveCacheable           key, lookup
//	    serveStored            fresh hit, stale-while-revalidate, validation
//	    serveMiss → fetch      (miss.go) join or lead the key's flight
//	      fetchAndStore        upstream (origin or owning peer) → store
//	      serveFlight          answer from the flight as the body arrives
//	  writeEntry / serveFlight / passThrough / writeError: the writers,
//	  each returning the outcome it wrote
//
// The pipeline owns what a request needs: the store, the coalescer, the
// origin client and its health, the policy and the counters. The node
// (node.go) builds it, gives it the cluster glue before any listener
// serves, and closes it after the last request.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/edgeshield/edgeshield/cache"
	"github.com/edgeshield/edgeshield/origin"
	"github.com/valyala/fasthttp"
)

// pipeline is the request path every front hands requests to.
type pipeline struct {
	cfg  *Config // the node's, read-only
	log  *slog.Logger
	name string // the node's name, in Cache-Status
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
	flights *flights
	hfp     hitForPass
	latency requestDurations // the public listeners' response times (GET /metrics)
	stats   counters
	rate    *rateLimiter // server.rate_limit; nil when off
	bg      *background  // where fills and revalidations run (the node's)

	// Set by the node before any listener serves.
	peers     *peerSet                // nil without a cluster
	readiness fasthttp.RequestHandler // the public health path (server.health_path)
	draining  atomic.Bool             // answers say Connection: close

	now       func() time.Time // the clock; injectable for tests
	realClock bool             // now is time.Now (see requestTime)
}

// newPipeline builds the pipeline's parts from cfg; on error, what was
// built is closed.
func newPipeline(cfg *Config, name string, log *slog.Logger, clock func() time.Time, bg *background) (*pipeline, error) {
	pl := &pipeline{cfg: cfg, log: log, name: name, now: clock, bg: bg}
	if pl.now == nil {
		pl.now, pl.realClock = time.Now, true
	}
	pl.initHeaders()
	store, err := cache.NewStore(cache.StoreConfig{MaxBytes: int64(cfg.Cache.MaxBytes)})
	if err != nil {
		return nil, fmt.Errorf("cache store: %w", err)
	}
	pl.store = store
	pl.blobs = cache.NewBlobs(cache.BlobFileBudget())
	pl.purges = cache.NewPurges(cfg.Cache.PurgeTTL.D())
	pl.policy = cache.Policy{
		StoreSetCookie:    cfg.Cache.StoreSetCookie,
		HeuristicFraction: cfg.Cache.HeuristicFraction,
		MaxHeuristic:      cfg.Cache.MaxHeuristic.D(),
	}
	pl.flights = pl.newFlights()
	bg.abort = pl.flights.Abort
	if cfg.Server.RateLimit.Rate > 0 {
		pl.rate = newRateLimiter(cfg.Server.RateLimit)
	}
	pl.hfp = hitForPass{ttl: cfg.Cache.HitForPass.D(), m: map[string]time.Time{}}
	if err := pl.newOrigin(); err != nil {
		pl.close(false)
		return nil, err
	}
	if cfg.Log.Access != "" {
		if pl.access, err = newAccessLog(cfg.Log.Access, cfg.Log.AccessFormat); err != nil {
			pl.close(false)
			return nil, &ConfigError{Key: "log.access", Msg: err.Error()}
		}
	}
	return pl, nil
}

// close releases the pipeline's parts after its last request. The store
// stays open when background work outlived its cancellation (stuck):
// ristretto's Close races a concurrent Set.
func (pl *pipeline) close(stuck bool) {
	if pl.health != nil {
		pl.health.Close()
	}
	if pl.access != nil {
		if err := pl.access.Close(); err != nil {
			pl.log.Warn("access log", "err", err)
		}
	}
	if pl.origin != nil {
		pl.origin.Close()
	}
	if pl.store != nil && !stuck {
		pl.store.Close()
	}
}

// serveReadiness answers the public health path (server.health_path) as
// /readyz does.
func (pl *pipeline) serveReadiness(ctx *fasthttp.RequestCtx) { pl.readiness(ctx) }

// upstream sends a fetch to the origin, unless its health check holds the
// circuit open: then nothing is sent and the caller answers stale or 502 at
// once. The outcome feeds the origin's health.
func (pl *pipeline) upstream(ctx context.Context, host []byte, req *origin.Request) (*origin.Response, error) {
	if pl.health.Open() {
		pl.stats.originShortCircuited.Add(1)
		return nil, origin.ErrDown
	}
	resp, err := pl.origin.Do(ctx, req)
	pl.health.Observe(err)
	return resp, err
}

// initHeaders derives the Via member and the per-request tables of
// accepted codings and trusted proxies from the configuration.
func (pl *pipeline) initHeaders() {
	cfg := pl.cfg
	pl.via = "1.1 " + pl.name + " (edgeshield)"
	pl.viaBytes = []byte(pl.via)
	pl.healthPath = cfg.Server.HealthPath
	for _, c := range cfg.Cache.AcceptEncodings {
		pl.encodings = append(pl.encodings, []byte(strings.ToLower(c)))
	}
	pl.aeFields = make([][]byte, 1<<len(pl.encodings))
	for set := range pl.aeFields {
		pl.aeFields[set] = cache.AppendEncodingField(nil, uint(set), pl.encodings)
	}
	pl.compress = newCompressor(cfg.Cache, pl.encodings)
	for _, p := range cfg.Server.TrustedProxies {
		pfx, _ := parseTrustedProxy(p) // Validate checked it
		pl.trusted = append(pl.trusted, pfx)
	}
}

// newOrigin builds the origin client and its health from cfg.Origin (the
// caller closes the node's parts when it fails).
func (pl *pipeline) newOrigin() error {
	cfg := pl.cfg
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
	pl.origin = client
	if pl.health, err = pl.newHealth(); err != nil {
		return &ConfigError{Key: "origin.health_check", Msg: err.Error()}
	}
	return nil
}

// newHealth starts the origin's health tracking (origin.health_check).
func (pl *pipeline) newHealth() (*origin.Health, error) {
	hc := pl.cfg.Origin.HealthCheck
	host := ""
	if h := pl.cfg.Origin.HostHeader; h != "pass" && h != "origin" {
		host = h
	}
	hcc := hc.HealthConfig
	hcc.Check = func(ctx context.Context) error {
		return pl.origin.Check(ctx, hc.Path, host)
	}
	hcc.OnChange = func(up bool, cause error) {
		if up {
			pl.log.Info("origin is up", "origin", pl.cfg.Origin.URL)
		} else {
			pl.log.Warn("origin is down; misses are answered from stale copies or with 502 until it passes its checks",
				"origin", pl.cfg.Origin.URL, "err", cause, "active_checks", hc.Interval > 0)
		}
	}
	return origin.NewHealth(hcc)
}

// badRequest answers requests fasthttp could not parse or the front door
// refused (frontdoor.go: its status, 400, 501 or 505): 431 for oversized
// headers, 413 for oversized bodies, 408 on read timeout, else 400. The
// node stays up whatever the bytes, and the connection is closed.
func (pl *pipeline) badRequest(ctx *fasthttp.RequestCtx, err error) {
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
	if pl.log.Enabled(context.Background(), slog.LevelDebug) {
		pl.log.Debug("malformed request", "status", status, "err", redactSecrets(err.Error()), "remote", ctx.RemoteAddr().String())
	}
	ctx.Error(fasthttp.StatusMessage(status)+"\n", status)
	ctx.SetConnectionClose()
}

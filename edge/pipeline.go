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
	"reflect"
	"strings"
	"sync/atomic"
	"time"

	"github.com/edgeshield/edgeshield/cache"
	"github.com/edgeshield/edgeshield/origin"
	"github.com/valyala/fasthttp"
)

// pipeline is the request path every front hands requests to.
type pipeline struct {
	live atomic.Pointer[settings] // what a reload may replace (reload.go)
	log  *slog.Logger
	name string // the node's name, in Cache-Status
	via  string // our Via member, "1.1 <name>"

	viaBytes  []byte
	encodings [][]byte    // cache.accept_encodings, lower-cased
	aeFields  [][]byte    // per set of encodings (bit i: encodings[i]), the Accept-Encoding value normalizeAcceptEncoding writes
	compress  *compressor // cache.compress; nil when off

	store   *cache.Store
	blobs   *cache.Blobs // off-heap bodies (cache.offheap_min_size)
	purges  *cache.Purges
	flights *flights
	hfp     hitForPass
	latency requestDurations // the public listeners' response times (GET /metrics)
	stats   counters
	bg      *background // where fills and revalidations run (the node's)
	hot     *hotKeys    // most used keys, for warm restarts (warm.go); nil when cache.warm_keys is 0
	warm    *warmer     // warm-up state; nil when cache.warm_keys is 0

	// Set by the node before any listener serves.
	peers     *peerSet                // nil without a cluster
	readiness fasthttp.RequestHandler // the public health path (server.health_path)
	draining  atomic.Bool             // answers say Connection: close

	now       func() time.Time // the clock; injectable for tests
	realClock bool             // now is time.Now (see requestTime)
}

// settings are the parts of the pipeline built from keys a reload may
// change, swapped as one: code that needs two of them reads pl.set() once
// and sees one consistent set.
type settings struct {
	cfg     Config
	policy  cache.Policy
	trusted []netip.Prefix // server.trusted_proxies
	rate    *rateLimiter   // server.rate_limit; nil when off
	origin  *origin.Client
	health  *origin.Health // the origin's state, from its checks
	access  *accessLog     // nil when log.access is off
}

// set is the pipeline's current settings.
func (pl *pipeline) set() *settings { return pl.live.Load() }

// conf is the configuration in effect (the last one a reload applied).
func (pl *pipeline) conf() *Config { return &pl.live.Load().cfg }

// newPipeline builds the pipeline's parts from cfg; on error, what was
// built is closed.
func newPipeline(cfg Config, name string, log *slog.Logger, clock func() time.Time, bg *background) (*pipeline, error) {
	pl := &pipeline{log: log, name: name, now: clock, bg: bg}
	if pl.now == nil {
		pl.now, pl.realClock = time.Now, true
	}
	pl.initHeaders(&cfg)
	store, err := cache.NewStore(cache.StoreConfig{MaxBytes: int64(cfg.Cache.MaxBytes)})
	if err != nil {
		return nil, fmt.Errorf("cache store: %w", err)
	}
	pl.store = store
	pl.blobs = cache.NewBlobs(cache.BlobFileBudget())
	pl.purges = cache.NewPurges(cfg.Cache.PurgeTTL.D())
	pl.flights = pl.newFlights()
	bg.abort = pl.flights.Abort
	pl.hfp = hitForPass{m: map[string]time.Time{}}
	st, err := pl.newSettings(cfg, nil)
	if err != nil {
		pl.store.Close()
		return nil, err
	}
	pl.live.Store(st)
	return pl, nil
}

// newSettings builds the settings for cfg. The parts whose keys did not
// change since prev (nil: none yet) are prev's, so that a reload keeps the
// origin's connections and health, the rate limiter's buckets and the
// access log's file when it does not touch them. On error, what it built
// is closed and prev is untouched.
func (pl *pipeline) newSettings(cfg Config, prev *settings) (st *settings, err error) {
	st = &settings{cfg: cfg, policy: cache.Policy{
		StoreSetCookie:    cfg.Cache.StoreSetCookie,
		HeuristicFraction: cfg.Cache.HeuristicFraction,
		MaxHeuristic:      cfg.Cache.MaxHeuristic.D(),
	}}
	for _, p := range cfg.Server.TrustedProxies {
		pfx, _ := parseTrustedProxy(p) // Validate checked it
		st.trusted = append(st.trusted, pfx)
	}
	switch {
	case prev != nil && reflect.DeepEqual(prev.cfg.Server.RateLimit, cfg.Server.RateLimit):
		st.rate = prev.rate
	case cfg.Server.RateLimit.Rate > 0:
		st.rate = newRateLimiter(cfg.Server.RateLimit)
	}
	if prev != nil && reflect.DeepEqual(prev.cfg.Origin, cfg.Origin) {
		st.origin, st.health = prev.origin, prev.health
	} else if st.origin, st.health, err = pl.newOrigin(&cfg); err != nil {
		return nil, err
	}
	switch {
	case prev != nil && prev.cfg.Log.Access == cfg.Log.Access && prev.cfg.Log.AccessFormat == cfg.Log.AccessFormat:
		st.access = prev.access
	case cfg.Log.Access != "":
		if st.access, err = newAccessLog(cfg.Log.Access, cfg.Log.AccessFormat); err != nil {
			if prev == nil || st.origin != prev.origin {
				st.health.Close()
				st.origin.Close()
			}
			return nil, &ConfigError{Key: "log.access", Msg: err.Error()}
		}
	}
	return st, nil
}

// close releases the pipeline's parts after its last request. The store
// stays open when background work outlived its cancellation (stuck):
// ristretto's Close races a concurrent Set.
func (pl *pipeline) close(stuck bool) {
	st := pl.set()
	st.health.Close()
	if st.access != nil {
		if err := st.access.Close(); err != nil {
			pl.log.Warn("access log", "err", err)
		}
	}
	st.origin.Close()
	if !stuck {
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
	st := pl.set()
	if st.health.Open() {
		pl.stats.originShortCircuited.Add(1)
		return nil, origin.ErrDown
	}
	resp, err := st.origin.Do(ctx, req)
	st.health.Observe(err)
	return resp, err
}

// initHeaders derives the Via member and the tables of accepted codings
// from the configuration (keys a reload does not change).
func (pl *pipeline) initHeaders(cfg *Config) {
	pl.via = "1.1 " + pl.name + " (edgeshield)"
	pl.viaBytes = []byte(pl.via)
	for _, c := range cfg.Cache.AcceptEncodings {
		pl.encodings = append(pl.encodings, []byte(strings.ToLower(c)))
	}
	pl.aeFields = make([][]byte, 1<<len(pl.encodings))
	for set := range pl.aeFields {
		pl.aeFields[set] = cache.AppendEncodingField(nil, uint(set), pl.encodings)
	}
	pl.compress = newCompressor(cfg.Cache, pl.encodings)
}

// newOrigin builds the origin client and its health from cfg.Origin.
func (pl *pipeline) newOrigin(cfg *Config) (*origin.Client, *origin.Health, error) {
	if cfg.Origin.URL == "demo" {
		// The caller (cmd/edgeshield) starts the demo origin and passes
		// its URL: the node is never in the business of test servers.
		return nil, nil, errors.New(`origin.url "demo" is resolved by the caller: start the demo origin and set its URL`)
	}
	var tlsConf *tls.Config
	if cfg.Origin.CAFile != "" {
		pem, err := os.ReadFile(cfg.Origin.CAFile)
		if err != nil {
			return nil, nil, &ConfigError{Key: "origin.ca_file", Msg: err.Error()}
		}
		pool, _ := x509.SystemCertPool()
		if pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, nil, &ConfigError{Key: "origin.ca_file", Msg: "no PEM certificates in " + cfg.Origin.CAFile}
		}
		tlsConf = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	oc := cfg.Origin.ClientConfig // the operator's keys; the rest is the node's
	oc.TLS = tlsConf
	oc.Name = "edgeshield/" + Version
	client, err := origin.NewClient(oc)
	if err != nil {
		return nil, nil, &ConfigError{Key: "origin.url", Msg: err.Error()}
	}
	health, err := pl.newHealth(cfg.Origin, client)
	if err != nil {
		client.Close()
		return nil, nil, &ConfigError{Key: "origin.health_check", Msg: err.Error()}
	}
	return client, health, nil
}

// newHealth starts the health tracking of the origin client talks to
// (origin.health_check).
func (pl *pipeline) newHealth(oc OriginConfig, client *origin.Client) (*origin.Health, error) {
	hc := oc.HealthCheck
	host := ""
	if h := oc.HostHeader; h != "pass" && h != "origin" {
		host = h
	}
	hcc := hc.HealthConfig
	hcc.Check = func(ctx context.Context) error {
		return client.Check(ctx, hc.Path, host)
	}
	hcc.OnChange = func(up bool, cause error) {
		if up {
			pl.log.Info("origin is up", "origin", oc.URL)
		} else {
			pl.log.Warn("origin is down; misses are answered from stale copies or with 502 until it passes its checks",
				"origin", oc.URL, "err", cause, "active_checks", hc.Interval > 0)
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

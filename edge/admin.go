package edge

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"strings"
	"sync/atomic"
	"time"

	"github.com/edgeshield/edgeshield/cache"
	"github.com/edgeshield/edgeshield/edge/certs"
	"github.com/edgeshield/edgeshield/origin"
	"github.com/valyala/fasthttp"
)

// admin is the operator API on the admin listener. It holds only what its
// endpoints read: the store and the origin's health (readiness), a stats
// source, the metrics exposition, the purger, and the cluster and TLS parts
// (nil when off; Start sets them before the admin listener serves, and they
// never change after).
type admin struct {
	token    string // admin.token; "" = no check
	node     string
	store    *cache.Store          // readiness: is anything cached to serve stale?
	health   func() *origin.Health // readiness: is the origin up? (the current one: a reload may replace it)
	draining *atomic.Bool          // readiness: the node is shutting down
	stats    func() Stats
	metrics  exposition
	purger   *purger
	peers    *peerSet       // nil without a cluster
	certs    *certs.Manager // nil when TLS is off
	tlsMode  string
	reload   func() (ReloadResult, error) // POST /reload (reload.go)
	config   func() Config                // GET /config: the configuration in effect
	// recoverPanic answers 500 and counts the panic (Stats.Panics).
	recoverPanic func(*fasthttp.RequestCtx)
	console      consoleState // the console's snapshots (console.go)
}

// handle serves the operator endpoints:
//
//	GET  /             the operator console (console.go)
//	GET  /status.json  what the console shows (ConsoleStatus)
//	GET  /healthz  liveness (the process serves requests)
//	GET  /readyz   readiness (not draining; origin reachable or content cached)
//	GET  /stats    JSON figures (see Stats)
//	GET  /metrics  the same figures and the public listeners' response-time
//	               histogram (edgeshield_request_duration_seconds{cache=…}),
//	               Prometheus text format (metrics.go)
//	GET  /tls      certificates: names, issuer, not-after, next renewal, last error
//	GET  /tls/root.pem  the internal CA's root (tls.mode internal)
//	POST /purge?url=…|prefix=…|tag=…[&hard=1][&wait=2s]
//	GET  /cluster        members, state, region, addresses, owned share
//	GET  /cluster/owner?url=…  the key's owners in rendezvous order
//	POST /reload   re-read the configuration, apply the live keys (reload.go)
//	GET  /config   the configuration in effect, secrets redacted (YAML)
//
// When admin.token is set every request needs "Authorization: Bearer <token>"
// (or, for GET and HEAD, the console's session cookie);
// Config.Validate requires it when admin.listen is not loopback.
func (a *admin) handle(ctx *fasthttp.RequestCtx) {
	defer a.recoverPanic(ctx)
	if a.token != "" && !a.authorized(ctx) && !a.sessionAuthorized(ctx) {
		if a.consoleLogin(ctx) {
			return
		}
		ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="edgeshield-admin"`)
		ctx.Error("unauthorized: admin token required\n", fasthttp.StatusUnauthorized)
		return
	}
	switch string(ctx.Path()) {
	case "/":
		a.serveConsole(ctx)
	case "/status.json":
		a.serveConsoleStatus(ctx)
	case "/healthz":
		writeJSON(ctx, fasthttp.StatusOK, map[string]any{"status": "ok", "node": a.node, "version": Version})
	case "/readyz":
		a.serveReadiness(ctx)
	case "/stats":
		writeJSON(ctx, fasthttp.StatusOK, a.stats())
	case "/metrics":
		a.metrics.serve(ctx)
	case "/cluster":
		if a.peers == nil {
			ctx.Error("no cluster configured\n", fasthttp.StatusNotFound)
			return
		}
		writeJSON(ctx, fasthttp.StatusOK, a.peers.status())
	case "/cluster/owner":
		a.serveOwner(ctx)
	case "/tls":
		a.serveTLSStatus(ctx)
	case "/tls/root.pem":
		a.serveTLSRoot(ctx)
	case "/reload":
		a.serveReload(ctx)
	case "/config":
		a.serveConfig(ctx)
	case "/purge":
		if !ctx.IsPost() {
			ctx.Response.Header.Set("Allow", "POST")
			ctx.Error("use POST\n", fasthttp.StatusMethodNotAllowed)
			return
		}
		a.servePurge(ctx)
	default:
		ctx.Error("not found\n", fasthttp.StatusNotFound)
	}
}

func (a *admin) authorized(ctx *fasthttp.RequestCtx) bool {
	auth := ctx.Request.Header.Peek("Authorization")
	const prefix = "Bearer "
	if len(auth) <= len(prefix) || !strings.EqualFold(string(auth[:len(prefix)]), prefix) {
		return false
	}
	return subtle.ConstantTimeCompare(auth[len(prefix):], []byte(a.token)) == 1
}

func (a *admin) serveTLSStatus(ctx *fasthttp.RequestCtx) {
	writeJSON(ctx, fasthttp.StatusOK, a.tlsStatus())
}

func (a *admin) serveTLSRoot(ctx *fasthttp.RequestCtx) {
	var b bytes.Buffer
	if err := exportTLSRoot(a.certs, &b); err != nil {
		ctx.Error(err.Error()+"\n", fasthttp.StatusNotFound)
		return
	}
	ctx.SetContentType("application/x-pem-file")
	ctx.SetBody(b.Bytes())
}

// Readiness is the /readyz document.
type Readiness struct {
	Ready    bool              `json:"ready"`
	Node     string            `json:"node"`
	Draining bool              `json:"draining"`
	Checks   map[string]string `json:"checks"`
}

// Ready reports whether the node should receive traffic (GET /readyz).
func (n *Node) Ready() Readiness { return n.api.ready() }

// ready reports whether the node should receive traffic: it is not draining,
// it sees at least cluster.min_members alive members (with a cluster), and
// either the origin answers or there is cached content to serve stale.
func (a *admin) ready() Readiness {
	r := Readiness{Ready: true, Node: a.node, Checks: map[string]string{}}
	if a.draining.Load() {
		r.Ready, r.Draining = false, true
		r.Checks["drain"] = "draining: shutting down"
	} else {
		r.Checks["drain"] = "ok"
	}
	if a.peers != nil {
		// Running alone while seeds are unreachable still serves (from
		// cache and origin); say so rather than fail over the whole region.
		ok, detail := a.peers.c.Joined()
		part, why := a.peers.c.Partitioned()
		switch {
		case part:
			// Fewer members than cluster.min_members: this node is on the
			// small side of a partition (or its seeds are gone); serving
			// would split the shield, so let DNS send users elsewhere.
			r.Ready = false
			r.Checks["cluster"] = why + " (" + detail + ")"
		case ok:
			r.Checks["cluster"] = "ok: " + detail
		default:
			r.Checks["cluster"] = "running alone: " + detail
		}
	}
	// A down origin with content cached still serves (stale): stay in DNS.
	// With nothing cached every request would fail: let DNS send users to
	// the next region. Active checks bring the node back without traffic.
	hs := a.health().State()
	switch {
	case hs.Up:
		r.Checks["origin"] = "ok"
	case a.store.Stats().Entries > 0:
		r.Checks["origin"] = "down (" + hs.LastError + "); serving stale content"
	default:
		r.Ready = false
		r.Checks["origin"] = "down (" + hs.LastError + ") and nothing cached"
	}
	return r
}

func (a *admin) serveReadiness(ctx *fasthttp.RequestCtx) {
	r := a.ready()
	status := fasthttp.StatusOK
	if !r.Ready {
		status = fasthttp.StatusServiceUnavailable
	}
	ctx.Response.Header.Set("Cache-Control", "no-store")
	writeJSON(ctx, status, r)
}

func (a *admin) servePurge(ctx *fasthttp.RequestCtx) {
	args, raw := ctx.QueryArgs(), ctx.URI().QueryString()
	if ctx.PostArgs().Len() > 0 {
		args, raw = ctx.PostArgs(), ctx.PostBody()
	}
	hard := string(args.Peek("hard")) == "1" || string(args.Peek("hard")) == "true" ||
		string(args.Peek("mode")) == "hard"
	var kind, value string
	switch {
	case args.Has("url"):
		kind, value = "url", string(args.Peek("url"))
		v, verbatim, err := unencodedPurgeURL(raw)
		if err != nil {
			ctx.Error(err.Error()+"\n", fasthttp.StatusBadRequest)
			return
		}
		if verbatim {
			value = v
		}
	case args.Has("prefix"):
		kind, value = "prefix", string(args.Peek("prefix"))
	case args.Has("tag"):
		kind, value = "tag", string(args.Peek("tag"))
	default:
		ctx.Error("want one of url=, prefix=, tag=\n", fasthttp.StatusBadRequest)
		return
	}
	if value == "" {
		ctx.Error(kind+" is empty\n", fasthttp.StatusBadRequest)
		return
	}
	var wait time.Duration
	if w := args.Peek("wait"); len(w) > 0 {
		d, err := time.ParseDuration(string(w))
		if err != nil || d < 0 || d > time.Minute {
			ctx.Error("wait: want a duration up to 1m, e.g. 2s\n", fasthttp.StatusBadRequest)
			return
		}
		wait = d
	}
	res, err := a.purger.purge(kind, value, hard, wait)
	if err != nil {
		ctx.Error(err.Error()+"\n", fasthttp.StatusBadRequest)
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, res)
}

// unencodedPurgeURL finds a url= argument whose URL was pasted without
// percent-encoding its query, as in
//
//	POST /purge?url=http://h/p?a=1&b=2
//
// The form parser splits that at '&' into url=http://h/p?a=1 and b=2, and
// the purge of the wrong key would answer found: 0 as if all were well.
// RFC 3986 §3.4 lets '?' stand unencoded in a query, but an encoder that
// turns the URL's '&' into %26 turns its '?' into %3F too: a literal '?'
// in the value means the URL was pasted as is. The URL is then everything
// after url= to the end, verbatim (purgeKey normalises its escapes like a
// request's). If that rest holds one of /purge's own arguments the split
// is ambiguous, and the purge is refused, naming how to encode, rather than
// guessed. verbatim is false when there is no url= or its value has no
// literal '?' (the parsed value is right then).
func unencodedPurgeURL(raw []byte) (v string, verbatim bool, err error) {
	s := string(raw)
	i := -1
	if strings.HasPrefix(s, "url=") {
		i = 0
	} else if j := strings.Index(s, "&url="); j >= 0 {
		i = j + 1
	}
	if i < 0 {
		return "", false, nil
	}
	rest := s[i+len("url="):]
	first, tail, _ := strings.Cut(rest, "&")
	if !strings.Contains(first, "?") {
		return "", false, nil
	}
	for _, p := range strings.Split(tail, "&") {
		switch name, _, _ := strings.Cut(p, "="); name {
		case "hard", "mode", "wait", "url", "prefix", "tag":
			return "", false, &ConfigError{Key: "url", Msg: "the URL's query is not percent-encoded and " + name +
				"= follows it: put url= last, or encode the URL (curl -X POST --data-urlencode 'url=http://host/path?a=1&b=2' …/purge)"}
		}
	}
	return rest, true, nil
}

func (a *admin) serveOwner(ctx *fasthttp.RequestCtx) {
	if a.peers == nil {
		ctx.Error("no cluster configured\n", fasthttp.StatusNotFound)
		return
	}
	u := string(ctx.QueryArgs().Peek("url"))
	v, verbatim, err := unencodedPurgeURL(ctx.URI().QueryString())
	if verbatim {
		u = v
	}
	key, kerr := purgeKey(u)
	if err == nil {
		err = kerr
	}
	if err != nil {
		ctx.Error(err.Error()+"\n", fasthttp.StatusBadRequest)
		return
	}
	owners := a.peers.c.Owners(nil, key)
	names := make([]string, 0, len(owners))
	for _, m := range owners {
		names = append(names, m.Name)
	}
	out := map[string]any{"key": string(key), "order": names}
	if len(owners) > 0 {
		out["owner"] = owners[0]
	}
	writeJSON(ctx, fasthttp.StatusOK, out)
}

func writeJSON(ctx *fasthttp.RequestCtx, status int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		ctx.Error("encoding: "+err.Error(), fasthttp.StatusInternalServerError)
		return
	}
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(append(b, '\n'))
}

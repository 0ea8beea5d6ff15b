package edge

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/url"
	"strings"
	"time"

	"github.com/edgeshield/edgeshield/cluster"
	"github.com/valyala/fasthttp"
)

// handleAdmin serves the operator endpoints:
//
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
//
// When admin.token is set every request needs "Authorization: Bearer <token>";
// Config.Validate requires it when admin.listen is not loopback.
func (n *Node) handleAdmin(ctx *fasthttp.RequestCtx) {
	defer n.recoverPanic(ctx)
	if n.cfg.Admin.Token != "" && !n.authorized(ctx) {
		ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="edgeshield-admin"`)
		ctx.Error("unauthorized: admin token required\n", fasthttp.StatusUnauthorized)
		return
	}
	switch string(ctx.Path()) {
	case "/healthz":
		writeJSON(ctx, fasthttp.StatusOK, map[string]any{"status": "ok", "node": n.name, "version": Version})
	case "/readyz":
		n.serveReadiness(ctx)
	case "/stats":
		writeJSON(ctx, fasthttp.StatusOK, n.Stats())
	case "/metrics":
		n.serveMetrics(ctx)
	case "/cluster":
		if n.peers == nil {
			ctx.Error("no cluster configured\n", fasthttp.StatusNotFound)
			return
		}
		writeJSON(ctx, fasthttp.StatusOK, n.clusterStatus())
	case "/cluster/owner":
		n.serveOwner(ctx)
	case "/tls":
		n.serveTLSStatus(ctx)
	case "/tls/root.pem":
		var b bytes.Buffer
		if err := n.ExportTLSRoot(&b); err != nil {
			ctx.Error(err.Error()+"\n", fasthttp.StatusNotFound)
			return
		}
		ctx.SetContentType("application/x-pem-file")
		ctx.SetBody(b.Bytes())
	case "/purge":
		if !ctx.IsPost() {
			ctx.Response.Header.Set("Allow", "POST")
			ctx.Error("use POST\n", fasthttp.StatusMethodNotAllowed)
			return
		}
		n.servePurge(ctx)
	default:
		ctx.Error("not found\n", fasthttp.StatusNotFound)
	}
}

func (n *Node) authorized(ctx *fasthttp.RequestCtx) bool {
	auth := ctx.Request.Header.Peek("Authorization")
	const prefix = "Bearer "
	if len(auth) <= len(prefix) || !strings.EqualFold(string(auth[:len(prefix)]), prefix) {
		return false
	}
	return subtle.ConstantTimeCompare(auth[len(prefix):], []byte(n.cfg.Admin.Token)) == 1
}

// Readiness is the /readyz document.
type Readiness struct {
	Ready    bool              `json:"ready"`
	Node     string            `json:"node"`
	Draining bool              `json:"draining"`
	Checks   map[string]string `json:"checks"`
}

// Ready reports whether the node should receive traffic: it is not draining,
// and either the origin answers or there is cached content to serve stale.
func (n *Node) Ready() Readiness {
	r := Readiness{Ready: true, Node: n.name, Checks: map[string]string{}}
	if n.draining.Load() {
		r.Ready, r.Draining = false, true
		r.Checks["drain"] = "draining: shutting down"
	} else {
		r.Checks["drain"] = "ok"
	}
	if n.peers != nil {
		// Running alone while seeds are unreachable still serves (from
		// cache and origin); say so rather than fail over the whole region.
		ok, detail := n.peers.c.Joined()
		if ok {
			r.Checks["cluster"] = "ok: " + detail
		} else {
			r.Checks["cluster"] = "running alone: " + detail
		}
	}
	// A down origin with content cached still serves (stale): stay in DNS.
	// With nothing cached every request would fail: let DNS send users to
	// the next region. Active checks bring the node back without traffic.
	hs := n.health.State()
	switch {
	case hs.Up:
		r.Checks["origin"] = "ok"
	case n.store.Stats().Entries > 0:
		r.Checks["origin"] = "down (" + hs.LastError + "); serving stale content"
	default:
		r.Ready = false
		r.Checks["origin"] = "down (" + hs.LastError + ") and nothing cached"
	}
	return r
}

func (n *Node) serveReadiness(ctx *fasthttp.RequestCtx) {
	r := n.Ready()
	status := fasthttp.StatusOK
	if !r.Ready {
		status = fasthttp.StatusServiceUnavailable
	}
	ctx.Response.Header.Set("Cache-Control", "no-store")
	writeJSON(ctx, status, r)
}

// PurgeResult is the /purge answer.
type PurgeResult struct {
	Kind  string `json:"kind"`
	Value string `json:"value"`
	Hard  bool   `json:"hard"`
	Found int    `json:"found"` // url purges: whether this node held the entry
	// With wait, in a cluster: members that confirmed applying it, and those
	// that did not before the wait expired.
	Confirmed []string `json:"confirmed,omitempty"`
	Missing   []string `json:"missing,omitempty"`
}

func (n *Node) servePurge(ctx *fasthttp.RequestCtx) {
	args := ctx.QueryArgs()
	if ctx.PostArgs().Len() > 0 {
		args = ctx.PostArgs()
	}
	hard := string(args.Peek("hard")) == "1" || string(args.Peek("hard")) == "true" ||
		string(args.Peek("mode")) == "hard"
	var kind, value string
	switch {
	case args.Has("url"):
		kind, value = "url", string(args.Peek("url"))
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
	res, err := n.Purge(kind, value, hard, wait)
	if err != nil {
		ctx.Error(err.Error()+"\n", fasthttp.StatusBadRequest)
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, res)
}

// Purge invalidates cached content, cluster-wide when the node is in a
// cluster. kind is "url" (an absolute URL or host/path: the entry and all its
// variants), "prefix" (every key starting with host/path-prefix) or "tag"
// (entries whose Surrogate-Key or Cache-Tag listed it). Soft purges mark
// entries stale so the next request revalidates (and stale-while-revalidate
// keeps clients fast); hard ones remove them. With wait > 0 in a cluster it
// returns once every alive member applied it, or wait expired, listing who
// confirmed.
func (n *Node) Purge(kind, value string, hard bool, wait time.Duration) (PurgeResult, error) {
	res := PurgeResult{Kind: kind, Value: value, Hard: hard}
	var v []byte
	switch kind {
	case "url", "prefix":
		key, err := purgeKey(value)
		if err != nil {
			return res, err
		}
		v = key
	case "tag":
		v = []byte(value)
	default:
		return res, &ConfigError{Key: "kind", Msg: "want url, prefix or tag"}
	}
	now := n.now()
	if n.peers == nil {
		found, err := n.applyPurge(kind, v, hard, now)
		res.Found = found
		return res, err
	}
	if kind == "url" && n.store.Get(v) != nil {
		res.Found = 1
	}
	p := cluster.Purge{Kind: kind, Value: string(v), Hard: hard, At: now}
	if wait <= 0 {
		return res, n.peers.c.Purge(context.Background(), p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	confirmed, missing, err := n.peers.c.PurgeWait(ctx, p)
	res.Confirmed, res.Missing = confirmed, missing
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return res, err
	}
	return res, nil
}

func (n *Node) serveOwner(ctx *fasthttp.RequestCtx) {
	if n.peers == nil {
		ctx.Error("no cluster configured\n", fasthttp.StatusNotFound)
		return
	}
	key, err := purgeKey(string(ctx.QueryArgs().Peek("url")))
	if err != nil {
		ctx.Error(err.Error()+"\n", fasthttp.StatusBadRequest)
		return
	}
	owners := n.peers.c.Owners(nil, key)
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

// purgeKey turns "http://Host/path?q" or "host/path?q" into a cache key. The
// path and query are taken as written and normalised like a request's
// (appendKeyTarget), so "/%62" purges what a request for "/b" stored, and
// "/a%2Fb" never purges "/a/b".
func purgeKey(v string) ([]byte, error) {
	if strings.Contains(v, "://") {
		u, err := url.Parse(v)
		if err != nil || u.Host == "" {
			return nil, &ConfigError{Key: "url", Msg: "want an absolute URL like https://example.com/path"}
		}
		raw := v
		if i := strings.IndexByte(raw, '#'); i >= 0 {
			raw = raw[:i] // a fragment is never sent in a request
		}
		return appendKeyTarget([]byte(strings.ToLower(u.Host)), []byte(raw), false), nil
	}
	host, path, ok := strings.Cut(v, "/")
	if !ok || host == "" {
		return nil, &ConfigError{Key: "url", Msg: "want an absolute URL like https://example.com/path"}
	}
	return appendKeyTarget([]byte(strings.ToLower(host)), []byte("/"+path), false), nil
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

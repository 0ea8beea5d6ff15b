package edge

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"net/url"
	"strings"

	"github.com/edgeshield/edgeshield/cache"
	"github.com/valyala/fasthttp"
)

// handleAdmin serves the operator endpoints:
//
//	GET  /healthz  liveness (the process serves requests)
//	GET  /readyz   readiness (not draining; origin reachable or content cached)
//	GET  /stats    JSON figures (see Stats)
//	GET  /tls      certificates: names, issuer, not-after, next renewal, last error
//	GET  /tls/root.pem  the internal CA's root (tls.mode internal)
//	POST /purge?url=…|prefix=…|tag=…[&hard=1]
//
// When admin.token is set every request needs "Authorization: Bearer <token>".
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

// originDownAfter consecutive failed fetches mark the origin unreachable.
const originDownAfter = 3

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
	fails := n.originFails.Load()
	entries := n.store.Stats().Entries
	switch {
	case fails < originDownAfter:
		r.Checks["origin"] = "ok"
	case entries > 0:
		r.Checks["origin"] = "failing; serving stale content"
	default:
		r.Ready = false
		r.Checks["origin"] = "unreachable and nothing cached"
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
	Found int    `json:"found"` // entries marked or removed directly (url purges)
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
	res, err := n.Purge(kind, value, hard)
	if err != nil {
		ctx.Error(err.Error()+"\n", fasthttp.StatusBadRequest)
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, res)
}

// Purge invalidates cached content on this node. kind is "url" (an absolute
// URL or host/path: the entry and all its variants), "prefix" (every key
// starting with host/path-prefix) or "tag" (entries whose Surrogate-Key or
// Cache-Tag listed it). Soft purges mark entries stale so the next request
// revalidates (and stale-while-revalidate keeps clients fast); hard ones
// remove them.
func (n *Node) Purge(kind, value string, hard bool) (PurgeResult, error) {
	res := PurgeResult{Kind: kind, Value: value, Hard: hard}
	now := n.now()
	switch kind {
	case "url":
		key, err := purgeKey(value)
		if err != nil {
			return res, err
		}
		if e := n.store.Get(key); e != nil {
			res.Found = 1
			if hard {
				n.store.Delete(key)
			} else {
				e.Invalidate()
			}
		}
		// Variants live under their own keys: a tombstone for the primary
		// key covers them and anything filling right now.
		n.purges.Add(cache.PurgeURL, key, hard, now)
		n.hfp.forget(key)
	case "prefix":
		key, err := purgeKey(value)
		if err != nil {
			return res, err
		}
		n.purges.Add(cache.PurgePrefix, key, hard, now)
	case "tag":
		n.purges.Add(cache.PurgeTag, []byte(value), hard, now)
	default:
		return res, &ConfigError{Key: "kind", Msg: "want url, prefix or tag"}
	}
	return res, nil
}

// purgeKey turns "http://Host/path?q" or "host/path?q" into a cache key.
func purgeKey(v string) ([]byte, error) {
	if strings.Contains(v, "://") {
		u, err := url.Parse(v)
		if err != nil || u.Host == "" {
			return nil, &ConfigError{Key: "url", Msg: "want an absolute URL like https://example.com/path"}
		}
		uri := u.RequestURI()
		return []byte(strings.ToLower(u.Host) + uri), nil
	}
	host, path, ok := strings.Cut(v, "/")
	if !ok || host == "" {
		return nil, &ConfigError{Key: "url", Msg: "want an absolute URL like https://example.com/path"}
	}
	return []byte(strings.ToLower(host) + "/" + path), nil
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

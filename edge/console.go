package edge

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"html/template"
	"sync"
	"time"

	"github.com/edgeshield/edgeshield/edge/certs"
	"github.com/edgeshield/edgeshield/origin"
	"github.com/valyala/fasthttp"
)

// The operator console: GET / on the admin listener is one self-contained
// HTML page (its CSS and script inline, no external asset, a CSP that
// forbids loading any) whose script polls GET /status.json every 2 s and
// renders it. The figures that need two points in time (req/s, the hit
// ratio and latency percentiles of the last seconds) are computed here from
// snapshots of the counters, so that every viewer sees the same numbers
// and the arithmetic is tested in Go.
//
// With admin.token set, a browser cannot send "Authorization: Bearer": it
// opens /?token=<token> once, and the console answers with an HttpOnly,
// SameSite=Strict session cookie and a redirect to / (so the token leaves
// the address bar and history). The cookie carries an HMAC of the token,
// not the token, stops working when the token changes, and authorizes GET
// and HEAD only: POST /purge and the other changes still need the header.

const (
	// consoleCookie names the console's session cookie.
	consoleCookie = "edgeshield_admin"
	// consoleWindow is the span of the console's rates and percentiles.
	consoleWindow = 10 * time.Second
	// consoleSnapEvery spaces the snapshots kept for the window: a
	// snapshot is taken on a /status.json request at most this often.
	consoleSnapEvery = time.Second
	// maxRecentPurges bounds the purges the console lists.
	maxRecentPurges = 20
)

// consoleSnap is the counters the console differentiates, at one instant.
type consoleSnap struct {
	at                     time.Time
	requests, hits, misses uint64
	// lat[o][i] is requestDurations[o].counts[i] (not cumulated).
	lat [numOutcomes][len(durationBuckets) + 1]uint64
}

// consoleState keeps the snapshots of the last consoleWindow. They are
// taken when /status.json is served (no goroutine), at most one per
// consoleSnapEvery, so the ring spans more than the window. The zero value
// is ready to use.
type consoleState struct {
	mu    sync.Mutex // guards snaps, n, head
	snaps [16]consoleSnap
	n     int // snapshots held
	head  int // index of the oldest
}

// advance records cur and returns the oldest snapshot inside the window
// before it; ok is false when there is none (the first poll, or none for
// longer than the window): the figures are then since the node started.
func (c *consoleState) advance(cur consoleSnap) (base consoleSnap, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.n > 0 && cur.at.Sub(c.snaps[c.head].at) > consoleWindow {
		c.head = (c.head + 1) % len(c.snaps)
		c.n--
	}
	if c.n > 0 {
		base, ok = c.snaps[c.head], true
	}
	last := (c.head + c.n - 1 + len(c.snaps)) % len(c.snaps)
	if c.n == 0 || cur.at.Sub(c.snaps[last].at) >= consoleSnapEvery {
		if c.n == len(c.snaps) { // cannot happen at one per second; stay bounded anyway
			c.head = (c.head + 1) % len(c.snaps)
			c.n--
		}
		c.snaps[(c.head+c.n)%len(c.snaps)] = cur
		c.n++
	}
	return base, ok
}

// snapshot reads the counters the console differentiates.
func (r *requestDurations) snapshot(at time.Time, s *Stats) consoleSnap {
	cs := consoleSnap{at: at, requests: s.Requests, hits: s.Hits, misses: s.Misses}
	for o := range r {
		for i := range r[o].counts {
			cs.lat[o][i] = r[o].counts[i].Load()
		}
	}
	return cs
}

// quantile estimates the q-quantile (0 < q <= 1) in seconds of a histogram
// with durationBuckets' bounds, counts[i] being the (not cumulated) count
// of bucket i, as Prometheus's histogram_quantile does: linear within the
// bucket the rank falls in, from 0 for the first, and the largest finite
// bound when it falls above it. ok is false without observations.
func quantile(counts *[len(durationBuckets) + 1]uint64, q float64) (v float64, ok bool) {
	var total uint64
	for _, c := range counts {
		total += c
	}
	if total == 0 {
		return 0, false
	}
	rank := q * float64(total)
	var cum uint64
	for i, c := range counts {
		if c == 0 || float64(cum+c) < rank {
			cum += c
			continue
		}
		if i == len(durationBuckets) {
			break
		}
		lo := 0.0
		if i > 0 {
			lo = durationBuckets[i-1].Seconds()
		}
		hi := durationBuckets[i].Seconds()
		return lo + (hi-lo)*(rank-float64(cum))/float64(c), true
	}
	return durationBuckets[len(durationBuckets)-1].Seconds(), true
}

// ConsoleStatus is the /status.json document the console renders.
type ConsoleStatus struct {
	Node    string    `json:"node"`
	Version string    `json:"version"`
	Time    time.Time `json:"time"`
	// WindowSeconds is the span of RequestsPerSecond, WindowHitRatio and
	// Latency: up to 10 s back; 0 means since the node started (the first
	// poll), and then RequestsPerSecond and WindowHitRatio are null.
	WindowSeconds     float64  `json:"window_seconds"`
	RequestsPerSecond *float64 `json:"requests_per_second"`
	WindowHitRatio    *float64 `json:"window_hit_ratio"` // hits / (hits + misses); null without either
	// Latency is the public listeners' response time (the
	// edgeshield_request_duration_seconds histogram): every outcome, then
	// each one.
	Latency []LatencyRow   `json:"latency"`
	Stats   Stats          `json:"stats"`
	Ready   Readiness      `json:"ready"`
	Origin  OriginStatus   `json:"origin"`
	Cluster *ClusterStatus `json:"cluster"` // null without a cluster
	Purges  []PurgeRecord  `json:"purges"`  // newest first
	TLS     TLSStatus      `json:"tls"`
}

// LatencyRow is one outcome's response-time percentiles, in seconds (null
// without observations in the window).
type LatencyRow struct {
	Cache string   `json:"cache"` // "all", or an edgeshield_request_duration_seconds cache label
	Count uint64   `json:"count"`
	P50   *float64 `json:"p50"`
	P90   *float64 `json:"p90"`
	P99   *float64 `json:"p99"`
}

// OriginStatus is the origin's health as the active checks see it.
type OriginStatus struct {
	Up                  bool      `json:"up"`
	LastCheck           time.Time `json:"last_check"` // zero before the first check, and with checks off
	LastError           string    `json:"last_error"`
	ConsecutiveFailures int       `json:"consecutive_failures"`
	Checks              uint64    `json:"checks"`
	CheckFailures       uint64    `json:"check_failures"`
	Downs               uint64    `json:"downs"`
}

func originStatus(h origin.HealthState) OriginStatus {
	return OriginStatus{Up: h.Up, LastCheck: h.LastCheck, LastError: h.LastError,
		ConsecutiveFailures: h.ConsecutiveFailures, Checks: h.Checks, CheckFailures: h.CheckFailures, Downs: h.Downs}
}

// TLSStatus is the /tls document: the TLS mode and its certificates.
type TLSStatus struct {
	Mode         string             `json:"mode"`
	Certificates []certs.CertStatus `json:"certificates"`
}

func (a *admin) tlsStatus() TLSStatus {
	if a.certs == nil {
		return TLSStatus{Mode: "off", Certificates: []certs.CertStatus{}}
	}
	return TLSStatus{Mode: a.tlsMode, Certificates: a.certs.Status()}
}

// consoleStatus builds /status.json, and records a snapshot for the next.
func (a *admin) consoleStatus() ConsoleStatus {
	now := a.purger.now()
	s := a.stats()
	cur := a.metrics.latency.snapshot(now, &s)
	base, ok := a.console.advance(cur)
	st := ConsoleStatus{
		Node: a.node, Version: Version, Time: now, Stats: s, Ready: a.ready(),
		Origin: originStatus(a.health().State()), Purges: a.purger.recent.list(), TLS: a.tlsStatus(),
	}
	if a.peers != nil {
		cs := a.peers.status()
		st.Cluster = &cs
	}
	if !ok {
		base = consoleSnap{} // since the node started
	} else if w := cur.at.Sub(base.at).Seconds(); w > 0 {
		st.WindowSeconds = w
		rps := float64(cur.requests-base.requests) / w
		st.RequestsPerSecond = &rps
		if h, m := cur.hits-base.hits, cur.misses-base.misses; h+m > 0 {
			r := float64(h) / float64(h+m)
			st.WindowHitRatio = &r
		}
	}
	st.Latency = latencyRows(&base, &cur)
	return st
}

// latencyRows is the percentiles of the observations between base and cur.
func latencyRows(base, cur *consoleSnap) []LatencyRow {
	var all [len(durationBuckets) + 1]uint64
	rows := []LatencyRow{{Cache: "all"}}
	for o := outHit; o < numOutcomes; o++ {
		var d [len(durationBuckets) + 1]uint64
		for i := range d {
			d[i] = cur.lat[o][i] - base.lat[o][i]
			all[i] += d[i]
		}
		rows = append(rows, latencyRow(outcomeLabels[o], &d))
	}
	rows[0] = latencyRow("all", &all)
	return rows
}

func latencyRow(label string, d *[len(durationBuckets) + 1]uint64) LatencyRow {
	r := LatencyRow{Cache: label}
	for _, c := range d {
		r.Count += c
	}
	for _, p := range []struct {
		q   float64
		dst **float64
	}{{0.5, &r.P50}, {0.9, &r.P90}, {0.99, &r.P99}} {
		if v, ok := quantile(d, p.q); ok {
			*p.dst = &v
		}
	}
	return r
}

// PurgeRecord is one purge applied on this node, as the console lists it.
type PurgeRecord struct {
	At    time.Time `json:"at"` // when it was issued
	Kind  string    `json:"kind"`
	Value string    `json:"value"` // the cache key (url, prefix) or the tag
	Hard  bool      `json:"hard"`
	// Found is, for url purges, 1 when this node held the entry, else 0;
	// -1 for prefix and tag purges, whose tombstone acts at lookup, so
	// nothing is counted.
	Found int `json:"found"`
	// Origin is the node that issued it in a cluster ("" without one).
	Origin string `json:"origin,omitempty"`
}

// recentPurges is a ring of the last maxRecentPurges purges. The zero value
// is ready to use; safe for concurrent use.
type recentPurges struct {
	mu   sync.Mutex // guards ring, next, n
	ring [maxRecentPurges]PurgeRecord
	next int // where the next one goes
	n    int // records held
}

func (r *recentPurges) add(p PurgeRecord) {
	if p.Kind != "url" {
		p.Found = -1
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ring[r.next] = p
	r.next = (r.next + 1) % len(r.ring)
	r.n = min(r.n+1, len(r.ring))
}

// list returns the purges held, newest first.
func (r *recentPurges) list() []PurgeRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]PurgeRecord, 0, r.n)
	for i := 1; i <= r.n; i++ {
		out = append(out, r.ring[(r.next-i+len(r.ring))%len(r.ring)])
	}
	return out
}

// consoleSession is the session cookie's value for token: an HMAC, so the
// cookie does not carry the token and stops working when it changes.
func consoleSession(token string) []byte {
	m := hmac.New(sha256.New, []byte(token))
	m.Write([]byte("edgeshield console session v1"))
	return []byte(hex.EncodeToString(m.Sum(nil)))
}

// sessionAuthorized reports whether a GET or HEAD carries the console's
// session cookie. Changes (POST) need the Authorization header: a cookie
// is sent by the browser on its own, the header is not.
func (a *admin) sessionAuthorized(ctx *fasthttp.RequestCtx) bool {
	if !ctx.IsGet() && !ctx.IsHead() {
		return false
	}
	c := ctx.Request.Header.Cookie(consoleCookie)
	return len(c) > 0 && subtle.ConstantTimeCompare(c, consoleSession(a.token)) == 1
}

// consoleLogin answers an unauthorized GET / (and only that, reporting
// false otherwise): with ?token= the admin token it sets the session
// cookie and redirects to /; else it answers 401 with a form asking for it.
func (a *admin) consoleLogin(ctx *fasthttp.RequestCtx) bool {
	if string(ctx.Path()) != "/" || !(ctx.IsGet() || ctx.IsHead()) {
		return false
	}
	tok := ctx.QueryArgs().Peek("token")
	if len(tok) > 0 && subtle.ConstantTimeCompare(tok, []byte(a.token)) == 1 {
		var c fasthttp.Cookie
		c.SetKey(consoleCookie)
		c.SetValueBytes(consoleSession(a.token))
		c.SetPath("/")
		c.SetHTTPOnly(true)
		c.SetSameSite(fasthttp.CookieSameSiteStrictMode)
		ctx.Response.Header.SetCookie(&c)
		ctx.Response.Header.Set("Cache-Control", "no-store")
		// A relative Location (RFC 9110 §10.2.2): fasthttp's Redirect
		// would name the Host the browser sent, whatever it was.
		ctx.Response.Header.Set("Location", "/")
		ctx.SetStatusCode(fasthttp.StatusSeeOther)
		return true
	}
	msg := "This admin listener needs its token (admin.token)."
	if len(tok) > 0 {
		msg = "Wrong token."
	}
	ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="edgeshield-admin"`)
	a.servePage(ctx, fasthttp.StatusUnauthorized, consoleView{Node: a.node, Version: Version, Login: msg})
	return true
}

// serveConsole answers GET / with the console page.
func (a *admin) serveConsole(ctx *fasthttp.RequestCtx) {
	if !ctx.IsGet() && !ctx.IsHead() {
		ctx.Response.Header.Set("Allow", "GET, HEAD")
		ctx.Error("use GET\n", fasthttp.StatusMethodNotAllowed)
		return
	}
	a.servePage(ctx, fasthttp.StatusOK, consoleView{Node: a.node, Version: Version})
}

func (a *admin) serveConsoleStatus(ctx *fasthttp.RequestCtx) {
	ctx.Response.Header.Set("Cache-Control", "no-store")
	writeJSON(ctx, fasthttp.StatusOK, a.consoleStatus())
}

// consoleView fills consolePage: the login form when Login is set.
type consoleView struct {
	Node, Version, Login string
	CSS                  template.CSS
	JS                   template.JS
}

func (a *admin) servePage(ctx *fasthttp.RequestCtx, status int, v consoleView) {
	v.CSS, v.JS = consoleCSS, consoleJS
	h := &ctx.Response.Header
	h.Set("Content-Security-Policy", consoleCSP)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	ctx.SetContentType("text/html; charset=utf-8")
	ctx.SetStatusCode(status)
	if err := consolePage.Execute(ctx, v); err != nil {
		ctx.Error("console: "+err.Error()+"\n", fasthttp.StatusInternalServerError)
	}
}

// consoleCSP lets the page run only its own inline style and script (by
// their hashes) and fetch only from this listener: no external load.
var consoleCSP = "default-src 'none'; style-src '" + cspHash(consoleCSS) + "'; script-src '" +
	cspHash(consoleJS) + "'; connect-src 'self'; img-src data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

func cspHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return "sha256-" + base64.StdEncoding.EncodeToString(sum[:])
}

var consolePage = template.Must(template.New("console").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{{.Node}} · edgeshield</title>
<style>{{.CSS}}</style>
</head><body>
<header><h1>edgeshield <span id="node">{{.Node}}</span></h1><span class="muted">{{.Version}}</span>
<span id="updated" class="muted"></span><span id="problem" class="bad"></span></header>
{{if .Login}}<main><section><h2>Sign in</h2><p>{{.Login}}</p>
<form method="get" action="/"><input type="password" name="token" autocomplete="current-password" autofocus required>
<button type="submit">Open the console</button></form></section></main>
{{else}}<main>
<section><h2>Traffic</h2><dl id="traffic"></dl></section>
<section><h2>Latency <span id="latwin" class="muted"></span></h2><table id="latency"></table></section>
<section><h2>Origin</h2><dl id="origin"></dl></section>
<section><h2>Cache</h2><dl id="cache"></dl></section>
<section class="wide"><h2>Cluster</h2><table id="cluster"></table></section>
<section class="wide"><h2>Recent purges</h2><table id="purges"></table></section>
<section class="wide"><h2>TLS certificates</h2><table id="tls"></table></section>
</main>
<script>{{.JS}}</script>{{end}}
</body></html>
`))

const consoleCSS = `
*{box-sizing:border-box}
body{margin:0;font:14px/1.4 system-ui,sans-serif;background:#f4f5f7;color:#1d2330}
header{display:flex;gap:1em;align-items:baseline;padding:.8em 1.2em;background:#1d2330;color:#fff}
header h1{font-size:1.2em;margin:0}
main{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:1em;padding:1em}
section{background:#fff;border-radius:6px;padding:.8em 1em;box-shadow:0 1px 2px #0002}
section.wide{grid-column:1/-1}
h2{font-size:1em;margin:0 0 .5em;color:#3b4a6b}
dl{display:grid;grid-template-columns:auto 1fr;gap:.2em 1em;margin:0}
dt{color:#5b6478}dd{margin:0;font-variant-numeric:tabular-nums;font-weight:600}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.2em .6em .2em 0;white-space:nowrap;border-bottom:1px solid #e4e7ec;font-variant-numeric:tabular-nums}
th{color:#5b6478;font-weight:500}
.muted{color:#8a93a6}.ok{color:#17803d}.bad{color:#c0262d;font-weight:600}
input{font:inherit;padding:.3em;margin-right:.5em}
`

const consoleJS = `
"use strict";
const $ = (id) => document.getElementById(id);
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}
function fmtNum(v, d) { return v === null || v === undefined ? "—" : Number(v).toFixed(d); }
function fmtPct(v) { return v === null || v === undefined ? "—" : (100 * v).toFixed(1) + " %"; }
function fmtMs(v) { return v === null || v === undefined ? "—" : (1000 * v).toFixed(v < 0.01 ? 3 : 1) + " ms"; }
function fmtBytes(n) {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return n.toFixed(i ? 1 : 0) + " " + u[i];
}
function fmtTime(s) {
  const t = new Date(s);
  return isNaN(t) || t.getUTCFullYear() < 2000 ? "never" : t.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}
function ago(s, now) {
  const t = new Date(s);
  if (isNaN(t) || t.getUTCFullYear() < 2000) return "never";
  return Math.max(0, (now - t) / 1000).toFixed(1) + " s ago";
}
function dl(id, pairs) {
  const d = $(id); d.replaceChildren();
  for (const [k, v, cls] of pairs) { d.append(el("dt", k), el("dd", v, cls)); }
}
function table(id, head, rows) {
  const t = $(id); t.replaceChildren();
  const tr = el("tr"); for (const h of head) tr.append(el("th", h)); t.append(tr);
  if (rows.length === 0) { const r = el("tr"), c = el("td", "none", "muted"); c.colSpan = head.length; r.append(c); t.append(r); }
  for (const row of rows) {
    const r = el("tr");
    for (const c of row) r.append(Array.isArray(c) ? el("td", c[0], c[1]) : el("td", c));
    t.append(r);
  }
}
function render(s) {
  const now = new Date(s.time), st = s.stats;
  $("node").textContent = s.node;
  $("updated").textContent = "updated " + fmtTime(s.time);
  const win = s.window_seconds > 0 ? "last " + s.window_seconds.toFixed(1) + " s" : "since start";
  dl("traffic", [
    ["ready", s.ready.ready ? "yes" : "no", s.ready.ready ? "ok" : "bad"],
    ["req/s (" + win + ")", fmtNum(s.requests_per_second, 1)],
    ["hit ratio (" + win + ")", fmtPct(s.window_hit_ratio)],
    ["hit ratio (since start)", fmtPct(st.hits + st.misses > 0 ? st.hit_ratio : null)],
    ["requests", st.requests + " (h1 " + st.requests_h1 + ", h2 " + st.requests_h2 + ", h3 " + st.requests_h3 + ")"],
    ["errors 5xx", st.errors, st.errors ? "bad" : ""],
  ]);
  $("latwin").textContent = "(" + win + ")";
  table("latency", ["cache", "count", "p50", "p90", "p99"],
    s.latency.map((r) => [r.cache, r.count, fmtMs(r.p50), fmtMs(r.p90), fmtMs(r.p99)]));
  const o = s.origin;
  dl("origin", [
    ["state", o.up ? "up" : "down", o.up ? "ok" : "bad"],
    ["last check", ago(o.last_check, now)],
    ["checks", o.checks + " (" + o.check_failures + " failed)"],
    ["times down", o.downs],
    ["last error", o.last_error || "—"],
  ]);
  dl("cache", [
    ["entries", st.entries],
    ["bytes", fmtBytes(st.bytes) + " of " + fmtBytes(st.max_bytes)],
    ["evicted", st.evicted],
    ["tombstones", st.purge_tombstones],
  ]);
  const c = s.cluster;
  table("cluster", ["member", "state", "region", "peer", "key share"], c === null ? [] :
    c.members.map((m) => [m.Name + (m.Self ? " (this node)" : ""), [m.State, m.State === "alive" ? "ok" : "bad"],
      m.Region || "—", m.PeerAddr, fmtPct(m.owned_share)]));
  table("purges", ["time", "kind", "target", "mode", "found here", "from"],
    s.purges.map((p) => [fmtTime(p.at), p.kind, p.value, p.hard ? "hard" : "soft", p.found < 0 ? "—" : p.found, p.origin || "—"]));
  table("tls", ["name", "issuer", "not after", "last error"], s.tls.certificates.map((t) =>
    [t.name, t.issuer || "—", fmtTime(t.not_after), t.last_error ? [t.last_error, "bad"] : "—"]));
}
async function poll() {
  try {
    const r = await fetch("/status.json", {credentials: "same-origin", cache: "no-store"});
    if (r.status === 401) throw new Error("session expired: open /?token=… again");
    if (!r.ok) throw new Error("status.json: HTTP " + r.status);
    render(await r.json());
    $("problem").textContent = "";
  } catch (e) {
    $("problem").textContent = String(e.message || e);
  }
}
poll();
setInterval(poll, 2000);
`

package edge

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgeshield/edgeshield/cache"
	"github.com/edgeshield/edgeshield/origin"
	"github.com/valyala/fasthttp"
)

// reqState is the per-request scratch space of the cacheable path, pooled so
// a fresh hit allocates nothing.
type reqState struct {
	key    []byte // primary cache key: host + request URI
	vkey   []byte // secondary (Vary) key
	req    cache.RequestMeta
	ranges []cache.ByteRange
	num    []byte // scratch for formatting numbers
	cs     []byte // Cache-Status value
	hdr    *fasthttp.RequestHeader
	ctx    *fasthttp.RequestCtx     // the request, for the forwarding fields' values (peek)
	fv     []byte                   // scratch for a forwarding field's value (peek)
	get    func(name []byte) []byte // st.peek bound once, so VariantKey gets no new closure
	held   *cache.Blob              // reference held on the looked-up entry's body, released after the handler
	body   requestBody              // the client's body as forwarded by pass
	hop    bool                     // a shield hop from a cluster peer: never forwarded again
	purged bool                     // the stored response was purged or invalidated
	joined bool                     // waited on another request's fetch (RFC 9211 "collapsed")
}

// peek returns a request field's value for a Vary variant key. The
// forwarding fields the edge sets itself are answered with the value the
// origin gets (appendForwarded), not the client's, so a response varying on
// X-Forwarded-Proto, say, is keyed by what it was made for.
func (st *reqState) peek(name []byte) []byte {
	if i := forwardingIndex(name); i >= 0 {
		st.fv = appendForwarded(st.fv[:0], st.ctx, i, st.hop)
		return st.fv
	}
	return st.hdr.PeekBytes(name)
}

var statePool = sync.Pool{New: func() any {
	st := &reqState{
		key:    make([]byte, 0, 256),
		vkey:   make([]byte, 0, 256),
		ranges: make([]cache.ByteRange, 0, 4),
		num:    make([]byte, 0, 32),
		cs:     make([]byte, 0, 128),
		fv:     make([]byte, 0, 128),
	}
	st.get = st.peek
	return st
}}

// appendKey appends the primary cache key: lower-cased host, then the
// request-target as received, normalised by appendKeyTarget's conservative
// rule (never fasthttp's URI().RequestURI(), which decodes %2F and resolves
// dot-segments: see target.go). An absolute-form request target's host wins
// over the Host field (RFC 9112 §3.2.2).
func (pl *pipeline) appendKey(dst []byte, req *fasthttp.Request) []byte {
	for _, c := range req.URI().Host() {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return appendKeyTarget(dst, req.Header.RequestURI(), pl.conf().Cache.KeyIgnoreQuery)
}

// handle is the public listener's handler. Its time, from here to its
// return, goes to edgeshield_request_duration_seconds under the outcome the
// request's path returned.
func (pl *pipeline) handle(ctx *fasthttp.RequestCtx) {
	start := time.Now()
	st := pl.set()
	out := outError // what a panic answers (recoverPanic: 500)
	defer func() {
		took := time.Since(start)
		pl.latency.observe(out, took)
		if st.access != nil && out != outNone {
			st.access.Log(ctx, outcomeLabels[out], start, took)
		}
	}()
	defer pl.recoverPanic(ctx)
	pl.stats.requests.Add(1)
	if pl.draining.Load() {
		// Draining: each keep-alive client gets this answer and then a
		// clean close, so its next request opens a new connection (which
		// DNS or the balancer sends elsewhere) instead of racing the
		// listener's shutdown on a reused one.
		ctx.SetConnectionClose()
	}
	switch {
	case st.cfg.Server.HealthPath != "" && string(ctx.Path()) == st.cfg.Server.HealthPath:
		out = outNone
		pl.serveReadiness(ctx)
	case st.rate != nil && rateLimited(st.rate, ctx, pl.requestTime(start)):
		pl.stats.rateLimited.Add(1)
	case len(ctx.Request.Header.Peek(shieldHopHeader)) > 0:
		// Shield hops belong on the peer listener; one arriving here is
		// forged or misrouted. Refuse it rather than strip it silently.
		ctx.Error("forbidden: shield hops go to the peer listener\n", fasthttp.StatusForbidden)
	default:
		// Before lookup: lookup, Vary variant keys and the forward must
		// all see the one header set the origin receives (issue 10).
		pl.sanitizeRequest(ctx)
		if !ctx.IsGet() && !ctx.IsHead() {
			// pass forwards the body and deals with what is left of it.
			out = pl.serveUnsafe(ctx)
			return
		}
		// Here, on the public listener only: it must precede the variant
		// lookup and the forward, and shield hops arrive already normalised
		// by the member that received the client's request.
		pl.normalizeAcceptEncoding(&ctx.Request.Header)
		out = pl.serveCacheable(ctx, false, pl.requestTime(start))
	}
	if ctx.Request.IsBodyStream() {
		skipBody(ctx) // answered without reading the body (see body.go)
	}
}

func (pl *pipeline) recoverPanic(ctx *fasthttp.RequestCtx) {
	if r := recover(); r != nil {
		pl.stats.panics.Add(1)
		pl.log.Error("panic serving request", "panic", r, "uri", string(ctx.RequestURI()))
		ctx.ResetBody()
		ctx.Response.Header.Reset()
		ctx.Error("internal error\n", fasthttp.StatusInternalServerError)
	}
}

// requestTime is the node's clock reading for a request that started at
// start: start itself unless a test injected a clock. It saves the fresh-hit
// path a second clock read (tens of ns on some machines).
func (pl *pipeline) requestTime(start time.Time) time.Time {
	if pl.realClock {
		return start
	}
	return pl.now()
}

// serveCacheable runs GET and HEAD through the cache (DESIGN.md request
// flow): look the request up, answer from the stored entry when it may be
// used, else resolve the miss upstream. hop marks a shield hop from a peer:
// its misses go to the origin. now is the node's clock at the request's
// start.
//
// It returns how the request was answered. Every response on this path is
// written by a function that returns its outcome, and nothing else decides
// one: writeEntry (hit, stale: from the Cache-Status it writes),
// serveFlight (miss), writeForwarded's callers pass and writePrivate
// (pass), writeError and bodyFailed (error).
func (pl *pipeline) serveCacheable(ctx *fasthttp.RequestCtx, hop bool, now time.Time) outcome {
	st := pl.newState(ctx, hop)
	defer releaseState(st)
	e, varyMiss := pl.lookupHeld(st)
	if e != nil {
		if out, ok := pl.serveStored(ctx, st, e, now); ok {
			return out
		}
	}
	return pl.serveMiss(ctx, st, e, varyMiss, now)
}

// newState takes a request's scratch space from the pool, keyed and with
// the request's cache directives parsed.
func (pl *pipeline) newState(ctx *fasthttp.RequestCtx, hop bool) *reqState {
	st := statePool.Get().(*reqState)
	st.hdr, st.ctx = &ctx.Request.Header, ctx
	st.hop, st.purged, st.joined = hop, false, false
	st.key = pl.appendKey(st.key[:0], &ctx.Request)
	requestMeta(&st.req, &ctx.Request)
	if hop && len(ctx.Request.Header.Peek(revalidateHeader)) > 0 {
		// The peer's copy was purged: ours may predate the purge too (it
		// may not have reached us yet), so revalidate before answering.
		st.req.Revalidate = true // even an immutable entry (cache.Use)
	}
	return st
}

// lookupHeld is lookup, plus a reference on the entry's body held until
// the request's state is released: the body must stay readable while this
// request (and anything it starts) uses the entry, even if the store lets
// it go meanwhile.
func (pl *pipeline) lookupHeld(st *reqState) (e *cache.Entry, varyMiss bool) {
	e, varyMiss = pl.lookup(st)
	if e != nil && e.Blob != nil {
		if !e.Blob.Acquire() {
			return nil, false // evicted between Get and now: a miss
		}
		st.held = e.Blob
	}
	return e, varyMiss
}

// serveStored answers from a stored entry when the request may use it
// (RFC 9111 §4.2.4, RFC 5861 §3); ok false: it may not, and nothing was
// written.
func (pl *pipeline) serveStored(ctx *fasthttp.RequestCtx, st *reqState, e *cache.Entry, now time.Time) (out outcome, ok bool) {
	switch cache.Use(e, &st.req, now) {
	case cache.ServeFresh, cache.ServeStale:
		pl.stats.hits.Add(1)
		if pl.hot.sampled() {
			pl.hot.touch(st.key, pl.acceptedSet(st.hdr), hotSampleEvery)
		}
		return pl.writeEntry(ctx, st, e, now, csHit, 0), true
	case cache.ServeStaleRevalidate:
		pl.stats.hits.Add(1)
		pl.stats.staleServed.Add(1)
		out = pl.writeEntry(ctx, st, e, now, csHitStale, 0)
		pl.revalidateInBackground(ctx, st, e)
		return out, true
	}
	return outNone, false
}

// serveMiss answers a request no stored response can answer as it is
// (stale: one to validate, or nil): refused when the client allows no
// forward, forwarded uncached when the key is hit-for-pass, else fetched
// through the coalescer.
func (pl *pipeline) serveMiss(ctx *fasthttp.RequestCtx, st *reqState, stale *cache.Entry, varyMiss bool, now time.Time) outcome {
	pl.stats.misses.Add(1)
	switch {
	case st.req.CC.OnlyIfCached:
		// RFC 9111 §5.2.1.7: no stored response can be used, and the
		// client refuses a forward.
		ctx.Error("not in cache (only-if-cached)\n", fasthttp.StatusGatewayTimeout)
		return outMiss
	case pl.hfp.active(st.key, now, pl.conf().Cache.HitForPass.D()):
		return pl.passThrough(ctx, st, fwdBypass)
	}
	return pl.fetch(ctx, st, stale, missFwd(st, stale, varyMiss))
}

// missFwd is the Cache-Status fwd parameter of a miss (RFC 9211 §2.2):
// why the request goes upstream.
func missFwd(st *reqState, stale *cache.Entry, varyMiss bool) string {
	switch {
	case stale != nil && (st.req.CC.NoCache || st.req.PragmaNoCache || st.req.CC.MaxAge == 0 || st.req.Revalidate):
		return fwdRequest
	case stale != nil:
		return fwdStale
	case varyMiss:
		return fwdVaryMiss
	}
	return fwdURIMiss
}

// releaseState drops the request's body reference and recycles st.
func releaseState(st *reqState) {
	if st.held != nil {
		st.held.Release()
		st.held = nil
	}
	st.hdr, st.ctx = nil, nil
	statePool.Put(st)
}

// lookup finds the stored response for the request: the entry under the
// primary key, or, when that is a Vary marker, the variant selected by the
// request's values of the Vary fields (RFC 9111 §4.1). Purge tombstones are
// applied before anything is served (a soft purge marks the entry stale; a
// hard one hides it).
func (pl *pipeline) lookup(st *reqState) (e *cache.Entry, varyMiss bool) {
	p := pl.store.Get(st.key)
	if p == nil {
		return nil, false
	}
	if isMarker(p) {
		st.vkey = cache.VariantKey(st.vkey[:0], st.key, p.Vary, st.get)
		e = pl.store.Get(st.vkey)
		if e == nil {
			return nil, true
		}
		if p.Invalidated() {
			e.Invalidate()
		}
	} else {
		e = p
	}
	if purged, hard := pl.purges.Check(e); purged {
		st.purged = true
		if hard {
			return nil, false
		}
		e.Invalidate()
	}
	if e.Invalidated() {
		st.purged = true
	}
	return e, false
}

// isMarker reports whether e is a Vary marker: stored under a primary key to
// say which request fields select the variant; it has no response of its own.
func isMarker(e *cache.Entry) bool { return e.Status == 0 }

// cacheStatus selects the RFC 9211 Cache-Status parameters of a response.
type cacheStatus uint8

const (
	csHit         cacheStatus = iota // served from cache, fresh
	csHitStale                       // served stale while one revalidation runs
	csStaleErr                       // served stale because the origin failed
	csFwd                            // forwarded; see fwd
	csRevalidated                    // forwarded as stale, origin said 304: refreshed entry served
	csStaleDown                      // served stale without asking: the origin is down (health check)
)

// fwd values of Cache-Status (RFC 9211 §2.2).
const (
	fwdURIMiss  = "uri-miss"
	fwdVaryMiss = "vary-miss"
	fwdStale    = "stale"
	fwdRequest  = "request"
	fwdBypass   = "bypass"
	fwdMethod   = "method"
)

// writeEntry answers from a stored entry and returns the outcome its
// Cache-Status says: headers, Age (§4.2.3 current_age), Cache-Status, Via,
// then conditional (§4.3.2), range (RFC 9110 §14) or full body. It
// allocates nothing for a fresh full hit.
func (pl *pipeline) writeEntry(ctx *fasthttp.RequestCtx, st *reqState, e *cache.Entry, now time.Time, cs cacheStatus, fwdStatus int) outcome {
	resp := &ctx.Response
	pl.writeEntryHeaders(resp, e)
	if st.hop {
		addHopSurrogateKeys(resp, e)
	}
	st.num = strconv.AppendInt(st.num[:0], int64(e.Age(now)/time.Second), 10)
	resp.Header.SetBytesV("Age", st.num)
	st.cs = pl.appendCacheStatus(st.cs[:0], ctx, cs, "", fwdStatus, e.TTL(now), false)
	resp.Header.SetBytesV("Cache-Status", st.cs)
	if err := pl.writeEntryBody(ctx, st, e); err != nil {
		return pl.writeError(ctx, err)
	}
	return cs.outcome()
}

// writeEntryBody sets the status and body of an answer from e: 304 when
// the client's validators match, the requested ranges, or the whole body.
func (pl *pipeline) writeEntryBody(ctx *fasthttp.RequestCtx, st *reqState, e *cache.Entry) error {
	resp := &ctx.Response
	if notModified(&ctx.Request.Header, e) {
		resp.SetStatusCode(fasthttp.StatusNotModified)
		resp.SkipBody = true
		return nil
	}
	resp.SetStatusCode(e.Status)
	if e.Status == fasthttp.StatusOK && ctx.IsGet() {
		if rh := ctx.Request.Header.Peek("Range"); len(rh) > 0 {
			if done, err := pl.writeRanges(ctx, st, e, entryBody(e), rh); done {
				return err
			}
		}
	}
	setBody(ctx, entryBody(e), 0, e.BodyLen())
	return nil
}

// storedBody is a stored body, on the heap or in a memory file (whose reference
// the caller holds while the response is built).
type storedBody struct {
	b    []byte
	blob *cache.Blob
}

func entryBody(e *cache.Entry) storedBody { return storedBody{b: e.Body, blob: e.Blob} }

func (b storedBody) size() int64 {
	if b.blob != nil {
		return b.blob.Size()
	}
	return int64(len(b.b))
}

// appendRange appends bytes [start, end] (inclusive) to dst.
func (b storedBody) appendRange(dst []byte, start, end int64) ([]byte, error) {
	if b.blob == nil {
		return append(dst, b.b[start:end+1]...), nil
	}
	n := len(dst)
	dst = append(dst, make([]byte, end-start+1)...)
	_, err := b.blob.ReadAt(dst[n:], start)
	return dst, err
}

// setBody makes bytes [off, off+length) the response body. A memory-file
// body becomes a stream that holds its own reference until fasthttp has
// written it, and goes out with sendfile on a plain TCP connection.
func setBody(ctx *fasthttp.RequestCtx, b storedBody, off int64, length int) {
	if b.blob == nil {
		ctx.Response.SetBodyRaw(b.b[off : off+int64(length)])
		return
	}
	ctx.Response.SetBodyStream(b.blob.NewReader(off, int64(length), sendConn(ctx.Conn())), length)
}

func (pl *pipeline) writeEntryHeaders(resp *fasthttp.Response, e *cache.Entry) {
	for i := range e.Header {
		f := &e.Header[i]
		if string(f.Name) == "Date" { // stored canonical; fasthttp drops Add("Date")
			setDate(&resp.Header, f.Value)
			continue
		}
		resp.Header.AddBytesKV(f.Name, f.Value)
	}
	resp.Header.AddBytesKV(strVia, pl.viaBytes)
}

// addHopSurrogateKeys gives a shield hop's answer the entry's surrogate
// keys: the member stores that answer, and a purge by tag must find its copy
// too. Clients never see them (storedHeaders keeps the field out of e).
func addHopSurrogateKeys(resp *fasthttp.Response, e *cache.Entry) {
	if len(e.SurrogateKeys) > 0 {
		resp.Header.SetBytesV("Surrogate-Key", bytes.Join(e.SurrogateKeys, []byte(" ")))
	}
}

var (
	strVia         = []byte("Via")
	strIfNoneMatch = []byte("If-None-Match")
	strIfModSince  = []byte("If-Modified-Since")
)

// notModified evaluates the client's conditional GET against the stored
// validators (RFC 9110 §13.1.2, §13.1.3; If-None-Match wins).
func notModified(h *fasthttp.RequestHeader, e *cache.Entry) bool {
	if e.Status != fasthttp.StatusOK {
		return false
	}
	if inm := h.PeekBytes(strIfNoneMatch); len(inm) > 0 {
		return len(e.ETag) > 0 && cache.ETagMatch(inm, e.ETag)
	}
	if ims := h.PeekBytes(strIfModSince); len(ims) > 0 && len(e.LastModified) > 0 {
		return cache.NotModifiedSince(ims, e.LastModified)
	}
	return false
}

// appendCacheStatus formats this node's member of the Cache-Status list
// (RFC 9211) for ctx's request: `name; hit; ttl=N; edgeshield-proto=h2` or
// `name; fwd=uri-miss; fwd-status=200; stored; edgeshield-proto=h1`.
func (pl *pipeline) appendCacheStatus(dst []byte, ctx *fasthttp.RequestCtx, cs cacheStatus, fwd string, fwdStatus int, ttl time.Duration, stored bool) []byte {
	dst = append(dst, pl.name...)
	switch cs {
	case csHit:
		dst = append(dst, "; hit"...)
	case csHitStale, csStaleDown:
		dst = append(dst, "; hit"...)
	case csStaleErr:
		dst = append(dst, "; fwd=stale"...)
	case csFwd:
		dst = append(dst, "; fwd="...)
		dst = append(dst, fwd...)
	case csRevalidated:
		dst = append(dst, "; fwd=stale"...)
	}
	if fwdStatus > 0 {
		dst = append(dst, "; fwd-status="...)
		dst = strconv.AppendInt(dst, int64(fwdStatus), 10)
	}
	if stored || cs == csRevalidated {
		dst = append(dst, "; stored"...)
	}
	if cs != csFwd || stored {
		dst = append(dst, "; ttl="...)
		dst = strconv.AppendInt(dst, int64(ttl/time.Second), 10)
	}
	switch cs {
	case csHitStale:
		dst = append(dst, `; detail="stale-while-revalidate"`...)
	case csStaleErr:
		dst = append(dst, `; detail="stale-if-error"`...)
	case csStaleDown:
		dst = append(dst, `; detail="stale-if-error; origin down"`...)
	}
	return appendProtoParam(dst, ctx)
}

// writeRanges answers a Range request from the full body of e (body is
// e's, or the whole body of a flight that just completed). It reports
// false when the Range header is to be ignored (syntax it does not
// understand, or If-Range not matching: RFC 9110 §14.2, §13.1.5), so the
// caller sends 200; an error when the ranges could not be read (the caller
// answers it).
func (pl *pipeline) writeRanges(ctx *fasthttp.RequestCtx, st *reqState, e *cache.Entry, body storedBody, rh []byte) (bool, error) {
	if ir := ctx.Request.Header.Peek("If-Range"); len(ir) > 0 && !cache.IfRangeMatches(ir, e.ETag, e.LastModified) {
		return false, nil
	}
	size := body.size()
	rs, err := cache.ParseRange(st.ranges[:0], rh, size)
	st.ranges = rs[:0]
	resp := &ctx.Response
	switch {
	case errors.Is(err, cache.ErrRangeNotSatisfiable):
		resp.SetStatusCode(fasthttp.StatusRequestedRangeNotSatisfiable)
		resp.Header.Set("Content-Range", "bytes */"+strconv.FormatInt(size, 10))
		resp.ResetBody()
		return true, nil
	case err != nil || len(rs) == 0:
		return false, nil
	case len(rs) == 1:
		pl.writeRange(ctx, st, body, rs[0], size)
		return true, nil
	}
	if err := pl.writeMultipart(resp, body, rs); err != nil {
		resp.Header.Del("Content-Type")
		return true, err
	}
	return true, nil
}

// writeRange sends one range of a body of size bytes (RFC 9110 §14.4).
func (pl *pipeline) writeRange(ctx *fasthttp.RequestCtx, st *reqState, body storedBody, r cache.ByteRange, size int64) {
	resp := &ctx.Response
	resp.SetStatusCode(fasthttp.StatusPartialContent)
	st.num = append(st.num[:0], "bytes "...)
	st.num = strconv.AppendInt(st.num, r.Start, 10)
	st.num = append(st.num, '-')
	st.num = strconv.AppendInt(st.num, r.End, 10)
	st.num = append(st.num, '/')
	st.num = strconv.AppendInt(st.num, size, 10)
	resp.Header.SetBytesV("Content-Range", st.num)
	setBody(ctx, body, r.Start, int(r.Len()))
}

// writeMultipart sends multipart/byteranges (RFC 9110 §14.6).
func (pl *pipeline) writeMultipart(resp *fasthttp.Response, full storedBody, rs []cache.ByteRange) error {
	ct := resp.Header.ContentType()
	boundary := strconv.FormatUint(uint64(time.Now().UnixNano()), 36) + "edgeshield"
	var total int64
	for _, r := range rs {
		total += r.End - r.Start + 1
	}
	body := make([]byte, 0, total+int64(len(rs))*128)
	for _, r := range rs {
		body = append(body, "\r\n--"...)
		body = append(body, boundary...)
		body = append(body, "\r\n"...)
		if len(ct) > 0 {
			body = append(body, "Content-Type: "...)
			body = append(body, ct...)
			body = append(body, "\r\n"...)
		}
		body = fmt.Appendf(body, "Content-Range: bytes %d-%d/%d\r\n\r\n", r.Start, r.End, full.size())
		var err error
		if body, err = full.appendRange(body, r.Start, r.End); err != nil {
			return fmt.Errorf("read stored body: %w", err)
		}
	}
	body = append(body, "\r\n--"...)
	body = append(body, boundary...)
	body = append(body, "--\r\n"...)
	resp.SetStatusCode(fasthttp.StatusPartialContent)
	resp.Header.SetContentType("multipart/byteranges; boundary=" + boundary)
	resp.SetBodyRaw(body)
	return nil
}

// hitForPass remembers keys whose responses were not cacheable, so requests
// for them skip coalescing (otherwise each would queue behind the previous
// one: Varnish's hit-for-pass).
type hitForPass struct {
	mu sync.Mutex // guards m
	m  map[string]time.Time
}

const hitForPassMax = 100_000

// active reports whether key is marked; ttl is cache.hit_for_pass (0: off).
func (h *hitForPass) active(key []byte, now time.Time, ttl time.Duration) bool {
	if ttl <= 0 {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	until, ok := h.m[string(key)]
	if ok && now.After(until) {
		delete(h.m, string(key))
		return false
	}
	return ok
}

// add marks key for ttl (cache.hit_for_pass; 0: off).
func (h *hitForPass) add(key []byte, now time.Time, ttl time.Duration) {
	if ttl <= 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.m) >= hitForPassMax {
		// Bounded memory: drop the expired marks first; only a map full of
		// live ones is cleared (losing them only costs coalescing).
		for k, until := range h.m {
			if now.After(until) {
				delete(h.m, k)
			}
		}
		if len(h.m) >= hitForPassMax {
			clear(h.m)
		}
	}
	h.m[string(key)] = now.Add(ttl)
}

func (h *hitForPass) forget(key []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.m, string(key))
}

// serveUnsafe forwards other methods. A non-error response to an unsafe
// method invalidates the target URI and same-host Location and
// Content-Location (RFC 9111 §4.4). It reports how the request was answered.
func (pl *pipeline) serveUnsafe(ctx *fasthttp.RequestCtx) outcome {
	st := statePool.Get().(*reqState)
	defer statePool.Put(st)
	st.hop = false // unsafe methods never come as shield hops
	method := methodString(ctx.Method())
	out, status, h := pl.pass(ctx, st, method, fwdMethod)
	if status < 200 || status >= 400 || method == "OPTIONS" || method == "TRACE" {
		return out
	}
	st.key = pl.appendKey(st.key[:0], &ctx.Request)
	pl.invalidate(st.key)
	host := ctx.Request.Header.Host()
	for _, name := range []string{"Location", "Content-Location"} {
		if loc := header1(h, name); loc != "" {
			if k, ok := sameHostKey(host, loc); ok {
				pl.invalidate(k)
			}
		}
	}
	return out
}

// sameHostKey turns a Location value into a cache key when it points at the
// same host (§4.4 forbids invalidating other hosts' URIs). An absolute or
// absolute-path reference is keyed as written, like a request target
// (appendKeyTarget); a relative one is resolved against the request first.
func sameHostKey(host []byte, loc string) ([]byte, bool) {
	var u fasthttp.URI
	if err := u.Parse(host, []byte(loc)); err != nil {
		return nil, false
	}
	if !bytes.EqualFold(u.Host(), host) {
		return nil, false
	}
	if i := strings.IndexByte(loc, '#'); i >= 0 {
		loc = loc[:i] // RFC 9110 §10.2.2: a fragment is not part of the target
	}
	var target []byte
	switch {
	case strings.Contains(loc, "://"), strings.HasPrefix(loc, "/") && !strings.HasPrefix(loc, "//"):
		target = []byte(loc)
	default:
		// A relative reference ("b", "../b", "//host/b"): resolved by
		// fasthttp (RFC 3986 §5.2 does remove dot-segments here).
		target = u.RequestURI()
	}
	k := appendKeyTarget(bytes.ToLower(append([]byte(nil), host...)), target, false)
	return k, true
}

// invalidate marks the entry (or Vary marker, hence all variants) under key
// stale, so the next request revalidates (§4.4).
func (pl *pipeline) invalidate(key []byte) {
	if e := pl.store.Get(key); e != nil {
		e.Invalidate()
	}
	pl.hfp.forget(key)
}

// passThrough forwards a GET or HEAD uncached, for the reason fwd
// (hit-for-pass, a flight this request cannot share).
func (pl *pipeline) passThrough(ctx *fasthttp.RequestCtx, st *reqState, fwd string) outcome {
	pl.stats.passes.Add(1)
	out, _, _ := pl.pass(ctx, st, methodString(ctx.Method()), fwd)
	return out
}

// pass forwards the request uncached and streams the response. It returns
// the outcome, and the status and fields the client was sent (0 when the
// node answered an error itself).
func (pl *pipeline) pass(ctx *fasthttp.RequestCtx, st *reqState, method string, fwd string) (outcome, int, []origin.Field) {
	pl.stats.originFetches.Add(1)
	oreq := pl.forwardRequest(ctx, method, false, st.hop)
	if err := pl.attachBody(ctx, st, oreq); err != nil {
		return pl.bodyFailed(ctx, err), 0, nil
	}
	resp, err := pl.upstream(pl.bg.base, ctx.Request.Header.Host(), oreq)
	st.body.finish(ctx)
	switch {
	case errors.Is(err, origin.ErrRequestBody):
		return pl.bodyFailed(ctx, err), 0, nil
	case err != nil:
		return pl.writeError(ctx, err), 0, nil
	}
	pl.writeForwarded(ctx, resp, fwd)
	return outPass, resp.Status, resp.Header
}

// writeForwarded sends an upstream answer that is not shared (cookies
// included) as it arrives, with this node's Cache-Status fwd=fwd.
func (pl *pipeline) writeForwarded(ctx *fasthttp.RequestCtx, resp *origin.Response, fwd string) {
	r := &ctx.Response
	r.SetStatusCode(resp.Status)
	pl.copyResponseHeaders(r, resp.Header, true)
	cs := pl.appendCacheStatus(nil, ctx, csFwd, fwd, resp.Status, 0, false)
	pl.setCacheStatus(r, resp.Header, cs)
	pl.setBodyStream(ctx, resp)
}

// setBodyStream streams an origin body to the client; fasthttp closes the
// reader when done, which returns the origin connection to the pool.
func (pl *pipeline) setBodyStream(ctx *fasthttp.RequestCtx, resp *origin.Response) {
	if resp.Body == nil || ctx.IsHead() || resp.Status == fasthttp.StatusNotModified || resp.Status == fasthttp.StatusNoContent {
		if resp.Body != nil {
			resp.Body.Close()
		}
		if ctx.IsHead() && resp.ContentLength >= 0 {
			ctx.Response.Header.SetContentLength(int(resp.ContentLength))
			ctx.Response.SkipBody = true
		}
		return
	}
	ctx.SetBodyStream(resp.Body, int(resp.ContentLength))
}

// copyResponseHeaders copies end-to-end fields to the client response.
// withCookies keeps Set-Cookie (only for responses not shared with others).
func (pl *pipeline) copyResponseHeaders(r *fasthttp.Response, h []origin.Field, withCookies bool) {
	conn := connectionValue(h)
	date := false
	for _, f := range h {
		if !pl.endToEnd([]byte(f.Name), conn, withCookies) {
			continue
		}
		if strings.EqualFold(f.Name, "Date") {
			// fasthttp drops a Date given to Add (date.go); a valid one
			// goes on as it is (RFC 9110 §6.6.1), else withDate adds ours.
			if _, ok := cache.ParseHTTPDate([]byte(f.Value)); ok && !date {
				date = setDate(&r.Header, []byte(f.Value))
			}
			continue
		}
		r.Header.Add(f.Name, f.Value)
	}
	r.Header.AddBytesKV(strVia, pl.viaBytes)
}

// setCacheStatus sets Cache-Status with the upstream's members first and
// this node's last (RFC 9211 §2: the list is ordered origin-to-client).
func (pl *pipeline) setCacheStatus(r *fasthttp.Response, upstream []origin.Field, mine []byte) {
	if prior := header(upstream, "Cache-Status"); len(prior) > 0 {
		v := make([]byte, 0, 64+len(mine))
		for _, p := range prior {
			v = append(v, p...)
			v = append(v, ", "...)
		}
		mine = append(v, mine...)
	}
	r.Header.SetBytesV("Cache-Status", mine)
}

// drainBody discards the rest of an origin body (bounded) so its connection
// can be reused, then closes it.
func drainBody(rc io.ReadCloser) {
	if rc == nil {
		return
	}
	_, _ = io.CopyN(io.Discard, rc, 64<<10)
	rc.Close()
}

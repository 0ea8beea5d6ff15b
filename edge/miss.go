package edge

// The miss path, in the order a miss runs: fetch joins (or starts) the
// key's flight; the flight's one fetch-and-store routine (fetchAndStore:
// upstream → 304 refresh → storable → new entry → publish → fill → keep)
// runs on a goroutine the node owns; every client, the one whose request
// started it included, answers from the flight (serveFlight). Background
// revalidation (stale-while-revalidate) and shield hops run the very same
// routine, so they cannot disagree. The one behaviour for each case:
//
//   - an upstream error: the flight ends with it; a foreground client with
//     a usable stale copy serves it (stale-if-error), others get writeError;
//   - a 5xx while a stale copy is usable (RFC 5861 §4; the client's
//     directives in the foreground, none in the background): the 5xx is
//     neither stored nor shared, the stale entry stays, and clients answer
//     as for an upstream error (serve stale);
//   - a 304 to a revalidation: the refreshed entry is stored and shared;
//   - an unstorable answer: hit-for-pass is recorded (unless only the
//     request's credentials made it so), waiters fetch on their own, and the
//     client that started the fetch streams it privately (nobody in the
//     background: it is drained);
//   - too big: like unstorable without hit-for-pass; a body that outgrows
//     the limit while streaming is discarded (bounded window).

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/edgeshield/edgeshield/cache"
	"github.com/edgeshield/edgeshield/origin"
	"github.com/valyala/fasthttp"
)

// pending describes the response a flight carries, published to every
// waiter as Head.Meta: the entry being built (headers, status, times) and
// whether it will be stored.
type pending struct {
	primary   []byte       // primary cache key (the flight's key may differ: see flightKey)
	entry     *cache.Entry // Body not yet set, except when refreshed
	vkey      []byte       // variant key the fetch's request selected (nil without Vary)
	refreshed bool         // entry is a stale one refreshed by a 304: it has its body
	status    int          // origin status, for Cache-Status fwd-status
	fwd       string
	coding    coding           // the edge codes the body with this (cache.compress); codingNone: as received
	cookies   []string         // Set-Cookie for the client that started the fetch only
	resp      *origin.Response // a private (unshared) answer for that client; nil when shared

	// stored: the body will be stored (Cache-Status "stored"). Set before
	// the head is published; the fill clears it when the body outgrows the
	// max object size while clients read the head (hence atomic).
	stored atomic.Bool
}

// flights is the node's coalescer, typed by the metadata its flights carry.
type flights = origin.Group[*pending]

// newFlights builds the coalescer: its fetches run under the node's base
// context on tracked goroutines, and a complete body is stored before its
// flight is forgotten.
func (pl *pipeline) newFlights() *flights {
	return origin.NewGroup(origin.GroupConfig[*pending]{
		Context: pl.bg.base,
		Go:      func(fn func()) bool { return pl.bg.goBackground("fill", fn) },
		Keep:    pl.keep,
	})
}

// discardWindow bounds memory per flight once a body outgrows the max object
// size: only bytes some reader has not consumed yet are kept.
const discardWindow = 1 << 20

// fetch resolves a miss (or a stale entry needing validation) through the
// coalescer: the first request for a key starts ONE upstream fetch; everyone,
// that request included, reads the same body as it arrives. It returns how
// the request was answered.
func (pl *pipeline) fetch(ctx *fasthttp.RequestCtx, st *reqState, stale *cache.Entry, fwd string) outcome {
	j := pl.newFetchJob(ctx, st, stale, fwd, false)
	c := pl.flights.Do(pl.flightKey(st.key, st.hop), pl.fetchAndStore(j))
	if !c.Leader() || c.Refused() {
		j.release() // the job never runs: its stale body reference ends here
	}
	head, err := pl.waitFlight(st, c)
	switch {
	case err != nil:
		return pl.fetchFailed(ctx, st, stale, fwd, err)
	case head.Meta.resp != nil:
		return pl.writePrivate(ctx, head.Meta)
	case !c.Leader() && !pl.sameVariant(st, head.Meta):
		return pl.passThrough(ctx, st, fwdVaryMiss)
	}
	return pl.serveFlight(ctx, st, c, head)
}

// waitFlight waits for the flight's head. A waiter bounds its wait: it may
// have joined a flight that waits on a peer that waits on us. The leader
// waits for its own fetch, which its upstream calls bound (connect and
// header timeouts, per peer tried and for the origin) and Shutdown cancels
// (pl.bg.base): a bound of its own could only turn a slow fallback that
// succeeds into an error.
func (pl *pipeline) waitFlight(st *reqState, c origin.Call[*pending]) (origin.Head[*pending], error) {
	if c.Leader() {
		return c.Wait(pl.bg.base)
	}
	pl.stats.coalesced.Add(1)
	st.joined = true
	wctx, cancel := context.WithTimeout(pl.bg.base, pl.conf().Origin.HeaderTimeout+pl.conf().Origin.ConnectTimeout+time.Second)
	defer cancel()
	return c.Wait(wctx)
}

// fetchFailed answers a client whose flight ended without a shared head:
// on its own (ErrPass), from a usable stale copy, or with an error.
func (pl *pipeline) fetchFailed(ctx *fasthttp.RequestCtx, st *reqState, stale *cache.Entry, fwd string, err error) outcome {
	if errors.Is(err, origin.ErrPass) {
		return pl.passThrough(ctx, st, fwd)
	}
	if stale != nil {
		if out, ok := pl.serveStaleOnError(ctx, st, stale, err); ok {
			return out
		}
	}
	return pl.writeError(ctx, err)
}

// sameVariant reports whether a waiter's request selects the variant the
// flight carries (RFC 9111 §4.1); otherwise it fetches on its own.
func (pl *pipeline) sameVariant(st *reqState, p *pending) bool {
	if p.vkey == nil {
		return true
	}
	st.vkey = cache.VariantKey(st.vkey[:0], st.key, p.entry.Vary, st.get)
	return bytes.Equal(st.vkey, p.vkey)
}

// revalidateInBackground starts ONE revalidation of a stale entry
// (stale-while-revalidate, RFC 5861 §3); concurrent requests for the key
// join the same flight and do not start more.
func (pl *pipeline) revalidateInBackground(ctx *fasthttp.RequestCtx, st *reqState, stale *cache.Entry) {
	j := pl.newFetchJob(ctx, st, stale, fwdStale, true)
	if c := pl.flights.Do(pl.flightKey(st.key, st.hop), pl.fetchAndStore(j)); !c.Leader() || c.Refused() {
		j.release() // the job never runs: its stale body reference ends here
	}
}

// flightKey is the coalescing key of a fetch. In a cluster, a fetch that
// will be forwarded to another owner gets its own flight, apart from the
// one that goes to the origin (which shield hops and the owner's own
// clients share): a shield hop must never wait on a flight that is itself
// waiting on a peer, or two nodes whose membership views briefly disagree
// would wait on each other until the timeout.
func (pl *pipeline) flightKey(key []byte, hop bool) string {
	if hop || pl.peers == nil {
		return string(key)
	}
	if m, ok := pl.peers.c.Owner(key); ok && !m.Self {
		return string(key) + fwdFlightSuffix
	}
	return string(key)
}

const fwdFlightSuffix = "\x00fwd"

// fetchJob is what one upstream fetch needs, copied from the request that
// started it: the fetch outlives that request.
type fetchJob struct {
	key, host  []byte
	oreq       *origin.Request
	stale      *cache.Entry      // its body reference is the job's own (release)
	req        cache.RequestMeta // the directives that govern storing and stale-if-error
	vary       varySnapshot
	aeSet      uint
	fwd        string
	originOnly bool // an origin flight never goes to a peer, even if ownership changed
	purged     bool
	background bool // no client waits for this fetch (stale-while-revalidate)
	rangeReq   bool
	fromPeers  bool   // a warm-up prefetch: a peer's stored copy or nothing, never the origin (warm.go)
	prefer     string // the peer a prefetch asks first
}

func (pl *pipeline) newFetchJob(ctx *fasthttp.RequestCtx, st *reqState, stale *cache.Entry, fwd string, background bool) *fetchJob {
	j := &fetchJob{
		key:        append([]byte(nil), st.key...),
		host:       append([]byte(nil), ctx.Request.Header.Host()...),
		oreq:       pl.forwardRequest(ctx, "GET", true, st.hop),
		stale:      stale,
		req:        st.req,
		aeSet:      pl.acceptedSet(&ctx.Request.Header),
		fwd:        fwd,
		originOnly: st.hop || pl.peers == nil || !strings.HasSuffix(pl.flightKey(st.key, st.hop), fwdFlightSuffix),
		purged:     st.purged,
		background: background,
		rangeReq:   len(ctx.Request.Header.Peek("Range")) > 0,
	}
	j.vary.take(ctx, st.hop)
	if background {
		j.req.CC.Reset() // the client's directives do not govern a background refresh
	}
	if stale != nil {
		addValidators(j.oreq, stale)
		if stale.Blob != nil {
			stale.Blob.Retain() // the request's reference ends with its handler
		}
	}
	return j
}

func (j *fetchJob) release() {
	if j.stale != nil && j.stale.Blob != nil {
		j.stale.Blob.Release()
	}
	j.stale = nil
}

// varySnapshot keeps the request fields a response's Vary may name, for
// keying the variant after the request is gone; the forwarding fields hold
// the values the origin got (see reqState.peek).
type varySnapshot struct {
	hdr fasthttp.RequestHeader
	fwd [fwdFields][]byte
}

func (s *varySnapshot) take(ctx *fasthttp.RequestCtx, hop bool) {
	ctx.Request.Header.CopyTo(&s.hdr)
	for i := range s.fwd {
		s.fwd[i] = appendForwarded(nil, ctx, i, hop)
	}
}

func (s *varySnapshot) peek(name []byte) []byte {
	if i := forwardingIndex(name); i >= 0 {
		return s.fwd[i]
	}
	return s.hdr.PeekBytes(name)
}

// fetchAndStore is THE fetch-and-store routine: foreground misses,
// background revalidations and shield hops all run it as their flight's
// fetch. It returns nil once the body is complete (the group then keeps it).
func (pl *pipeline) fetchAndStore(j *fetchJob) origin.Fetch[*pending] {
	return func(bctx context.Context, w *origin.Writer[*pending]) error {
		defer j.release()
		reqTime := pl.now()
		resp, err := pl.jobUpstream(bctx, j)
		respTime := pl.now()
		if err != nil {
			return err
		}
		// Shutdown cancels bctx: a fill waiting on a stalled origin body
		// returns at once (Group.Abort only fails its next Write).
		stop := context.AfterFunc(bctx, func() {
			if resp.Body != nil {
				resp.Body.Close()
			}
		})
		defer stop()
		return pl.storeResponse(w, j, resp, reqTime, respTime)
	}
}

// jobUpstream sends a fetch job upstream: a prefetch to peers only, else
// to the key's owner or the origin (while warming up, a peer's cache first:
// warm.go).
func (pl *pipeline) jobUpstream(ctx context.Context, j *fetchJob) (*origin.Response, error) {
	if j.fromPeers {
		return pl.peers.cachedCopy(ctx, j.key, j.host, j.prefer, j.oreq)
	}
	if resp, ok := pl.warmMiss(ctx, j); ok {
		return resp, nil
	}
	pl.stats.originFetches.Add(1)
	if j.background && j.stale != nil {
		pl.stats.backgroundRevalidations.Add(1)
	}
	resp, err := pl.upstreamOwner(ctx, j.key, j.host, j.originOnly, j.purged, j.oreq)
	if err != nil {
		pl.stats.originErrors.Add(1)
	}
	return resp, err
}

// storeResponse decides what becomes of an upstream answer (see the top of
// this file) and streams it into the flight.
func (pl *pipeline) storeResponse(w *origin.Writer[*pending], j *fetchJob, resp *origin.Response, reqTime, respTime time.Time) error {
	switch {
	case resp.Status == fasthttp.StatusNotModified && j.stale != nil:
		drainBody(resp.Body)
		pl.stats.revalidated.Add(1)
		return pl.publishRefreshed(w, j, pl.refreshed(j.stale, resp.Header, reqTime, respTime))
	case resp.Status >= 500 && j.stale != nil && cache.UsableOnError(j.stale, &j.req, respTime, pl.conf().Cache.MaxStaleOnError.D()):
		// RFC 5861 §4: a 5xx is an error for stale-if-error purposes.
		drainBody(resp.Body)
		return &statusError{status: resp.Status}
	}
	meta := pl.responseMeta(resp.Status, resp.Header)
	storable, reason := pl.storable(&j.req, &meta, resp.Header)
	tooBig := resp.ContentLength > int64(pl.conf().Cache.MaxObjectSize)
	if !storable || tooBig {
		return pl.passResponse(w, j, resp, reason, tooBig, respTime)
	}
	e := pl.newEntry(j.key, resp.Status, resp.Header, &meta, reqTime, respTime)
	p := &pending{primary: j.key, entry: e, status: resp.Status, fwd: j.fwd}
	p.stored.Store(true)
	length := pl.planCoding(p, j.aeSet, resp)
	if e.Vary != nil {
		p.vkey = cache.VariantKey(nil, j.key, e.Vary, j.vary.peek)
		e.Key = p.vkey
	}
	if !j.background {
		p.cookies = header(resp.Header, "Set-Cookie")
	}
	w.Publish(origin.Head[*pending]{Status: resp.Status, ContentLength: length, Meta: p})
	pl.stats.fills.Add(1)
	pl.hot.touch(j.key, j.aeSet, 1)
	return pl.fill(w, p, resp)
}

// passResponse ends a flight whose answer is not shared: the waiters fetch
// on their own, later requests skip the queue for a while (hit-for-pass)
// unless it was only size or the request's credentials, and the client
// that started the fetch gets the answer privately.
func (pl *pipeline) passResponse(w *origin.Writer[*pending], j *fetchJob, resp *origin.Response, reason string, tooBig bool, respTime time.Time) error {
	if reason != "" && reason != cache.ReasonCookie && reason != cache.ReasonAuthorization {
		// Only for reasons of the response: one client's credentials
		// must not turn the URL into a pass for everyone else.
		pl.hfp.add(j.key, respTime, pl.conf().Cache.HitForPass.D())
	}
	pl.log.Debug("not storing", "key", string(j.key), "reason", reason, "too_big", tooBig)
	if j.background || (tooBig && j.rangeReq) {
		// Nobody to answer; or the whole object is not kept, so fetching
		// it for one range would waste the origin's bandwidth: the client
		// asks for the range itself (ErrPass).
		resp.Body.Close()
		return origin.ErrPass
	}
	w.Private(origin.Head[*pending]{Status: resp.Status, Meta: &pending{resp: resp, fwd: j.fwd}},
		func(p *pending) { p.resp.Body.Close() })
	return nil
}

// publishRefreshed shares an entry a 304 refreshed (it has its body); the
// group keeps it (keep) before the flight is forgotten.
func (pl *pipeline) publishRefreshed(w *origin.Writer[*pending], j *fetchJob, e *cache.Entry) error {
	p := &pending{primary: j.key, entry: e, refreshed: true, status: fasthttp.StatusNotModified, fwd: fwdStale}
	p.stored.Store(true)
	if e.Vary != nil {
		p.vkey = e.Key // a refreshed variant keeps its variant key
	}
	w.Publish(origin.Head[*pending]{Status: e.Status, ContentLength: int64(e.BodyLen()), Meta: p})
	var err error
	if e.Blob != nil {
		r := e.Blob.NewReader(0, e.Blob.Size(), nil)
		_, err = io.Copy(w, r)
		r.Close()
	} else {
		_, err = w.Write(e.Body)
	}
	if err != nil && e.Blob != nil {
		e.Blob.Release() // not kept: e's own reference goes with it
	}
	return err
}

// fill copies the upstream body into the flight (coding it when the edge
// compresses). It runs on the flight's goroutine, so a client that goes
// away does not cut the fetch short for the others.
func (pl *pipeline) fill(w *origin.Writer[*pending], p *pending, resp *origin.Response) error {
	defer resp.Body.Close()
	sink := &fillSink{w: w, p: p, limit: int64(pl.conf().Cache.MaxObjectSize)}
	var dst io.Writer = sink
	var enc encoder
	if p.coding != codingNone {
		// Code the body as it arrives: the flight (its waiters, the
		// client, the store) receives coded bytes only.
		enc = pl.compress.writer(p.coding, sink)
		defer pl.compress.release(p.coding, enc)
		dst = &codedWriter{enc: enc}
	}
	total, err := io.CopyBuffer(dst, onlyReader{resp.Body}, make([]byte, 32<<10))
	switch {
	case errors.Is(err, origin.ErrNoReaders):
		return err // not stored and nobody reading: stop downloading
	case err != nil:
		pl.stats.originErrors.Add(1)
		pl.log.Warn("origin body failed", "key", string(p.primary), "err", err, "bytes", total)
		return err
	case resp.ContentLength >= 0 && total != resp.ContentLength:
		return io.ErrUnexpectedEOF
	case enc != nil:
		return enc.Close() // the coder's last block and trailer
	}
	return nil
}

// onlyReader hides a body's WriterTo, so io.CopyBuffer uses the buffer.
type onlyReader struct{ io.Reader }

// fillSink is where fill writes the body a flight carries (after coding,
// when the edge compresses): it counts the bytes and stops keeping them once
// they exceed the max object size.
type fillSink struct {
	w         *origin.Writer[*pending]
	p         *pending
	limit     int64
	total     int64
	discarded bool
}

func (s *fillSink) Write(b []byte) (int, error) {
	s.total += int64(len(b))
	if s.total > s.limit && !s.discarded {
		// Too big to keep (no Content-Length told us before): keep
		// streaming to whoever reads, with bounded memory.
		s.w.Discard(discardWindow)
		s.discarded = true
		s.p.stored.Store(false)
	}
	return s.w.Write(b)
}

// keep stores a flight's complete body (the group calls it before the
// flight is forgotten, so no request finds neither and fetches again).
func (pl *pipeline) keep(p *pending, body []byte) {
	if !p.refreshed {
		pl.setBody(p.entry, body)
	}
	pl.storeEntry(p.primary, p.entry)
}

// setBody gives a new entry its body: in a memory file when it is large
// enough (cache.offheap_min_size) and one can be made, else on the heap.
func (pl *pipeline) setBody(e *cache.Entry, body []byte) {
	if minSize := int(pl.conf().Cache.OffheapMinSize); minSize > 0 && len(body) >= minSize {
		b, err := pl.blobs.New(body)
		if err == nil {
			e.Blob = b
			return
		}
		if !errors.Is(err, cache.ErrBlobUnsupported) && !errors.Is(err, cache.ErrBlobLimit) {
			pl.log.Warn("keeping body on the heap", "key", string(e.Key), "err", err)
		}
	}
	e.Body = body
}

// storeEntry puts e in the store. With Vary, e.Key is its variant key and a
// marker under the primary key names the Vary fields (RFC 9111 §4.1). The
// Wait makes the entry visible before the flight is forgotten.
func (pl *pipeline) storeEntry(primary []byte, e *cache.Entry) {
	if e.Vary != nil {
		pl.store.Set(&cache.Entry{Key: primary, Vary: e.Vary, StoredAt: e.StoredAt})
	}
	pl.store.Set(e)
	pl.store.Wait()
}

// writePrivate streams an answer that is not shared to the client whose
// request fetched it (with its cookies: it is not stored).
func (pl *pipeline) writePrivate(ctx *fasthttp.RequestCtx, p *pending) outcome {
	pl.stats.passes.Add(1)
	pl.writeForwarded(ctx, p.resp, p.fwd)
	return outPass
}

// serveFlight answers a client from a shared flight: the entry's headers
// now, the body as it arrives. A client that cannot read the body from the
// flight after all fetches on its own.
func (pl *pipeline) serveFlight(ctx *fasthttp.RequestCtx, st *reqState, c origin.Call[*pending], head origin.Head[*pending]) outcome {
	p, e := head.Meta, head.Meta.entry
	var body io.ReadCloser
	if !ctx.IsHead() && !notModified(&ctx.Request.Header, e) {
		// Attach before committing headers: a flight that stopped keeping
		// its body (it outgrew the max object size) refuses late readers,
		// and this client then fetches on its own instead of getting a
		// truncated body.
		r, err := c.Reader()
		if err != nil {
			return pl.passThrough(ctx, st, p.fwd)
		}
		body = r
	}
	pl.writeFlightHeaders(ctx, st, p, c.Leader())
	resp := &ctx.Response
	switch {
	case notModified(&ctx.Request.Header, e):
		resp.SetStatusCode(fasthttp.StatusNotModified)
		resp.SkipBody = true
	case body == nil: // HEAD
		resp.SetStatusCode(e.Status)
		if head.ContentLength >= 0 {
			resp.Header.SetContentLength(int(head.ContentLength))
		}
		resp.SkipBody = true
	default:
		resp.SetStatusCode(e.Status)
		if err := pl.flightBody(ctx, st, c, e, body, head.ContentLength); err != nil {
			return pl.writeError(ctx, err)
		}
	}
	return outMiss
}

// writeFlightHeaders sets the headers of an answer from a flight: the
// entry's, Age, and Cache-Status. The client whose request caused the fetch
// (the leader) also gets the response's cookies; the shared copy never
// carries them.
func (pl *pipeline) writeFlightHeaders(ctx *fasthttp.RequestCtx, st *reqState, p *pending, leader bool) {
	resp := &ctx.Response
	e := p.entry
	pl.writeEntryHeaders(resp, e)
	if st.hop {
		addHopSurrogateKeys(resp, e)
	}
	now := pl.now()
	// current_age, not 0: an upstream Age (or a Date in the past) counts
	// from the start (RFC 9111 §4.2.3).
	st.num = strconv.AppendInt(st.num[:0], int64(e.Age(now)/time.Second), 10)
	resp.Header.SetBytesV("Age", st.num)
	st.cs = pl.appendCacheStatus(st.cs[:0], ctx, csFwd, p.fwd, p.status, e.TTL(now), p.stored.Load())
	if st.joined {
		st.cs = append(st.cs, "; collapsed"...)
	}
	resp.Header.SetBytesV("Cache-Status", st.cs)
	if leader {
		for _, v := range p.cookies {
			resp.Header.Add("Set-Cookie", v)
		}
	}
}

// flightBody sends a flight's body: whole, one range streamed as it fills,
// or several ranges from the whole object once complete. An error means
// nothing was sent; the caller answers it.
func (pl *pipeline) flightBody(ctx *fasthttp.RequestCtx, st *reqState, c origin.Call[*pending], e *cache.Entry, body io.ReadCloser, contentLength int64) error {
	rh, ir := ctx.Request.Header.Peek("Range"), ctx.Request.Header.Peek("If-Range")
	switch {
	case len(rh) == 0 || e.Status != fasthttp.StatusOK:
	case len(ir) > 0 && !cache.IfRangeMatches(ir, e.ETag, e.LastModified): // RFC 9110 §13.1.5
	case contentLength >= 0 && pl.flightRange(ctx, st, body, rh, contentLength):
		return nil
	default:
		// Several ranges, or a length not known until the end: wait for
		// the whole object (it is being stored anyway) and answer from it.
		return pl.flightRanges(ctx, st, c, e, body, rh)
	}
	ctx.SetBodyStream(body, int(contentLength))
	return nil
}

// flightRange answers a Range request whose ranges can be decided from the
// announced length: unsatisfiable (416), not understood (the whole body,
// RFC 9110 §14.2), or one range, streamed from the flight as it fills. It
// reports false for several ranges (flightRanges answers them).
func (pl *pipeline) flightRange(ctx *fasthttp.RequestCtx, st *reqState, body io.ReadCloser, rh []byte, contentLength int64) bool {
	resp := &ctx.Response
	rs, err := cache.ParseRange(st.ranges[:0], rh, contentLength)
	st.ranges = rs[:0]
	switch {
	case errors.Is(err, cache.ErrRangeNotSatisfiable):
		body.Close()
		resp.SetStatusCode(fasthttp.StatusRequestedRangeNotSatisfiable)
		resp.Header.Set("Content-Range", "bytes */"+itoa(contentLength))
	case err != nil:
		ctx.SetBodyStream(body, int(contentLength))
	case len(rs) == 1:
		r := rs[0]
		resp.SetStatusCode(fasthttp.StatusPartialContent)
		resp.Header.Set("Content-Range", "bytes "+itoa(r.Start)+"-"+itoa(r.End)+"/"+itoa(contentLength))
		ctx.SetBodyStream(&sectionReader{rc: body, skip: r.Start, left: r.End - r.Start + 1}, int(r.End-r.Start+1))
	default:
		return false
	}
	return true
}

// flightRanges answers a Range request from the flight's whole body, once
// complete.
func (pl *pipeline) flightRanges(ctx *fasthttp.RequestCtx, st *reqState, c origin.Call[*pending], e *cache.Entry, body io.ReadCloser, rh []byte) error {
	_, err := io.Copy(io.Discard, body)
	body.Close()
	full, ok := c.Bytes()
	switch {
	case err != nil:
		return err
	case !ok:
		return errFlightIncomplete
	}
	if done, err := pl.writeRanges(ctx, st, e, storedBody{b: full}, rh); !done {
		ctx.Response.SetBodyRaw(full)
	} else if err != nil {
		return err
	}
	return nil
}

// errFlightIncomplete: a flight ended without a whole body to answer from
// (it outgrew the max object size while a client waited for all of it).
var errFlightIncomplete = errors.New("object too large to answer this range request from the cache")

// sectionReader streams [skip, skip+left) of a sequential reader.
type sectionReader struct {
	rc   io.ReadCloser
	skip int64
	left int64
}

func (s *sectionReader) Read(p []byte) (int, error) {
	if s.skip > 0 {
		if _, err := io.CopyN(io.Discard, s.rc, s.skip); err != nil {
			return 0, err
		}
		s.skip = 0
	}
	if s.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > s.left {
		p = p[:s.left]
	}
	m, err := s.rc.Read(p)
	s.left -= int64(m)
	if s.left <= 0 && err == nil {
		err = io.EOF
	}
	return m, err
}

func (s *sectionReader) Close() error { return s.rc.Close() }

package edge

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/edgeshield/edgeshield/cache"
	"github.com/edgeshield/edgeshield/origin"
	"github.com/valyala/fasthttp"
)

// pending describes the response a flight carries, published to every
// waiter as Head.Meta: the entry being built (headers, status, times) and
// whether it will be stored.
type pending struct {
	primary []byte       // primary cache key (the flight's key may differ: see flightKey)
	entry   *cache.Entry // Body not yet set
	vkey    []byte       // variant key the leader's request selected (nil without Vary)
	stored  bool
	status  int // origin status, for Cache-Status fwd-status
	fwd     string
	coding  coding // the edge codes the body with this (cache.compress); codingNone: as received
}

// discardWindow bounds memory per flight once a body outgrows the max object
// size: only bytes some reader has not consumed yet are kept.
const discardWindow = 1 << 20

// fetch resolves a miss (or a stale entry needing validation) through the
// coalescer: the first request for a key leads ONE upstream fetch; everyone
// else reads the same body as it arrives.
func (n *Node) fetch(ctx *fasthttp.RequestCtx, st *reqState, stale *cache.Entry, fwd string) {
	f, leader := n.flights.Join(n.flightKey(st.key, st.hop))
	if leader {
		n.lead(ctx, st, f, stale, fwd)
		return
	}
	n.stats.coalesced.Add(1)
	st.joined = true
	wctx, cancel := context.WithTimeout(context.Background(), n.cfg.Origin.HeaderTimeout+n.cfg.Origin.ConnectTimeout+time.Second)
	head, err := f.Wait(wctx)
	cancel()
	if err != nil {
		if errors.Is(err, origin.ErrPass) {
			n.stats.passes.Add(1)
			n.pass(ctx, st, methodString(ctx.Method()), fwd)
			return
		}
		if stale != nil && n.serveStaleOnError(ctx, st, stale, err) {
			return
		}
		n.writeError(ctx, st, err)
		return
	}
	p := head.Meta.(*pending)
	if p.vkey != nil {
		// The response varies: it is ours only if our request selects the
		// same variant (RFC 9111 §4.1); otherwise fetch on our own.
		st.vkey = cache.VariantKey(st.vkey[:0], st.key, p.entry.Vary, st.get)
		if !bytes.Equal(st.vkey, p.vkey) {
			n.stats.passes.Add(1)
			n.pass(ctx, st, methodString(ctx.Method()), fwdVaryMiss)
			return
		}
	}
	n.serveFlight(ctx, st, f, p, head.ContentLength)
}

// flightKey is the coalescing key of a fetch. In a cluster, a fetch that
// will be forwarded to another owner gets its own flight, apart from the
// one that goes to the origin (which shield hops and the owner's own
// clients share): a shield hop must never wait on a flight that is itself
// waiting on a peer, or two nodes whose membership views briefly disagree
// would wait on each other until the timeout.
func (n *Node) flightKey(key []byte, hop bool) string {
	if hop || n.peers == nil {
		return string(key)
	}
	if m, ok := n.peers.c.Owner(key); ok && !m.Self {
		return string(key) + fwdFlightSuffix
	}
	return string(key)
}

const fwdFlightSuffix = "\x00fwd"

// forwards reports whether a flight may go to a peer; an origin flight
// never does, even if ownership changed since it was created.
func forwards(f *origin.Flight) bool { return strings.HasSuffix(f.Key(), fwdFlightSuffix) }

// lead performs the upstream fetch for a flight until the response headers
// are known, decides whether the response is shared and stored, and hands
// the body copy to a goroutine that outlives this client.
func (n *Node) lead(ctx *fasthttp.RequestCtx, st *reqState, f *origin.Flight, stale *cache.Entry, fwd string) {
	oreq := n.forwardRequest(ctx, "GET", true, st.hop)
	if stale != nil {
		addValidators(oreq, stale)
	}
	n.stats.originFetches.Add(1)
	reqTime := n.now()
	resp, err := n.upstreamOwner(context.Background(), st.key, ctx.Request.Header.Host(), !forwards(f), st.purged, oreq)
	respTime := n.now()
	if err != nil {
		n.stats.originErrors.Add(1)
		f.Release(err)
		if stale != nil && n.serveStaleOnError(ctx, st, stale, err) {
			return
		}
		n.writeError(ctx, st, err)
		return
	}

	if resp.Status == fasthttp.StatusNotModified && stale != nil {
		drainBody(resp.Body)
		fresh := n.refreshed(stale, resp.Header, reqTime, respTime)
		n.stats.revalidated.Add(1)
		if fresh.Blob != nil {
			// The store owns fresh's own reference once published.
			fresh.Blob.Retain()
			defer fresh.Blob.Release()
		}
		n.publishEntry(f, st.key, fresh, fwdStale)
		n.writeEntry(ctx, st, fresh, n.now(), csRevalidated, fasthttp.StatusNotModified)
		return
	}

	if resp.Status >= 500 && stale != nil && cache.UsableOnError(stale, &st.req, respTime, n.cfg.Cache.MaxStaleOnError.D()) {
		// RFC 5861 §4: a 5xx is an error for stale-if-error purposes.
		drainBody(resp.Body)
		err := &statusError{status: resp.Status}
		f.Release(err)
		n.serveStaleOnError(ctx, st, stale, err)
		return
	}

	meta := n.responseMeta(resp.Status, resp.Header)
	storable, reason := n.storable(&st.req, &meta, resp.Header)
	tooBig := resp.ContentLength > int64(n.cfg.Cache.MaxObjectSize)
	if !storable || tooBig {
		// Not shared: the waiters fetch on their own, and later requests
		// skip the queue for a while (hit-for-pass) unless it was only size.
		f.Release(origin.ErrPass)
		if !storable && reason != cache.ReasonCookie && reason != cache.ReasonAuthorization {
			// Only for reasons of the response: one client's credentials
			// must not turn the URL into a pass for everyone else.
			n.hfp.add(st.key, respTime)
		}
		n.stats.passes.Add(1)
		n.log.Debug("not storing", "key", string(st.key), "reason", reason, "too_big", tooBig)
		if rh := ctx.Request.Header.Peek("Range"); len(rh) > 0 && tooBig {
			// The whole object is not kept, so fetching it for one range
			// would waste the origin's bandwidth: ask for the range itself.
			drainBodyAsync(resp.Body)
			n.pass(ctx, st, methodString(ctx.Method()), fwd)
			return
		}
		st.out = outPass
		r := &ctx.Response
		r.SetStatusCode(resp.Status)
		n.copyResponseHeaders(r, resp.Header, true)
		cs := n.appendCacheStatus(nil, csFwd, fwd, resp.Status, 0, false)
		n.setCacheStatus(r, resp.Header, cs)
		n.setBodyStream(ctx, resp)
		return
	}

	e := n.newEntry(st.key, resp.Status, resp.Header, &meta, reqTime, respTime)
	p := &pending{primary: e.Key, entry: e, stored: true, status: resp.Status, fwd: fwd}
	length := n.planCoding(p, n.acceptedSet(&ctx.Request.Header), resp)
	if e.Vary != nil {
		st.vkey = cache.VariantKey(st.vkey[:0], st.key, e.Vary, st.get)
		p.vkey = append([]byte(nil), st.vkey...)
		e.Key = p.vkey
	}
	f.Publish(origin.Head{Status: resp.Status, ContentLength: length, Meta: p})
	n.stats.fills.Add(1)
	n.fillsWG.Add(1)
	go n.fill(f, p, resp)
	n.serveFlight(ctx, st, f, p, length)
	// The client whose request caused the fetch gets its cookies; the
	// shared copy never carries them.
	for _, c := range header(resp.Header, "Set-Cookie") {
		ctx.Response.Header.Add("Set-Cookie", c)
	}
}

// fill copies the upstream body into the flight, then stores the entry. It
// runs on its own goroutine so a client that goes away does not cut the
// fetch short for the others; the flight stays joinable until the entry is
// visible in the store, so no request slips between the two and fetches again.
func (n *Node) fill(f *origin.Flight, p *pending, resp *origin.Response) {
	defer n.fillsWG.Done()
	key := f.Key()
	defer n.flights.Forget(key, f)
	var (
		buf   = make([]byte, 32<<10)
		total int64     // origin body bytes
		sink            = &fillSink{f: f, p: p, limit: int64(n.cfg.Cache.MaxObjectSize)}
		w     io.Writer = sink
		enc   encoder
	)
	if p.coding != codingNone {
		// Code the body as it arrives: the flight (its waiters, the
		// client, the store) receives coded bytes only.
		enc = n.compress.writer(p.coding, sink)
		defer n.compress.release(p.coding, enc)
		w = &codedWriter{enc: enc}
	}
	for {
		m, err := resp.Body.Read(buf)
		if m > 0 {
			total += int64(m)
			if _, werr := w.Write(buf[:m]); werr != nil {
				if errors.Is(werr, origin.ErrNoReaders) {
					// Not stored and nobody reading: stop downloading.
					resp.Body.Close()
					f.Finish(werr)
					return
				}
				err = werr
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			resp.Body.Close()
			n.stats.originErrors.Add(1)
			n.log.Warn("origin body failed", "key", key, "err", err, "bytes", total)
			f.Finish(err)
			return
		}
	}
	resp.Body.Close()
	if resp.ContentLength >= 0 && total != resp.ContentLength {
		f.Finish(io.ErrUnexpectedEOF)
		return
	}
	if enc != nil {
		if err := enc.Close(); err != nil { // the coder's last block and trailer
			f.Finish(err)
			return
		}
	}
	f.Finish(nil)
	if sink.discarded {
		return
	}
	body, ok := f.Bytes()
	if !ok {
		return
	}
	n.setBody(p.entry, body)
	n.storeEntry(p.primary, p.entry)
}

// fillSink is where fill writes the body a flight carries (after coding,
// when the edge compresses): it counts the bytes and stops keeping them once
// they exceed the max object size.
type fillSink struct {
	f         *origin.Flight
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
		s.f.Discard(discardWindow)
		s.discarded = true
		s.p.stored = false
	}
	return s.f.Write(b)
}

// setBody gives a new entry its body: in a memory file when it is large
// enough (cache.offheap_min_size) and one can be made, else on the heap.
func (n *Node) setBody(e *cache.Entry, body []byte) {
	if minSize := int(n.cfg.Cache.OffheapMinSize); minSize > 0 && len(body) >= minSize {
		b, err := n.blobs.New(body)
		if err == nil {
			e.Blob = b
			return
		}
		if !errors.Is(err, cache.ErrBlobUnsupported) && !errors.Is(err, cache.ErrBlobLimit) {
			n.log.Warn("keeping body on the heap", "key", string(e.Key), "err", err)
		}
	}
	e.Body = body
}

// publishEntry completes a flight from an entry that already has its body
// (a 304 revalidation), storing it first so later requests hit.
func (n *Node) publishEntry(f *origin.Flight, key []byte, e *cache.Entry, fwd string) {
	var vkey []byte
	if e.Vary != nil {
		vkey = e.Key // a refreshed variant keeps its variant key
	}
	if e.Blob != nil {
		// storeEntry hands e's reference to the store, which may let it go
		// at once; this one keeps the body readable until it is copied.
		e.Blob.Retain()
		defer e.Blob.Release()
	}
	n.storeEntry(key, e)
	f.Publish(origin.Head{Status: e.Status, ContentLength: int64(e.BodyLen()), Meta: &pending{primary: key, entry: e, vkey: vkey, stored: true, status: fasthttp.StatusNotModified, fwd: fwd}})
	if e.Blob != nil {
		r := e.Blob.NewReader(0, e.Blob.Size(), nil)
		_, err := io.Copy(flightWriter{f}, r)
		r.Close()
		f.Finish(err)
	} else {
		_, _ = f.Write(e.Body)
		f.Finish(nil)
	}
	n.flights.Forget(f.Key(), f)
}

// flightWriter hides Flight's other methods from io.Copy.
type flightWriter struct{ f *origin.Flight }

func (w flightWriter) Write(p []byte) (int, error) { return w.f.Write(p) }

// storeEntry puts e in the store. With Vary, e.Key is its variant key and a
// marker under the primary key names the Vary fields (RFC 9111 §4.1). The
// Wait makes the entry visible before the flight is forgotten, so no request
// finds neither and fetches again.
func (n *Node) storeEntry(primary []byte, e *cache.Entry) {
	if e.Vary != nil {
		n.store.Set(&cache.Entry{Key: primary, Vary: e.Vary, StoredAt: e.StoredAt})
	}
	n.store.Set(e)
	n.store.Wait()
}

// serveFlight answers a client from a shared flight: the entry's headers now,
// the body as it arrives.
func (n *Node) serveFlight(ctx *fasthttp.RequestCtx, st *reqState, f *origin.Flight, p *pending, contentLength int64) {
	st.out = outMiss
	e := p.entry
	resp := &ctx.Response
	var body io.ReadCloser
	if !ctx.IsHead() && !notModified(&ctx.Request.Header, e) {
		// Attach before committing headers: a flight that stopped keeping
		// its body (it outgrew the max object size) refuses late readers,
		// and this client then fetches on its own instead of getting a
		// truncated body.
		r, err := f.Reader()
		if err != nil {
			n.stats.passes.Add(1)
			n.pass(ctx, st, methodString(ctx.Method()), p.fwd)
			return
		}
		body = r
	}
	n.writeEntryHeaders(resp, e)
	now := n.now()
	// current_age, not 0: an upstream Age (or a Date in the past) counts
	// from the start (RFC 9111 §4.2.3).
	st.num = strconv.AppendInt(st.num[:0], int64(e.Age(now)/time.Second), 10)
	resp.Header.SetBytesV("Age", st.num)
	st.cs = n.appendCacheStatus(st.cs[:0], csFwd, p.fwd, p.status, e.TTL(now), p.stored)
	if st.joined {
		st.cs = append(st.cs, "; collapsed"...)
	}
	resp.Header.SetBytesV("Cache-Status", st.cs)
	if notModified(&ctx.Request.Header, e) {
		resp.SetStatusCode(fasthttp.StatusNotModified)
		resp.SkipBody = true
		return
	}
	resp.SetStatusCode(e.Status)
	if body == nil { // HEAD
		if contentLength >= 0 {
			resp.Header.SetContentLength(int(contentLength))
		}
		resp.SkipBody = true
		return
	}
	rh := ctx.Request.Header.Peek("Range")
	if len(rh) == 0 || e.Status != fasthttp.StatusOK {
		ctx.SetBodyStream(body, int(contentLength))
		return
	}
	if ir := ctx.Request.Header.Peek("If-Range"); len(ir) > 0 && !cache.IfRangeMatches(ir, e.ETag, e.LastModified) {
		ctx.SetBodyStream(body, int(contentLength))
		return
	}
	if contentLength >= 0 {
		rs, err := cache.ParseRange(st.ranges[:0], rh, contentLength)
		st.ranges = rs[:0]
		switch {
		case errors.Is(err, cache.ErrRangeNotSatisfiable):
			body.Close()
			resp.SetStatusCode(fasthttp.StatusRequestedRangeNotSatisfiable)
			resp.Header.Set("Content-Range", "bytes */"+itoa(contentLength))
			return
		case err != nil:
			ctx.SetBodyStream(body, int(contentLength)) // RFC 9110 §14.2: ignore what we do not understand
			return
		case len(rs) == 1:
			// A single range streams from the flight as it fills.
			r := rs[0]
			resp.SetStatusCode(fasthttp.StatusPartialContent)
			resp.Header.Set("Content-Range", "bytes "+itoa(r.Start)+"-"+itoa(r.End)+"/"+itoa(contentLength))
			ctx.SetBodyStream(&sectionReader{rc: body, skip: r.Start, left: r.End - r.Start + 1}, int(r.End-r.Start+1))
			return
		}
	}
	// Several ranges, or a length not known until the end: wait for the
	// whole object (it is being stored anyway) and answer from it.
	_, err := io.Copy(io.Discard, body)
	body.Close()
	full, ok := f.Bytes()
	if err != nil || !ok {
		if err == nil {
			err = errFlightIncomplete
		}
		n.writeError(ctx, st, err)
		return
	}
	if !n.writeRanges(ctx, st, e, storedBody{b: full}, rh) {
		resp.SetBodyRaw(full)
	}
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

// revalidateInBackground starts ONE revalidation of a stale entry
// (stale-while-revalidate, RFC 5861 §3); concurrent requests for the key
// join the same flight and do not start more.
func (n *Node) revalidateInBackground(ctx *fasthttp.RequestCtx, st *reqState, stale *cache.Entry) {
	key := append([]byte(nil), st.key...)
	hop, purged := st.hop, st.purged
	f, leader := n.flights.Join(n.flightKey(key, hop))
	if !leader {
		return
	}
	oreq := n.forwardRequest(ctx, "GET", true, hop)
	addValidators(oreq, stale)
	host := append([]byte(nil), ctx.Request.Header.Host()...)
	aeSet := n.acceptedSet(&ctx.Request.Header)
	var hdr fasthttp.RequestHeader // for a response whose Vary differs from the stale one's
	ctx.Request.Header.CopyTo(&hdr)
	var req cache.RequestMeta
	requestMeta(&req, &ctx.Request)
	req.CC.Reset() // the client's directives do not govern a background refresh
	if stale.Blob != nil {
		stale.Blob.Retain() // the request's reference ends with its handler
	}
	n.fillsWG.Add(1)
	go func() {
		defer n.fillsWG.Done()
		if stale.Blob != nil {
			defer stale.Blob.Release()
		}
		defer n.recoverBackground("revalidate")
		n.stats.originFetches.Add(1)
		n.stats.backgroundRevalidations.Add(1)
		reqTime := n.now()
		resp, err := n.upstreamOwner(context.Background(), key, host, !forwards(f), purged, oreq)
		respTime := n.now()
		if err != nil {
			n.stats.originErrors.Add(1)
			f.Release(err)
			return
		}
		if resp.Status == fasthttp.StatusNotModified {
			drainBody(resp.Body)
			n.stats.revalidated.Add(1)
			n.publishEntry(f, key, n.refreshed(stale, resp.Header, reqTime, respTime), fwdStale)
			return
		}
		meta := n.responseMeta(resp.Status, resp.Header)
		ok, _ := n.storable(&req, &meta, resp.Header)
		if !ok || resp.ContentLength > int64(n.cfg.Cache.MaxObjectSize) || resp.Status >= 500 {
			drainBody(resp.Body)
			f.Release(origin.ErrPass)
			return
		}
		e := n.newEntry(key, resp.Status, resp.Header, &meta, reqTime, respTime)
		p := &pending{primary: key, entry: e, stored: true, status: resp.Status, fwd: fwdStale}
		length := n.planCoding(p, aeSet, resp)
		switch {
		case e.Vary == nil:
		case slices.EqualFunc(e.Vary, stale.Vary, bytes.Equal):
			p.vkey = stale.Key // the stale variant was selected by the same request
			e.Key = stale.Key
		default:
			// The response varies on other fields than the stale one did
			// (the origin changed Vary, or cache.compress now applies to
			// it): key it by this request's values of them, or a coded
			// body would land under a key every client reads.
			p.vkey = cache.VariantKey(nil, key, e.Vary, func(name []byte) []byte { return hdr.PeekBytes(name) })
			e.Key = p.vkey
		}
		f.Publish(origin.Head{Status: resp.Status, ContentLength: length, Meta: p})
		n.fillsWG.Add(1)
		n.fill(f, p, resp)
	}()
}

func (n *Node) recoverBackground(what string) {
	if r := recover(); r != nil {
		n.stats.panics.Add(1)
		n.log.Error("panic in background task", "task", what, "panic", r)
	}
}

// addValidators makes a fetch conditional on the stored validators (§4.3.1).
func addValidators(r *origin.Request, e *cache.Entry) {
	if len(e.ETag) > 0 {
		r.Header = append(r.Header, origin.Field{Name: "If-None-Match", Value: string(e.ETag)})
	}
	if len(e.LastModified) > 0 {
		r.Header = append(r.Header, origin.Field{Name: "If-Modified-Since", Value: string(e.LastModified)})
	}
}

// storable decides whether a response fetched for req is kept. The fetch is
// always a GET, even for a HEAD client (HEAD is answered from the stored
// GET), so the policy sees GET. A response that would be stale at once and
// carries no validator or stale-* allowance is not kept either: it could
// never answer a request, only send every one back to the origin.
func (n *Node) storable(req *cache.RequestMeta, meta *cache.ResponseMeta, h []origin.Field) (bool, string) {
	get := *req
	get.Method = "GET"
	ok, reason := n.policy.Storable(&get, meta)
	if !ok {
		return false, reason
	}
	if lifetime, _ := n.policy.FreshnessLifetime(meta); lifetime <= 0 &&
		meta.CC.StaleWhileRevalidate <= 0 && meta.CC.StaleIfError <= 0 &&
		header1(h, "ETag") == "" && header1(h, "Last-Modified") == "" {
		return false, cache.ReasonNoFreshness
	}
	return true, ""
}

// newEntry builds the entry for a storable response (body set later).
func (n *Node) newEntry(key []byte, status int, h []origin.Field, meta *cache.ResponseMeta, reqTime, respTime time.Time) *cache.Entry {
	e := &cache.Entry{
		Key:           append([]byte(nil), key...),
		Status:        status,
		Header:        withDate(n.storedHeaders(h, &meta.CC), respTime),
		Vary:          varyNames(h),
		SurrogateKeys: surrogateKeys(h),
		StoredAt:      reqTime, // a purge issued during the fetch must cover it
	}
	if v := header1(h, "ETag"); v != "" {
		e.ETag = []byte(v)
	}
	if v := header1(h, "Last-Modified"); v != "" {
		e.LastModified = []byte(v)
	}
	e.SetFreshness(n.policy.Freshness(meta, reqTime, respTime))
	return e
}

// withDate appends a Date field of the receipt time to stored fields that
// have none (RFC 9110 §6.6.1: a recipient caching a response without Date
// records when it was received), so every hit replays one Date.
func withDate(h []cache.Field, received time.Time) []cache.Field {
	for _, f := range h {
		if string(f.Name) == "Date" {
			return h
		}
	}
	return append(h, cache.Field{Name: []byte("Date"), Value: appendHTTPDate(nil, received)})
}

// refreshed applies a 304's fields to a stale entry (RFC 9111 §4.3.4) and
// recomputes its freshness from the merged fields; the stored entry itself
// is never mutated. Surrogate keys and Vary stay those of the stored response.
func (n *Node) refreshed(stale *cache.Entry, h304 []origin.Field, reqTime, respTime time.Time) *cache.Entry {
	m304 := n.responseMeta(stale.Status, h304)
	// A 304 without Date gets the receipt time, like a stored response
	// (RFC 9110 §6.6.1); else the stored Date would stay, and the refreshed
	// entry would look as old as the stored one.
	updates := withDate(keepRepresentation(stale, n.storedHeaders(h304, &m304.CC)), respTime)
	// The freshness of the merged response: stored fields the 304 does not
	// replace, the 304's fields (Age and the targeted field included, which
	// are not stored) and the Date the refreshed entry will carry.
	all := make([]origin.Field, 0, len(stale.Header)+len(h304)+1)
	for _, f := range stale.Header {
		if !hasField(updates, f.Name) {
			all = append(all, origin.Field{Name: string(f.Name), Value: string(f.Value)})
		}
	}
	for _, f := range h304 {
		if !strings.EqualFold(f.Name, "Date") {
			all = append(all, f)
		}
	}
	for _, f := range updates {
		if string(f.Name) == "Date" {
			all = append(all, origin.Field{Name: "Date", Value: string(f.Value)})
		}
	}
	meta := n.responseMeta(stale.Status, all)
	return stale.WithUpdatedHeaders(updates, n.policy.Freshness(&meta, reqTime, respTime))
}

func hasField(h []cache.Field, name []byte) bool {
	for _, f := range h {
		if bytes.EqualFold(f.Name, name) {
			return true
		}
	}
	return false
}

// serveStaleOnError answers from a stale entry when the origin failed and
// stale-if-error (RFC 5861 §4) or the configured allowance permits it.
func (n *Node) serveStaleOnError(ctx *fasthttp.RequestCtx, st *reqState, stale *cache.Entry, err error) bool {
	now := n.now()
	if !cache.UsableOnError(stale, &st.req, now, n.cfg.Cache.MaxStaleOnError.D()) {
		return false
	}
	n.stats.staleServed.Add(1)
	if errors.Is(err, origin.ErrDown) {
		// Nothing was forwarded (RFC 9211: a hit, no fwd-status); the
		// origin going down was logged once, when it happened.
		if n.log.Enabled(context.Background(), slog.LevelDebug) {
			n.log.Debug("origin down; serving stale", "key", string(st.key))
		}
		n.writeEntry(ctx, st, stale, now, csStaleDown, 0)
		return true
	}
	n.log.Warn("origin failed; serving stale", "key", string(st.key), "err", err)
	n.writeEntry(ctx, st, stale, now, csStaleErr, statusFor(err))
	return true
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

func drainBodyAsync(rc io.ReadCloser) {
	if rc != nil {
		go rc.Close()
	}
}

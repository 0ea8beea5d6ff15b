package cache

import (
	"sync/atomic"
	"time"

	"github.com/edgeshield/edgeshield/internal/ascii"
)

// Field is one stored header line.
type Field struct{ Name, Value []byte }

// entryOverhead approximates the memory of an Entry beyond its byte slices
// (struct, slice headers, ristretto bookkeeping), so that many tiny objects
// still count against the byte budget.
const entryOverhead = 200

// Entry is a stored response. All exported fields are set by the creator
// before the entry is shared (Store.Set) and never changed afterwards; the
// only mutable state is the atomic invalidated flag.
type Entry struct {
	Key    []byte // full cache key (primary or variant), immutable
	Status int
	// Header holds the end-to-end fields to replay (the edge already removed
	// hop-by-hop fields, Age, Set-Cookie, ...).
	Header []Field
	Body   []byte // full body; immutable once stored; nil when Blob holds it
	// Blob, when set, holds the body outside the heap instead of Body. The
	// entry owns one reference: Store.Set takes it over and releases it when
	// the entry leaves the store. Readers Acquire their own.
	Blob *Blob
	// ETag and LastModified are the validators (also present in Header).
	ETag, LastModified        []byte
	RequestTime, ResponseTime time.Time
	InitialAge                time.Duration // corrected_initial_age (RFC 9111 §4.2.3)
	Lifetime                  time.Duration // freshness lifetime (RFC 9111 §4.2.1)
	// SWR and SIE are the stale-while-revalidate and stale-if-error windows
	// from the response (RFC 5861); -1 when absent.
	SWR, SIE time.Duration
	// MustRevalidate is set for must-revalidate, proxy-revalidate, or s-maxage
	// (RFC 9111 §4.2.4, §5.2.2.10): never served stale.
	MustRevalidate bool
	// NoCache is set for a response no-cache: stored, but always revalidated
	// before use (RFC 9111 §5.2.2.4).
	NoCache bool
	// Immutable is set for a response immutable (RFC 8246): while fresh it
	// is served even to a request asking to revalidate (a browser reload).
	Immutable     bool
	Vary          [][]byte // lower-cased field names from Vary; nil when none
	SurrogateKeys [][]byte // from Surrogate-Key / Cache-Tag (the edge parses)
	// StoredAt is what purge tombstones compare against: a purge newer than
	// it applies. Set it to the time the origin request was sent
	// (RequestTime), not when the response arrived, so that a purge issued
	// while a fetch was in flight also covers that fetch's (older) content.
	StoredAt time.Time

	// invalidated marks the entry stale after a soft purge or an unsafe
	// request (RFC 9111 §4.4).
	invalidated atomic.Bool
	// purgeGen caches a negative Purges.Check result, see Purges.gen.
	purgeGen atomic.Uint64
}

// BodyLen is the length of the stored body, wherever it is kept.
func (e *Entry) BodyLen() int {
	if e.Blob != nil {
		return int(e.Blob.Size())
	}
	return len(e.Body)
}

// Freshness is the time-dependent part of an Entry, computed from a response
// by Policy.Freshness.
type Freshness struct {
	RequestTime, ResponseTime time.Time
	InitialAge, Lifetime      time.Duration
	SWR, SIE                  time.Duration // -1 when absent
	MustRevalidate, NoCache   bool
	Immutable                 bool
}

// Freshness computes the Freshness of resp, received at responseTime for a
// request sent at requestTime.
func (p *Policy) Freshness(resp *ResponseMeta, requestTime, responseTime time.Time) Freshness {
	lifetime, _ := p.FreshnessLifetime(resp)
	cc := &resp.CC
	return Freshness{
		RequestTime:    requestTime,
		ResponseTime:   responseTime,
		InitialAge:     InitialAge(resp.AgeHeader, resp.Date, requestTime, responseTime),
		Lifetime:       lifetime,
		SWR:            optionalSeconds(cc.StaleWhileRevalidate),
		SIE:            optionalSeconds(cc.StaleIfError),
		MustRevalidate: cc.MustRevalidate || cc.ProxyRevalidate || cc.SMaxAge >= 0,
		NoCache:        cc.NoCache,
		Immutable:      cc.Immutable,
	}
}

// SetFreshness copies f into e. Only for an entry that is not shared yet.
func (e *Entry) SetFreshness(f Freshness) {
	e.RequestTime, e.ResponseTime = f.RequestTime, f.ResponseTime
	e.InitialAge, e.Lifetime = f.InitialAge, f.Lifetime
	e.SWR, e.SIE = f.SWR, f.SIE
	e.MustRevalidate, e.NoCache, e.Immutable = f.MustRevalidate, f.NoCache, f.Immutable
}

func optionalSeconds(n int64) time.Duration {
	if n < 0 {
		return -1
	}
	return seconds(n)
}

// Age returns current_age (RFC 9111 §4.2.3): corrected_initial_age plus the
// time resident in this cache. It is never negative.
func (e *Entry) Age(now time.Time) time.Duration {
	return max(e.InitialAge, 0) + max(now.Sub(e.ResponseTime), 0)
}

// Fresh reports whether e may be served without validation (RFC 9111 §4.2):
// its age is below its lifetime, it was not invalidated and it is not a
// no-cache response.
func (e *Entry) Fresh(now time.Time) bool {
	return !e.NoCache && !e.invalidated.Load() && e.Age(now) < e.Lifetime
}

// TTL returns the remaining freshness, lifetime minus age (negative when stale).
func (e *Entry) TTL(now time.Time) time.Duration { return e.Lifetime - e.Age(now) }

// Invalidate marks e stale (soft purge, RFC 9111 §4.4). Safe concurrently.
func (e *Entry) Invalidate() { e.invalidated.Store(true) }

// Invalidated reports whether Invalidate was called.
func (e *Entry) Invalidated() bool { return e.invalidated.Load() }

// Cost returns the approximate bytes e occupies: body, header fields, key,
// validators, vary and surrogate keys plus a fixed overhead.
func (e *Entry) Cost() int64 {
	n := int64(entryOverhead + e.BodyLen() + len(e.Key) + len(e.ETag) + len(e.LastModified))
	for _, f := range e.Header {
		n += int64(len(f.Name) + len(f.Value) + 48) // two slice headers
	}
	for _, v := range e.Vary {
		n += int64(len(v) + 24)
	}
	for _, k := range e.SurrogateKeys {
		n += int64(len(k) + 24)
	}
	return n
}

// Decision says how a stored entry may answer a request.
type Decision uint8

const (
	// ServeFresh: the entry is fresh for this request.
	ServeFresh Decision = iota
	// ServeStale: the entry is stale but within the request's max-stale.
	ServeStale
	// ServeStaleRevalidate: stale within stale-while-revalidate; serve it now
	// and start one background revalidation (RFC 5861 §3).
	ServeStaleRevalidate
	// Revalidate: a conditional request to the origin is needed.
	Revalidate
)

func (d Decision) String() string {
	switch d {
	case ServeFresh:
		return "fresh"
	case ServeStale:
		return "stale"
	case ServeStaleRevalidate:
		return "stale-while-revalidate"
	case Revalidate:
		return "revalidate"
	}
	return "unknown"
}

// staleness returns how long e has been stale at now (0 while still fresh by
// age; an invalidated entry that is young by age counts as just stale).
func (e *Entry) staleness(now time.Time) time.Duration {
	return max(e.Age(now)-e.Lifetime, 0)
}

// Use decides how e may answer req at time now (RFC 9111 §4.2, §4.3,
// §5.2.1; RFC 5861 §3):
//
//   - request no-cache, Pragma: no-cache or max-age=0 → Revalidate (§5.2.1.4, §5.4);
//   - request max-age=N requires age <= N, min-fresh=M requires TTL >= M;
//   - except that a fresh immutable entry (RFC 8246 §2) is served whatever
//     the request's no-cache, Pragma or max-age say: that is what browsers
//     send on a reload, which immutable exists to spare; req.Revalidate
//     still forces validation;
//   - a response no-cache entry → Revalidate (§5.2.2.4);
//   - fresh (and not invalidated) → ServeFresh;
//   - stale: never served stale when MustRevalidate (§4.2.4); within
//     stale-while-revalidate → ServeStaleRevalidate; within the request's
//     max-stale → ServeStale; otherwise Revalidate.
//
// only-if-cached is left to the caller (it decides what to do instead of
// contacting the origin). The configured origin-down allowance is not applied
// here, see UsableOnError.
func Use(e *Entry, req *RequestMeta, now time.Time) Decision {
	rc := &req.CC
	if req.Revalidate || e.NoCache {
		return Revalidate
	}
	age := e.Age(now)
	fresh := !e.invalidated.Load() && age < e.Lifetime
	if !(fresh && e.Immutable) {
		if rc.NoCache || req.PragmaNoCache || rc.MaxAge == 0 {
			return Revalidate
		}
		if rc.MaxAge > 0 && age > seconds(rc.MaxAge) {
			return Revalidate
		}
	}
	if rc.MinFresh >= 0 && e.Lifetime-age < seconds(rc.MinFresh) {
		return Revalidate
	}
	if fresh {
		return ServeFresh
	}
	if e.MustRevalidate {
		return Revalidate
	}
	stale := e.staleness(now)
	if e.SWR > 0 && stale < e.SWR {
		return ServeStaleRevalidate
	}
	if rc.MaxStale >= 0 {
		if stale <= seconds(rc.MaxStale) {
			return ServeStale
		}
	} else if rc.MaxStaleAny {
		return ServeStale
	}
	return Revalidate
}

// UsableOnError reports whether the stale entry e may be served because the
// origin failed or timed out: within stale-if-error of the response or of the
// request (RFC 5861 §4), within the request's max-stale, or within maxStale,
// the operator's configured allowance for a disconnected cache (RFC 9111
// §4.2.4). Never when e is MustRevalidate or NoCache: §4.2.4 forbids
// generating a stale response against an explicit directive.
func UsableOnError(e *Entry, req *RequestMeta, now time.Time, maxStale time.Duration) bool {
	if e.MustRevalidate || e.NoCache {
		return false
	}
	stale := e.staleness(now)
	switch {
	case e.SIE >= 0 && stale <= e.SIE:
		return true
	case req.CC.StaleIfError >= 0 && stale <= seconds(req.CC.StaleIfError):
		return true
	case req.CC.MaxStale >= 0 && stale <= seconds(req.CC.MaxStale):
		return true
	case req.CC.MaxStale < 0 && req.CC.MaxStaleAny:
		return true
	case maxStale > 0 && stale <= maxStale:
		return true
	}
	return false
}

// WithUpdatedHeaders returns a new Entry that applies a 304 response to e
// (RFC 9111 §4.3.4, §3.2): every field in h replaces all stored fields of the
// same name (case-insensitively); Content-Length is never updated (§3.2). The
// validators ETag and LastModified follow the new header. f carries the new
// times and freshness; compute it with Policy.Freshness from the merged
// response (the 304's Cache-Control when it sent one, else the stored one).
// StoredAt becomes f.RequestTime: a successful validation confirms the body,
// so soft purges issued before the validation request no longer apply. Key,
// Status, Body, Vary and SurrogateKeys are shared with e (they are
// immutable). A Blob is shared too: the new entry takes its own reference,
// so the caller must hold one on e's Blob (it panics otherwise).
//
// h is copied, so it may point into request or response buffers that are
// reused after the call. The caller should pass the 304's header already
// stripped of hop-by-hop fields (RFC 9110 §7.6.1).
func (e *Entry) WithUpdatedHeaders(h []Field, f Freshness) *Entry {
	n := &Entry{
		Key:           e.Key,
		Status:        e.Status,
		Body:          e.Body,
		Blob:          e.Blob,
		ETag:          e.ETag,
		LastModified:  e.LastModified,
		Vary:          e.Vary,
		SurrogateKeys: e.SurrogateKeys,
		StoredAt:      f.RequestTime,
	}
	if n.Blob != nil {
		n.Blob.Retain() // the new entry's own reference
	}
	n.SetFreshness(f)
	size := 0
	for _, fl := range h {
		size += len(fl.Name) + len(fl.Value)
	}
	arena := make([]byte, 0, size)
	header := make([]Field, 0, len(e.Header)+len(h))
	for _, fl := range e.Header {
		if !hasField(h, fl.Name) || ascii.EqualFoldLower(fl.Name, "content-length") {
			header = append(header, fl)
		}
	}
	for _, fl := range h {
		if ascii.EqualFoldLower(fl.Name, "content-length") {
			continue
		}
		var c Field
		arena, c.Name = appendCopy(arena, fl.Name)
		arena, c.Value = appendCopy(arena, fl.Value)
		header = append(header, c)
		switch {
		case ascii.EqualFoldLower(c.Name, "etag"):
			n.ETag = c.Value
		case ascii.EqualFoldLower(c.Name, "last-modified"):
			n.LastModified = c.Value
		}
	}
	n.Header = header
	return n
}

// appendCopy appends b to arena (which never grows past its capacity, so
// earlier sub-slices stay valid) and returns the copy.
func appendCopy(arena, b []byte) ([]byte, []byte) {
	start := len(arena)
	arena = append(arena, b...)
	return arena, arena[start:len(arena):len(arena)]
}

func hasField(h []Field, name []byte) bool {
	for _, f := range h {
		if ascii.EqualFold(f.Name, name) {
			return true
		}
	}
	return false
}

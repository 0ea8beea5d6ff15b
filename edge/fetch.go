package edge

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/edgeshield/edgeshield/cache"
	"github.com/edgeshield/edgeshield/origin"
	"github.com/valyala/fasthttp"
)

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
func (pl *pipeline) storable(req *cache.RequestMeta, meta *cache.ResponseMeta, h []origin.Field) (bool, string) {
	get := *req
	get.Method = "GET"
	ok, reason := pl.set().policy.Storable(&get, meta)
	if !ok {
		return false, reason
	}
	if lifetime, _ := pl.set().policy.FreshnessLifetime(meta); lifetime <= 0 &&
		meta.CC.StaleWhileRevalidate <= 0 && meta.CC.StaleIfError <= 0 &&
		header1(h, "ETag") == "" && header1(h, "Last-Modified") == "" {
		return false, cache.ReasonNoFreshness
	}
	return true, ""
}

// newEntry builds the entry for a storable response (body set later).
func (pl *pipeline) newEntry(key []byte, status int, h []origin.Field, meta *cache.ResponseMeta, reqTime, respTime time.Time) *cache.Entry {
	e := &cache.Entry{
		Key:           append([]byte(nil), key...),
		Status:        status,
		Header:        withDate(pl.storedHeaders(h, &meta.CC), respTime),
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
	e.SetFreshness(pl.set().policy.Freshness(meta, reqTime, respTime))
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
func (pl *pipeline) refreshed(stale *cache.Entry, h304 []origin.Field, reqTime, respTime time.Time) *cache.Entry {
	m304 := pl.responseMeta(stale.Status, h304)
	// A 304 without Date gets the receipt time, like a stored response
	// (RFC 9110 §6.6.1); else the stored Date would stay, and the refreshed
	// entry would look as old as the stored one.
	updates := withDate(keepRepresentation(stale, pl.storedHeaders(h304, &m304.CC)), respTime)
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
	meta := pl.responseMeta(stale.Status, all)
	return stale.WithUpdatedHeaders(updates, pl.set().policy.Freshness(&meta, reqTime, respTime))
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
// stale-if-error (RFC 5861 §4) or the configured allowance permits it; ok
// false: it may not, and nothing was written.
func (pl *pipeline) serveStaleOnError(ctx *fasthttp.RequestCtx, st *reqState, stale *cache.Entry, err error) (out outcome, ok bool) {
	now := pl.now()
	if !cache.UsableOnError(stale, &st.req, now, pl.conf().Cache.MaxStaleOnError.D()) {
		return outNone, false
	}
	pl.stats.staleServed.Add(1)
	if errors.Is(err, origin.ErrDown) {
		// Nothing was forwarded (RFC 9211: a hit, no fwd-status); the
		// origin going down was logged once, when it happened.
		if pl.log.Enabled(context.Background(), slog.LevelDebug) {
			pl.log.Debug("origin down; serving stale", "key", string(st.key))
		}
		return pl.writeEntry(ctx, st, stale, now, csStaleDown, 0), true
	}
	pl.log.Warn("origin failed; serving stale", "key", string(st.key), "err", err)
	return pl.writeEntry(ctx, st, stale, now, csStaleErr, statusFor(err)), true
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

package cache

import "time"

// RequestMeta is what the caching rules need to know about a request.
type RequestMeta struct {
	Method string // "GET", "HEAD", ...
	// CC holds the request Cache-Control directives; call CC.Reset() before
	// parsing so that absent delta fields are -1.
	CC Directives
	// PragmaNoCache is set for "Pragma: no-cache" when the request has no
	// Cache-Control field (RFC 9111 §5.4).
	PragmaNoCache bool
	Authorization bool // request carries Authorization
	Cookie        bool // request carries Cookie
	// Revalidate forces validation with the origin whatever the stored
	// response says (immutable included): set for a shield hop whose
	// sender's copy was purged.
	Revalidate bool
}

// ResponseMeta is what the caching rules need to know about a response.
type ResponseMeta struct {
	Status int
	// CC holds the effective directives for this cache: the targeted field
	// (CDN-Cache-Control or a configured name, RFC 9213) when present, else
	// Cache-Control.
	CC Directives
	// Targeted is set when CC came from a targeted field; Expires is then
	// ignored (RFC 9213 §2.2).
	Targeted bool
	// Date, Expires and LastModified are zero when absent. The edge should set
	// Date to the receipt time when the origin sent none (RFC 9110 §6.6.1).
	Date, Expires, LastModified time.Time
	// ExpiresPresent is set when an Expires field exists; ExpiresInvalid when
	// it does not parse (e.g. "0"), which means already expired (RFC 9111 §5.3).
	ExpiresPresent, ExpiresInvalid bool
	AgeHeader                      int64 // Age field seconds, -1 when absent
	SetCookie                      bool  // response has Set-Cookie
	VaryStar                       bool  // Vary contains "*"
}

// Policy holds the configurable parts of the storage and freshness rules.
// The zero value is ready to use. A Policy must not be changed while in use.
type Policy struct {
	// StoreSetCookie: when false (default) responses with Set-Cookie are not
	// stored, the safe default of nginx and Varnish: RFC 9111 allows storing
	// them, but a per-user cookie replayed to everyone is a classic leak.
	StoreSetCookie bool
	// HeuristicFraction of (Date - Last-Modified) used as heuristic freshness
	// (RFC 9111 §4.2.2); 0 means 0.1.
	HeuristicFraction float64
	// MaxHeuristic caps heuristic freshness; 0 means 24h.
	MaxHeuristic time.Duration
	// Now returns the current time; it is only used to evaluate Expires when a
	// response has no Date. Nil means time.Now.
	Now func() time.Time
}

// Reasons returned by Policy.Storable.
const (
	ReasonMethod         = "method"
	ReasonStatus         = "status"
	ReasonNoStore        = "no-store"
	ReasonMustUnderstand = "must-understand"
	ReasonPrivate        = "private"
	ReasonAuthorization  = "authorization"
	ReasonCookie         = "cookie"
	ReasonSetCookie      = "set-cookie"
	ReasonVaryStar       = "vary-star"
	ReasonNoFreshness    = "no-freshness"
)

// HeuristicallyCacheable reports whether a status code is heuristically
// cacheable (RFC 9110 §15.1), i.e. may get heuristic freshness (RFC 9111
// §4.2.2) and be stored without explicit freshness. 206 is on the list but
// Storable refuses it: this cache stores only complete responses.
func HeuristicallyCacheable(status int) bool {
	switch status {
	case 200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501:
		return true
	}
	return false
}

// understoodStatus reports whether this cache implements the semantics of a
// status code, which matters for must-understand (RFC 9111 §5.2.2.3).
func understoodStatus(status int) bool {
	switch status {
	case 200, 203, 204, 300, 301, 302, 303, 307, 308,
		400, 403, 404, 405, 410, 414, 451,
		500, 501, 502, 503, 504:
		return true
	}
	return false
}

// Storable reports whether a shared cache may store resp for req (RFC 9111
// §3) and, when it may not, a short reason (one of the Reason constants).
//
// Only GET responses are stored; responses to HEAD are not stored as GET
// bodies. 206 and 304 are never stored (partial content and validation
// responses are handled by the edge). A status that is not heuristically
// cacheable needs explicit freshness (max-age, s-maxage or Expires): "public"
// alone is not enough here, because such a response would be stored already
// stale. Explicitly fresh 5xx responses are storable.
func (p *Policy) Storable(req *RequestMeta, resp *ResponseMeta) (ok bool, reason string) {
	if req.Method != "GET" {
		return false, ReasonMethod
	}
	if resp.Status < 200 || resp.Status > 599 || resp.Status == 206 || resp.Status == 304 {
		return false, ReasonStatus
	}
	cc := &resp.CC
	if req.CC.NoStore { // §5.2.1.5
		return false, ReasonNoStore
	}
	if cc.MustUnderstand {
		// §5.2.2.3: a cache that understands the status code may ignore
		// no-store; one that does not MUST NOT store.
		if !understoodStatus(resp.Status) {
			return false, ReasonMustUnderstand
		}
	} else if cc.NoStore { // §5.2.2.5
		return false, ReasonNoStore
	}
	// §5.2.2.7: a shared cache never stores a private response; a
	// qualified private="field" only forbids storing the named fields,
	// which the caller strips (Directives.PrivateField).
	if cc.Private {
		return false, ReasonPrivate
	}
	// §3.5: a shared cache stores a response to an authenticated request only
	// when the origin explicitly allows it. Beyond that, a response to a
	// request with credentials (Authorization or Cookie) is stored only with
	// an explicit lifetime, never heuristically: an origin that answers
	// /account/profile.css with the user's page and no freshness must not
	// have it replayed to others (web cache deception; Varnish's built-in
	// rules do not cache such requests at all).
	if req.Authorization && (!cc.Public && !cc.MustRevalidate && cc.SMaxAge < 0 || !p.explicitFreshness(resp)) {
		return false, ReasonAuthorization
	}
	if req.Cookie && !p.explicitFreshness(resp) {
		return false, ReasonCookie
	}
	if resp.SetCookie && !p.StoreSetCookie && !cc.PrivateField([]byte("set-cookie")) {
		return false, ReasonSetCookie
	}
	// §4.1: "Vary: *" always fails to match, so storing it is useless.
	if resp.VaryStar {
		return false, ReasonVaryStar
	}
	if !HeuristicallyCacheable(resp.Status) && !p.explicitFreshness(resp) {
		return false, ReasonNoFreshness
	}
	return true, ""
}

// explicitFreshness reports whether resp carries an explicit expiration time
// (RFC 9111 §4.2.1).
func (p *Policy) explicitFreshness(resp *ResponseMeta) bool {
	return resp.CC.SMaxAge >= 0 || resp.CC.MaxAge >= 0 || (resp.ExpiresPresent && !resp.Targeted)
}

// FreshnessLifetime computes the freshness lifetime per RFC 9111 §4.2.1:
// s-maxage, else max-age, else Expires minus Date (Expires is ignored when
// the directives came from a targeted field, RFC 9213 §2.2), else a
// heuristic (§4.2.2): HeuristicFraction of Date minus Last-Modified, capped
// at MaxHeuristic, only for heuristically cacheable statuses (RFC 9110
// §15.1; "public" does not extend it, so a 403 or 302 never gets a
// heuristic lifetime). heuristic reports whether the heuristic was used. The
// result is never negative.
func (p *Policy) FreshnessLifetime(resp *ResponseMeta) (lifetime time.Duration, heuristic bool) {
	switch {
	case resp.CC.SMaxAge >= 0:
		return seconds(resp.CC.SMaxAge), false
	case resp.CC.MaxAge >= 0:
		return seconds(resp.CC.MaxAge), false
	case resp.ExpiresPresent && !resp.Targeted:
		if resp.ExpiresInvalid || resp.Expires.IsZero() {
			return 0, false // §5.3: invalid Expires means already expired
		}
		date := resp.Date
		if date.IsZero() {
			date = p.now()
		}
		return max(resp.Expires.Sub(date), 0), false
	}
	if !HeuristicallyCacheable(resp.Status) {
		return 0, false
	}
	if resp.LastModified.IsZero() || resp.Date.IsZero() || !resp.Date.After(resp.LastModified) {
		return 0, false
	}
	frac := p.HeuristicFraction
	if frac <= 0 {
		frac = 0.1
	}
	limit := p.MaxHeuristic
	if limit <= 0 {
		limit = 24 * time.Hour
	}
	h := time.Duration(float64(resp.Date.Sub(resp.LastModified)) * frac)
	return min(max(h, 0), limit), true
}

func (p *Policy) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

// InitialAge computes corrected_initial_age (RFC 9111 §4.2.3) from the Age
// field (-1 when absent), the Date field (zero when absent), the time the
// request was sent and the time the response was received:
//
//	apparent_age = max(0, response_time - date_value)
//	corrected_age_value = age_value + (response_time - request_time)
//	corrected_initial_age = max(apparent_age, corrected_age_value)
func InitialAge(ageHeader int64, date, requestTime, responseTime time.Time) time.Duration {
	var apparent time.Duration
	if !date.IsZero() {
		apparent = max(responseTime.Sub(date), 0)
	}
	delay := max(responseTime.Sub(requestTime), 0)
	corrected := seconds(max(ageHeader, 0)) + delay
	return max(apparent, corrected)
}

// seconds converts delta-seconds (at most 2^31, so no overflow) to a Duration.
func seconds(n int64) time.Duration { return time.Duration(n) * time.Second }

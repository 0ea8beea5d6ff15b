package cache

import (
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func getReq(cc ...string) *RequestMeta {
	r := &RequestMeta{Method: "GET", CC: parseLines(cc...)}
	return r
}

func resp(status int, cc ...string) *ResponseMeta {
	return &ResponseMeta{Status: status, CC: parseLines(cc...), AgeHeader: -1, Date: t0}
}

func TestStorable(t *testing.T) {
	with := func(r *ResponseMeta, f func(*ResponseMeta)) *ResponseMeta { f(r); return r }
	auth := func(r *RequestMeta) *RequestMeta { r.Authorization = true; return r }
	cookie := func(r *RequestMeta) *RequestMeta { r.Cookie = true; return r }
	tests := []struct {
		name   string
		policy Policy
		req    *RequestMeta
		resp   *ResponseMeta
		ok     bool
		reason string
	}{
		{"§3 GET 200 with max-age", Policy{}, getReq(), resp(200, "max-age=60"), true, ""},
		{"§3 GET 200 without freshness is heuristically cacheable", Policy{}, getReq(), resp(200), true, ""},
		{"§3 HEAD is not stored as a GET body", Policy{}, &RequestMeta{Method: "HEAD", CC: dirs(nil)}, resp(200, "max-age=60"), false, ReasonMethod},
		{"§3 POST is not stored", Policy{}, &RequestMeta{Method: "POST", CC: dirs(nil)}, resp(200, "max-age=60"), false, ReasonMethod},
		{"§3.3 206 partial is not stored here", Policy{}, getReq(), resp(206, "max-age=60"), false, ReasonStatus},
		{"§4.3.4 304 is not stored", Policy{}, getReq(), resp(304, "max-age=60"), false, ReasonStatus},
		{"§3 1xx is not final", Policy{}, getReq(), resp(100, "max-age=60"), false, ReasonStatus},
		{"RFC 9110 §15.1 404 heuristically cacheable", Policy{}, getReq(), resp(404), true, ""},
		{"RFC 9110 §15.1 301 heuristically cacheable", Policy{}, getReq(), resp(301), true, ""},
		{"RFC 9110 §15.1 410 heuristically cacheable", Policy{}, getReq(), resp(410), true, ""},
		{"§3 302 without explicit freshness not stored", Policy{}, getReq(), resp(302), false, ReasonNoFreshness},
		{"§3 302 with max-age stored", Policy{}, getReq(), resp(302, "max-age=10"), true, ""},
		{"§3 503 without freshness not stored", Policy{}, getReq(), resp(503), false, ReasonNoFreshness},
		{"§3 explicitly fresh 503 is storable", Policy{}, getReq(), resp(503, "s-maxage=5"), true, ""},
		{"§3 500 with Expires is storable", Policy{}, getReq(),
			with(resp(500), func(r *ResponseMeta) { r.ExpiresPresent, r.Expires = true, t0.Add(time.Minute) }), true, ""},
		{"RFC 9213 §2.2 Expires ignored with targeted field", Policy{}, getReq(),
			with(resp(500), func(r *ResponseMeta) { r.ExpiresPresent, r.Expires, r.Targeted = true, t0.Add(time.Minute), true }),
			false, ReasonNoFreshness},
		{"§3 public alone does not make 302 storable", Policy{}, getReq(), resp(302, "public"), false, ReasonNoFreshness},
		{"§5.2.2.5 response no-store", Policy{}, getReq(), resp(200, "no-store, max-age=60"), false, ReasonNoStore},
		{"§5.2.1.5 request no-store", Policy{}, getReq("no-store"), resp(200, "max-age=60"), false, ReasonNoStore},
		{"§5.2.2.3 must-understand with understood status ignores no-store", Policy{}, getReq(),
			resp(200, "must-understand, no-store, max-age=60"), true, ""},
		{"§5.2.2.3 must-understand with unknown status not stored", Policy{}, getReq(),
			resp(299, "must-understand, no-store, max-age=60"), false, ReasonMustUnderstand},
		{"§5.2.2.7 private not stored by a shared cache", Policy{}, getReq(), resp(200, "private, max-age=60"), false, ReasonPrivate},
		{"§5.2.2.7 qualified private stored (without the field)", Policy{}, getReq(), resp(200, `private="x", max-age=60`), true, ""},
		{"§5.2.2.7 private with s-maxage not stored", Policy{}, getReq(), resp(200, "private, s-maxage=60"), false, ReasonPrivate},
		{"§5.2.2.7 private=\"Set-Cookie\" stores without the cookie", Policy{}, getReq(),
			with(resp(200, `private="Set-Cookie", max-age=60`), func(r *ResponseMeta) { r.SetCookie = true }), true, ""},
		{"§5.2.2.7 private naming another field keeps Set-Cookie unshared", Policy{}, getReq(),
			with(resp(200, `private="X-User", max-age=60`), func(r *ResponseMeta) { r.SetCookie = true }), false, ReasonSetCookie},
		{"RFC 9110 §15.1 403 never heuristically stored", Policy{}, getReq(),
			with(resp(403, "public"), func(r *ResponseMeta) { r.LastModified = t0.Add(-10 * time.Hour) }), false, ReasonNoFreshness},
		{"RFC 9110 §15.1 414 heuristically cacheable", Policy{}, getReq(), resp(414), true, ""},
		{"RFC 9110 §15.1 501 heuristically cacheable", Policy{}, getReq(), resp(501), true, ""},
		{"Cookie request: heuristic only, not stored", Policy{}, cookie(getReq()),
			with(resp(200), func(r *ResponseMeta) { r.LastModified = t0.Add(-10 * time.Hour) }), false, ReasonCookie},
		{"Cookie request: public alone not enough", Policy{}, cookie(getReq()), resp(200, "public"), false, ReasonCookie},
		{"Cookie request: max-age stored", Policy{}, cookie(getReq()), resp(200, "max-age=60"), true, ""},
		{"Cookie request: s-maxage stored", Policy{}, cookie(getReq()), resp(200, "s-maxage=60"), true, ""},
		{"Cookie request: Expires stored", Policy{}, cookie(getReq()),
			with(resp(200), func(r *ResponseMeta) { r.ExpiresPresent, r.Expires = true, t0.Add(time.Minute) }), true, ""},
		{"§3.5 Authorization with public but heuristic only", Policy{}, auth(getReq()),
			with(resp(200, "public"), func(r *ResponseMeta) { r.LastModified = t0.Add(-10 * time.Hour) }), false, ReasonAuthorization},
		{"§5.2.2.4 no-cache is storable", Policy{}, getReq(), resp(200, "no-cache"), true, ""},
		{"§3.5 Authorization without permission", Policy{}, auth(getReq()), resp(200, "max-age=60"), false, ReasonAuthorization},
		{"§3.5 Authorization with public", Policy{}, auth(getReq()), resp(200, "public, max-age=60"), true, ""},
		{"§3.5 Authorization with s-maxage", Policy{}, auth(getReq()), resp(200, "s-maxage=60"), true, ""},
		{"§3.5 Authorization with must-revalidate", Policy{}, auth(getReq()), resp(200, "must-revalidate, max-age=60"), true, ""},
		{"§3.5 Authorization with proxy-revalidate is not enough", Policy{}, auth(getReq()),
			resp(200, "proxy-revalidate, max-age=60"), false, ReasonAuthorization},
		{"§3 Set-Cookie not stored by default", Policy{}, getReq(),
			with(resp(200, "max-age=60"), func(r *ResponseMeta) { r.SetCookie = true }), false, ReasonSetCookie},
		{"§3 Set-Cookie stored when configured", Policy{StoreSetCookie: true}, getReq(),
			with(resp(200, "max-age=60"), func(r *ResponseMeta) { r.SetCookie = true }), true, ""},
		{"§4.1 Vary * never matches", Policy{}, getReq(),
			with(resp(200, "max-age=60"), func(r *ResponseMeta) { r.VaryStar = true }), false, ReasonVaryStar},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, reason := tt.policy.Storable(tt.req, tt.resp)
			if ok != tt.ok || reason != tt.reason {
				t.Errorf("Storable: got (%v, %q) want (%v, %q)", ok, reason, tt.ok, tt.reason)
			}
		})
	}
}

func TestFreshnessLifetime(t *testing.T) {
	with := func(r *ResponseMeta, f func(*ResponseMeta)) *ResponseMeta { f(r); return r }
	tests := []struct {
		name      string
		policy    Policy
		resp      *ResponseMeta
		want      time.Duration
		heuristic bool
	}{
		{"§4.2.1 s-maxage beats max-age", Policy{}, resp(200, "max-age=60, s-maxage=10"), 10 * time.Second, false},
		{"§4.2.1 max-age beats Expires", Policy{},
			with(resp(200, "max-age=60"), func(r *ResponseMeta) { r.ExpiresPresent, r.Expires = true, t0.Add(time.Hour) }),
			time.Minute, false},
		{"§4.2.1 Expires minus Date", Policy{},
			with(resp(200), func(r *ResponseMeta) { r.ExpiresPresent, r.Expires = true, t0.Add(time.Hour) }),
			time.Hour, false},
		{"§4.2.1 Expires in the past is zero", Policy{},
			with(resp(200), func(r *ResponseMeta) { r.ExpiresPresent, r.Expires = true, t0.Add(-time.Hour) }),
			0, false},
		{"§5.3 invalid Expires means already expired", Policy{},
			with(resp(200), func(r *ResponseMeta) {
				r.ExpiresPresent, r.ExpiresInvalid, r.LastModified = true, true, t0.Add(-100*time.Hour)
			}),
			0, false},
		{"§4.2.1 Expires without Date uses the clock", Policy{Now: func() time.Time { return t0 }},
			with(resp(200), func(r *ResponseMeta) { r.Date, r.ExpiresPresent, r.Expires = time.Time{}, true, t0.Add(time.Minute) }),
			time.Minute, false},
		{"RFC 9213 §2.2 targeted field ignores Expires", Policy{},
			with(resp(200), func(r *ResponseMeta) { r.Targeted, r.ExpiresPresent, r.Expires = true, true, t0.Add(time.Hour) }),
			0, false},
		{"§4.2.1 invalid max-age is stale even with Expires", Policy{},
			with(resp(200, "max-age=abc"), func(r *ResponseMeta) { r.ExpiresPresent, r.Expires = true, t0.Add(time.Hour) }),
			0, false},
		{"§4.2.2 heuristic 10% of Date minus Last-Modified", Policy{},
			with(resp(200), func(r *ResponseMeta) { r.LastModified = t0.Add(-10 * time.Hour) }),
			time.Hour, true},
		{"§4.2.2 heuristic fraction configurable", Policy{HeuristicFraction: 0.5},
			with(resp(200), func(r *ResponseMeta) { r.LastModified = t0.Add(-10 * time.Hour) }),
			5 * time.Hour, true},
		{"§4.2.2 heuristic capped at 24h by default", Policy{},
			with(resp(200), func(r *ResponseMeta) { r.LastModified = t0.Add(-1000 * time.Hour) }),
			24 * time.Hour, true},
		{"§4.2.2 heuristic cap configurable", Policy{MaxHeuristic: time.Minute},
			with(resp(200), func(r *ResponseMeta) { r.LastModified = t0.Add(-10 * time.Hour) }),
			time.Minute, true},
		{"§4.2.2 no heuristic without Last-Modified", Policy{}, resp(200), 0, false},
		{"§4.2.2 no heuristic when Last-Modified is after Date", Policy{},
			with(resp(200), func(r *ResponseMeta) { r.LastModified = t0.Add(time.Hour) }), 0, false},
		{"§4.2.2 no heuristic for non-cacheable status", Policy{},
			with(resp(302), func(r *ResponseMeta) { r.LastModified = t0.Add(-10 * time.Hour) }), 0, false},
		{"§4.2.2 public does not give a 302 heuristic freshness", Policy{},
			with(resp(302, "public"), func(r *ResponseMeta) { r.LastModified = t0.Add(-10 * time.Hour) }), 0, false},
		{"§4.2.2 no heuristic for 403 even when public", Policy{},
			with(resp(403, "public"), func(r *ResponseMeta) { r.LastModified = t0.Add(-10 * time.Hour) }), 0, false},
		{"§4.2.2 heuristic for 410", Policy{},
			with(resp(410), func(r *ResponseMeta) { r.LastModified = t0.Add(-10 * time.Hour) }), time.Hour, true},
		{"§1.2.2 clamped max-age", Policy{}, resp(200, "max-age=99999999999"), 2147483648 * time.Second, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, h := tt.policy.FreshnessLifetime(tt.resp)
			if got != tt.want || h != tt.heuristic {
				t.Errorf("FreshnessLifetime: got (%v, %v) want (%v, %v)", got, h, tt.want, tt.heuristic)
			}
		})
	}
}

func TestInitialAge(t *testing.T) {
	tests := []struct {
		name              string
		age               int64
		date, reqT, respT time.Time
		want              time.Duration
	}{
		{"§4.2.3 no Age, no delay, Date equals receipt", -1, t0, t0, t0, 0},
		{"§4.2.3 apparent age from Date", -1, t0, t0.Add(10 * time.Second), t0.Add(10 * time.Second), 10 * time.Second},
		{"§4.2.3 Age plus response delay", 30, t0, t0, t0.Add(2 * time.Second), 32 * time.Second},
		{"§4.2.3 apparent age wins when larger", 1, t0, t0.Add(100 * time.Second), t0.Add(101 * time.Second), 101 * time.Second},
		{"§4.2.3 Date in the future clamps apparent age to 0", 5, t0.Add(time.Hour), t0, t0.Add(time.Second), 6 * time.Second},
		{"§4.2.3 missing Date", 7, time.Time{}, t0, t0, 7 * time.Second},
		{"§1.2.2 huge Age is clamped, no overflow", 2147483648, t0, t0, t0, 2147483648 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := InitialAge(tt.age, tt.date, tt.reqT, tt.respT); got != tt.want {
				t.Errorf("InitialAge: got %v want %v", got, tt.want)
			}
		})
	}
}

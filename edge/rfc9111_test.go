package edge

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// rfcRow is one caching behaviour proven through a real node: the origin
// answers with fields (computed from the test clock), a first request
// fills, the clock advances, and a second request is a hit or not.
type rfcRow struct {
	name    string
	status  int                          // origin status; 0 means 200
	fields  func(now time.Time) []string // origin response fields; "Date:" alone removes Date
	req1    []string                     // first request's fields
	advance time.Duration
	req2    []string // second request's fields
	hit     bool     // second request answered from the cache (and the origin asked once)
	check   func(t *testing.T, r1, r2 *http.Response)
}

func httpDate(t time.Time) string { return t.UTC().Format(http.TimeFormat) }

func fixed(f ...string) func(time.Time) []string { return func(time.Time) []string { return f } }

func wantHeader(name, want string) func(t *testing.T, r1, r2 *http.Response) {
	return func(t *testing.T, _, r2 *http.Response) {
		t.Helper()
		if got := strings.Join(r2.Header.Values(name), "|"); got != want {
			t.Errorf("second response %s = %q, want %q", name, got, want)
		}
	}
}

func wantAges(first, second string) func(t *testing.T, r1, r2 *http.Response) {
	return func(t *testing.T, r1, r2 *http.Response) {
		t.Helper()
		if got := r1.Header.Get("Age"); got != first {
			t.Errorf("first response Age = %q, want %q", got, first)
		}
		if got := r2.Header.Get("Age"); got != second {
			t.Errorf("second response Age = %q, want %q", got, second)
		}
	}
}

// TestRFC9111 is the table of RFC 9111 / 9110 details a shared cache must
// get right (issue 9), each run through a real node in front of a real
// origin with an injected clock.
func TestRFC9111(t *testing.T) {
	clk := newTestClock()
	start := clk.now()
	rows := []rfcRow{
		// §4.2.3 / §5.1: Age from upstream.
		{name: "§4.2.3 upstream Age beyond max-age is stale at once",
			fields: fixed("Cache-Control: max-age=3600", "Age: 7200", `ETag: "a"`), hit: false,
			check: func(t *testing.T, r1, _ *http.Response) {
				if got := r1.Header.Get("Age"); got != "7200" {
					t.Errorf("first response Age = %q, want 7200 (corrected_initial_age, not 0)", got)
				}
			}},
		{name: "§4.2.3 the edge's Age starts from the upstream Age",
			fields: fixed("Cache-Control: max-age=3600", "Age: 600"), advance: 10 * time.Second, hit: true,
			check: wantAges("600", "610")},
		{name: "§4.2.3 Expires with a Date in the past: apparent age makes it stale",
			fields: func(now time.Time) []string {
				return []string{"Date: " + httpDate(now.Add(-2*time.Hour)), "Expires: " + httpDate(now.Add(-time.Hour)), `ETag: "a"`}
			}, hit: false,
			check: func(t *testing.T, r1, _ *http.Response) {
				if got := r1.Header.Get("Age"); got != "7200" {
					t.Errorf("first response Age = %q, want 7200 (apparent_age)", got)
				}
			}},
		{name: "§4.2.3 Expires with a Date in the past: still fresh, aged",
			fields: func(now time.Time) []string {
				return []string{"Date: " + httpDate(now.Add(-10*time.Minute)), "Expires: " + httpDate(now.Add(50*time.Minute))}
			}, advance: 5 * time.Second, hit: true, check: wantAges("600", "605")},
		{name: "§5.1 invalid Age abc ignored", fields: fixed("Cache-Control: max-age=60", "Age: abc"), hit: true, check: wantAges("0", "0")},
		{name: "§5.1 invalid Age -10 ignored", fields: fixed("Cache-Control: max-age=60", "Age: -10"), hit: true, check: wantAges("0", "0")},
		{name: "§5.1 invalid Age 1.5 ignored", fields: fixed("Cache-Control: max-age=60", "Age: 1.5"), hit: true, check: wantAges("0", "0")},
		{name: "§5.1 invalid Age 10abc ignored", fields: fixed("Cache-Control: max-age=60", "Age: 10abc"), hit: true, check: wantAges("0", "0")},
		{name: "§5.1 two Age fields: the first member is used",
			fields: fixed("Cache-Control: max-age=3600", "Age: 0", "Age: 7200"), hit: true, check: wantAges("0", "0")},
		{name: "§5.1 Age list 7200, 0: the first member is used",
			fields: fixed("Cache-Control: max-age=3600", "Age: 7200, 0", `ETag: "a"`), hit: false},

		// RFC 9110 §6.6.1: Date.
		{name: "RFC 9110 §6.6.1 a hit replays the origin's Date",
			fields: func(now time.Time) []string {
				return []string{"Date: " + httpDate(now.Add(-30*time.Second)), "Cache-Control: max-age=3600"}
			}, advance: 5 * time.Second, hit: true,
			check: func(t *testing.T, r1, r2 *http.Response) {
				want := httpDate(start.Add(-30 * time.Second))
				for i, r := range []*http.Response{r1, r2} {
					if got := r.Header.Values("Date"); len(got) != 1 || !sameDate(got[0], want, r) {
						t.Errorf("response %d Date = %q, want the origin's %q", i+1, got, want)
					}
				}
				wantAges("30", "35")(t, r1, r2)
			}},
		{name: "RFC 9110 §6.6.1 no Date from the origin: the receipt time is stored",
			fields: fixed("Date:", "Cache-Control: max-age=3600"), advance: 10 * time.Second, hit: true,
			check: func(t *testing.T, r1, r2 *http.Response) {
				if d1, d2 := r1.Header.Get("Date"), r2.Header.Get("Date"); d1 == "" || d1 != d2 {
					t.Errorf("Date first %q, second %q: want the same receipt time on both", d1, d2)
				}
				wantAges("0", "10")(t, r1, r2)
			}},
		{name: "RFC 9110 §6.6.1 a pass keeps the origin's Date",
			fields: func(now time.Time) []string {
				return []string{"Date: " + httpDate(now.Add(-time.Hour)), "Cache-Control: no-store"}
			}, hit: false,
			check: func(t *testing.T, r1, _ *http.Response) {
				want := httpDate(start.Add(-time.Hour))
				if got := r1.Header.Values("Date"); len(got) != 1 || !sameDate(got[0], want, r1) {
					t.Errorf("pass Date = %q, want the origin's %q", got, want)
				}
			}},

		// §5.3 / RFC 9110 §5.6.7: Expires parsed strictly.
		{name: "§5.3 Expires IMF-fixdate", fields: func(now time.Time) []string {
			return []string{"Expires: " + httpDate(now.Add(time.Hour))}
		}, hit: true},
		{name: "§5.3 Expires obsolete rfc850-date", fields: func(now time.Time) []string {
			return []string{"Expires: " + now.Add(time.Hour).UTC().Format("Monday, 02-Jan-06 15:04:05 GMT")}
		}, hit: true},
		{name: "§5.3 Expires obsolete asctime-date", fields: func(now time.Time) []string {
			return []string{"Expires: " + now.Add(time.Hour).UTC().Format(time.ANSIC)}
		}, hit: true},
		{name: "§5.3 Expires with lower-case gmt tolerated", fields: func(now time.Time) []string {
			return []string{"Expires: " + strings.Replace(httpDate(now.Add(time.Hour)), "GMT", "gmt", 1)}
		}, hit: true},
		{name: "§5.3 Expires with extra spaces is already expired", fields: func(now time.Time) []string {
			return []string{"Expires: " + strings.Replace(httpDate(now.Add(time.Hour)), " ", "  ", 1)}
		}, hit: false},
		{name: "§5.3 Expires with a one-digit hour is already expired", fields: func(now time.Time) []string {
			d := now.Add(time.Hour).UTC()
			return []string{"Expires: " + d.Format("Mon, 02 Jan 2006 ") + strconv.Itoa(d.Hour()%10) + d.Format(":04:05 GMT")}
		}, hit: false},
		{name: "§5.3 two Expires fields are already expired", fields: func(now time.Time) []string {
			return []string{"Expires: " + httpDate(now.Add(time.Hour)), "Expires: " + httpDate(now.Add(time.Hour))}
		}, hit: false},

		// RFC 9213 §2.1: targeted fields are Structured Fields dictionaries.
		{name: "RFC 9213 §2.1 CDN-Cache-Control wins over Cache-Control",
			fields: fixed("Cache-Control: no-store", "CDN-Cache-Control: max-age=60"), hit: true},
		{name: "RFC 9213 §2.1 max-age as a String: the field is ignored, Cache-Control applies",
			fields: fixed("Cache-Control: no-store", `CDN-Cache-Control: max-age="60"`), hit: false},
		{name: "RFC 9213 §2.1 one member of the wrong type drops the whole field",
			fields: fixed("Cache-Control: max-age=60", "CDN-Cache-Control: no-store, max-age=abc"), hit: true},
		{name: "RFC 9213 §2.1 unparsable field falls back to Cache-Control",
			fields: fixed("Cache-Control: max-age=60", "CDN-Cache-Control: no-store,"), hit: true},

		// RFC 8246: immutable.
		{name: "RFC 8246 fresh immutable not revalidated on max-age=0 reload",
			fields: fixed("Cache-Control: max-age=3600, immutable", `ETag: "a"`), req2: []string{"Cache-Control: max-age=0"}, hit: true},
		{name: "RFC 8246 fresh immutable not revalidated on no-cache reload",
			fields: fixed("Cache-Control: max-age=3600, immutable", `ETag: "a"`),
			req2:   []string{"Cache-Control: no-cache", "Pragma: no-cache"}, hit: true},
		{name: "RFC 8246 stale immutable is revalidated",
			fields: fixed("Cache-Control: max-age=60, immutable", `ETag: "a"`), advance: 2 * time.Minute,
			req2: []string{"Cache-Control: max-age=0"}, hit: false},
		{name: "§5.2.1.1 without immutable a max-age=0 reload revalidates",
			fields: fixed("Cache-Control: max-age=3600", `ETag: "a"`), req2: []string{"Cache-Control: max-age=0"}, hit: false},

		// §5.2.2.7: private.
		{name: "§5.2.2.7 private with s-maxage never stored", fields: fixed("Cache-Control: private, s-maxage=60"), hit: false},
		{name: "§5.2.2.7 unqualified private never stored", fields: fixed("Cache-Control: max-age=60, private"), hit: false},
		{name: `§5.2.2.7 private="Set-Cookie" stored without the cookie`,
			fields: fixed(`Cache-Control: private="Set-Cookie", max-age=60`, "Set-Cookie: id=alice"), hit: true,
			check: func(t *testing.T, r1, r2 *http.Response) {
				if got := r1.Header.Get("Set-Cookie"); got != "id=alice" {
					t.Errorf("first response Set-Cookie = %q, want the requester's id=alice", got)
				}
				wantHeader("Set-Cookie", "")(t, r1, r2)
			}},
		{name: `§5.2.2.7 private="X-User" strips only that field`,
			fields: fixed(`Cache-Control: max-age=60, private="X-User"`, "X-User: alice", "X-Other: kept"), hit: true,
			check: func(t *testing.T, r1, r2 *http.Response) {
				wantHeader("X-User", "")(t, r1, r2)
				wantHeader("X-Other", "kept")(t, r1, r2)
			}},

		// §4.2.2 / RFC 9110 §15.1: heuristic freshness.
		{name: "§4.2.2 200 with Last-Modified heuristically fresh", fields: func(now time.Time) []string {
			return []string{"Last-Modified: " + httpDate(now.Add(-10*time.Hour))}
		}, hit: true},
		{name: "§4.2.2 404 heuristically fresh", status: 404, fields: func(now time.Time) []string {
			return []string{"Last-Modified: " + httpDate(now.Add(-10*time.Hour))}
		}, hit: true},
		{name: "§4.2.2 501 heuristically fresh", status: 501, fields: func(now time.Time) []string {
			return []string{"Last-Modified: " + httpDate(now.Add(-10*time.Hour))}
		}, hit: true},
		{name: "§4.2.2 403 never heuristically stored, even public", status: 403, fields: func(now time.Time) []string {
			return []string{"Cache-Control: public", "Last-Modified: " + httpDate(now.Add(-10*time.Hour))}
		}, hit: false},
		{name: "§4.2.2 302 never heuristically stored, even public", status: 302, fields: func(now time.Time) []string {
			return []string{"Cache-Control: public", "Location: /x", "Last-Modified: " + httpDate(now.Add(-10*time.Hour))}
		}, hit: false},
		{name: "§4.1 Vary: * never matches", fields: fixed("Cache-Control: max-age=60", "Vary: *"), hit: false},

		// Deliberate deviation: Set-Cookie never shared by default.
		{name: "§3 Set-Cookie responses not shared (cache.store_set_cookie off)",
			fields: fixed("Cache-Control: max-age=60", "Set-Cookie: id=alice"), hit: false,
			check: wantHeader("Set-Cookie", "id=alice")},

		// Issue 10 (web cache deception): credentials need explicit freshness.
		{name: "§3.5 / issue 10 Cookie request with heuristic freshness only: not stored, anonymous refetch",
			fields: func(now time.Time) []string {
				return []string{"Last-Modified: " + httpDate(now.Add(-10*time.Hour))}
			}, req1: []string{"Cookie: session=alice"}, hit: false,
			check: func(t *testing.T, r1, r2 *http.Response) {
				if cs := csOf(r2); !strings.Contains(cs, "fwd=uri-miss") || !strings.Contains(cs, "stored") {
					t.Errorf("anonymous Cache-Status = %q, want fwd=uri-miss; stored (no hit-for-pass from a Cookie)", cs)
				}
			}},
		{name: "issue 10 Cookie request with max-age stored",
			fields: fixed("Cache-Control: max-age=60"), req1: []string{"Cookie: session=alice"}, hit: true},
		{name: "issue 10 Cookie request with CDN-Cache-Control max-age stored",
			fields: fixed("CDN-Cache-Control: max-age=60"), req1: []string{"Cookie: session=alice"}, hit: true},
		{name: "issue 10 Cookie request with Expires stored", fields: func(now time.Time) []string {
			return []string{"Expires: " + httpDate(now.Add(time.Hour))}
		}, req1: []string{"Cookie: session=alice"}, hit: true},
		{name: "§3.5 Authorization with public but heuristic freshness only: not stored",
			fields: func(now time.Time) []string {
				return []string{"Cache-Control: public", "Last-Modified: " + httpDate(now.Add(-10*time.Hour))}
			}, req1: []string{"Authorization: Bearer x"}, hit: false},
		{name: "§3.5 Authorization with public and max-age stored",
			fields: fixed("Cache-Control: public, max-age=60"), req1: []string{"Authorization: Bearer x"}, hit: true},
	}

	o := newTestOrigin(t, clk, func(w http.ResponseWriter, r *http.Request) {
		var i int
		if _, err := fmt.Sscanf(r.URL.Path, "/r%d/", &i); err != nil || i >= len(rows) {
			http.NotFound(w, r)
			return
		}
		row := rows[i]
		for _, f := range row.fields(clk.now()) {
			k, v, _ := strings.Cut(f, ":")
			v = strings.TrimSpace(v)
			switch {
			case k == "Date" && v == "":
				w.Header()["Date"] = nil // net/http then sends none
			case k == "Date":
				w.Header().Set(k, v)
			default:
				w.Header().Add(k, v)
			}
		}
		status := row.status
		if status == 0 {
			status = http.StatusOK
		}
		w.WriteHeader(status)
		fmt.Fprintf(w, "body %d", i)
	})
	n := newTestNode(t, o.srv.URL, clk, nil)
	for i, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			path := fmt.Sprintf("/r%d/profile.css", i)
			url := "http://" + n.Addr() + path
			start = clk.now()
			r1, _ := warm(t, n, url, row.req1...)
			clk.advance(row.advance)
			r2, _ := get(t, url, row.req2...)
			if got := isHit(r2); got != row.hit {
				t.Errorf("second request hit = %v (Cache-Status %q), want %v", got, csOf(r2), row.hit)
			}
			wantOrigin := 2
			if row.hit {
				wantOrigin = 1
			}
			if got := o.count(path); got != wantOrigin {
				t.Errorf("origin saw %d requests, want %d", got, wantOrigin)
			}
			if row.check != nil {
				row.check(t, r1, r2)
			}
		})
	}
}

// sameDate compares two HTTP-dates by value.
func sameDate(got, want string, _ *http.Response) bool {
	a, err1 := http.ParseTime(got)
	b, err2 := http.ParseTime(want)
	return err1 == nil && err2 == nil && a.Equal(b)
}

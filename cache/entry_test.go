package cache

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"
)

// entry returns an entry received at t0 with the given lifetime and no
// stale extensions.
func entry(lifetime time.Duration, mod func(*Entry)) *Entry {
	e := &Entry{
		Key: []byte("example.com/a"), Status: 200, Body: []byte("hello"),
		RequestTime: t0, ResponseTime: t0, Lifetime: lifetime, SWR: -1, SIE: -1, StoredAt: t0,
	}
	if mod != nil {
		mod(e)
	}
	return e
}

func TestEntryAge(t *testing.T) {
	tests := []struct {
		name      string
		e         *Entry
		now       time.Time
		wantAge   time.Duration
		wantTTL   time.Duration
		wantFresh bool
	}{
		{"§4.2.3 resident time adds to initial age", entry(time.Minute, func(e *Entry) { e.InitialAge = 10 * time.Second }),
			t0.Add(20 * time.Second), 30 * time.Second, 30 * time.Second, true},
		{"§4.2.3 clock before response time never negative", entry(time.Minute, nil), t0.Add(-time.Hour), 0, time.Minute, true},
		{"§4.2 fresh until age reaches lifetime", entry(time.Minute, nil), t0.Add(time.Minute), time.Minute, 0, false},
		{"§4.2 stale has negative TTL", entry(time.Minute, nil), t0.Add(90 * time.Second), 90 * time.Second, -30 * time.Second, false},
		{"§5.2.2.4 no-cache entry never fresh", entry(time.Minute, func(e *Entry) { e.NoCache = true }), t0, 0, time.Minute, false},
		{"§4.4 invalidated entry never fresh", entry(time.Minute, func(e *Entry) { e.Invalidate() }), t0, 0, time.Minute, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.e.Age(tt.now); got != tt.wantAge {
				t.Errorf("Age: got %v want %v", got, tt.wantAge)
			}
			if got := tt.e.TTL(tt.now); got != tt.wantTTL {
				t.Errorf("TTL: got %v want %v", got, tt.wantTTL)
			}
			if got := tt.e.Fresh(tt.now); got != tt.wantFresh {
				t.Errorf("Fresh: got %v want %v", got, tt.wantFresh)
			}
		})
	}
}

func TestInvalidateConcurrent(t *testing.T) {
	e := entry(time.Hour, nil)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			e.Invalidate()
			_ = e.Fresh(t0)
		})
	}
	wg.Wait()
	if !e.Invalidated() {
		t.Errorf("Invalidated: got false want true")
	}
}

func TestUse(t *testing.T) {
	pragma := func(r *RequestMeta) *RequestMeta { r.PragmaNoCache = true; return r }
	swr := func(e *Entry) { e.SWR = 30 * time.Second }
	immutable := func(e *Entry) { e.Immutable = true }
	forced := func(r *RequestMeta) *RequestMeta { r.Revalidate = true; return r }
	tests := []struct {
		name string
		e    *Entry
		req  *RequestMeta
		now  time.Time
		want Decision
	}{
		{"§4.2 fresh entry is served", entry(time.Minute, nil), getReq(), t0.Add(10 * time.Second), ServeFresh},
		{"§4.2 stale entry needs validation", entry(time.Minute, nil), getReq(), t0.Add(2 * time.Minute), Revalidate},
		{"§5.2.1.4 request no-cache", entry(time.Minute, nil), getReq("no-cache"), t0, Revalidate},
		{"§5.4 Pragma no-cache", entry(time.Minute, nil), pragma(getReq()), t0, Revalidate},
		{"§5.2.1.1 request max-age=0", entry(time.Minute, nil), getReq("max-age=0"), t0, Revalidate},
		{"§5.2.1.1 request max-age older than entry ok", entry(time.Minute, nil), getReq("max-age=30"), t0.Add(20 * time.Second), ServeFresh},
		{"§5.2.1.1 request max-age younger than entry", entry(time.Minute, nil), getReq("max-age=10"), t0.Add(20 * time.Second), Revalidate},
		{"§5.2.1.3 min-fresh satisfied", entry(time.Minute, nil), getReq("min-fresh=30"), t0.Add(20 * time.Second), ServeFresh},
		{"§5.2.1.3 min-fresh not satisfied", entry(time.Minute, nil), getReq("min-fresh=50"), t0.Add(20 * time.Second), Revalidate},
		{"§5.2.1.2 max-stale within bound", entry(time.Minute, nil), getReq("max-stale=60"), t0.Add(90 * time.Second), ServeStale},
		{"§5.2.1.2 max-stale beyond bound", entry(time.Minute, nil), getReq("max-stale=10"), t0.Add(90 * time.Second), Revalidate},
		{"§5.2.1.2 max-stale without value", entry(time.Minute, nil), getReq("max-stale"), t0.Add(time.Hour), ServeStale},
		{"§4.2.4 max-stale ignored for must-revalidate", entry(time.Minute, func(e *Entry) { e.MustRevalidate = true }),
			getReq("max-stale"), t0.Add(90 * time.Second), Revalidate},
		{"§5.2.2.4 response no-cache always revalidates", entry(time.Minute, func(e *Entry) { e.NoCache = true }),
			getReq(), t0, Revalidate},
		{"RFC 5861 §3 stale within stale-while-revalidate", entry(time.Minute, swr), getReq(), t0.Add(80 * time.Second), ServeStaleRevalidate},
		{"RFC 5861 §3 stale beyond stale-while-revalidate", entry(time.Minute, swr), getReq(), t0.Add(91 * time.Second), Revalidate},
		{"RFC 5861 §3 fresh entry ignores swr", entry(time.Minute, swr), getReq(), t0.Add(time.Second), ServeFresh},
		{"§4.2.4 must-revalidate overrides swr", entry(time.Minute, func(e *Entry) { swr(e); e.MustRevalidate = true }),
			getReq(), t0.Add(61 * time.Second), Revalidate},
		{"§4.4 soft-purged entry revalidates", entry(time.Hour, func(e *Entry) { e.Invalidate() }), getReq(), t0, Revalidate},
		{"§4.4 soft-purged entry with swr serves stale while revalidating",
			entry(time.Hour, func(e *Entry) { swr(e); e.Invalidate() }), getReq(), t0, ServeStaleRevalidate},
		{"§5.2.1.7 only-if-cached is the caller's: fresh still fresh", entry(time.Minute, nil), getReq("only-if-cached"), t0, ServeFresh},
		{"RFC 8246 fresh immutable ignores reload max-age=0", entry(time.Minute, immutable), getReq("max-age=0"), t0.Add(10 * time.Second), ServeFresh},
		{"RFC 8246 fresh immutable ignores request no-cache", entry(time.Minute, immutable), getReq("no-cache"), t0.Add(10 * time.Second), ServeFresh},
		{"RFC 8246 fresh immutable ignores Pragma no-cache", entry(time.Minute, immutable), pragma(getReq()), t0.Add(10 * time.Second), ServeFresh},
		{"RFC 8246 fresh immutable ignores a short request max-age", entry(time.Minute, immutable), getReq("max-age=5"), t0.Add(10 * time.Second), ServeFresh},
		{"RFC 8246 stale immutable revalidates", entry(time.Minute, immutable), getReq("no-cache"), t0.Add(2 * time.Minute), Revalidate},
		{"RFC 8246 stale immutable revalidates without request directives", entry(time.Minute, immutable), getReq(), t0.Add(2 * time.Minute), Revalidate},
		{"§4.4 soft-purged immutable revalidates", entry(time.Hour, func(e *Entry) { immutable(e); e.Invalidate() }), getReq("max-age=0"), t0, Revalidate},
		{"forced revalidation beats immutable", entry(time.Hour, immutable), forced(getReq()), t0, Revalidate},
		{"§5.2.2.4 response no-cache beats immutable", entry(time.Hour, func(e *Entry) { immutable(e); e.NoCache = true }), getReq(), t0, Revalidate},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Use(tt.e, tt.req, tt.now); got != tt.want {
				t.Errorf("Use: got %v want %v", got, tt.want)
			}
		})
	}
}

func TestUsableOnError(t *testing.T) {
	sie := func(e *Entry) { e.SIE = time.Minute }
	tests := []struct {
		name     string
		e        *Entry
		req      *RequestMeta
		now      time.Time
		maxStale time.Duration
		want     bool
	}{
		{"RFC 5861 §4 response stale-if-error within window", entry(time.Minute, sie), getReq(), t0.Add(2 * time.Minute), 0, true},
		{"RFC 5861 §4 response stale-if-error beyond window", entry(time.Minute, sie), getReq(), t0.Add(3 * time.Minute), 0, false},
		{"RFC 5861 §4 request stale-if-error", entry(time.Minute, nil), getReq("stale-if-error=120"), t0.Add(2 * time.Minute), 0, true},
		{"§5.2.1.2 request max-stale", entry(time.Minute, nil), getReq("max-stale=120"), t0.Add(2 * time.Minute), 0, true},
		{"§5.2.1.2 request max-stale without value", entry(time.Minute, nil), getReq("max-stale"), t0.Add(48 * time.Hour), 0, true},
		{"§4.2.4 configured allowance for a disconnected cache", entry(time.Minute, nil), getReq(), t0.Add(time.Hour), 2 * time.Hour, true},
		{"§4.2.4 configured allowance exceeded", entry(time.Minute, nil), getReq(), t0.Add(3 * time.Hour), 2 * time.Hour, false},
		{"§4.2.4 no allowance at all", entry(time.Minute, nil), getReq(), t0.Add(2 * time.Minute), 0, false},
		{"§4.2.4 never for must-revalidate", entry(time.Minute, func(e *Entry) { sie(e); e.MustRevalidate = true }),
			getReq(), t0.Add(2 * time.Minute), time.Hour, false},
		{"§4.2.4 never for no-cache", entry(time.Minute, func(e *Entry) { sie(e); e.NoCache = true }),
			getReq(), t0.Add(2 * time.Minute), time.Hour, false},
		{"§4.4 soft-purged entry usable on error", entry(time.Hour, func(e *Entry) { e.Invalidate() }),
			getReq(), t0, time.Minute, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := UsableOnError(tt.e, tt.req, tt.now, tt.maxStale); got != tt.want {
				t.Errorf("UsableOnError: got %v want %v", got, tt.want)
			}
		})
	}
}

func fieldsString(h []Field) string {
	var b bytes.Buffer
	for _, f := range h {
		fmt.Fprintf(&b, "%s: %s\n", f.Name, f.Value)
	}
	return b.String()
}

func TestWithUpdatedHeaders(t *testing.T) {
	old := entry(time.Minute, func(e *Entry) {
		e.Header = []Field{
			{[]byte("Content-Type"), []byte("text/plain")},
			{[]byte("Content-Length"), []byte("5")},
			{[]byte("ETag"), []byte(`"v1"`)},
			{[]byte("X-Multi"), []byte("a")},
			{[]byte("X-Multi"), []byte("b")},
			{[]byte("Cache-Control"), []byte("max-age=60")},
		}
		e.ETag = []byte(`"v1"`)
		e.SurrogateKeys = [][]byte{[]byte("tag")}
		e.Invalidate()
	})
	h304 := []Field{
		{[]byte("etag"), []byte(`"v2"`)},
		{[]byte("x-multi"), []byte("c")},
		{[]byte("Cache-Control"), []byte("max-age=600")},
		{[]byte("Content-Length"), []byte("0")},
	}
	reqT, respT := t0.Add(time.Hour), t0.Add(time.Hour+time.Second)
	f := Freshness{RequestTime: reqT, ResponseTime: respT, Lifetime: 10 * time.Minute, SWR: -1, SIE: -1}
	n := old.WithUpdatedHeaders(h304, f)
	// The 304's buffers may be reused by the caller: scribble over them.
	for _, fl := range h304 {
		for i := range fl.Value {
			fl.Value[i] = '!'
		}
	}

	t.Run("§4.3.4 fields replaced, Content-Length kept (§3.2)", func(t *testing.T) {
		want := "Content-Type: text/plain\nContent-Length: 5\netag: \"v2\"\nx-multi: c\nCache-Control: max-age=600\n"
		if got := fieldsString(n.Header); got != want {
			t.Errorf("Header:\n got %q\nwant %q", got, want)
		}
	})
	t.Run("§4.3.4 validators follow the 304", func(t *testing.T) {
		if string(n.ETag) != `"v2"` {
			t.Errorf("ETag: got %q want %q", n.ETag, `"v2"`)
		}
	})
	t.Run("§4.3.4 new freshness and StoredAt", func(t *testing.T) {
		if !n.Fresh(respT.Add(time.Minute)) || n.Lifetime != 10*time.Minute || !n.StoredAt.Equal(reqT) {
			t.Errorf("got fresh=%v lifetime=%v storedAt=%v want true, 10m, %v", n.Fresh(respT.Add(time.Minute)), n.Lifetime, n.StoredAt, reqT)
		}
	})
	t.Run("§4.3.4 original entry untouched", func(t *testing.T) {
		if len(old.Header) != 6 || string(old.ETag) != `"v1"` || !old.Invalidated() || old.Lifetime != time.Minute {
			t.Errorf("old entry changed: got %q etag %q invalidated %v lifetime %v", fieldsString(old.Header), old.ETag, old.Invalidated(), old.Lifetime)
		}
	})
	t.Run("§4.3.4 body and keys shared", func(t *testing.T) {
		if &n.Body[0] != &old.Body[0] || string(n.Key) != string(old.Key) || len(n.SurrogateKeys) != 1 {
			t.Errorf("body/key/surrogate keys not carried over: got key %q", n.Key)
		}
	})
}

func TestPolicyFreshness(t *testing.T) {
	var p Policy
	r := resp(200, "s-maxage=60, stale-while-revalidate=5, stale-if-error=7, no-cache")
	r.AgeHeader = 3
	f := p.Freshness(r, t0, t0.Add(time.Second))
	want := Freshness{
		RequestTime: t0, ResponseTime: t0.Add(time.Second), InitialAge: 4 * time.Second, Lifetime: time.Minute,
		SWR: 5 * time.Second, SIE: 7 * time.Second, MustRevalidate: true, NoCache: true,
	}
	if f != want {
		t.Errorf("§4.2.4 s-maxage implies must-revalidate, Freshness:\n got %+v\nwant %+v", f, want)
	}
	f = p.Freshness(resp(200, "max-age=1"), t0, t0)
	if f.SWR != -1 || f.SIE != -1 || f.MustRevalidate {
		t.Errorf("RFC 5861 absent windows: got SWR=%v SIE=%v mustRevalidate=%v want -1 -1 false", f.SWR, f.SIE, f.MustRevalidate)
	}
}

func TestEntryCost(t *testing.T) {
	e := entry(time.Minute, func(e *Entry) {
		e.Header = []Field{{[]byte("A"), []byte("bc")}}
		e.Body = make([]byte, 1000)
	})
	want := int64(entryOverhead + 1000 + len(e.Key) + 3 + 48)
	if got := e.Cost(); got != want {
		t.Errorf("Cost: got %d want %d", got, want)
	}
}

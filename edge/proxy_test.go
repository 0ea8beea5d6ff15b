package edge

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeshield/edgeshield/internal/testnet"
)

// static answers with a fixed body and headers, honouring If-None-Match.
func static(body string, hdr ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		etag := ""
		for _, h := range hdr {
			k, v, _ := strings.Cut(h, ":")
			w.Header().Add(k, strings.TrimSpace(v))
			if strings.EqualFold(k, "ETag") {
				etag = strings.TrimSpace(v)
			}
		}
		if etag != "" && r.Header.Get("If-None-Match") == etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		if r.Method == http.MethodHead {
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			return
		}
		io.WriteString(w, body)
	}
}

func TestHitAfterMiss(t *testing.T) {
	clk := newTestClock()
	o := newTestOrigin(t, clk, static("hello", "Cache-Control: public, max-age=60", "Content-Type: text/plain", "ETag: \"v1\""))
	n := newTestNode(t, o.srv.URL, clk, nil)
	url := "http://" + n.Addr() + "/a"

	r1, b1 := warm(t, n, url)
	if r1.StatusCode != 200 || b1 != "hello" {
		t.Fatalf("first: got %d %q, want 200 hello", r1.StatusCode, b1)
	}
	if cs := csOf(r1); !strings.Contains(cs, "fwd=uri-miss") || !strings.Contains(cs, "stored") {
		t.Errorf("first Cache-Status = %q, want fwd=uri-miss; stored", cs)
	}
	clk.advance(7 * time.Second)
	r2, b2 := get(t, url)
	if !isHit(r2) || b2 != "hello" {
		t.Fatalf("second: Cache-Status %q body %q, want a hit with hello", csOf(r2), b2)
	}
	if got := r2.Header.Get("Age"); got != "7" {
		t.Errorf("Age = %q, want 7 (RFC 9111 §4.2.3)", got)
	}
	if cs := csOf(r2); !strings.Contains(cs, "ttl=53") {
		t.Errorf("Cache-Status = %q, want ttl=53", cs)
	}
	if via := r2.Header.Values("Via"); len(via) == 0 || !strings.Contains(strings.Join(via, ","), "edge-test") {
		t.Errorf("Via = %q, want our member", via)
	}
	if r2.Header.Get("Content-Type") != "text/plain" || r2.Header.Get("ETag") != `"v1"` {
		t.Errorf("stored headers not replayed: %v", r2.Header)
	}
	if got := o.count("/a"); got != 1 {
		t.Errorf("origin saw %d requests, want 1", got)
	}
	// HEAD is answered from the cached GET (RFC 9110 §9.3.2).
	r3, b3 := do(t, http.MethodHead, url)
	if !isHit(r3) || b3 != "" || r3.ContentLength != 5 {
		t.Errorf("HEAD: Cache-Status %q body %q length %d, want hit, no body, 5", csOf(r3), b3, r3.ContentLength)
	}
	// A client's conditional request is answered 304 from cache (§4.3.2).
	r4, _ := get(t, url, `If-None-Match: "v0", "v1"`)
	if r4.StatusCode != http.StatusNotModified || !isHit(r4) {
		t.Errorf("conditional: got %d %q, want 304 hit", r4.StatusCode, csOf(r4))
	}
	if got := o.count("/a"); got != 1 {
		t.Errorf("origin saw %d requests after HEAD and 304, want 1", got)
	}
}

func TestCoalescing200ConcurrentColdRequests(t *testing.T) {
	body := strings.Repeat("0123456789abcdef", 64<<10/16) // 64 KiB
	release := make(chan struct{})
	o := newTestOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		<-release // hold the origin so every client arrives during the fetch
		w.Header().Set("Cache-Control", "max-age=300")
		io.WriteString(w, body)
	})
	n := newTestNode(t, o.srv.URL, nil, nil)
	url := "http://" + n.Addr() + "/cold"

	const clients = 200
	var wg sync.WaitGroup
	errs := make(chan string, clients)
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := testHTTP.Get(url)
			if err != nil {
				errs <- err.Error()
				return
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 || string(b) != body {
				errs <- fmt.Sprintf("status %d, %d bytes, err %v", resp.StatusCode, len(b), err)
			}
		}()
	}
	waitFor(t, "all clients to wait on the flight", 10*time.Second, func() bool {
		return n.pipe.stats.coalesced.Load()+1 >= clients
	})
	close(release)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if got := o.count("/cold"); got != 1 {
		t.Fatalf("origin saw %d requests for 200 concurrent cold requests, want exactly 1", got)
	}
	if s := n.Stats(); s.CoalescedWaiters != clients-1 || s.OriginFetches != 1 {
		t.Errorf("stats: %d coalesced waiters, %d origin fetches; want %d and 1", s.CoalescedWaiters, s.OriginFetches, clients-1)
	}
	if r, _ := get(t, url); !isHit(r) {
		t.Errorf("after the flight: Cache-Status %q, want hit", csOf(r))
	}
}

func TestStreamsBodyBeforeOriginFinishes(t *testing.T) {
	proceed := make(chan struct{})
	o := newTestOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		io.WriteString(w, "first-chunk;")
		w.(http.Flusher).Flush()
		<-proceed
		io.WriteString(w, "second-chunk")
	})
	n := newTestNode(t, o.srv.URL, nil, nil)
	resp, err := testHTTP.Get("http://" + n.Addr() + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, len("first-chunk;"))
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "first-chunk;" {
		t.Fatalf("first bytes: %q %v — the edge must stream before the origin finishes", buf, err)
	}
	close(proceed)
	rest, _ := io.ReadAll(resp.Body)
	if string(rest) != "second-chunk" {
		t.Fatalf("rest = %q", rest)
	}
	waitFor(t, "entry stored", 5*time.Second, func() bool {
		r, b := get(t, "http://"+n.Addr()+"/stream")
		return isHit(r) && b == "first-chunk;second-chunk"
	})
}

func TestStorability(t *testing.T) {
	tests := []struct {
		name   string
		hdr    []string
		reqHdr []string
		stored bool
	}{
		{"§3 max-age stored", []string{"Cache-Control: max-age=60"}, nil, true},
		{"§5.2.2.5 no-store not stored", []string{"Cache-Control: no-store"}, nil, false},
		{"§5.2.2.7 private not stored", []string{"Cache-Control: private, max-age=60"}, nil, false},
		{"§3.5 Authorization not stored", []string{"Cache-Control: max-age=60"}, []string{"Authorization: Bearer x"}, false},
		{"§3.5 Authorization with public stored", []string{"Cache-Control: public, max-age=60"}, []string{"Authorization: Bearer x"}, true},
		{"§3.5 Authorization with s-maxage stored", []string{"Cache-Control: s-maxage=60"}, []string{"Authorization: Bearer x"}, true},
		{"Set-Cookie not stored by default", []string{"Cache-Control: max-age=60", "Set-Cookie: a=b"}, nil, false},
		{"§4.1 Vary * never stored", []string{"Cache-Control: max-age=60", "Vary: *"}, nil, false},
		{"RFC 9213 CDN-Cache-Control no-store wins", []string{"Cache-Control: max-age=60", "CDN-Cache-Control: no-store"}, nil, false},
		{"RFC 9213 CDN-Cache-Control max-age over no-store", []string{"Cache-Control: no-store", "CDN-Cache-Control: max-age=60"}, nil, true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := newTestOrigin(t, nil, static("x", tt.hdr...))
			n := newTestNode(t, o.srv.URL, nil, nil)
			url := fmt.Sprintf("http://%s/s%d", n.Addr(), i)
			warm(t, n, url, tt.reqHdr...)
			r, _ := get(t, url, tt.reqHdr...)
			if got := isHit(r); got != tt.stored {
				t.Errorf("second request hit = %v (Cache-Status %q), want %v", got, csOf(r), tt.stored)
			}
			wantOrigin := 2
			if tt.stored {
				wantOrigin = 1
			}
			if got := o.count(fmt.Sprintf("/s%d", i)); got != wantOrigin {
				t.Errorf("origin saw %d requests, want %d", got, wantOrigin)
			}
		})
	}
}

func TestSetCookieNeverReplayed(t *testing.T) {
	o := newTestOrigin(t, nil, static("x", "Cache-Control: max-age=60", "Set-Cookie: session=secret"))
	n := newTestNode(t, o.srv.URL, nil, func(c *Config) { c.Cache.StoreSetCookie = true })
	url := "http://" + n.Addr() + "/c"
	r1, _ := warm(t, n, url)
	if r1.Header.Get("Set-Cookie") == "" {
		t.Errorf("the client that caused the fetch should get its cookie")
	}
	r2, _ := get(t, url)
	if !isHit(r2) || r2.Header.Get("Set-Cookie") != "" {
		t.Errorf("hit = %v, Set-Cookie = %q; want a hit without the cookie", isHit(r2), r2.Header.Get("Set-Cookie"))
	}
}

func TestRequestDirectives(t *testing.T) {
	clk := newTestClock()
	o := newTestOrigin(t, clk, static("x", "Cache-Control: max-age=100", `ETag: "e"`))
	n := newTestNode(t, o.srv.URL, clk, nil)
	tests := []struct {
		name    string
		hdr     string
		wantHit bool
	}{
		{"§5.2.1.1 max-age=60 accepts age 50", "Cache-Control: max-age=60", true},
		{"§5.2.1.1 max-age=10 rejects age 50", "Cache-Control: max-age=10", false},
		{"§5.2.1.3 min-fresh=40 accepts ttl 50", "Cache-Control: min-fresh=40", true},
		{"§5.2.1.3 min-fresh=60 rejects ttl 50", "Cache-Control: min-fresh=60", false},
		{"§5.2.1.4 no-cache revalidates", "Cache-Control: no-cache", false},
		{"§5.4 Pragma no-cache revalidates", "Pragma: no-cache", false},
		{"plain request hits", "Accept: */*", true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := fmt.Sprintf("http://%s/r%d", n.Addr(), i)
			warm(t, n, url)
			clk.advance(50 * time.Second)
			r, _ := get(t, url, tt.hdr)
			if isHit(r) != tt.wantHit || r.StatusCode != 200 {
				t.Errorf("got %d, Cache-Status %q; want 200 hit=%v", r.StatusCode, csOf(r), tt.wantHit)
			}
		})
	}
	t.Run("§5.2.1.7 only-if-cached on a miss is 504", func(t *testing.T) {
		r, _ := get(t, "http://"+n.Addr()+"/never", "Cache-Control: only-if-cached")
		if r.StatusCode != http.StatusGatewayTimeout {
			t.Errorf("got %d, want 504", r.StatusCode)
		}
		if o.count("/never") != 0 {
			t.Errorf("only-if-cached reached the origin")
		}
	})
	t.Run("§5.2.1.2 max-stale serves stale", func(t *testing.T) {
		url := "http://" + n.Addr() + "/stale"
		warm(t, n, url)
		clk.advance(150 * time.Second) // stale by 50 s
		before := o.total.Load()
		r, _ := get(t, url, "Cache-Control: max-stale=1000")
		if !isHit(r) || o.total.Load() != before {
			t.Errorf("max-stale: Cache-Status %q, origin +%d; want a stale hit without origin", csOf(r), o.total.Load()-before)
		}
		r, _ = get(t, url, "Cache-Control: max-stale=10")
		if isHit(r) {
			t.Errorf("max-stale=10 with 50 s staleness: Cache-Status %q, want a forward", csOf(r))
		}
	})
}

func TestRevalidation304UpdatesStoredHeaders(t *testing.T) {
	clk := newTestClock()
	var version = "1"
	var mu sync.Mutex
	o := newTestOrigin(t, clk, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		v := version
		mu.Unlock()
		w.Header().Set("Cache-Control", "max-age=10")
		w.Header().Set("ETag", `"same"`)
		w.Header().Set("X-Version", v)
		if r.Header.Get("If-None-Match") == `"same"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		io.WriteString(w, "body")
	})
	n := newTestNode(t, o.srv.URL, clk, nil)
	url := "http://" + n.Addr() + "/v"
	warm(t, n, url)
	mu.Lock()
	version = "2"
	mu.Unlock()
	clk.advance(11 * time.Second)
	r, b := warm(t, n, url)
	if b != "body" || r.Header.Get("X-Version") != "2" {
		t.Fatalf("after 304: body %q X-Version %q, want body and 2 (RFC 9111 §4.3.4)", b, r.Header.Get("X-Version"))
	}
	if cs := csOf(r); !strings.Contains(cs, "fwd=stale") || !strings.Contains(cs, "fwd-status=304") {
		t.Errorf("Cache-Status = %q, want fwd=stale; fwd-status=304", cs)
	}
	r2, _ := get(t, url)
	if !isHit(r2) || r2.Header.Get("X-Version") != "2" {
		t.Errorf("next: Cache-Status %q X-Version %q, want a hit with the updated header", csOf(r2), r2.Header.Get("X-Version"))
	}
	if got := o.count("/v"); got != 2 {
		t.Errorf("origin saw %d requests, want 2 (fill + one revalidation)", got)
	}
}

func TestStaleWhileRevalidateOneBackgroundFetch(t *testing.T) {
	clk := newTestClock()
	o := newTestOrigin(t, clk, static("swr", "Cache-Control: max-age=10, stale-while-revalidate=60"))
	n := newTestNode(t, o.srv.URL, clk, nil)
	url := "http://" + n.Addr() + "/swr"
	warm(t, n, url)
	// Hold the background revalidation until every stale request is answered.
	gate := make(chan struct{})
	o.set(func(w http.ResponseWriter, r *http.Request) {
		<-gate
		static("swr2", "Cache-Control: max-age=10, stale-while-revalidate=60")(w, r)
	})
	clk.advance(20 * time.Second)
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, b := get(t, url)
			if !isHit(r) || b != "swr" || !strings.Contains(csOf(r), "stale-while-revalidate") {
				t.Errorf("stale request: Cache-Status %q body %q, want a stale hit at once", csOf(r), b)
			}
		}()
	}
	wg.Wait()
	close(gate)
	waitFor(t, "background revalidation", 5*time.Second, func() bool { return n.pipe.flights.Len() == 0 && o.count("/swr") >= 2 })
	if got := o.count("/swr"); got != 2 {
		t.Errorf("origin saw %d requests, want 2 (fill + ONE background revalidation)", got)
	}
	r, b := get(t, url)
	if !isHit(r) || strings.Contains(csOf(r), "stale") || b != "swr2" {
		t.Errorf("after revalidation: Cache-Status %q body %q, want a fresh hit of the new body", csOf(r), b)
	}
}

func TestStaleIfErrorWithOriginStopped(t *testing.T) {
	clk := newTestClock()
	o := newTestOrigin(t, clk, static("precious", "Cache-Control: max-age=10, stale-if-error=600"))
	n := newTestNode(t, o.srv.URL, clk, func(c *Config) { c.Cache.MaxStaleOnError = 0 })
	url := "http://" + n.Addr() + "/sie"
	warm(t, n, url)
	o.srv.Close() // the origin is gone: connections are refused
	clk.advance(60 * time.Second)
	r, b := get(t, url)
	if r.StatusCode != 200 || b != "precious" {
		t.Fatalf("origin down: got %d %q, want the stale copy (RFC 5861 §4)", r.StatusCode, b)
	}
	if cs := csOf(r); !strings.Contains(cs, "fwd=stale") || !strings.Contains(cs, "stale-if-error") || !strings.Contains(cs, "fwd-status=502") {
		t.Errorf("Cache-Status = %q, want fwd=stale; fwd-status=502; stale-if-error", cs)
	}
	clk.advance(700 * time.Second) // past stale-if-error
	r, b = get(t, url)
	if r.StatusCode != http.StatusBadGateway || !strings.Contains(b, "origin") {
		t.Errorf("past stale-if-error: got %d %q, want 502 with a short body", r.StatusCode, b)
	}
}

func TestMaxStaleOnErrorAndMustRevalidate(t *testing.T) {
	clk := newTestClock()
	o := newTestOrigin(t, clk, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/strict" {
			w.Header().Set("Cache-Control", "max-age=10, must-revalidate")
		} else {
			w.Header().Set("Cache-Control", "max-age=10")
		}
		io.WriteString(w, "ok")
	})
	n := newTestNode(t, o.srv.URL, clk, func(c *Config) { c.Cache.MaxStaleOnError = Duration(time.Hour) })
	base := "http://" + n.Addr()
	warm(t, n, base+"/lenient")
	warm(t, n, base+"/strict")
	o.set(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) })
	clk.advance(30 * time.Second)
	if r, b := get(t, base+"/lenient"); r.StatusCode != 200 || b != "ok" {
		t.Errorf("max_stale_on_error: got %d %q, want stale 200 ok", r.StatusCode, b)
	}
	if r, _ := get(t, base+"/strict"); r.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("must-revalidate: got %d, want the origin's 503 (RFC 9111 §4.2.4: never stale)", r.StatusCode)
	}
}

func TestOriginErrors(t *testing.T) {
	dead := "http://" + testnet.RefusedAddr(t) // connection refused
	n := newTestNode(t, dead, nil, nil)
	r, b := get(t, "http://"+n.Addr()+"/x")
	if r.StatusCode != http.StatusBadGateway || !strings.Contains(b, "refused") {
		t.Errorf("refused: got %d %q, want 502 naming the refusal", r.StatusCode, b)
	}

	slow := newTestOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(2 * time.Second)
		io.WriteString(w, "late")
	})
	n2 := newTestNode(t, slow.srv.URL, nil, func(c *Config) { c.Origin.HeaderTimeout = 300 * time.Millisecond })
	r, b = get(t, "http://"+n2.Addr()+"/slow")
	if r.StatusCode != http.StatusGatewayTimeout || !strings.Contains(b, "timeout") {
		t.Errorf("timeout: got %d %q, want 504 naming the timeout", r.StatusCode, b)
	}
}

func TestFiveHundredsNotStoredUnlessFresh(t *testing.T) {
	o := newTestOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fresh503" {
			w.Header().Set("Cache-Control", "max-age=30")
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	n := newTestNode(t, o.srv.URL, nil, nil)
	for _, p := range []string{"/plain503", "/fresh503"} {
		get(t, "http://"+n.Addr()+p)
		get(t, "http://"+n.Addr()+p)
	}
	if got := o.count("/plain503"); got != 2 {
		t.Errorf("plain 503 fetched %d times, want 2 (not stored)", got)
	}
	if got := o.count("/fresh503"); got != 1 {
		t.Errorf("explicitly fresh 503 fetched %d times, want 1 (stored)", got)
	}
}

func TestVary(t *testing.T) {
	o := newTestOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Vary", "Accept-Encoding")
		io.WriteString(w, "enc="+r.Header.Get("Accept-Encoding"))
	})
	n := newTestNode(t, o.srv.URL, nil, nil)
	url := "http://" + n.Addr() + "/vary"
	r1, b1 := warm(t, n, url, "Accept-Encoding: gzip")
	r2, b2 := warm(t, n, url, "Accept-Encoding: br")
	if b1 != "enc=gzip" || b2 != "enc=br" {
		t.Fatalf("bodies %q %q, want per-variant bodies", b1, b2)
	}
	if !strings.Contains(csOf(r2), "fwd=vary-miss") {
		t.Errorf("second variant Cache-Status = %q, want fwd=vary-miss (RFC 9211)", csOf(r2))
	}
	_ = r1
	r3, b3 := get(t, url, "Accept-Encoding: gzip")
	r4, b4 := get(t, url, "Accept-Encoding: br")
	if !isHit(r3) || b3 != "enc=gzip" || !isHit(r4) || b4 != "enc=br" {
		t.Errorf("repeat: %q %q / %q %q, want hits with matching bodies", csOf(r3), b3, csOf(r4), b4)
	}
	if got := o.count("/vary"); got != 2 {
		t.Errorf("origin saw %d, want 2 (one per variant)", got)
	}
}

func TestRangesFromCache(t *testing.T) {
	body := make([]byte, 10000)
	for i := range body {
		body[i] = byte('a' + i%26)
	}
	o := newTestOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Range") != "" {
			t.Errorf("origin got Range %q: a cacheable miss must fetch the whole object", r.Header.Get("Range"))
		}
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("ETag", `"r1"`)
		w.Header().Set("Last-Modified", "Mon, 02 Jan 2006 15:04:05 GMT")
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(body)
	})
	n := newTestNode(t, o.srv.URL, nil, nil)
	url := "http://" + n.Addr() + "/bin"

	// A range miss fetches the whole object, answers the range, stores all.
	r, b := get(t, url, "Range: bytes=10-19")
	if r.StatusCode != 206 || b != string(body[10:20]) || r.Header.Get("Content-Range") != "bytes 10-19/10000" {
		t.Fatalf("range miss: %d, %d bytes, Content-Range %q; want 206 bytes 10-19/10000", r.StatusCode, len(b), r.Header.Get("Content-Range"))
	}
	waitFor(t, "stored", 5*time.Second, func() bool { r, _ := get(t, url, "Range: bytes=0-0"); return isHit(r) })

	tests := []struct {
		name, rng, ifRange string
		status             int
		want               string
		contentRange       string
	}{
		{"single", "bytes=100-199", "", 206, string(body[100:200]), "bytes 100-199/10000"},
		{"suffix", "bytes=-5", "", 206, string(body[9995:]), "bytes 9995-9999/10000"},
		{"open", "bytes=9990-", "", 206, string(body[9990:]), "bytes 9990-9999/10000"},
		{"past end clamps", "bytes=9998-20000", "", 206, string(body[9998:]), "bytes 9998-9999/10000"},
		{"unsatisfiable", "bytes=20000-", "", 416, "", "bytes */10000"},
		{"garbage ignored", "bytes=x-y", "", 200, string(body), ""},
		{"other unit ignored", "items=1-2", "", 200, string(body), ""},
		{"If-Range match", "bytes=0-3", `"r1"`, 206, string(body[:4]), "bytes 0-3/10000"},
		{"If-Range mismatch sends all", "bytes=0-3", `"old"`, 200, string(body), ""},
		{"If-Range date match", "bytes=0-3", "Mon, 02 Jan 2006 15:04:05 GMT", 206, string(body[:4]), "bytes 0-3/10000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hdr := []string{"Range: " + tt.rng}
			if tt.ifRange != "" {
				hdr = append(hdr, "If-Range: "+tt.ifRange)
			}
			r, b := get(t, url, hdr...)
			if r.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", r.StatusCode, tt.status)
			}
			if tt.status != 416 && b != tt.want {
				t.Errorf("body %d bytes, want %d", len(b), len(tt.want))
			}
			if got := r.Header.Get("Content-Range"); got != tt.contentRange {
				t.Errorf("Content-Range %q, want %q", got, tt.contentRange)
			}
		})
	}
	t.Run("multipart/byteranges", func(t *testing.T) {
		r, b := get(t, url, "Range: bytes=0-4, 100-104")
		mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if r.StatusCode != 206 || err != nil || mt != "multipart/byteranges" {
			t.Fatalf("got %d %q (%v), want 206 multipart/byteranges", r.StatusCode, r.Header.Get("Content-Type"), err)
		}
		mr := multipart.NewReader(strings.NewReader(b), params["boundary"])
		var parts []string
		for {
			p, err := mr.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			pb, _ := io.ReadAll(p)
			parts = append(parts, p.Header.Get("Content-Range")+"="+string(pb))
		}
		want := []string{"bytes 0-4/10000=" + string(body[:5]), "bytes 100-104/10000=" + string(body[100:105])}
		if fmt.Sprint(parts) != fmt.Sprint(want) {
			t.Errorf("parts %q, want %q", parts, want)
		}
	})
	if got := o.count("/bin"); got != 1 {
		t.Errorf("origin saw %d requests, want 1", got)
	}
}

func TestInvalidationByUnsafeMethod(t *testing.T) {
	o := newTestOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodPost:
			w.Header().Set("Location", "/other")
			w.WriteHeader(http.StatusCreated)
		default:
			w.Header().Set("Cache-Control", "max-age=600")
			io.WriteString(w, r.URL.Path)
		}
	})
	n := newTestNode(t, o.srv.URL, nil, nil)
	base := "http://" + n.Addr()
	warm(t, n, base+"/item")
	warm(t, n, base+"/other")
	if r, _ := get(t, base+"/item"); !isHit(r) {
		t.Fatalf("warm-up: not a hit")
	}
	r, _ := do(t, http.MethodPost, base+"/item")
	if r.StatusCode != http.StatusCreated || !strings.Contains(csOf(r), "fwd=method") {
		t.Fatalf("POST: %d %q", r.StatusCode, csOf(r))
	}
	for _, p := range []string{"/item", "/other"} {
		if r, _ := get(t, base+p); isHit(r) {
			t.Errorf("%s still a fresh hit after POST (RFC 9111 §4.4)", p)
		}
	}
	if got := o.count("/item"); got != 3 {
		t.Errorf("origin saw %d for /item, want 3 (GET, POST, GET after invalidation)", got)
	}
}

func TestForwardedHeaders(t *testing.T) {
	var got http.Header
	var host string
	var mu sync.Mutex
	o := newTestOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got, host = r.Header.Clone(), r.Host
		mu.Unlock()
		w.Header().Set("Connection", "X-Secret-Hop")
		w.Header().Set("X-Secret-Hop", "1")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("Surrogate-Key", "a b")
		io.WriteString(w, "ok")
	})
	n := newTestNode(t, o.srv.URL, nil, nil)
	r, _ := get(t, "http://"+n.Addr()+"/h", "Host: shop.example", "X-Forwarded-For: 203.0.113.9",
		"Connection: X-Drop-Me", "X-Drop-Me: 1", "Proxy-Authorization: secret", "Te: trailers")
	mu.Lock()
	defer mu.Unlock()
	if host != "shop.example" {
		t.Errorf("origin Host = %q, want the client's (host_header: pass)", host)
	}
	if xff := got.Get("X-Forwarded-For"); xff != "127.0.0.1" {
		t.Errorf("X-Forwarded-For = %q, want only the client (its own copy dropped: not a trusted proxy)", xff)
	}
	if got.Get("X-Forwarded-Proto") != "http" {
		t.Errorf("X-Forwarded-Proto = %q", got.Get("X-Forwarded-Proto"))
	}
	if !strings.Contains(got.Get("Via"), "edge-test") {
		t.Errorf("request Via = %q", got.Get("Via"))
	}
	for _, h := range []string{"X-Drop-Me", "Proxy-Authorization", "Te"} {
		if got.Get(h) != "" {
			t.Errorf("hop-by-hop %s forwarded (RFC 9110 §7.6.1)", h)
		}
	}
	for _, h := range []string{"X-Secret-Hop", "Keep-Alive", "Surrogate-Key"} {
		if r.Header.Get(h) != "" {
			t.Errorf("response field %s reached the client", h)
		}
	}
}

func TestLargeObjectStreamsThroughUnstored(t *testing.T) {
	const size = 12 << 20 // over the test node's 8 MiB max object size
	chunk := bytes.Repeat([]byte("z"), 64<<10)
	o := newTestOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		if r.URL.Query().Get("cl") == "1" {
			w.Header().Set("Content-Length", strconv.Itoa(size))
		}
		for i := 0; i < size/len(chunk); i++ {
			w.Write(chunk)
		}
	})
	n := newTestNode(t, o.srv.URL, nil, nil)
	for _, q := range []string{"cl=1", "cl=0"} {
		url := "http://" + n.Addr() + "/big?" + q
		h := sha256.New()
		resp, err := testHTTP.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		m, _ := io.Copy(h, resp.Body)
		resp.Body.Close()
		if m != size {
			t.Fatalf("%s: got %d bytes, want %d", q, m, size)
		}
		r2, _ := get(t, url)
		if isHit(r2) {
			t.Errorf("%s: object over max_object_size was stored", q)
		}
	}
	_ = hex.EncodeToString
}

func TestMalformedRequestsKeepNodeUp(t *testing.T) {
	o := newTestOrigin(t, nil, static("ok", "Cache-Control: max-age=60"))
	n := newTestNode(t, o.srv.URL, nil, nil)
	tests := []struct {
		name, raw string
		want      int
	}{
		{"garbage", "\x00\x01\x02 nonsense\r\n\r\n", 400},
		{"no request target", "GET\r\nHost: x\r\n\r\n", 400},
		{"huge header", "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 64<<10) + "\r\n\r\n", 431},
		{"bad content-length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", n.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, tt.raw)
			buf := make([]byte, 64)
			m, _ := io.ReadAtLeast(c, buf, 12)
			if !strings.HasPrefix(string(buf[:m]), "HTTP/1.1 "+strconv.Itoa(tt.want)) {
				t.Errorf("got %q, want status %d", buf[:m], tt.want)
			}
		})
	}
	if r, b := get(t, "http://"+n.Addr()+"/alive"); r.StatusCode != 200 || b != "ok" {
		t.Errorf("node not serving after bad input: %d %q", r.StatusCode, b)
	}
}

// TestMalformedOriginHeaders: garbage in the origin's caching fields never
// panics and errs on the safe side (RFC 9111 §4.2.1: invalid max-age is
// stale; §1.2.2: huge delta-seconds clamp; §5.3: invalid Expires is expired).
func TestMalformedOriginHeaders(t *testing.T) {
	tests := []struct {
		name   string
		hdr    []string
		stored bool
	}{
		{"invalid max-age is stale", []string{"Cache-Control: max-age=abc"}, false},
		{"absurd max-age clamps and stores", []string{"Cache-Control: max-age=99999999999999999999999"}, true},
		{"duplicate Cache-Control lines: most restrictive", []string{"Cache-Control: max-age=60", "Cache-Control: max-age=0"}, false},
		{"invalid Expires is expired", []string{"Expires: 0"}, false},
		{"garbage Cache-Control", []string{"Cache-Control: ,,;;==\"\"max-age"}, false},
		{"§5.1 negative Age is ignored", []string{"Cache-Control: max-age=60", "Age: -5"}, true},
		{"Vary with empty members", []string{"Cache-Control: max-age=60", "Vary: , ,Accept"}, true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := newTestOrigin(t, nil, static("x", tt.hdr...))
			n := newTestNode(t, o.srv.URL, nil, nil)
			url := fmt.Sprintf("http://%s/m%d", n.Addr(), i)
			if r, b := warm(t, n, url); r.StatusCode != 200 || b != "x" {
				t.Fatalf("first: %d %q", r.StatusCode, b)
			}
			r, _ := get(t, url)
			if isHit(r) != tt.stored {
				t.Errorf("second request hit = %v (Cache-Status %q), want %v", isHit(r), csOf(r), tt.stored)
			}
		})
	}
}

func TestHostHeaderRewrite(t *testing.T) {
	var host string
	var mu sync.Mutex
	o := newTestOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		host = r.Host
		mu.Unlock()
		io.WriteString(w, "ok")
	})
	for _, tc := range []struct{ mode, want string }{{"origin", strings.TrimPrefix(o.srv.URL, "http://")}, {"static.example", "static.example"}} {
		n := newTestNode(t, o.srv.URL, nil, func(c *Config) { c.Origin.HostHeader = tc.mode })
		get(t, "http://"+n.Addr()+"/h", "Host: shop.example")
		mu.Lock()
		if host != tc.want {
			t.Errorf("host_header %q: origin saw Host %q, want %q", tc.mode, host, tc.want)
		}
		mu.Unlock()
	}
}

// TestHeadMissThenHit: a HEAD miss fetches (and stores) the GET, so the
// next HEAD and GET are hits (RFC 9110 §9.3.2) — not hit-for-pass.
func TestHeadMissThenHit(t *testing.T) {
	o := newTestOrigin(t, nil, static("body", "Cache-Control: max-age=60"))
	n := newTestNode(t, o.srv.URL, nil, nil)
	url := "http://" + n.Addr() + "/head"
	r, b := do(t, http.MethodHead, url)
	if r.StatusCode != 200 || b != "" || r.ContentLength != 4 {
		t.Fatalf("HEAD miss: %d %q length %d", r.StatusCode, b, r.ContentLength)
	}
	waitFor(t, "fill", 5*time.Second, func() bool { return n.pipe.flights.Len() == 0 })
	if r, _ := do(t, http.MethodHead, url); !isHit(r) {
		t.Errorf("second HEAD: Cache-Status %q, want hit", csOf(r))
	}
	if r, b := get(t, url); !isHit(r) || b != "body" {
		t.Errorf("GET after HEAD: %q %q, want a hit with the body", csOf(r), b)
	}
	if got := o.total.Load(); got != 1 {
		t.Errorf("origin saw %d requests, want 1", got)
	}
}

// TestUselessResponsesNotStored: a 404 with no freshness, validators or
// stale allowance is not stored stale (it would send every request to the
// origin as a "revalidation"); with a Last-Modified it is heuristically fresh.
func TestUselessResponsesNotStored(t *testing.T) {
	o := newTestOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/lm" {
			w.Header().Set("Last-Modified", time.Now().Add(-100*time.Hour).UTC().Format(http.TimeFormat))
		}
		w.WriteHeader(http.StatusNotFound)
	})
	n := newTestNode(t, o.srv.URL, nil, nil)
	for i := 0; i < 3; i++ {
		r, _ := warm(t, n, "http://"+n.Addr()+"/bare")
		if strings.Contains(csOf(r), "stored") {
			t.Errorf("bare 404 stored: %q", csOf(r))
		}
	}
	warm(t, n, "http://"+n.Addr()+"/lm")
	if r, _ := get(t, "http://"+n.Addr()+"/lm"); !isHit(r) {
		t.Errorf("404 with Last-Modified: %q, want a heuristic hit (RFC 9111 §4.2.2)", csOf(r))
	}
}

// TestHitForPassBoundKeepsLiveMarks: when the hit-for-pass table is full,
// expired marks make room; live ones survive.
func TestHitForPassBoundKeepsLiveMarks(t *testing.T) {
	h := hitForPass{m: map[string]time.Time{}}
	ttl := time.Minute
	t0 := time.Now()
	h.add([]byte("live"), t0, ttl)
	for i := 1; i < hitForPassMax; i++ {
		h.m[strconv.Itoa(i)] = t0.Add(-time.Second) // expired
	}
	h.add([]byte("new"), t0, ttl)
	if !h.active([]byte("live"), t0, ttl) || !h.active([]byte("new"), t0, ttl) {
		t.Errorf("live marks lost when the table filled up")
	}
	if len(h.m) != 2 {
		t.Errorf("%d marks left, want 2 (the expired ones dropped)", len(h.m))
	}
	// A table full of live marks is still bounded.
	for i := 0; i < hitForPassMax; i++ {
		h.m[strconv.Itoa(i)] = t0.Add(time.Minute)
	}
	h.add([]byte("one more"), t0, ttl)
	if len(h.m) > hitForPassMax {
		t.Errorf("%d marks, want at most %d", len(h.m), hitForPassMax)
	}
}

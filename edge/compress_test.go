package edge

import (
	"bytes"
	stdgzip "compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/andybalholm/brotli"
)

// cssBody is a stylesheet-like text of about n bytes: varied enough that
// the codings differ in size, repetitive enough that they shrink it a lot.
func cssBody(n int) string {
	var b strings.Builder
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, ".c%d > a:hover { color: #%06x; margin: %dpx %dpx; font-family: sans-serif }\n",
			i, (i*2654435761)&0xffffff, i%40, i%7)
	}
	return b.String()[:n]
}

// contentOrigin serves body with http.ServeContent (weak If-None-Match
// comparison, as real servers do) and the given fields.
func contentOrigin(t *testing.T, clock *testClock, body string, hdr ...string) *testOrigin {
	t.Helper()
	return newTestOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		for _, h := range hdr {
			k, v, _ := strings.Cut(h, ":")
			w.Header().Add(k, strings.TrimSpace(v))
		}
		http.ServeContent(w, r, "", time.Time{}, strings.NewReader(body))
	})
}

// decode undoes a response's Content-Encoding (br or gzip, with decoders
// that are not the ones the edge codes with where one exists: the standard
// library's gzip).
func decode(t *testing.T, r *http.Response, body string) string {
	t.Helper()
	var rd io.Reader
	switch ce := r.Header.Get("Content-Encoding"); ce {
	case "":
		return body
	case "br":
		rd = brotli.NewReader(strings.NewReader(body))
	case "gzip":
		zr, err := stdgzip.NewReader(strings.NewReader(body))
		if err != nil {
			t.Fatalf("gzip body: %v", err)
		}
		rd = zr
	default:
		t.Fatalf("unexpected Content-Encoding %q", ce)
	}
	b, err := io.ReadAll(rd)
	if err != nil {
		t.Fatalf("decoding %s body of %d bytes: %v", r.Header.Get("Content-Encoding"), len(body), err)
	}
	return string(b)
}

func varies(r *http.Response) bool {
	return containsToken(r.Header.Values("Vary"), "Accept-Encoding")
}

// TestEdgeCompresses: an origin that answers identity text gets br to a
// browser, gzip to a gzip-only client and identity to curl, each variant
// fetched and coded once, stored coded, with Vary and a weak ETag.
func TestEdgeCompresses(t *testing.T) {
	css := cssBody(60 << 10)
	o := contentOrigin(t, nil, css, "Content-Type: text/css", "Cache-Control: public, max-age=300", `ETag: "v1"`)
	n := newTestNode(t, o.srv.URL, nil, nil)
	url := "http://" + n.Addr() + "/style.css"
	tests := []struct {
		name, ae, wantCE, wantETag string
	}{
		{"chromium", browserAE, "br", `W/"v1"`},
		{"gzip-only", "gzip, deflate", "gzip", `W/"v1"`},
		{"curl", "", "", `"v1"`},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for round := 0; round < 2; round++ { // the miss, then the hit
				r, body := warm(t, n, url, aeHeaders(tt.ae)...)
				if round == 1 && !isHit(r) {
					t.Errorf("repeat: Cache-Status %q, want a hit", csOf(r))
				}
				if got := r.Header.Get("Content-Encoding"); got != tt.wantCE {
					t.Fatalf("round %d: Content-Encoding %q, want %q", round, got, tt.wantCE)
				}
				if got := decode(t, r, body); got != css {
					t.Errorf("round %d: decoded body of %d bytes differs from the origin's %d", round, len(got), len(css))
				}
				if tt.wantCE != "" {
					if len(body) > len(css)/3 {
						t.Errorf("round %d: %s body %d bytes for %d of css, want under a third", round, tt.wantCE, len(body), len(css))
					}
					if r.ContentLength != -1 && round == 0 {
						t.Errorf("miss: Content-Length %d, want none (coded as it streams)", r.ContentLength)
					}
				} else if len(body) != len(css) {
					t.Errorf("identity body %d bytes, want %d", len(body), len(css))
				}
				if got := r.Header.Get("ETag"); got != tt.wantETag {
					t.Errorf("round %d: ETag %q, want %q", round, got, tt.wantETag)
				}
				if !varies(r) {
					t.Errorf("round %d: Vary %q, want Accept-Encoding", round, r.Header.Values("Vary"))
				}
			}
			if got := o.count("/style.css"); got != i+1 {
				t.Errorf("origin saw %d requests after %d variants, want one per variant", got, i+1)
			}
		})
	}
}

// TestEdgeCompressLeavesAlone: responses the edge must or need not code
// reach the client byte for byte as the origin sent them.
func TestEdgeCompressLeavesAlone(t *testing.T) {
	css := cssBody(8 << 10)
	var gz bytes.Buffer
	zw := stdgzip.NewWriter(&gz)
	zw.Write([]byte(css))
	zw.Close()
	tests := []struct {
		name   string
		body   string
		hdr    []string
		mutate func(*Config)
		wantCE string
	}{
		{"no-transform", css, []string{"Content-Type: text/css", "Cache-Control: max-age=60, no-transform"}, nil, ""},
		{"CDN-Cache-Control no-transform", css, []string{"Content-Type: text/css", "CDN-Cache-Control: max-age=60, no-transform"}, nil, ""},
		{"already gzip", gz.String(), []string{"Content-Type: text/css", "Content-Encoding: gzip", "Cache-Control: max-age=60"}, nil, "gzip"},
		{"png", css, []string{"Content-Type: image/png", "Cache-Control: max-age=60"}, nil, ""},
		{"no content type", css, []string{"Cache-Control: max-age=60", "X-Content-Type-Options: nosniff", "Content-Type:"}, nil, ""},
		{"below compress_min_size", css[:255], []string{"Content-Type: text/css", "Cache-Control: max-age=60"}, nil, ""},
		{"compress off", css, []string{"Content-Type: text/css", "Cache-Control: max-age=60"}, func(c *Config) { c.Cache.Compress = false }, ""},
		{"type not listed", css, []string{"Content-Type: text/css", "Cache-Control: max-age=60"}, func(c *Config) { c.Cache.CompressTypes = []string{"application/json"} }, ""},
		{"accept_encodings off", css, []string{"Content-Type: text/css", "Cache-Control: max-age=60"}, func(c *Config) { c.Cache.AcceptEncodings = []string{} }, ""},
		{"only zstd configured", css, []string{"Content-Type: text/css", "Cache-Control: max-age=60"}, func(c *Config) { c.Cache.AcceptEncodings = []string{"zstd"} }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := contentOrigin(t, nil, tt.body, append(tt.hdr, `ETag: "v1"`)...)
			n := newTestNode(t, o.srv.URL, nil, tt.mutate)
			for round := 0; round < 2; round++ {
				r, body := warm(t, n, "http://"+n.Addr()+"/x", aeHeaders(browserAE)...)
				if r.StatusCode != 200 || body != tt.body {
					t.Fatalf("round %d: %d, %d bytes, want 200 and the origin's %d bytes", round, r.StatusCode, len(body), len(tt.body))
				}
				if got := r.Header.Get("Content-Encoding"); got != tt.wantCE {
					t.Errorf("round %d: Content-Encoding %q, want %q", round, got, tt.wantCE)
				}
				if got := r.Header.Get("ETag"); got != `"v1"` {
					t.Errorf("round %d: ETag %q, want the origin's \"v1\"", round, got)
				}
			}
		})
	}
}

// TestEdgeCompressedValidatorsAndRanges: a coded variant answers
// If-None-Match by weak comparison, refuses If-Range (its ETag is weak:
// RFC 9110 §13.1.5), serves ranges of the coded bytes, answers HEAD with the
// GET's fields, and keeps its weak ETag, coding and Vary when a 304 from the
// origin (naming the strong tag) refreshes it.
func TestEdgeCompressedValidatorsAndRanges(t *testing.T) {
	clk := newTestClock()
	css := cssBody(20 << 10)
	o := contentOrigin(t, clk, css, "Content-Type: text/css; charset=utf-8", "Cache-Control: max-age=60", `ETag: "v1"`)
	n := newTestNode(t, o.srv.URL, clk, nil)
	url := "http://" + n.Addr() + "/s.css"
	ae := aeHeaders(browserAE)
	full, coded := warm(t, n, url, ae...)
	if full.Header.Get("Content-Encoding") != "br" {
		t.Fatalf("Content-Encoding %q, want br", full.Header.Get("Content-Encoding"))
	}

	for _, inm := range []string{`W/"v1"`, `"v1"`} {
		if r, _ := get(t, url, append(ae, "If-None-Match: "+inm)...); r.StatusCode != 304 {
			t.Errorf("If-None-Match %s: %d, want 304 (weak comparison)", inm, r.StatusCode)
		}
	}
	r, body := get(t, url, append(ae, "Range: bytes=0-99")...)
	if r.StatusCode != 206 || body != coded[:100] {
		t.Errorf("Range: %d with %d bytes, want 206 and the first 100 coded bytes", r.StatusCode, len(body))
	}
	if got, want := r.Header.Get("Content-Range"), "bytes 0-99/"+strconv.Itoa(len(coded)); got != want {
		t.Errorf("Content-Range %q, want %q (of the coded representation)", got, want)
	}
	for _, ir := range []string{`W/"v1"`, `"v1"`} {
		if r, body := get(t, url, append(ae, "Range: bytes=0-99", "If-Range: "+ir)...); r.StatusCode != 200 || body != coded {
			t.Errorf("If-Range %s: %d with %d bytes, want 200 and the whole coded body", ir, r.StatusCode, len(body))
		}
	}
	r, body = do(t, http.MethodHead, url, ae...)
	if r.StatusCode != 200 || body != "" || r.Header.Get("Content-Encoding") != "br" || r.Header.Get("ETag") != `W/"v1"` {
		t.Errorf("HEAD: %d %q CE %q ETag %q, want 200, no body, br, W/\"v1\"", r.StatusCode, body, r.Header.Get("Content-Encoding"), r.Header.Get("ETag"))
	}
	if r.ContentLength > 0 && r.ContentLength != int64(len(coded)) {
		t.Errorf("HEAD: Content-Length %d, want none or the coded length %d", r.ContentLength, len(coded))
	}

	clk.advance(2 * time.Minute)
	r, body = warm(t, n, url, ae...)
	if !strings.Contains(csOf(r), "fwd=stale") || o.count("/s.css") != 2 {
		t.Fatalf("after expiry: Cache-Status %q, origin count %d, want a revalidation", csOf(r), o.count("/s.css"))
	}
	if r.Header.Get("ETag") != `W/"v1"` || decode(t, r, body) != css {
		t.Errorf("revalidated: ETag %q, want W/\"v1\" and the same content", r.Header.Get("ETag"))
	}
	r, body = get(t, url, ae...)
	if !isHit(r) {
		t.Errorf("after the 304: Cache-Status %q, want a hit on the refreshed entry", csOf(r))
	}
	if r.Header.Get("ETag") != `W/"v1"` || r.Header.Get("Content-Encoding") != "br" || !varies(r) || decode(t, r, body) != css {
		t.Errorf("refreshed: ETag %q CE %q Vary %q, want W/\"v1\", br, Accept-Encoding and the same content",
			r.Header.Get("ETag"), r.Header.Get("Content-Encoding"), r.Header.Values("Vary"))
	}
}

// TestEdgeCompressStreams: the client receives coded bytes of the part of
// the body that has arrived while the origin still holds back the rest.
func TestEdgeCompressStreams(t *testing.T) {
	css := cssBody(64 << 10)
	release := make(chan struct{})
	o := newTestOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/css")
		w.Header().Set("Cache-Control", "max-age=60")
		io.WriteString(w, css[:40<<10])
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
		io.WriteString(w, css[40<<10:])
	})
	n := newTestNode(t, o.srv.URL, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.Addr()+"/big.css", nil)
	req.Header.Set("Accept-Encoding", browserAE)
	resp, err := testHTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Encoding") != "br" {
		t.Fatalf("Content-Encoding %q, want br", resp.Header.Get("Content-Encoding"))
	}
	br := brotli.NewReader(resp.Body)
	first := make([]byte, 32<<10)
	if _, err := io.ReadFull(br, first); err != nil {
		t.Fatalf("reading the first 32 KiB while the origin holds the rest: %v (not streamed)", err)
	}
	if string(first) != css[:len(first)] {
		t.Fatalf("first 32 KiB differ from the origin's")
	}
	close(release)
	rest, err := io.ReadAll(br)
	if err != nil || string(first)+string(rest) != css {
		t.Fatalf("whole body: err %v, %d bytes, want the origin's %d", err, len(first)+len(rest), len(css))
	}
}

// TestEdgeCompressDeterministic: the coded bytes do not depend on how the
// origin's bytes were split on the wire, so every fill (and every member of
// a cluster) stores the same representation and byte ranges of it agree.
func TestEdgeCompressDeterministic(t *testing.T) {
	css := cssBody(100 << 10)
	for _, ae := range []string{browserAE, "gzip"} {
		var got []string
		for _, split := range []int{1 << 20, 1000, 7 << 10} {
			o := newTestOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/css")
				w.Header().Set("Cache-Control", "max-age=60")
				for rest := css; len(rest) > 0; {
					k := min(split, len(rest))
					io.WriteString(w, rest[:k])
					w.(http.Flusher).Flush()
					rest = rest[k:]
				}
			})
			n := newTestNode(t, o.srv.URL, nil, nil)
			r, body := warm(t, n, "http://"+n.Addr()+"/d.css", aeHeaders(ae)...)
			if r.Header.Get("Content-Encoding") == "" || decode(t, r, body) != css {
				t.Fatalf("%s split %d: CE %q, want a coded body of the css", ae, split, r.Header.Get("Content-Encoding"))
			}
			got = append(got, body)
		}
		for i := 1; i < len(got); i++ {
			if got[i] != got[0] {
				t.Errorf("%s: coded body %d (%d bytes) differs from the first (%d bytes)", ae, i, len(got[i]), len(got[0]))
			}
		}
	}
}

// TestClusterCompressOneOriginRequest: in a cluster, the owner codes the
// body once; members store the owner's coded response as it is (it already
// carries Content-Encoding) and the origin sees one request per variant.
func TestClusterCompressOneOriginRequest(t *testing.T) {
	css := cssBody(30 << 10)
	o := contentOrigin(t, nil, css, "Content-Type: text/css", "Cache-Control: public, max-age=300", `ETag: "c1"`)
	nodes := newCluster(t, 3, o.srv.URL, nil)
	for round := 0; round < 2; round++ {
		for _, n := range nodes {
			r, body := warm(t, n, "http://"+n.Addr()+"/cluster.css", append(aeHeaders(browserAE), "Host: cdn.example")...)
			if r.StatusCode != 200 || r.Header.Get("Content-Encoding") != "br" || r.Header.Get("ETag") != `W/"c1"` {
				t.Fatalf("%s: %d CE %q ETag %q, want 200 br W/\"c1\"", n.Name(), r.StatusCode, r.Header.Get("Content-Encoding"), r.Header.Get("ETag"))
			}
			if got := decode(t, r, body); got != css {
				t.Errorf("%s: decoded %d bytes, want the origin's %d", n.Name(), len(got), len(css))
			}
		}
	}
	if got := o.count("/cluster.css"); got != 1 {
		var failures []uint64
		for _, n := range nodes {
			failures = append(failures, n.Stats().PeerForwardFailures)
		}
		t.Errorf("origin saw %d requests, want 1 for the cluster (failed forwards per node: %v)", got, failures)
	}
}

// TestEdgeCompressVaryAppearsOnRevalidation: a response stored without
// Vary (too small to compress) whose background revalidation brings a body
// the edge compresses is stored as a variant of the request that revalidated
// it, never under the key every client reads: a client without
// Accept-Encoding still gets identity afterwards.
func TestEdgeCompressVaryAppearsOnRevalidation(t *testing.T) {
	clk := newTestClock()
	small, large := "body{}\n", cssBody(20<<10)
	var body atomic.Value
	body.Store(small)
	o := newTestOrigin(t, clk, func(w http.ResponseWriter, r *http.Request) {
		b := body.Load().(string)
		w.Header().Set("Content-Type", "text/css")
		w.Header().Set("Cache-Control", "max-age=1, stale-while-revalidate=60")
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		io.WriteString(w, b)
	})
	n := newTestNode(t, o.srv.URL, clk, nil)
	url := "http://" + n.Addr() + "/grow.css"
	if r, b := warm(t, n, url, aeHeaders(browserAE)...); b != small || r.Header.Get("Content-Encoding") != "" || varies(r) {
		t.Fatalf("small: %q CE %q Vary %q, want the small body as is, without Vary", b, r.Header.Get("Content-Encoding"), r.Header.Values("Vary"))
	}
	body.Store(large)
	clk.advance(2 * time.Second)
	if r, b := warm(t, n, url, aeHeaders(browserAE)...); b != small || !strings.Contains(csOf(r), "stale-while-revalidate") {
		t.Fatalf("after expiry: %q %q, want the stale small body while one revalidation runs", b, csOf(r))
	}
	r, b := get(t, url) // no Accept-Encoding
	if r.Header.Get("Content-Encoding") != "" || b != large {
		t.Errorf("curl after the revalidation: CE %q, %d bytes, want identity and the new %d bytes", r.Header.Get("Content-Encoding"), len(b), len(large))
	}
	r, b = get(t, url, aeHeaders(browserAE)...)
	if !isHit(r) || r.Header.Get("Content-Encoding") != "br" || decode(t, r, b) != large {
		t.Errorf("browser after the revalidation: %q CE %q, want a hit on the br variant stored by the revalidation", csOf(r), r.Header.Get("Content-Encoding"))
	}
}

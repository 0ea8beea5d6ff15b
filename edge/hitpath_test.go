package edge

import (
	"bufio"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// warmHit fills the cache for path and returns a reusable request context
// that hits it when passed to n.handle. hdr holds extra "Name: value" fields.
func warmHit(tb testing.TB, n *Node, path string, hdr ...string) *fasthttp.RequestCtx {
	tb.Helper()
	// Parsed from wire bytes, as the server does: the front reads the raw
	// header block (sanitizeRequest), which a request built in memory lacks.
	var req fasthttp.Request
	wire := "GET " + path + " HTTP/1.1\r\nHost: bench.local\r\n"
	for _, h := range hdr {
		wire += h + "\r\n"
	}
	if err := req.Read(bufio.NewReader(strings.NewReader(wire + "\r\n"))); err != nil {
		tb.Fatalf("parse request: %v", err)
	}
	if len(req.Header.RawHeaders()) == 0 {
		tb.Fatal("parsed request kept no raw headers")
	}
	ctx := &fasthttp.RequestCtx{}
	ctx.Init(&req, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}, nil)
	n.pipe.handle(ctx) // miss: fills in the background
	deadline := time.Now().Add(5 * time.Second)
	for n.pipe.flights.Len() > 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	ctx.Response.Reset()
	n.pipe.handle(ctx)
	if cs := string(ctx.Response.Header.Peek("Cache-Status")); !contains(cs, "; hit") {
		tb.Fatalf("warm-up did not produce a hit: %q (status %d)", cs, ctx.Response.StatusCode())
	}
	return ctx
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// TestFreshHitAllocatesNothing proves the fresh-hit path makes no heap
// allocation per request (the speed requirement; timing lives in
// the benchmark below and in bench/).
func TestFreshHitAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race (sync.Pool drops items); `go test ./edge` checks this")
	}
	for _, format := range []string{"", "combined", "json"} {
		t.Run("access log "+format, func(t *testing.T) { freshHitAllocs(t, format) })
	}
}

func freshHitAllocs(t *testing.T, accessFormat string) {
	o := newTestOrigin(t, nil, static(string(make([]byte, 1024)), "Cache-Control: max-age=3600", "Content-Type: application/octet-stream", `ETag: "x"`))
	// The heap path: a memory-file body costs a stream per hit (and is
	// only used for large bodies, whose sending dwarfs it).
	n := newTestNode(t, o.srv.URL, nil, func(c *Config) {
		c.Cache.OffheapMinSize = 0
		if accessFormat != "" {
			c.Log.Access, c.Log.AccessFormat = filepath.Join(t.TempDir(), "access.log"), accessFormat
		}
	})
	ctx := warmHit(t, n, "/1k")
	allocs := testing.AllocsPerRun(1000, func() {
		ctx.Response.Reset()
		n.pipe.handle(ctx)
	})
	if allocs != 0 {
		t.Fatalf("fresh hit allocates %.1f times per request, want 0", allocs)
	}
}

func BenchmarkFreshHit1K(b *testing.B) { benchFreshHit(b, "") }

// BenchmarkFreshHit1KAccessLog is the same hit with the combined access
// log on (to a file).
func BenchmarkFreshHit1KAccessLog(b *testing.B) { benchFreshHit(b, "combined") }

func benchFreshHit(b *testing.B, accessFormat string) {
	o := newTestOrigin(b, nil, static(string(make([]byte, 1024)), "Cache-Control: max-age=3600", "Content-Type: application/octet-stream"))
	n := newTestNode(b, o.srv.URL, nil, func(c *Config) {
		c.Cache.OffheapMinSize = 0
		if accessFormat != "" {
			c.Log.Access, c.Log.AccessFormat = filepath.Join(b.TempDir(), "access.log"), accessFormat
		}
	})
	ctx := warmHit(b, n, "/1k")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ctx.Response.Reset()
		n.pipe.handle(ctx)
	}
}

// browserAE is a current browser's Accept-Encoding (Chrome, Firefox 2024+).
const browserAE = "gzip, deflate, br, zstd"

var browserAEBytes = []byte(browserAE)

// warmBrowserHit fills a "Vary: Accept-Encoding" object as a browser asks
// for it. Each iteration of the callers sets the browser's field again,
// because handle rewrites it in place (cache.accept_encodings) and a reused
// request would otherwise measure the already-normalised case.
func warmBrowserHit(tb testing.TB) (*Node, *fasthttp.RequestCtx) {
	o := newTestOrigin(tb, nil, static(string(make([]byte, 1024)), "Cache-Control: max-age=3600",
		"Content-Type: application/octet-stream", "Vary: Accept-Encoding", `ETag: "x"`))
	n := newTestNode(tb, o.srv.URL, nil, func(c *Config) { c.Cache.OffheapMinSize = 0 })
	return n, warmHit(tb, n, "/1k-vary", "Accept-Encoding: "+browserAE)
}

// browserHit serves ctx again as a browser's request: its Accept-Encoding
// set back to the browser's spelling, which handle rewrites in place.
func browserHit(n *Node, ctx *fasthttp.RequestCtx) {
	ctx.Request.Header.SetCanonical(strAcceptEncoding, browserAEBytes)
	ctx.Response.Reset()
	n.pipe.handle(ctx)
}

// TestFreshHitAcceptEncodingAllocatesNothing: normalising a browser's
// Accept-Encoding and selecting the Vary variant keep the hit path free of
// allocations.
func TestFreshHitAcceptEncodingAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race (sync.Pool drops items); `go test ./edge` checks this")
	}
	n, ctx := warmBrowserHit(t)
	allocs := testing.AllocsPerRun(1000, func() { browserHit(n, ctx) })
	if allocs != 0 {
		t.Fatalf("fresh hit with Accept-Encoding allocates %.1f times per request, want 0", allocs)
	}
	if cs := string(ctx.Response.Header.Peek("Cache-Status")); !contains(cs, "; hit") {
		t.Fatalf("Cache-Status %q, want a hit", cs)
	}
	if ae := string(ctx.Request.Header.Peek("Accept-Encoding")); ae != "br, gzip" {
		t.Fatalf("Accept-Encoding after handle = %q, want br, gzip (the rewrite measured)", ae)
	}
}

// BenchmarkFreshHit1KAcceptEncoding is BenchmarkFreshHit1K for a
// "Vary: Accept-Encoding" object requested with a browser's Accept-Encoding:
// the cost of normalising it plus the variant lookup.
func BenchmarkFreshHit1KAcceptEncoding(b *testing.B) {
	n, ctx := warmBrowserHit(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		browserHit(n, ctx)
	}
}

// warmCompressedHit fills a text/css object the origin sends uncompressed,
// which the edge stores brotli-coded for a browser (cache.compress).
func warmCompressedHit(tb testing.TB) (*Node, *fasthttp.RequestCtx) {
	o := newTestOrigin(tb, nil, static(cssBody(4096), "Cache-Control: max-age=3600", "Content-Type: text/css", `ETag: "x"`))
	n := newTestNode(tb, o.srv.URL, nil, func(c *Config) { c.Cache.OffheapMinSize = 0 })
	return n, warmHit(tb, n, "/4k.css", "Accept-Encoding: "+browserAE)
}

// TestFreshHitCompressedAllocatesNothing: a hit on a variant the edge
// compressed costs no more than any other hit: the coding happened once, at
// the fill.
func TestFreshHitCompressedAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race (sync.Pool drops items); `go test ./edge` checks this")
	}
	n, ctx := warmCompressedHit(t)
	allocs := testing.AllocsPerRun(1000, func() { browserHit(n, ctx) })
	if allocs != 0 {
		t.Fatalf("fresh hit on a compressed variant allocates %.1f times per request, want 0", allocs)
	}
	if ce := string(ctx.Response.Header.Peek("Content-Encoding")); ce != "br" {
		t.Fatalf("Content-Encoding %q, want br (the edge-compressed variant measured)", ce)
	}
}

// BenchmarkFreshHitCompressed is a browser's hit on a 4 KiB stylesheet the
// edge stored brotli-coded (about 1 KiB on the wire).
func BenchmarkFreshHitCompressed(b *testing.B) {
	n, ctx := warmCompressedHit(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		browserHit(n, ctx)
	}
}

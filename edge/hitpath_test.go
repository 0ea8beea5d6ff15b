package edge

import (
	"net"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// warmHit fills the cache for path and returns a reusable request context
// that hits it when passed to n.handle.
func warmHit(tb testing.TB, n *Node, path string) *fasthttp.RequestCtx {
	tb.Helper()
	var req fasthttp.Request
	req.Header.SetMethod("GET")
	req.SetRequestURI("http://bench.local" + path)
	req.Header.SetHost("bench.local")
	ctx := &fasthttp.RequestCtx{}
	ctx.Init(&req, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}, nil)
	n.handle(ctx) // miss: fills in the background
	deadline := time.Now().Add(5 * time.Second)
	for n.flights.Len() > 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	ctx.Response.Reset()
	n.handle(ctx)
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
	o := newTestOrigin(t, nil, static(string(make([]byte, 1024)), "Cache-Control: max-age=3600", "Content-Type: application/octet-stream", `ETag: "x"`))
	// The heap path: a memory-file body costs a stream per hit (and is
	// only used for large bodies, whose sending dwarfs it).
	n := newTestNode(t, o.srv.URL, nil, func(c *Config) { c.Cache.OffheapMinSize = 0 })
	ctx := warmHit(t, n, "/1k")
	allocs := testing.AllocsPerRun(1000, func() {
		ctx.Response.Reset()
		n.handle(ctx)
	})
	if allocs != 0 {
		t.Fatalf("fresh hit allocates %.1f times per request, want 0", allocs)
	}
}

func BenchmarkFreshHit1K(b *testing.B) {
	o := newTestOrigin(b, nil, static(string(make([]byte, 1024)), "Cache-Control: max-age=3600", "Content-Type: application/octet-stream"))
	n := newTestNode(b, o.srv.URL, nil, func(c *Config) { c.Cache.OffheapMinSize = 0 })
	ctx := warmHit(b, n, "/1k")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ctx.Response.Reset()
		n.handle(ctx)
	}
}

package demo

import (
	"net"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// BenchmarkServe1K measures a full loopback round trip for /bench/1k.bin
// over keep-alive connections, the way the bench harness uses the origin.
func BenchmarkServe1K(b *testing.B) {
	s := startServer(b, Config{})
	hc := &fasthttp.HostClient{
		Addr:                s.Addr(),
		MaxConns:            64,
		ReadBufferSize:      8 << 10,
		MaxConnWaitTimeout:  time.Second,
		MaxIdleConnDuration: time.Minute,
	}
	b.Cleanup(hc.CloseIdleConnections)
	url := s.URL() + "/bench/1k.bin"
	b.ReportAllocs()
	b.SetBytes(1 << 10)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI(url)
		for pb.Next() {
			if err := hc.Do(req, resp); err != nil {
				b.Error(err)
				return
			}
			if resp.StatusCode() != 200 || len(resp.Body()) != 1<<10 {
				b.Errorf("got %d with %d bytes, want 200 with 1024", resp.StatusCode(), len(resp.Body()))
				return
			}
		}
	})
}

// BenchmarkHandler1K measures the handler alone, without the network.
func BenchmarkHandler1K(b *testing.B) {
	s, err := New(Config{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	var req fasthttp.Request
	req.SetRequestURI("http://origin.test/bench/1k.bin")
	var ctx fasthttp.RequestCtx
	ctx.Init(&req, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}, nil)
	b.ReportAllocs()
	b.SetBytes(1 << 10)
	for b.Loop() {
		ctx.Response.Reset()
		s.handle(&ctx)
	}
	if ctx.Response.StatusCode() != 200 || len(ctx.Response.Body()) != 1<<10 {
		b.Fatalf("got %d with %d bytes, want 200 with 1024", ctx.Response.StatusCode(), len(ctx.Response.Body()))
	}
}

// BenchmarkDyn64K measures a generated /dyn body written to a discarding
// connection.
func BenchmarkDyn64K(b *testing.B) {
	s := startServer(b, Config{})
	hc := &fasthttp.HostClient{Addr: s.Addr(), ReadBufferSize: 8 << 10, MaxConnWaitTimeout: time.Second}
	b.Cleanup(hc.CloseIdleConnections)
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(s.URL() + "/dyn/bench?size=65536")
	b.ReportAllocs()
	b.SetBytes(64 << 10)
	for b.Loop() {
		if err := hc.Do(req, resp); err != nil {
			b.Fatal(err)
		}
	}
}

// Serving an embedded object is allocation-free once the path has been
// counted once: the bench harness measures the edge, not the origin's GC.
func TestServeStaticAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	s, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	for _, path := range []string{"/bench/1k.bin", "/css/site.css", "/"} {
		t.Run(path, func(t *testing.T) {
			var req fasthttp.Request
			req.SetRequestURI("http://origin.test" + path)
			var ctx fasthttp.RequestCtx
			ctx.Init(&req, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}, nil)
			s.handle(&ctx) // first request: generates the object, counts a new path
			allocs := testing.AllocsPerRun(100, func() {
				ctx.Response.Reset()
				s.handle(&ctx)
			})
			if allocs != 0 {
				t.Errorf("got %v allocations per request, want 0", allocs)
			}
		})
	}
}

// BenchmarkPatternText measures generating /dyn bodies.
func BenchmarkPatternText(b *testing.B) {
	buf := make([]byte, 64<<10)
	p := pattern{seed: seedOf("/dyn/x"), text: true}
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		p.ReadAt(buf, 0)
	}
}

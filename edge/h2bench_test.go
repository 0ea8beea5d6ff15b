package edge

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// browserHeaders are the request fields a current browser sends for a
// subresource: the translation copies each into the fasthttp request.
var browserHeaders = http.Header{
	"User-Agent":      {"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"},
	"Accept":          {"*/*"},
	"Accept-Encoding": {"gzip, deflate, br, zstd"},
	"Accept-Language": {"en-US,en;q=0.9"},
	"Referer":         {"https://bench.local/"},
	"Sec-Fetch-Mode":  {"no-cors"},
}

// discardWriter is a reusable http.ResponseWriter: the HTTP/2 server's own
// writer is what the end-to-end benchmark measures.
type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(code int)        { w.status = code }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) Flush()                      {}

// warmH2Translate fills /1k and returns the HTTP/2 front, a browser's
// request for it and a writer, ready to serve a hit.
func warmH2Translate(tb testing.TB) (*httpFront, *discardWriter, *http.Request) {
	o := newTestOrigin(tb, nil, static(string(make([]byte, 1024)), "Cache-Control: max-age=3600", "Content-Type: application/octet-stream", `ETag: "x"`))
	n := newTestNode(tb, o.srv.URL, nil, func(c *Config) { c.Cache.OffheapMinSize = 0 })
	f := n.newHTTPFront(protoH2, `h3=":443"; ma=86400`)
	req, err := http.NewRequest("GET", "https://bench.local/1k", nil)
	if err != nil {
		tb.Fatal(err)
	}
	req.Header, req.RequestURI, req.RemoteAddr, req.Proto = browserHeaders, "/1k", "127.0.0.1:40000", "HTTP/2.0"
	w := &discardWriter{h: http.Header{}}
	f.ServeHTTP(w, req) // miss
	waitFor(tb, "the fill", 5e9, func() bool { return n.pipe.flights.Len() == 0 })
	clear(w.h)
	f.ServeHTTP(w, req)
	if cs := w.h.Get("Cache-Status"); !contains(cs, "; hit") || w.status != 200 {
		tb.Fatalf("warm-up: status %d, Cache-Status %q; want a 200 hit", w.status, cs)
	}
	return f, w, req
}

// TestH2HitTranslateAllocs bounds what the HTTP/2 and HTTP/3 translator
// adds to an allocation-free hit: one string for the response's field
// values and one array of their slices (copyHeader), whatever the number
// of fields. It was 24 allocations for this response.
func TestH2HitTranslateAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race")
	}
	f, w, req := warmH2Translate(t)
	allocs := testing.AllocsPerRun(1000, func() {
		clear(w.h)
		f.ServeHTTP(w, req)
	})
	if allocs > 2 {
		t.Errorf("an HTTP/2 hit allocates %.1f times in the front, want at most 2", allocs)
	}
	if got, want := w.h.Get("Content-Length"), "1024"; got != want {
		t.Errorf("Content-Length %q, want %q", got, want)
	}
	if got, want := w.h.Get("Etag"), `"x"`; got != want {
		t.Errorf("ETag %q, want %q", got, want)
	}
	if got := w.h.Get("Alt-Svc"); got == "" {
		t.Errorf("no Alt-Svc")
	}
}

// BenchmarkH2Hit1KTranslate is a 1 KiB fresh hit through the HTTP/2
// front's translator (request in, response out) without the network: the
// per-request cost the front adds to the hit path.
func BenchmarkH2Hit1KTranslate(b *testing.B) {
	f, w, req := warmH2Translate(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		clear(w.h)
		f.ServeHTTP(w, req)
	}
}

// BenchmarkH2Hit1K is the same hit end to end: an HTTP/2 client over TLS
// on loopback, parallel streams on one connection per client goroutine
// group. It includes the client's own cost; compare runs, not with nginx.
func BenchmarkH2Hit1K(b *testing.B) {
	o := newTestOrigin(b, nil, static(string(make([]byte, 1024)), "Cache-Control: max-age=3600", "Content-Type: application/octet-stream", `ETag: "x"`))
	tn := newTLSTestNode(b, o.srv.URL, nil, func(c *Config) { c.Cache.OffheapMinSize = 0 })
	client := tn.clients[protoH2]
	do := func() error {
		req, err := http.NewRequestWithContext(context.Background(), "GET", tn.base+"/1k", nil)
		if err != nil {
			return err
		}
		req.Header = browserHeaders.Clone()
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return err
	}
	for range 2 { // miss, then the fill is done
		if err := do(); err != nil {
			b.Fatal(err)
		}
		waitFor(b, "the fill", 5e9, func() bool { return tn.pipe.flights.Len() == 0 })
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := do(); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkH2HitH2load serves b.N hits of 1 KiB and 1 MiB to h2load
// (nghttp2-client, -c 64 -m 10 as bench/wrk/h2-vs-nginx.sh), a separate
// process, so that -cpuprofile shows the node's side of the HTTP/2 hit
// path alone:
//
//	go test -run XXX -bench H2HitH2load/1k -cpu 1 -benchtime 200000x -cpuprofile h2.prof ./edge
//
// Its ns/op includes h2load's time when both share a core; compare runs.
func BenchmarkH2HitH2load(b *testing.B) {
	path, err := exec.LookPath("h2load")
	if err != nil {
		b.Skip("h2load not installed (apt-get install nghttp2-client)")
	}
	for _, size := range []struct {
		name string
		n    int
	}{{"1k", 1 << 10}, {"1m", 1 << 20}} {
		b.Run(size.name, func(b *testing.B) { h2loadHits(b, path, size.n) })
	}
}

func h2loadHits(b *testing.B, h2load string, size int) {
	o := newTestOrigin(b, nil, static(string(make([]byte, size)), "Cache-Control: max-age=3600", "Content-Type: application/octet-stream", `ETag: "x"`))
	tn := newTLSTestNode(b, o.srv.URL, nil, func(c *Config) { c.Cache.OffheapMinSize = 0 })
	url := "https://" + tn.TLSAddr() + "/obj"
	run := func(n int) string {
		out, err := exec.Command(h2load, "-n", strconv.Itoa(n), "-c", "64", "-m", "10", url).CombinedOutput()
		if err != nil {
			b.Fatalf("h2load: %v\n%s", err, out)
		}
		if !strings.Contains(string(out), " 0 failed") || !strings.Contains(string(out), " 0 errored") {
			b.Fatalf("h2load saw failures:\n%s", out)
		}
		return string(out)
	}
	run(64) // the miss, then hits
	waitFor(b, "the fill", 5e9, func() bool { return tn.pipe.flights.Len() == 0 })
	b.SetBytes(int64(size))
	b.ResetTimer()
	out := run(max(b.N, 64))
	b.StopTimer()
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "finished in") {
			b.Log(l)
		}
	}
}

// BenchmarkHitsH2VsH3 serves 1 KiB and 1 MiB hits over HTTP/2 and HTTP/3
// from one node to Go's HTTP/2 client and quic-go's HTTP/3 client (h2load
// from Debian speaks no HTTP/3), 64 requests in flight on one connection,
// as a browser multiplexes. The client runs in the same process and costs
// about as much CPU as the node, so the figures are this setup's, for
// comparing the protocols with each other in one run, not with nginx:
//
//	go test -run XXX -bench HitsH2VsH3 -benchtime 5s ./edge
func BenchmarkHitsH2VsH3(b *testing.B) {
	for _, size := range []struct {
		name string
		n    int
	}{{"1k", 1 << 10}, {"1m", 1 << 20}} {
		o := newTestOrigin(b, nil, static(string(make([]byte, size.n)), "Cache-Control: max-age=3600", "Content-Type: application/octet-stream"))
		tn := newTLSTestNode(b, o.srv.URL, nil, func(c *Config) { c.Cache.OffheapMinSize = 0 })
		for _, proto := range []string{protoH2, protoH3} {
			b.Run(size.name+"/"+proto, func(b *testing.B) { protoHits(b, tn, proto, size.n) })
		}
	}
}

// protoHits fetches /obj b.N times over proto, 64 at a time.
func protoHits(b *testing.B, tn *tlsNode, proto string, size int) {
	client := tn.clients[proto]
	get := func() error {
		resp, err := client.Get(tn.base + "/obj")
		if err != nil {
			return err
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil && (n != int64(size) || resp.StatusCode != 200) {
			err = fmt.Errorf("got %d with %d bytes, want 200 with %d", resp.StatusCode, n, size)
		}
		return err
	}
	for range 2 { // the miss, then a hit once the fill is done
		if err := get(); err != nil {
			b.Fatal(err)
		}
		waitFor(b, "the fill", 5e9, func() bool { return tn.pipe.flights.Len() == 0 })
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	b.SetBytes(int64(size))
	b.ResetTimer()
	start := time.Now()
	for range 64 {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				if err := get(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
}

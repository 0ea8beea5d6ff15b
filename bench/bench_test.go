package bench

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

func TestCacheHitDoesNotAllocate(t *testing.T) {
	v := []byte("shield; fwd=miss, edge; hit; ttl=30")
	if n := testing.AllocsPerRun(100, func() { cacheHit(v) }); n != 0 {
		t.Errorf("cacheHit allocates %.0f times per call, want 0", n)
	}
}

func TestKeepAliveOff(t *testing.T) {
	tests := []struct {
		name      string
		disable   bool
		wantConns func(conns, requests int64) bool
	}{
		{"keep-alive", false, func(c, r int64) bool { return c < r/2 }},
		{"one connection per request", true, func(c, r int64) bool { return c == r }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var conns atomic.Int64
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
			srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
				if s == http.StateNew {
					conns.Add(1)
				}
			}
			srv.Start()
			t.Cleanup(srv.Close)
			res, err := runner(t, Config{DisableKeepAlive: tc.disable}, srv.URL).Run(context.Background(), Steady(100, 300*time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			if got := conns.Load(); !tc.wantConns(got, res.Offered) || res.Errors != 0 {
				t.Errorf("%d connections for %d requests (%d errors)", got, res.Offered, res.Errors)
			}
		})
	}
}

func TestRunCLIHTTPS(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		extra []string
		code  int
	}{
		{"untrusted certificate", nil, ExitViolated},
		{"--cacert", []string{"--cacert", ca}, ExitOK},
		{"--insecure", []string{"--insecure"}, ExitOK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"steady", "--rate", "50", "--duration", "200ms", "--url", srv.URL, "--slo", "errors=0", "--quiet"}, tc.extra...)
			code, stdout, stderr := runCLI(t, args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d; %s %s", code, tc.code, stdout, stderr)
			}
		})
	}
}

// BenchmarkRequest measures one loopback request through a worker: the
// generator's own cost per request, which bounds the rate one core drives.
func BenchmarkRequest(b *testing.B) {
	s := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.Response.Header.Set("Cache-Status", "edge; hit")
		ctx.SetBodyString("hello")
	}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go s.Serve(ln) //nolint:errcheck // ends at Shutdown
	b.Cleanup(func() { s.Shutdown() })
	tg, _ := RoundRobin("http://" + ln.Addr().String() + "/x")
	r, err := New(Config{Targets: tg, TLS: &tls.Config{}})
	if err != nil {
		b.Fatal(err)
	}
	rn := r.newRun(Steady(1000, time.Minute))
	rn.start = time.Now()
	w := &worker{rn: rn, sh: rn.shards[0], req: fasthttp.AcquireRequest(), resp: fasthttp.AcquireResponse()}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		w.do(job{url: "http://" + ln.Addr().String() + "/x", at: time.Now()})
	}
}

func BenchmarkZipfPick(b *testing.B) {
	tg, err := Zipf("http://e/dyn/o%d?size=4096", 100000, 1)
	if err != nil {
		b.Fatal(err)
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		tg.Pick(uint64(i), rnd)
	}
}

func BenchmarkTimelineRecord(b *testing.B) {
	tl := newTimeline(time.Second, time.Minute, 60e6)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := int64(0)
		for pb.Next() {
			i++
			tl.record(time.Duration(i%50)*time.Second, time.Duration(i%50)*time.Second, i%5000+1, true, kNone, true)
		}
	})
}

package bench

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// server starts a loopback HTTP server stopped at cleanup.
func server(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func runner(t *testing.T, cfg Config, urls ...string) *Runner {
	t.Helper()
	if cfg.Targets == nil {
		tg, err := RoundRobin(urls...)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Targets = tg
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func within(got, want, tol float64) bool { return got >= want*(1-tol) && got <= want*(1+tol) }

func TestScheduleOffsets(t *testing.T) {
	tests := []struct {
		name string
		sc   Scenario
		want int // requests scheduled inside the window
	}{
		{"steady 500/s 2s", Steady(500, 2*time.Second), 1000},
		{"steady 3/s 1s", Steady(3, time.Second), 3},
		{"rush 0->100 over 2s", Rush(0, 100, 2*time.Second), 100},
		{"rush 100->0 over 2s", Rush(100, 0, 2*time.Second), 100},
		{"rush 50->250 over 2s", Rush(50, 250, 2*time.Second), 300},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := 0
			prev := time.Duration(-1)
			for i := uint64(0); i < 1e6; i++ {
				off := tc.sc.offset(i)
				if off >= tc.sc.Duration {
					break
				}
				if off < prev {
					t.Fatalf("offset(%d) = %v before offset(%d) = %v", i, off, i-1, prev)
				}
				prev = off
				n++
			}
			// ±1 for the request that lands exactly on the window's end.
			if n < tc.want-1 || n > tc.want+1 {
				t.Errorf("scheduled %d requests, want %d", n, tc.want)
			}
		})
	}
}

func TestSteadyAchievesOfferedRate(t *testing.T) {
	srv := server(t, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	res, err := runner(t, Config{}, srv.URL).Run(context.Background(), Steady(500, 2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if res.Offered != 1000 {
		t.Errorf("offered %d, want 1000", res.Offered)
	}
	if !within(res.AchievedRate, 500, 0.05) {
		t.Errorf("achieved %.1f req/s, want 500 ±5%%", res.AchievedRate)
	}
	if res.Errors != 0 || res.OK != res.Offered {
		t.Errorf("errors %d ok %d (%v), want 0 errors and %d ok", res.Errors, res.OK, res.ErrorKinds, res.Offered)
	}
	if len(res.Timeline) < 2 {
		t.Fatalf("timeline has %d buckets, want >= 2", len(res.Timeline))
	}
	for i, b := range res.Timeline[:2] {
		if !within(b.OfferedRate, 500, 0.02) {
			t.Errorf("bucket %d offered %.0f/s, want 500", i, b.OfferedRate)
		}
	}
}

func TestLatencyOfSlowServer(t *testing.T) {
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(50 * time.Millisecond)
		w.Write([]byte("ok"))
	})
	res, err := runner(t, Config{}, srv.URL).Run(context.Background(), Steady(100, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if p50 := res.Latency.P50; p50 < 50*time.Millisecond || p50 > 60*time.Millisecond {
		t.Errorf("p50 %v, want 50ms..60ms", p50)
	}
	if res.Latency.Min < 50*time.Millisecond {
		t.Errorf("min %v below the server's 50ms", res.Latency.Min)
	}
}

// stallServer answers at once except during a one-second window starting
// 500 ms after its first request, during which every request is held until
// the window ends: a GC pause or a blocked event loop.
type stallServer struct {
	once  sync.Once
	start time.Time
}

func (s *stallServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	s.once.Do(func() { s.start = now })
	from, to := s.start.Add(500*time.Millisecond), s.start.Add(1500*time.Millisecond)
	if now.After(from) && now.Before(to) {
		select {
		case <-time.After(to.Sub(now)):
		case <-r.Context().Done():
			return
		}
	}
	w.Write([]byte("ok"))
}

func TestStallRaisesHighPercentiles(t *testing.T) {
	const stall = time.Second
	open := server(t, (&stallServer{}).ServeHTTP)
	res, err := runner(t, Config{}, open.URL).Run(context.Background(), Steady(200, 2500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	// A third of the requests were scheduled during the stall, waiting
	// between 1 s and 0 s: p99 sits near the full second.
	if p99 := res.Latency.P99; p99 < 900*time.Millisecond {
		t.Errorf("open loop p99 %v, want >= 900ms", p99)
	}
	if p50 := res.Latency.P50; p50 > 100*time.Millisecond {
		t.Errorf("open loop p50 %v, want the fast majority below 100ms", p50)
	}
	if res.Latency.Max < stall-50*time.Millisecond {
		t.Errorf("max %v, want about %v", res.Latency.Max, stall)
	}
	// The requests scheduled in the stall's first second carry it.
	if b := res.Timeline[0]; b.P99 < 400*time.Millisecond {
		t.Errorf("bucket 0 p99 %v, want the stall visible (>= 400ms)", b.P99)
	}

	// A closed loop on one connection waits out the stall with a single
	// request and so reports a p99 that hides it.
	closed := server(t, (&stallServer{}).ServeHTTP)
	cres, err := runner(t, Config{}, closed.URL).Run(context.Background(), MaxThroughput(1, 2500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if cres.Latency.Max < stall-50*time.Millisecond {
		t.Errorf("closed loop max %v, want the one stalled request (~%v)", cres.Latency.Max, stall)
	}
	if p99 := cres.Latency.P99; p99 >= 900*time.Millisecond {
		t.Errorf("closed loop p99 %v, want < 900ms (coordinated omission hides the stall)", p99)
	}
}

func TestOverloadIsCountedNotDelayed(t *testing.T) {
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(200 * time.Millisecond)
	})
	res, err := runner(t, Config{MaxInFlight: 2}, srv.URL).Run(context.Background(), Steady(50, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	over := res.ErrorKinds[KindOverload]
	// Two slots of 200 ms serve at most ~10 of the 50 requests.
	if over < 30 {
		t.Errorf("client-overload %d, want >= 30 of %d", over, res.Offered)
	}
	if res.Sent+over != res.Offered {
		t.Errorf("sent %d + overload %d != offered %d", res.Sent, over, res.Offered)
	}
	// A request that waited for a slot would take at least two service
	// times (400 ms); one that was sent at once takes one (200 ms).
	if res.Latency.Max >= 400*time.Millisecond {
		t.Errorf("max latency %v: sent requests were delayed instead of dropped", res.Latency.Max)
	}
}

func TestErrorKinds(t *testing.T) {
	closedAddr := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		return "http://" + addr + "/"
	}
	tests := []struct {
		name string
		h    http.HandlerFunc
		url  string
		want string
	}{
		{"503", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) }, "", KindStatus5xx},
		{"404", http.NotFound, "", KindStatus4xx},
		{"timeout", func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-time.After(2 * time.Second):
			case <-r.Context().Done():
			}
		}, "", KindTimeout},
		{"reset", func(w http.ResponseWriter, r *http.Request) {
			c, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				c.(*net.TCPConn).SetLinger(0) // RST instead of FIN
				c.Close()
			}
		}, "", KindReset},
		{"connect refused", nil, closedAddr(), KindConnect},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			url := tc.url
			if tc.h != nil {
				url = server(t, tc.h).URL
			}
			res, err := runner(t, Config{Timeout: 200 * time.Millisecond}, url).Run(context.Background(), Steady(20, 250*time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			if got := res.ErrorKinds[tc.want]; got != res.Offered || got == 0 {
				t.Errorf("%s errors %d of %d offered (all kinds %v), want all", tc.want, got, res.Offered, res.ErrorKinds)
			}
			if res.Errors != res.Offered {
				t.Errorf("errors %d, want %d", res.Errors, res.Offered)
			}
		})
	}
}

func TestRushTimelineShowsRamp(t *testing.T) {
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {})
	res, err := runner(t, Config{}, srv.URL).Run(context.Background(), Rush(50, 250, 2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Timeline) < 2 {
		t.Fatalf("timeline has %d buckets, want >= 2", len(res.Timeline))
	}
	// The rate is 50 + 100·t: the mean over [0,1) is 100, over [1,2) 200.
	for i, want := range []float64{100, 200} {
		if got := res.Timeline[i].OfferedRate; !within(got, want, 0.03) {
			t.Errorf("bucket %d offered %.1f/s, want %.0f ±3%%", i, got, want)
		}
		// Achieved counts completions, which a scheduling hiccup of the
		// (shared) test machine shifts across the bucket boundary: looser.
		if got := res.Timeline[i].AchievedRate; !within(got, want, 0.2) {
			t.Errorf("bucket %d achieved %.1f/s, want %.0f ±20%%", i, got, want)
		}
	}
	if res.Offered != 300 {
		t.Errorf("offered %d, want 300", res.Offered)
	}
}

func TestHitRatioAndBytes(t *testing.T) {
	body := strings.Repeat("x", 1000)
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/hit":
			w.Header().Set("Cache-Status", "origin-shield; fwd=miss, edge; hit; ttl=30")
		case "/miss":
			w.Header().Set("Cache-Status", "edge; fwd=uri-miss; stored")
		}
		w.Write([]byte(body))
	})
	tg, err := RoundRobin(srv.URL+"/hit", srv.URL+"/miss", srv.URL+"/hit", srv.URL+"/none")
	if err != nil {
		t.Fatal(err)
	}
	res, err := runner(t, Config{Targets: tg, Header: http.Header{"X-Bench": {"1"}}}).Run(context.Background(), Steady(200, 500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if res.Offered != 100 {
		t.Fatalf("offered %d, want 100", res.Offered)
	}
	if res.CacheStatusResponses != 75 || res.Hits != 50 {
		t.Errorf("cache-status responses %d hits %d, want 75 and 50", res.CacheStatusResponses, res.Hits)
	}
	if !within(res.HitRatio, 2.0/3, 0.001) {
		t.Errorf("hit ratio %.3f, want 0.667", res.HitRatio)
	}
	if res.BytesIn < 100*1000 || res.BytesOut < 100*20 {
		t.Errorf("bytes in %d out %d, want >= 100000 and >= 2000", res.BytesIn, res.BytesOut)
	}
}

func TestCacheHit(t *testing.T) {
	tests := []struct {
		v    string
		want bool
	}{
		{"edge; hit", true},
		{"edge;hit;ttl=10", true},
		{"edge; hit=?1", true},
		{"edge; fwd=miss", false},
		{"edge", false},
		{"", false},
		{"edge; hit, shield; fwd=miss", false}, // the last member is the one closest to the client
		{"shield; fwd=miss, edge; hit", true},
		{"edge; fwd=stale; hitch", false},
	}
	for _, tc := range tests {
		if got := cacheHit([]byte(tc.v)); got != tc.want {
			t.Errorf("cacheHit(%q) = %v, want %v", tc.v, got, tc.want)
		}
	}
}

func TestRunStopsWithContext(t *testing.T) {
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {})
	ctx, cancel := context.WithCancel(context.Background())
	var calls int
	cfg := Config{Progress: func(Progress) { calls++; cancel() }}
	res, err := runner(t, cfg, srv.URL).Run(ctx, Steady(100, time.Minute))
	if err == nil {
		t.Fatal("err nil, want context.Canceled")
	}
	if res == nil || res.Offered == 0 || res.Offered > 300 {
		t.Errorf("partial result offered %v, want about one second's worth", res)
	}
	if calls != 1 {
		t.Errorf("progress called %d times, want 1", calls)
	}
}

func TestConfigValidation(t *testing.T) {
	tg, _ := RoundRobin("http://127.0.0.1:1/")
	if _, err := New(Config{}); err == nil {
		t.Error("New without targets: err nil")
	}
	r, err := New(Config{Targets: tg})
	if err != nil {
		t.Fatal(err)
	}
	for _, sc := range []Scenario{{Duration: time.Second}, Steady(10, 0), Rush(-1, 5, time.Second), {Connections: -1, Duration: 1}} {
		if _, err := r.Run(context.Background(), sc); err == nil {
			t.Errorf("Run(%+v): err nil, want a validation error", sc)
		}
	}
}

func FuzzCacheHit(f *testing.F) {
	for _, s := range []string{"edge; hit", "a; fwd=miss, b; hit=?1; ttl=5", ";", ",", ";;hit", " , ; ", "edge;hit,"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		got := cacheHit(v)
		// Whatever precedes the last comma cannot make it a hit.
		if i := strings.LastIndexByte(string(v), ','); i >= 0 && got != cacheHit(v[i:]) {
			t.Fatalf("cacheHit(%q) = %v depends on earlier list members", v, got)
		}
	})
}

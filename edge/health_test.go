package edge

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fastChecks makes the origin health check quick enough for tests.
func fastChecks(path string) func(*Config) {
	return func(c *Config) {
		c.Origin.HealthCheck = HealthCheckConfig{
			Interval: Duration(50 * time.Millisecond), Timeout: Duration(50 * time.Millisecond),
			Path: path, Fall: 2, Rise: 2,
		}
	}
}

// TestOriginDownAnswersAtOnce: once the origin fails its health checks,
// requests are not sent to it: a stale copy is served (a hit, RFC 9211, no
// fwd-status: nothing was forwarded), a miss or an unsafe request gets 502
// naming the cause. Passing checks bring it back without any client request.
func TestOriginDownAnswersAtOnce(t *testing.T) {
	var sick atomic.Bool
	clk := newTestClock()
	o := newTestOrigin(t, clk, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			if sick.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
			return
		}
		w.Header().Set("Cache-Control", "max-age=10")
		io.WriteString(w, "body of "+r.URL.Path)
	})
	n := newTestNode(t, o.srv.URL, clk, fastChecks("/health"))
	base := "http://" + n.Addr()
	warm(t, n, base+"/a")

	sick.Store(true)
	waitFor(t, "the origin to be marked down", 10*time.Second, func() bool { return !n.Stats().OriginUp })
	clk.advance(20 * time.Second) // /a is now stale; max_stale_on_error allows it

	r, b := get(t, base+"/a")
	if r.StatusCode != 200 || b != "body of /a" {
		t.Fatalf("stale copy while down: %d %q", r.StatusCode, b)
	}
	if cs := csOf(r); !strings.Contains(cs, "; hit") || strings.Contains(cs, "fwd") || !strings.Contains(cs, "origin down") {
		t.Errorf("stale while down: Cache-Status %q, want a hit with detail origin down and no fwd", cs)
	}
	for _, tc := range []struct{ method, path string }{{"GET", "/b"}, {"HEAD", "/b"}, {"POST", "/c"}} {
		r, _ := do(t, tc.method, base+tc.path)
		if r.StatusCode != http.StatusBadGateway || !strings.Contains(csOf(r), "origin down") {
			t.Errorf("%s %s while down: %d %q, want 502 naming origin down", tc.method, tc.path, r.StatusCode, csOf(r))
		}
	}
	for _, p := range []string{"/a", "/b", "/c"} {
		if got := o.count(p); got > 1 {
			t.Errorf("origin saw %d requests for %s; want at most the warm-up one (nothing sent while down)", got, p)
		}
	}
	if s := n.Stats(); s.OriginShortCircuited < 3 || s.OriginDowns != 1 || s.OriginCheckFailures < 2 {
		t.Errorf("stats while down: short-circuited %d, downs %d, check failures %d", s.OriginShortCircuited, s.OriginDowns, s.OriginCheckFailures)
	}
	if r, b := get(t, "http://"+n.AdminAddr()+"/readyz"); r.StatusCode != 200 || !strings.Contains(b, "serving stale") {
		t.Errorf("readiness while down with content cached: %d %s, want ready, serving stale", r.StatusCode, b)
	}

	sick.Store(false)
	waitFor(t, "passing checks to bring the origin back", 10*time.Second, func() bool { return n.Stats().OriginUp })
	if r, b := get(t, base+"/b"); r.StatusCode != 200 || b != "body of /b" {
		t.Errorf("after recovery: %d %q, want the origin's answer", r.StatusCode, b)
	}
}

// TestReadinessFollowsOriginWithoutTraffic: a node with nothing cached
// whose origin goes away turns unready (geo-DNS sends users elsewhere),
// and turns ready again when the origin returns, although no client
// request arrives in between (with passive checks only, it would stay
// unready forever: no traffic, no success).
func TestReadinessFollowsOriginWithoutTraffic(t *testing.T) {
	h := static("x", "Cache-Control: max-age=60")
	o := newTestOrigin(t, nil, h)
	addr := o.srv.Listener.Addr().String()
	n := newTestNode(t, o.srv.URL, nil, fastChecks(""))
	readyz := "http://" + n.AdminAddr() + "/readyz"
	if r, b := get(t, readyz); r.StatusCode != 200 {
		t.Fatalf("origin up: %d %s, want ready", r.StatusCode, b)
	}
	o.srv.Close()
	waitFor(t, "readiness to fail with the origin gone", 10*time.Second, func() bool {
		r, b := get(t, readyz)
		return r.StatusCode == 503 && strings.Contains(b, "nothing cached") && strings.Contains(b, "refused")
	})
	checks := n.Stats().OriginChecks
	restartOrigin(t, addr, h)
	waitFor(t, "readiness to return with the origin", 10*time.Second, func() bool {
		r, _ := get(t, readyz)
		return r.StatusCode == 200
	})
	s := n.Stats()
	if s.Requests != 0 || s.OriginChecks <= checks {
		t.Errorf("recovered with %d client requests and %d checks (%d before the restart); want 0 requests, more checks", s.Requests, s.OriginChecks, checks)
	}
}

// TestBrokenURLNeverTakesSiteDown (issue 9): with the default health
// settings, an origin where every request to /broken/ resets the
// connection and everything else answers must keep being asked for the
// other URLs. Before, three resets in a row marked the whole origin down
// and every miss of the site got a self-made "502 origin down".
func TestBrokenURLNeverTakesSiteDown(t *testing.T) {
	o := newTestOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/broken/") {
			c, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				c.(*net.TCPConn).SetLinger(0) // RST, before any byte
				c.Close()
			}
			return
		}
		w.Header().Set("Cache-Control", "no-store") // every request goes to the origin
		io.WriteString(w, "ok "+r.URL.Path)
	})
	n := newTestNode(t, o.srv.URL, nil, nil) // default origin.health_check
	base := "http://" + n.Addr()
	const total, workers = 1000, 8
	var healthy, selfMade, brokenOK, other atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < total; i += workers {
				path := fmt.Sprintf("/page/%d", i)
				if i%2 == 0 {
					path = fmt.Sprintf("/broken/%d", i)
				}
				resp, err := testHTTP.Get(base + path)
				if err != nil {
					other.Add(1)
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				cs := resp.Header.Get("Cache-Status")
				switch {
				case strings.HasPrefix(path, "/page/") && resp.StatusCode == 200 && string(body) == "ok "+path:
					healthy.Add(1)
				case strings.HasPrefix(path, "/page/"):
					selfMade.Add(1)
					t.Logf("%s: %d %q", path, resp.StatusCode, cs)
				case resp.StatusCode == 502 && strings.Contains(cs, "reset") && !strings.Contains(cs, "origin down"):
					brokenOK.Add(1)
				default:
					other.Add(1)
					t.Logf("%s: %d %q", path, resp.StatusCode, cs)
				}
			}
		}()
	}
	wg.Wait()
	if selfMade.Load() != 0 || healthy.Load() != total/2 {
		t.Errorf("healthy URLs: %d answered by the origin, %d errors made by the node; want %d and 0", healthy.Load(), selfMade.Load(), total/2)
	}
	if brokenOK.Load() != total/2 || other.Load() != 0 {
		t.Errorf("broken URLs: %d answered 502 naming the reset, %d otherwise; want %d and 0", brokenOK.Load(), other.Load(), total/2)
	}
	// Whether a failure started an early check depends on how fast the run
	// went (one per interval/4); origin's TestHealthRequestsNeverMarkDown
	// checks that part in virtual time.
	if s := n.Stats(); !s.OriginUp || s.OriginDowns != 0 || s.OriginShortCircuited != 0 {
		t.Errorf("health after the run: up=%v downs=%d short-circuited=%d; want up, 0, 0",
			s.OriginUp, s.OriginDowns, s.OriginShortCircuited)
	}
}

// TestOriginStopsAndReturns: an origin that really goes away is marked
// down within fall × interval (failing requests make checks start early),
// stale copies are served meanwhile, and it is back within rise × interval
// once it returns. The bounds carry a second of slack for a loaded machine.
func TestOriginStopsAndReturns(t *testing.T) {
	const interval, fall, rise = 200 * time.Millisecond, 3, 2
	clk := newTestClock()
	h := static("body", "Cache-Control: max-age=10")
	o := newTestOrigin(t, clk, h)
	addr := o.srv.Listener.Addr().String()
	n := newTestNode(t, o.srv.URL, clk, func(c *Config) {
		c.Origin.HealthCheck = HealthCheckConfig{Interval: Duration(interval), Timeout: Duration(interval), Fall: fall, Rise: rise}
	})
	base := "http://" + n.Addr()
	warm(t, n, base+"/a")
	clk.advance(time.Minute) // stale; max_stale_on_error (1h) allows it on error

	o.srv.Close()
	stopped := time.Now()
	get(t, base+"/b") // a failed miss: asks for a check at once
	waitFor(t, "the origin to be marked down", 10*time.Second, func() bool { return !n.Stats().OriginUp })
	if took := time.Since(stopped); took > fall*interval+time.Second {
		t.Errorf("marked down %v after the origin stopped; want within fall × interval = %v (+1 s slack)", took, fall*interval)
	}
	r, b := get(t, base+"/a")
	if r.StatusCode != 200 || b != "body" || !strings.Contains(csOf(r), "origin down") {
		t.Errorf("stale while down: %d %q %q, want 200 body served stale, origin down", r.StatusCode, b, csOf(r))
	}

	restartOrigin(t, addr, h)
	back := time.Now()
	waitFor(t, "the origin to be back", 10*time.Second, func() bool { return n.Stats().OriginUp })
	if took := time.Since(back); took > rise*interval+time.Second {
		t.Errorf("back %v after the origin returned; want within rise × interval = %v (+1 s slack)", took, rise*interval)
	}
	if r, _ := get(t, base+"/c"); r.StatusCode != 200 {
		t.Errorf("after recovery: %d, want 200", r.StatusCode)
	}
}

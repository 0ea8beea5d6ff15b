package origin

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/edgeshield/edgeshield/internal/testnet"
	"github.com/valyala/fasthttp"
)

func TestCheckConnectOnly(t *testing.T) {
	checkNoLeaks(t)
	var reqs atomic.Int64
	srv := startRawServer(t, func(c net.Conn, i int) {
		readRequest(bufio.NewReader(c), &reqs)
	})
	c := newTestClient(t, ClientConfig{URL: srv.url()})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Check(ctx, "", ""); err != nil {
		t.Fatalf("connect check of a listening upstream: %v", err)
	}
	if reqs.Load() != 0 {
		t.Errorf("a connect-only check sent %d requests, want 0", reqs.Load())
	}

	refused := newTestClient(t, ClientConfig{URL: "http://" + testnet.RefusedAddr(t)})
	if err := refused.Check(ctx, "", ""); !errors.Is(err, ErrRefused) {
		t.Errorf("connect check of a refusing address: %v, want ErrRefused", err)
	}
}

func TestCheckHTTP(t *testing.T) {
	checkNoLeaks(t)
	var status atomic.Int64
	status.Store(200)
	var mu sync.Mutex
	var seen []string
	url, _ := startFastServer(t, func(ctx *fasthttp.RequestCtx) {
		mu.Lock()
		seen = append(seen, fmt.Sprintf("%s %s host=%s close=%v ua=%s", ctx.Method(), ctx.RequestURI(), ctx.Host(), ctx.Request.Header.ConnectionClose(), ctx.UserAgent()))
		mu.Unlock()
		ctx.SetStatusCode(int(status.Load()))
	})
	c := newTestClient(t, ClientConfig{URL: url, Name: "edgeshield"})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, tt := range []struct {
		status int
		ok     bool
	}{{200, true}, {204, true}, {301, true}, {399, true}, {404, false}, {500, false}, {503, false}, {199, false}} {
		status.Store(int64(tt.status))
		err := c.Check(ctx, "/healthz", "www.example")
		if (err == nil) != tt.ok {
			t.Errorf("status %d: Check = %v, want ok=%v", tt.status, err, tt.ok)
		}
		if !tt.ok && !errors.Is(err, ErrUnhealthy) {
			t.Errorf("status %d: %v, want ErrUnhealthy", tt.status, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if want := "GET /healthz host=www.example close=true ua=edgeshield health-check"; len(seen) == 0 || seen[0] != want {
		t.Errorf("first check request %q, want %q", seen, want)
	}
	// Checks never use the pool: nothing is kept open.
	if n := c.Conns(); n != 0 {
		t.Errorf("pool holds %d connections after checks, want 0", n)
	}
}

func TestCheckStalledUpstreamTimesOut(t *testing.T) {
	checkNoLeaks(t)
	release := make(chan struct{})
	srv := startRawServer(t, func(c net.Conn, i int) {
		readRequest(bufio.NewReader(c), nil)
		<-release // never answers until the test ends
	})
	defer close(release)
	c := newTestClient(t, ClientConfig{URL: srv.url()})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := c.Check(ctx, "/", ""); !errors.Is(err, ErrTimeout) {
		t.Errorf("check of a stalled upstream: %v, want ErrTimeout", err)
	}
}

func TestCheckHTTPSVerifiesCertificate(t *testing.T) {
	checkNoLeaks(t)
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer ts.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	untrusted := newTestClient(t, ClientConfig{URL: ts.URL})
	if err := untrusted.Check(ctx, "", ""); !errors.Is(err, ErrRefused) {
		t.Errorf("TLS check with an untrusted certificate: %v, want ErrRefused", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ts.Certificate())
	trusted := newTestClient(t, ClientConfig{URL: ts.URL, TLS: &tls.Config{RootCAs: pool}})
	if err := trusted.Check(ctx, "/ok", ""); err != nil {
		t.Errorf("HTTPS check: %v", err)
	}
}

// fakeCheck is a Check whose result the test sets; it counts calls.
type fakeCheck struct {
	err   atomic.Pointer[error]
	calls atomic.Int64
}

func (f *fakeCheck) set(err error) { f.err.Store(&err) }
func (f *fakeCheck) check(context.Context) error {
	f.calls.Add(1)
	if p := f.err.Load(); p != nil {
		return *p
	}
	return nil
}

func TestHealthRiseFall(t *testing.T) {
	checkNoLeaks(t)
	var fc fakeCheck
	var mu sync.Mutex
	var changes []bool
	h, err := NewHealth(HealthConfig{
		Interval: 5 * time.Millisecond, Rise: 3, Fall: 2, Check: fc.check,
		OnChange: func(up bool, _ error) { mu.Lock(); changes = append(changes, up); mu.Unlock() },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if !h.Up() || h.Open() {
		t.Fatalf("a new Health: up=%v open=%v, want up and closed", h.Up(), h.Open())
	}
	fc.set(fmt.Errorf("%w: refused", ErrRefused))
	eventually(t, "two failed checks to mark it down", func() bool { return !h.Up() })
	if !h.Open() {
		t.Errorf("down with active checks: Open() = false, want true")
	}
	st := h.State()
	if st.ConsecutiveFailures < 2 || st.LastError == "" || st.Downs != 1 || st.CheckFailures < 2 {
		t.Errorf("state when down: %+v", st)
	}
	if st.LastCheck.IsZero() || time.Since(st.LastCheck) > time.Minute {
		t.Errorf("LastCheck %v after checks ran, want a recent time", st.LastCheck)
	}
	fc.set(nil)
	before := fc.calls.Load()
	eventually(t, "three passing checks to bring it back", func() bool { return h.Up() })
	if got := fc.calls.Load() - before; got < 3 {
		t.Errorf("came back after %d checks, want at least Rise=3", got)
	}
	mu.Lock()
	if len(changes) != 2 || changes[0] || !changes[1] {
		t.Errorf("transitions %v, want [down up]", changes)
	}
	mu.Unlock()
}

// TestHealthPassiveOnly: with active checks off nothing could tell that a
// down upstream is back, so the circuit never opens and real requests
// decide the state (for readiness): Fall consecutive transport failures
// mark it down, any answer brings it back. Failures that are not the
// upstream's, or not of its transport, never count.
func TestHealthPassiveOnly(t *testing.T) {
	h, err := NewHealth(HealthConfig{Fall: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	refused := fmt.Errorf("%w: x", ErrRefused)
	for _, e := range []error{ErrBusy, ErrInvalidRequest, ErrDown, context.Canceled, ErrBadResponse, ErrBusy, ErrBadResponse} {
		h.Observe(e)
	}
	h.Observe(refused)
	h.Observe(refused)
	h.Observe(nil) // a success resets the count
	h.Observe(refused)
	h.Observe(fmt.Errorf("%w: y", ErrReset))
	if !h.Up() {
		t.Fatalf("down after 2 consecutive failures, want Fall=3")
	}
	h.Observe(fmt.Errorf("%w: y", ErrTimeout))
	if h.Up() {
		t.Fatalf("up after 3 consecutive transport failures")
	}
	if h.Open() {
		t.Errorf("Open() without active checks, want false")
	}
	h.Observe(nil)
	if !h.Up() {
		t.Errorf("a real success did not bring it back")
	}
}

// TestHealthRequestsNeverMarkDown: with active checks, real requests never
// change the state, however many fail: a URL that resets every connection
// (a broken handler) must not take the whole origin down while its checks
// pass. Each failure only asks for an early check, at most one per
// Interval/4. Virtual time (synctest): no sleeps guessed.
func TestHealthRequestsNeverMarkDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var fc fakeCheck
		h, err := NewHealth(HealthConfig{Interval: 2 * time.Second, Timeout: time.Second, Fall: 2, Rise: 2, Check: fc.check})
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		synctest.Wait() // the first check, at once
		reset := fmt.Errorf("%w: connection reset by peer", ErrReset)
		for i := 0; i < 1000; i++ { // 10 s of a failing request every 10 ms
			h.Observe(reset)
			h.Observe(fmt.Errorf("%w: header timeout", ErrTimeout))
			time.Sleep(10 * time.Millisecond)
			synctest.Wait()
			if !h.Up() || h.Open() {
				t.Fatalf("after %d failed requests with passing checks: up=%v open=%v, want up", 2*(i+1), h.Up(), h.Open())
			}
		}
		st := h.State()
		// 10 s: 1 + 5 ticks, plus early checks no closer than 500 ms.
		if st.Kicked == 0 || st.Checks > 1+5+20 || st.ConsecutiveFailures != 0 || st.Downs != 0 {
			t.Errorf("state after 2000 failed requests: %+v; want some early checks, at most 26 in all, no failure, no down", st)
		}
	})
}

// TestHealthFailedRequestChecksAtOnce: when the upstream really goes away,
// a failed request starts a check at once instead of waiting for the
// ticker, so it is marked down in Fall quick checks rather than Fall
// intervals; and only Rise passing checks bring it back.
func TestHealthFailedRequestChecksAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var fc fakeCheck
		var downAt time.Time
		h, err := NewHealth(HealthConfig{Interval: 10 * time.Second, Timeout: time.Second, Fall: 2, Rise: 2, Check: fc.check,
			OnChange: func(up bool, _ error) {
				if !up {
					downAt = time.Now()
				}
			}})
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		synctest.Wait()
		start := time.Now()
		refused := fmt.Errorf("%w: connection refused", ErrRefused)
		fc.set(refused)
		// Requests fail every 100 ms; each may kick a check once 2.5 s
		// have passed since the last.
		for i := 0; i < 100 && h.Up(); i++ {
			time.Sleep(100 * time.Millisecond)
			h.Observe(refused)
			synctest.Wait()
		}
		if h.Up() || !h.Open() {
			t.Fatalf("up=%v open=%v after 10 s of failed checks, want down and open", h.Up(), h.Open())
		}
		if took := downAt.Sub(start); took > 6*time.Second {
			t.Errorf("marked down after %v; want about 2 × Interval/4 = 5 s (the ticker alone: 20 s)", took)
		}
		// A request cannot bring it back (none is sent while open; one in
		// flight that got an answer proves nothing about the next check).
		h.Observe(nil)
		if h.Up() {
			t.Fatalf("a real request's success brought it back; only Rise checks may")
		}
		fc.set(nil)
		time.Sleep(10*time.Second + time.Millisecond)
		synctest.Wait()
		if h.Up() {
			t.Fatalf("up after 1 passing check, want Rise=2")
		}
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if !h.Up() {
			t.Fatalf("still down after 2 passing checks")
		}
	})
}

func TestHealthCloseCutsACheckShort(t *testing.T) {
	checkNoLeaks(t)
	started := make(chan struct{}, 1)
	h, err := NewHealth(HealthConfig{Interval: time.Hour, Timeout: time.Hour, Check: func(ctx context.Context) error {
		started <- struct{}{}
		<-ctx.Done()
		return ctx.Err()
	}})
	if err != nil {
		t.Fatal(err)
	}
	<-started
	done := make(chan struct{})
	go func() { h.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return while a check was running")
	}
	if st := h.State(); st.Checks != 0 || !st.Up {
		t.Errorf("a check cut short by Close was counted: %+v", st)
	}
}

func TestNewHealthValidates(t *testing.T) {
	for _, cfg := range []HealthConfig{
		{Interval: -1},
		{Fall: -1},
		{Interval: time.Second}, // no Check
	} {
		if h, err := NewHealth(cfg); err == nil {
			h.Close()
			t.Errorf("NewHealth(%+v) accepted", cfg)
		}
	}
}

package edge

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testClock is an injected clock: freshness tests advance it instead of
// sleeping.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newTestClock() *testClock { return &testClock{t: time.Now().Truncate(time.Second)} }

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// testOrigin is a real HTTP origin on loopback (net/http, a different
// implementation from the node's, which keeps both honest) that counts the
// requests it receives per path.
type testOrigin struct {
	srv     *httptest.Server
	clock   *testClock
	mu      sync.Mutex // guards handler and counts
	handler http.HandlerFunc
	counts  map[string]int
	total   atomic.Int64
}

func newTestOrigin(t testing.TB, clock *testClock, h http.HandlerFunc) *testOrigin {
	t.Helper()
	return newTestOriginOn(t, nil, clock, h)
}

// restartOrigin starts a test origin on addr, the address of one the test
// stopped, so that a node configured with it finds it back.
func restartOrigin(t testing.TB, addr string, h http.HandlerFunc) *testOrigin {
	t.Helper()
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ { // the old socket may linger briefly
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("restart origin on %s: %v", addr, err)
	}
	return newTestOriginOn(t, ln, nil, h)
}

// newTestOriginOn starts a test origin on ln (nil: a new loopback port).
func newTestOriginOn(t testing.TB, ln net.Listener, clock *testClock, h http.HandlerFunc) *testOrigin {
	t.Helper()
	o := &testOrigin{clock: clock, handler: h, counts: map[string]int{}}
	o.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.mu.Lock()
		o.counts[r.URL.Path]++
		h := o.handler
		o.mu.Unlock()
		o.total.Add(1)
		if clock != nil {
			w.Header().Set("Date", clock.now().UTC().Format(http.TimeFormat))
		}
		h(w, r)
	}))
	if ln != nil {
		o.srv.Listener.Close()
		o.srv.Listener = ln
	}
	o.srv.Start()
	t.Cleanup(o.srv.Close)
	return o
}

func (o *testOrigin) count(path string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.counts[path]
}

func (o *testOrigin) set(h http.HandlerFunc) {
	o.mu.Lock()
	o.handler = h
	o.mu.Unlock()
}

// offheapMin, when >= 0, overrides cache.offheap_min_size in every test
// node. `make test` runs this package a second time with 1, so that every
// behaviour here is also proven with all bodies in memory files (the
// default keeps the small test bodies on the heap).
var offheapMin = flag.Int("edge.offheap-min", -1, "cache.offheap_min_size for test nodes (-1: the default)")

// newTestNode starts a node on loopback ports in front of originURL and
// stops it when the test ends.
func newTestNode(t testing.TB, originURL string, clock *testClock, mutate func(*Config)) *Node {
	t.Helper()
	n := startTestNode(t, originURL, clock, mutate)
	t.Cleanup(func() {
		// fasthttp counts a keep-alive connection idle (closable by
		// Shutdown) only 5 s after its last request; close ours first,
		// the cluster tests' client's too (under load, waiting those 5 s
		// and more made a shutdown miss its deadline).
		testHTTP.CloseIdleConnections()
		crowdHTTP.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return n
}

// startTestNode is newTestNode for a test that shuts the node down itself.
func startTestNode(t testing.TB, originURL string, clock *testClock, mutate func(*Config)) *Node {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Name = "edge-test"
	cfg.Listen = "127.0.0.1:0"
	cfg.Admin.Listen = "127.0.0.1:0"
	cfg.Origin.URL = originURL
	cfg.Origin.HeaderTimeout = 5 * time.Second
	cfg.Cache.MaxBytes = 64 << 20
	cfg.Cache.MaxObjectSize = 8 << 20
	if *offheapMin >= 0 {
		cfg.Cache.OffheapMinSize = Size(*offheapMin)
	}
	if mutate != nil {
		mutate(&cfg)
	}
	opts := Options{Logger: testLogger(t)}
	if clock != nil {
		opts.Clock = clock.now
	}
	n, err := New(cfg, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := n.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return n
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("EDGESHIELD_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

var testHTTP = &http.Client{
	Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 256},
	Timeout:   30 * time.Second,
}

// do sends a request to the node; hdr holds "Name: value" strings.
func do(t *testing.T, method, url string, hdr ...string) (*http.Response, string) {
	t.Helper()
	return doWith(t, testHTTP, method, url, hdr...)
}

// doWith is do with another client.
func doWith(t *testing.T, client *http.Client, method, url string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hdr {
		k, v, _ := strings.Cut(h, ":")
		if strings.EqualFold(k, "Host") {
			req.Host = strings.TrimSpace(v)
			continue
		}
		req.Header.Add(k, strings.TrimSpace(v))
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return resp, string(b)
}

func get(t *testing.T, url string, hdr ...string) (*http.Response, string) {
	t.Helper()
	return do(t, http.MethodGet, url, hdr...)
}

// cacheStatus returns this node's Cache-Status member.
func csOf(r *http.Response) string { return r.Header.Get("Cache-Status") }

func isHit(r *http.Response) bool {
	cs := csOf(r)
	return strings.Contains(cs, "; hit")
}

// waitFor polls cond until it holds or the deadline passes (bounded).
func waitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// warm requests url and waits until its fill is stored (the flight is
// forgotten), so the next request finds the entry rather than the flight.
func warm(t *testing.T, n *Node, url string, hdr ...string) (*http.Response, string) {
	t.Helper()
	r, b := get(t, url, hdr...)
	waitFor(t, "fills to be stored", 5*time.Second, func() bool { return n.pipe.flights.Len() == 0 })
	return r, b
}

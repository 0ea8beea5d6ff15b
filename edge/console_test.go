package edge

import (
	"encoding/json"
	"fmt"
	"image/png"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/edgeshield/edgeshield/edge/certs"
)

// TestQuantile: the console's percentiles interpolate as Prometheus's
// histogram_quantile does (TestPrometheusScrapesNode checks the two agree
// on a real node's histogram).
func TestQuantile(t *testing.T) {
	const last = len(durationBuckets)
	type obs struct{ bucket, n int }
	for _, tc := range []struct {
		name string
		obs  []obs
		q    float64
		want float64 // seconds; NaN: no answer
	}{
		{"empty", nil, 0.5, math.NaN()},
		{"first bucket from 0", []obs{{0, 100}}, 0.5, 0.00005},
		{"first bucket top", []obs{{0, 100}}, 1, 0.0001},
		// 10 in (0, 100µs], 90 in (1ms, 2.5ms]: rank 50 is 40 of 90 into the latter.
		{"second bucket", []obs{{0, 10}, {4, 90}}, 0.5, 0.001 + 0.0015*40/90},
		{"skips empty buckets", []obs{{0, 50}, {10, 50}}, 0.9, 0.1 + 0.15*40/50},
		{"above the largest bound", []obs{{0, 1}, {last, 99}}, 0.99, durationBuckets[last-1].Seconds()},
		{"exactly a bucket's top", []obs{{2, 50}, {3, 50}}, 0.5, 0.0005},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c [len(durationBuckets) + 1]uint64
			for _, o := range tc.obs {
				c[o.bucket] += uint64(o.n)
			}
			got, ok := quantile(&c, tc.q)
			if math.IsNaN(tc.want) {
				if ok {
					t.Errorf("got %v, want no answer", got)
				}
				return
			}
			if !ok || math.Abs(got-tc.want) > 1e-12 {
				t.Errorf("quantile(%v) = %v %v, want %v", tc.q, got, ok, tc.want)
			}
		})
	}
}

// TestConsoleWindow: snapshots are kept one per second at most, for the
// window; the base of a poll is the oldest inside it.
func TestConsoleWindow(t *testing.T) {
	var c consoleState
	t0 := time.Unix(1_700_000_000, 0)
	at := func(d time.Duration) consoleSnap {
		return consoleSnap{at: t0.Add(d), requests: uint64(d / time.Millisecond)}
	}
	if _, ok := c.advance(at(0)); ok {
		t.Fatal("first poll has a base, want none (since start)")
	}
	if b, ok := c.advance(at(500 * time.Millisecond)); !ok || !b.at.Equal(t0) {
		t.Errorf("poll at 0.5 s: base %v %v, want the one at 0", b.at, ok)
	}
	if c.n != 1 {
		t.Errorf("%d snapshots after a poll 0.5 s later, want 1 (one per second at most)", c.n)
	}
	for s := 1; s <= 100; s++ {
		b, ok := c.advance(at(time.Duration(s) * time.Second))
		want := t0.Add(time.Duration(max(0, s-10)) * time.Second)
		if !ok || !b.at.Equal(want) {
			t.Fatalf("poll at %d s: base %v %v, want %v", s, b.at.Sub(t0), ok, want.Sub(t0))
		}
		if c.n > 11 {
			t.Fatalf("poll at %d s: %d snapshots held, want at most 11", s, c.n)
		}
	}
	if _, ok := c.advance(at(200 * time.Second)); ok {
		t.Errorf("poll after 100 s of silence has a base, want none")
	}
}

func TestRecentPurges(t *testing.T) {
	var r recentPurges
	if l := r.list(); len(l) != 0 {
		t.Fatalf("empty: %v", l)
	}
	for i := 0; i < maxRecentPurges+5; i++ {
		kind := "url"
		if i%2 == 1 {
			kind = "tag"
		}
		r.add(PurgeRecord{Kind: kind, Value: fmt.Sprint(i), Found: 1})
	}
	l := r.list()
	if len(l) != maxRecentPurges {
		t.Fatalf("%d purges listed, want %d", len(l), maxRecentPurges)
	}
	for i, p := range l {
		want := fmt.Sprint(maxRecentPurges + 4 - i)
		if p.Value != want {
			t.Errorf("purge %d: %q, want %q (newest first)", i, p.Value, want)
		}
		if wantFound := map[string]int{"url": 1, "tag": -1}[p.Kind]; p.Found != wantFound {
			t.Errorf("%s purge found %d, want %d", p.Kind, p.Found, wantFound)
		}
	}
}

// TestConsoleStatus: /status.json on a real node after traffic and a purge:
// rates over the clock's window, latency counts, origin health, purges.
func TestConsoleStatus(t *testing.T) {
	clock := newTestClock()
	o := newTestOrigin(t, nil, static("x", "Cache-Control: max-age=600"))
	n := newTestNode(t, o.srv.URL, clock, func(c *Config) {
		c.Origin.HealthCheck.Interval, c.Origin.HealthCheck.Timeout = 50*time.Millisecond, 50*time.Millisecond
	})
	base, admin := "http://"+n.Addr(), "http://"+n.AdminAddr()
	status := func() ConsoleStatus {
		t.Helper()
		r, b := get(t, admin+"/status.json")
		var s ConsoleStatus
		if err := json.Unmarshal([]byte(b), &s); err != nil || r.StatusCode != 200 {
			t.Fatalf("status.json: %d %v %s", r.StatusCode, err, b)
		}
		if cc := r.Header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("Cache-Control %q, want no-store", cc)
		}
		return s
	}
	first := status()
	if first.WindowSeconds != 0 || first.RequestsPerSecond != nil || first.Latency[0].Count != 0 {
		t.Errorf("first poll: window %v, req/s %v, latency count %d; want 0, null, 0",
			first.WindowSeconds, first.RequestsPerSecond, first.Latency[0].Count)
	}
	for i := 0; i < 4; i++ {
		warm(t, n, fmt.Sprintf("%s/p/%d", base, i))
		get(t, fmt.Sprintf("%s/p/%d", base, i))
	}
	if _, err := n.Purge("url", base+"/p/0", false, 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "an origin health check", 5*time.Second, func() bool { return n.pipe.set().health.State().Checks > 0 })
	clock.advance(4 * time.Second)
	s := status()
	if s.WindowSeconds != 4 || s.RequestsPerSecond == nil || *s.RequestsPerSecond != 8.0/4 {
		t.Errorf("window %v s, req/s %v; want 4 s and 8 requests / 4 s", s.WindowSeconds, s.RequestsPerSecond)
	}
	if s.WindowHitRatio == nil || *s.WindowHitRatio != 0.5 {
		t.Errorf("window hit ratio %v, want 0.5 (4 hits, 4 misses)", s.WindowHitRatio)
	}
	want := map[string]uint64{"all": 8, "hit": 4, "miss": 4, "stale": 0, "pass": 0, "error": 0}
	for _, r := range s.Latency {
		if r.Count != want[r.Cache] {
			t.Errorf("latency %s: count %d, want %d", r.Cache, r.Count, want[r.Cache])
		}
		if (r.Count > 0) != (r.P50 != nil && r.P99 != nil) || (r.P50 != nil && !(*r.P50 <= *r.P90 && *r.P90 <= *r.P99)) {
			t.Errorf("latency %s: p50 %v p90 %v p99 %v for %d observations", r.Cache, r.P50, r.P90, r.P99, r.Count)
		}
	}
	if len(s.Latency) != 6 {
		t.Errorf("%d latency rows, want all + 5 outcomes", len(s.Latency))
	}
	if !s.Origin.Up || s.Origin.LastCheck.IsZero() || s.Origin.Checks == 0 {
		t.Errorf("origin %+v, want up with a last check", s.Origin)
	}
	if len(s.Purges) != 1 || s.Purges[0].Kind != "url" || s.Purges[0].Found != 1 ||
		!strings.HasSuffix(s.Purges[0].Value, "/p/0") || !s.Purges[0].At.Equal(clock.now().Add(-4*time.Second)) {
		t.Errorf("purges %+v, want the url purge of /p/0, found here, at the clock's time", s.Purges)
	}
	if s.Cluster != nil || s.TLS.Mode != "off" || s.Stats.Requests != 8 || !s.Ready.Ready {
		t.Errorf("cluster %v, tls %q, requests %d, ready %v: want null, off, 8, true", s.Cluster, s.TLS.Mode, s.Stats.Requests, s.Ready.Ready)
	}
}

// noRedirect is a client that shows redirects instead of following them.
var noRedirect = &http.Client{
	Timeout:       10 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

func send(t *testing.T, method, url string, hdr ...string) (*http.Response, string) {
	t.Helper()
	return doWith(t, noRedirect, method, url, hdr...)
}

// TestConsoleAuth: with admin.token, a browser signs in once with ?token=
// and gets a session cookie that opens GET endpoints only.
func TestConsoleAuth(t *testing.T) {
	o := newTestOrigin(t, nil, static("x"))
	n := newTestNode(t, o.srv.URL, nil, func(c *Config) { c.Admin.Token = "s3cret" })
	admin := "http://" + n.AdminAddr()
	r, b := send(t, "GET", admin+"/")
	if r.StatusCode != 401 || !strings.Contains(b, `name="token"`) || r.Header.Get("Content-Security-Policy") == "" {
		t.Errorf("GET / without token: %d, CSP %q, want 401 with the sign-in form\n%s", r.StatusCode, r.Header.Get("Content-Security-Policy"), b)
	}
	if r, b := send(t, "GET", admin+"/?token=wrong"); r.StatusCode != 401 || !strings.Contains(b, "Wrong token") || len(r.Cookies()) != 0 {
		t.Errorf("wrong token: %d %v, want 401 saying so, no cookie", r.StatusCode, r.Cookies())
	}
	if r, _ := send(t, "GET", admin+"/stats?token=s3cret"); r.StatusCode != 401 {
		t.Errorf("?token= on /stats: %d, want 401 (only / signs in)", r.StatusCode)
	}
	r, _ = send(t, "GET", admin+"/?token=s3cret")
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/" || len(r.Cookies()) != 1 {
		t.Fatalf("right token: %d Location %q cookies %v, want 303 to / with one cookie", r.StatusCode, r.Header.Get("Location"), r.Cookies())
	}
	c := r.Cookies()[0]
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || strings.Contains(c.Value, "s3cret") {
		t.Errorf("cookie %+v: want HttpOnly, SameSite=Strict, Path=/, not the token itself", c)
	}
	cookie := "Cookie: " + c.Name + "=" + c.Value
	for _, tc := range []struct {
		method, path string
		hdr          []string
		want         int
	}{
		{"GET", "/", []string{cookie}, 200},
		{"GET", "/status.json", []string{cookie}, 200},
		{"GET", "/stats", []string{cookie}, 200},
		{"POST", "/purge?tag=x", []string{cookie}, 401},
		{"POST", "/purge?tag=x", []string{"Authorization: Bearer s3cret"}, 200},
		{"GET", "/status.json", []string{"Cookie: " + c.Name + "=" + strings.Repeat("0", len(c.Value))}, 401},
		{"GET", "/status.json", nil, 401},
		{"PUT", "/", []string{"Authorization: Bearer s3cret"}, 405},
	} {
		if r, b := send(t, tc.method, admin+tc.path, tc.hdr...); r.StatusCode != tc.want {
			t.Errorf("%s %s %q: %d, want %d\n%s", tc.method, tc.path, tc.hdr, r.StatusCode, tc.want, b)
		}
	}
}

// TestConsolePageSelfContained: the page loads nothing from elsewhere, and
// its CSP allows exactly its own inline style and script.
func TestConsolePageSelfContained(t *testing.T) {
	o := newTestOrigin(t, nil, static("x"))
	n := newTestNode(t, o.srv.URL, nil, nil)
	r, page := send(t, "GET", "http://"+n.AdminAddr()+"/")
	if r.StatusCode != 200 || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: %d %q", r.StatusCode, r.Header.Get("Content-Type"))
	}
	csp := r.Header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "default-src 'none'") || strings.Contains(csp, "unsafe") || strings.Contains(csp, "http") {
		t.Errorf("CSP %q: want default-src 'none', no unsafe-*, no external source", csp)
	}
	for _, tag := range []string{"style", "script"} {
		m := regexp.MustCompile(`(?s)<`+tag+`>(.*?)</`+tag+`>`).FindAllStringSubmatch(page, -1)
		if len(m) != 1 {
			t.Fatalf("%d <%s> elements, want 1", len(m), tag)
		}
		if h := cspHash(m[0][1]); !strings.Contains(csp, tag+"-src '"+h+"'") {
			t.Errorf("the page's <%s> hashes to %s, not allowed by the CSP %q", tag, h, csp)
		}
	}
	for _, m := range regexp.MustCompile(`(?i)(?:src|href|action)\s*=\s*"([^"]*)"`).FindAllStringSubmatch(page, -1) {
		if u := m[1]; u != "/" && u != "data:," {
			t.Errorf("the page refers to %q: want nothing outside the page", u)
		}
	}
	if strings.Contains(page, "innerHTML") || strings.Contains(page, "://") {
		t.Errorf("the page uses innerHTML or names a URL: values must go in as text")
	}
}

// TestConsoleInChromium: a real browser signs in to the console of a node
// in a cluster of 2 (with traffic, a purge and a TLS certificate, so that
// every panel has data), its script renders /status.json, and a screenshot
// of the page is a PNG of the window's size that is not blank. Chromium is
// required when CI=true.
func TestConsoleInChromium(t *testing.T) {
	bin := chromiumBin(t, "operator console not checked in a browser")
	o := newTestOrigin(t, nil, static("x", "Cache-Control: max-age=600"))
	certFile, keyFile, _ := testCert(t)
	nodes := newCluster(t, 2, o.srv.URL, func(i int, c *Config) {
		c.Admin.Token = "console-token"
		if i == 0 {
			c.TLS.Mode, c.TLS.Listen, c.TLS.HTTP, c.TLS.Storage = "manual", "127.0.0.1:0", "serve", t.TempDir()
			c.TLS.Certificates = []certs.CertFile{{Cert: certFile, Key: keyFile}}
		}
	})
	n := nodes[0]
	for i := 0; i < 6; i++ {
		for _, m := range nodes {
			get(t, fmt.Sprintf("http://%s/obj/%d", m.Addr(), i))
			get(t, fmt.Sprintf("http://%s/obj/%d", m.Addr(), i))
		}
	}
	if _, err := n.Purge("url", "http://"+n.Addr()+"/obj/3", false, 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the purge to be applied", 5*time.Second, func() bool { return len(n.purger.recent.list()) == 1 })

	// Traffic goes on while the browser polls, so that the last seconds
	// (the console's window) have latencies to show.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if r, err := testHTTP.Get(fmt.Sprintf("http://%s/obj/%d", n.Addr(), i%6)); err == nil {
				io.Copy(io.Discard, r.Body)
				r.Body.Close()
			}
		}
	}()
	defer func() { close(stop); <-done }()

	url := "http://" + n.AdminAddr() + "/?token=console-token"
	dom, stderr := runChromium(t, bin, t.TempDir(), "--virtual-time-budget=5000", "--dump-dom", url)
	page := string(dom)
	for _, want := range []string{
		`<dd class="ok">yes</dd>`, // ready
		`<dd class="ok">up</dd>`,  // origin
		"node-0 (this node)", "node-1", "/obj/3", "edge.test", " ms</td>", "req/s",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("rendered console lacks %q", want)
		}
	}
	if m := regexp.MustCompile(`<span id="problem" class="bad">([^<]*)</span>`).FindStringSubmatch(page); m == nil || m[1] != "" {
		t.Errorf("the console reports a problem: %q", m)
	}
	// Both members own a share of the key space: two percentages in the cluster table.
	if shares := regexp.MustCompile(`<td>(\d+\.\d) %</td>`).FindAllStringSubmatch(page, -1); len(shares) != 2 {
		t.Errorf("key shares %q, want one per member", shares)
	}
	if t.Failed() {
		t.Fatalf("dumped DOM:\n%s\nstderr:\n%s", page, stderr)
	}

	dir := t.TempDir()
	shot := filepath.Join(dir, "console.png")
	runChromium(t, bin, dir, "--window-size=1280,1000", "--hide-scrollbars", "--virtual-time-budget=5000", "--screenshot="+shot, url)
	checkScreenshot(t, shot, 1280, 1000)
	t.Logf("console screenshot: %s", shot)
}

// checkScreenshot decodes a PNG and checks its size and that it shows
// something: a blank or one-colour page has a handful of colours, a
// rendered console (text anti-aliased on cards) hundreds.
func checkScreenshot(t *testing.T, file string, w, h int) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot %s is not a PNG: %v", file, err)
	}
	if b := img.Bounds(); b.Dx() != w || b.Dy() != h {
		t.Errorf("screenshot is %dx%d, want %dx%d", b.Dx(), b.Dy(), w, h)
	}
	colours := map[[4]uint32]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y += 2 {
		for x := b.Min.X; x < b.Max.X; x += 2 {
			r, g, bl, a := img.At(x, y).RGBA()
			colours[[4]uint32{r, g, bl, a}] = true
		}
	}
	if len(colours) < 50 {
		t.Errorf("screenshot has %d distinct colours, want at least 50 (a rendered page, not a blank one)", len(colours))
	}
}

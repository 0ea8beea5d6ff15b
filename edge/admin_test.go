package edge

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestAdminStatsAndPurge(t *testing.T) {
	o := newTestOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		if strings.HasPrefix(r.URL.Path, "/p/") {
			w.Header().Set("Surrogate-Key", "product-"+strings.TrimPrefix(r.URL.Path, "/p/")+" all-products")
		}
		io.WriteString(w, r.URL.Path)
	})
	n := newTestNode(t, o.srv.URL, nil, nil)
	base := "http://" + n.Addr()
	admin := "http://" + n.AdminAddr()
	for _, p := range []string{"/p/1", "/p/2", "/p/1", "/other"} {
		warm(t, n, base+p)
	}
	r, b := get(t, admin+"/stats")
	var s Stats
	if err := json.Unmarshal([]byte(b), &s); err != nil || r.StatusCode != 200 {
		t.Fatalf("stats: %d %v %s", r.StatusCode, err, b)
	}
	if s.Hits != 1 || s.Misses != 3 || s.OriginFetches != 3 || s.Entries != 3 || s.Bytes <= 0 {
		t.Errorf("stats = %+v, want 1 hit, 3 misses, 3 origin fetches, 3 entries", s)
	}
	if s.HitRatio != 0.25 {
		t.Errorf("hit ratio = %v, want 0.25", s.HitRatio)
	}

	purge := func(q string) {
		t.Helper()
		r, b := do(t, http.MethodPost, admin+"/purge?"+q)
		if r.StatusCode != 200 {
			t.Fatalf("purge %s: %d %s", q, r.StatusCode, b)
		}
	}
	purge("url=http://" + n.Addr() + "/p/1")
	if r, _ := get(t, base+"/p/1"); isHit(r) {
		t.Errorf("/p/1 still a hit after url purge")
	}
	if r, _ := get(t, base+"/p/2"); !isHit(r) {
		t.Errorf("/p/2 purged by a url purge of /p/1")
	}
	purge("tag=all-products")
	for _, p := range []string{"/p/1", "/p/2"} {
		if r, _ := get(t, base+p); isHit(r) {
			t.Errorf("%s still a hit after tag purge", p)
		}
	}
	if r, _ := get(t, base+"/other"); !isHit(r) {
		t.Errorf("/other purged by an unrelated tag")
	}
	purge("prefix=" + n.Addr() + "/&hard=1")
	if r, _ := get(t, base+"/other"); isHit(r) {
		t.Errorf("/other still a hit after a hard prefix purge")
	}

	for _, q := range []string{"", "url=", "url=not-a-url", "bogus=1"} {
		if r, _ := do(t, http.MethodPost, admin+"/purge?"+q); r.StatusCode != http.StatusBadRequest {
			t.Errorf("purge %q: got %d, want 400", q, r.StatusCode)
		}
	}
	if r, _ := get(t, admin+"/purge?url=x"); r.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /purge: got %d, want 405", r.StatusCode)
	}
}

func TestAdminToken(t *testing.T) {
	o := newTestOrigin(t, nil, static("x"))
	n := newTestNode(t, o.srv.URL, nil, func(c *Config) { c.Admin.Token = "s3cret" })
	admin := "http://" + n.AdminAddr()
	for _, h := range [][]string{nil, {"Authorization: Bearer wrong"}, {"Authorization: s3cret"}} {
		if r, _ := get(t, admin+"/stats", h...); r.StatusCode != http.StatusUnauthorized {
			t.Errorf("headers %q: got %d, want 401", h, r.StatusCode)
		}
	}
	if r, _ := get(t, admin+"/stats", "Authorization: Bearer s3cret"); r.StatusCode != 200 {
		t.Errorf("with token: got %d, want 200", r.StatusCode)
	}
}

func TestReadinessAndDrain(t *testing.T) {
	o := newTestOrigin(t, nil, static("x", "Cache-Control: max-age=60"))
	n := newTestNode(t, o.srv.URL, nil, func(c *Config) { c.Server.HealthPath = "/.well-known/edgeshield/ready" })
	for _, u := range []string{"http://" + n.AdminAddr() + "/readyz", "http://" + n.Addr() + "/.well-known/edgeshield/ready"} {
		if r, b := get(t, u); r.StatusCode != 200 || !strings.Contains(b, `"ready": true`) {
			t.Errorf("%s: %d %s, want ready", u, r.StatusCode, b)
		}
	}
	n.pipe.draining.Store(true)
	if r, b := get(t, "http://"+n.AdminAddr()+"/readyz"); r.StatusCode != 503 || !strings.Contains(b, "draining") {
		t.Errorf("draining: %d %s, want 503 naming the drain", r.StatusCode, b)
	}
	n.pipe.draining.Store(false)
}

// TestReadinessPassiveOnly: with active checks off, fall consecutive failed
// requests mark the origin down for readiness, yet every request is still
// sent (nothing else would find out that it is back), and one success
// brings it back.
func TestReadinessPassiveOnly(t *testing.T) {
	o := newTestOrigin(t, nil, static("x", "Cache-Control: no-store"))
	addr := o.srv.Listener.Addr().String()
	n := newTestNode(t, o.srv.URL, nil, func(c *Config) {
		c.Origin.HealthCheck.Interval = 0
		c.Origin.HealthCheck.Fall = 2
	})
	o.srv.Close()
	for i := 0; i < 3; i++ {
		r, _ := get(t, "http://"+n.Addr()+"/miss")
		if r.StatusCode != 502 || !strings.Contains(csOf(r), "refused") {
			t.Errorf("request %d with the origin gone: %d %q, want 502 naming the refusal (sent, not short-circuited)", i, r.StatusCode, csOf(r))
		}
	}
	if r, b := get(t, "http://"+n.AdminAddr()+"/readyz"); r.StatusCode != 503 || !strings.Contains(b, "nothing cached") {
		t.Errorf("origin down, nothing cached: %d %s, want 503", r.StatusCode, b)
	}
	if s := n.Stats(); s.OriginUp || s.OriginShortCircuited != 0 || s.OriginChecks != 0 {
		t.Errorf("stats: up=%v short-circuited=%d checks=%d, want down, 0, 0", s.OriginUp, s.OriginShortCircuited, s.OriginChecks)
	}
	restartOrigin(t, addr, static("x", "Cache-Control: no-store"))
	if r, _ := get(t, "http://"+n.Addr()+"/miss"); r.StatusCode != 200 {
		t.Fatalf("origin back: %d, want 200", r.StatusCode)
	}
	if r, b := get(t, "http://"+n.AdminAddr()+"/readyz"); r.StatusCode != 200 {
		t.Errorf("after a successful request: %d %s, want ready", r.StatusCode, b)
	}
}

// TestPurgeOutlivesTombstone: an entry nobody requests while its tombstone
// lives must stay purged after the tombstone expires (the sweep makes purges
// permanent).
func TestPurgeOutlivesTombstone(t *testing.T) {
	o := newTestOrigin(t, nil, static("x", "Cache-Control: max-age=600"))
	n := newTestNode(t, o.srv.URL, nil, func(c *Config) { c.Cache.PurgeTTL = Duration(2 * time.Second) })
	url := "http://" + n.Addr() + "/quiet/a"
	warm(t, n, url)
	if _, err := n.Purge("prefix", n.Addr()+"/quiet/", false, 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the tombstone to expire", 10*time.Second, func() bool { return n.pipe.purges.Len() == 0 })
	if r, _ := get(t, url); isHit(r) {
		t.Errorf("purged entry served as a fresh hit after its tombstone expired: %q", csOf(r))
	}
}

// TestTagPurgeAfterRevalidation: an entry refreshed by a 304 keeps the
// surrogate keys of the stored response, so tag purges still find it.
func TestTagPurgeAfterRevalidation(t *testing.T) {
	o := newTestOrigin(t, nil, static("x", "Cache-Control: max-age=600", `ETag: "t"`, "Surrogate-Key: shelf"))
	n := newTestNode(t, o.srv.URL, nil, nil)
	url := "http://" + n.Addr() + "/tagged"
	warm(t, n, url)
	// A client's no-cache makes the node revalidate: the origin answers 304.
	if r, _ := warm(t, n, url, "Cache-Control: no-cache"); !strings.Contains(csOf(r), "fwd-status=304") {
		t.Fatalf("expected a 304 revalidation, got %q", csOf(r))
	}
	if r, _ := get(t, url); !isHit(r) {
		t.Fatalf("refreshed entry not a hit: %q", csOf(r))
	}
	if _, err := n.Purge("tag", "shelf", false, 0); err != nil {
		t.Fatal(err)
	}
	if r, _ := get(t, url); isHit(r) {
		t.Errorf("tag purge missed the refreshed entry: %q", csOf(r))
	}
}

// TestPurgeUnencodedURL: a url= whose query was pasted without
// percent-encoding (url=http://h/p?a=1&b=2) purges that URL, in the query
// string and in a form body; when /purge's own arguments follow it the
// purge is refused with 400 naming how to encode, never a silent found: 0.
func TestPurgeUnencodedURL(t *testing.T) {
	o := newTestOrigin(t, nil, static("x", "Cache-Control: max-age=600"))
	n := newTestNode(t, o.srv.URL, nil, nil)
	base, admin := "http://"+n.Addr(), "http://"+n.AdminAddr()
	tests := []struct {
		name, path string
		query      func(u string) string // the purge's query (or form body) for the absolute URL u
		body       bool                  // send query as a form body
		wantStatus int
	}{
		{"query, url only", "/p1?a=1&b=2", func(u string) string { return "url=" + u }, false, 200},
		{"query, url last", "/p2?a=1&b=2", func(u string) string { return "hard=1&url=" + u }, false, 200},
		{"query, encoded", "/p3?a=1&b=2", func(u string) string { return "url=" + url.QueryEscape(u) }, false, 200},
		{"query, plus kept", "/p4?q=a+b&c=1", func(u string) string { return "url=" + u }, false, 200},
		{"form body", "/p5?a=1&b=2", func(u string) string { return "url=" + u }, true, 200},
		{"own argument after it", "/p6?a=1&b=2", func(u string) string { return "url=" + u + "&wait=1s" }, false, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := base + tt.path
			warm(t, n, u)
			if r, _ := get(t, u); !isHit(r) {
				t.Fatalf("%s not cached before the purge", tt.path)
			}
			q := tt.query(u)
			var st int
			var b string
			if tt.body {
				resp, err := testHTTP.Post(admin+"/purge", "application/x-www-form-urlencoded", strings.NewReader(q))
				if err != nil {
					t.Fatal(err)
				}
				raw, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				st, b = resp.StatusCode, string(raw)
			} else {
				r, body := do(t, http.MethodPost, admin+"/purge?"+q)
				st, b = r.StatusCode, body
			}
			if st != tt.wantStatus {
				t.Fatalf("POST /purge %s: got %d %s, want %d", q, st, b, tt.wantStatus)
			}
			if st != 200 {
				if !strings.Contains(b, "--data-urlencode") {
					t.Errorf("400 body %q: want it to name how to encode", b)
				}
				if r, _ := get(t, u); !isHit(r) {
					t.Errorf("%s purged by a refused purge", tt.path)
				}
				return
			}
			var res PurgeResult
			if err := json.Unmarshal([]byte(b), &res); err != nil {
				t.Fatalf("decoding %s: %v", b, err)
			}
			if res.Found != 1 || res.Value != u {
				t.Errorf("purge %s: got found %d value %q, want found 1 value %q", q, res.Found, res.Value, u)
			}
			if r, _ := get(t, u); isHit(r) {
				t.Errorf("%s still a hit after the purge", tt.path)
			}
		})
	}
}

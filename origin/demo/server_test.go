package demo

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
)

func TestNewValidation(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr bool
	}{
		{"zero value", Config{}, false},
		{"latency and faults", Config{Latency: time.Millisecond, Faults: []Fault{
			{PathPrefix: "/img/", Status: 503, Rate: 0.5},
			{Reset: true},
			{PathPrefix: "/", Delay: time.Second},
		}}, false},
		{"negative latency", Config{Latency: -1}, true},
		{"huge latency", Config{Latency: time.Hour}, true},
		{"prefix without slash", Config{Faults: []Fault{{PathPrefix: "img", Status: 503}}}, true},
		{"status too low", Config{Faults: []Fault{{Status: 100}}}, true},
		{"status too high", Config{Faults: []Fault{{Status: 600}}}, true},
		{"negative delay", Config{Faults: []Fault{{Delay: -time.Second}}}, true},
		{"rate above one", Config{Faults: []Fault{{Status: 503, Rate: 1.5}}}, true},
		{"negative rate", Config{Faults: []Fault{{Status: 503, Rate: -0.1}}}, true},
		{"NaN rate", Config{Faults: []Fault{{Status: 503, Rate: math.NaN()}}}, true},
		{"rule without effect", Config{Faults: []Fault{{PathPrefix: "/a"}}}, true},
		{"missing root", Config{Root: "/nonexistent/edgeshield-demo"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(tt.cfg)
			if err == nil {
				t.Cleanup(func() { s.Close() })
			}
			if gotErr := err != nil; gotErr != tt.wantErr {
				t.Fatalf("New error = %v, want error %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("got error %v, want it to wrap ErrInvalidConfig", err)
			}
		})
	}
}

func TestLifecycle(t *testing.T) {
	s, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Addr(); got != "" {
		t.Errorf("Addr before Start: got %q, want \"\"", got)
	}
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if err := s.Start("127.0.0.1:0"); !errors.Is(err, ErrStarted) {
		t.Errorf("second Start: got %v, want ErrStarted", err)
	}
	if got, want := s.URL(), "http://"+s.Addr(); got != want || !strings.HasPrefix(got, "http://127.0.0.1:") {
		t.Errorf("URL: got %q, want %q on 127.0.0.1", got, want)
	}
	r := do(t, newClient(t), "GET", s.URL()+"/__origin/health", nil)
	if r.status != 200 || string(r.body) != "ok\n" {
		t.Errorf("health: got %d %q, want 200 \"ok\\n\"", r.status, r.body)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: got %v, want nil", err)
	}
	if err := s.Start("127.0.0.1:0"); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close: got %v, want ErrClosed", err)
	}
	if _, err := doErr(newClient(t), "GET", s.URL()+"/", nil); err == nil {
		t.Errorf("GET after Close: got no error, want connection refused")
	}
}

func TestCloseWithoutStart(t *testing.T) {
	s, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: got %v, want nil", err)
	}
}

func TestEmbeddedSite(t *testing.T) {
	s := startServer(t, Config{})
	c := newClient(t)
	tests := []struct {
		path, contentType, cacheControl string
		size                            int // 0: any non-empty size
		prefix                          []byte
	}{
		{"/", "text/html; charset=utf-8", ccHTML, 0, []byte("<!doctype html>")},
		{"/index.html", "text/html; charset=utf-8", ccHTML, 0, []byte("<!doctype html>")},
		{"/css/site.css", "text/css; charset=utf-8", ccImmutable, 0, []byte(":root")},
		{"/js/app.js", "text/javascript; charset=utf-8", ccImmutable, 0, []byte("// ")},
		{"/img/logo.svg", "image/svg+xml", ccDay, 0, []byte("<svg")},
		{"/img/photo-64k.jpg", "image/jpeg", ccDay, 64 << 10, []byte{0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, 'J', 'F', 'I', 'F'}},
		{"/img/hero-1m.jpg", "image/jpeg", ccDay, 1 << 20, []byte{0xFF, 0xD8, 0xFF}},
		{"/media/intro.mp4", "video/mp4", ccDay, 6 << 20, []byte("\x00\x00\x00\x20ftypisom")},
		{"/bench/1k.bin", "application/octet-stream", ccHour, 1 << 10, nil},
		{"/bench/64k.bin", "application/octet-stream", ccHour, 64 << 10, nil},
		{"/bench/1m.bin", "application/octet-stream", ccHour, 1 << 20, nil},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			r := do(t, c, "GET", s.URL()+tt.path, nil)
			if r.status != http.StatusOK {
				t.Fatalf("status: got %d, want 200", r.status)
			}
			if tt.size != 0 && len(r.body) != tt.size {
				t.Errorf("size: got %d, want %d", len(r.body), tt.size)
			}
			if len(r.body) == 0 || r.length != int64(len(r.body)) {
				t.Errorf("Content-Length: got %d with %d body bytes, want equal and non-zero", r.length, len(r.body))
			}
			if !bytes.HasPrefix(r.body, tt.prefix) {
				t.Errorf("body starts with %q, want %q", r.body[:min(len(r.body), 16)], tt.prefix)
			}
			want := map[string]string{
				"Content-Type":  tt.contentType,
				"Cache-Control": tt.cacheControl,
				"ETag":          sha(r.body),
				"Last-Modified": "Sun, 01 Jun 2025 12:00:00 GMT",
				"Accept-Ranges": "bytes",
				"Server":        serverName,
			}
			for k, v := range want {
				if got := r.header.Get(k); got != v {
					t.Errorf("%s: got %q, want %q", k, got, v)
				}
			}
			if _, err := http.ParseTime(r.header.Get("Date")); err != nil {
				t.Errorf("Date %q: %v", r.header.Get("Date"), err)
			}
		})
	}
}

// The index page links every object of the site, and each link resolves.
func TestIndexLinksResolve(t *testing.T) {
	s := startServer(t, Config{})
	c := newClient(t)
	index := do(t, c, "GET", s.URL()+"/", nil).body
	for path := range s.objects {
		if path == "/" {
			continue
		}
		if !bytes.Contains(index, []byte(`"`+path+`"`)) {
			t.Errorf("index.html does not link %s", path)
		}
	}
}

// ETags are content hashes: two servers (as two processes would) agree, and
// the bytes are pinned by a golden hash so a change of generator is noticed.
func TestETagsStableAcrossServers(t *testing.T) {
	a, b := startServer(t, Config{}), startServer(t, Config{})
	c := newClient(t)
	for path := range a.objects {
		ra := do(t, c, "GET", a.URL()+path, nil)
		rb := do(t, c, "GET", b.URL()+path, nil)
		if ra.header.Get("ETag") != rb.header.Get("ETag") || !bytes.Equal(ra.body, rb.body) {
			t.Errorf("%s: got ETags %s and %s from two servers, want equal ETags and bodies",
				path, ra.header.Get("ETag"), rb.header.Get("ETag"))
		}
	}
	const golden = `"a2aaca58cfe7b31eb338156b16a3c602"`
	if got := do(t, c, "GET", a.URL()+"/bench/1k.bin", nil).header.Get("ETag"); got != golden {
		t.Errorf("/bench/1k.bin ETag: got %s, want %s (generated content changed)", got, golden)
	}
}

func TestConditionalRequests(t *testing.T) {
	s := startServer(t, Config{})
	c := newClient(t)
	const path = "/css/site.css"
	full := do(t, c, "GET", s.URL()+path, nil)
	etag := full.header.Get("ETag")
	lm := full.header.Get("Last-Modified")
	lmTime, _ := http.ParseTime(lm)
	before := lmTime.Add(-time.Hour).Format(http.TimeFormat)
	after := lmTime.Add(time.Hour).Format(http.TimeFormat)

	tests := []struct {
		name   string
		method string
		hdr    map[string]string
		want   int
	}{
		{"INM exact", "GET", map[string]string{"If-None-Match": etag}, 304},
		{"INM weak form matches", "GET", map[string]string{"If-None-Match": "W/" + etag}, 304},
		{"INM list", "GET", map[string]string{"If-None-Match": `"nope", ` + etag}, 304},
		{"INM star", "GET", map[string]string{"If-None-Match": "*"}, 304},
		{"INM other", "GET", map[string]string{"If-None-Match": `"nope"`}, 200},
		{"INM malformed", "GET", map[string]string{"If-None-Match": `nope`}, 200},
		{"INM on HEAD", "HEAD", map[string]string{"If-None-Match": etag}, 304},
		{"IMS equal", "GET", map[string]string{"If-Modified-Since": lm}, 304},
		{"IMS later", "GET", map[string]string{"If-Modified-Since": after}, 304},
		{"IMS earlier", "GET", map[string]string{"If-Modified-Since": before}, 200},
		{"IMS invalid", "GET", map[string]string{"If-Modified-Since": "yesterday"}, 200},
		{"INM mismatch wins over IMS", "GET", map[string]string{"If-None-Match": `"nope"`, "If-Modified-Since": lm}, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, c, tt.method, s.URL()+path, tt.hdr)
			if r.status != tt.want {
				t.Fatalf("status: got %d, want %d", r.status, tt.want)
			}
			if tt.want != 304 {
				return
			}
			if len(r.body) != 0 {
				t.Errorf("304 body: got %d bytes, want none", len(r.body))
			}
			for k, v := range map[string]string{"ETag": etag, "Last-Modified": lm, "Cache-Control": ccImmutable} {
				if got := r.header.Get(k); got != v {
					t.Errorf("304 %s: got %q, want %q", k, got, v)
				}
			}
			if r.header.Get("Date") == "" {
				t.Errorf("304 Date: got none, want one")
			}
			// A cache merges 304 headers into its stored response
			// (RFC 9111 §4.3.4); a default type would corrupt it.
			if got := r.header.Get("Content-Type"); got != "" {
				t.Errorf("304 Content-Type: got %q, want none", got)
			}
		})
	}
}

func TestHead(t *testing.T) {
	s := startServer(t, Config{})
	c := newClient(t)
	for path := range s.objects {
		t.Run(path, func(t *testing.T) {
			get := do(t, c, "GET", s.URL()+path, nil)
			head := do(t, c, "HEAD", s.URL()+path, nil)
			if head.status != 200 || len(head.body) != 0 {
				t.Errorf("HEAD: got %d with %d body bytes, want 200 without body", head.status, len(head.body))
			}
			if head.length != int64(len(get.body)) {
				t.Errorf("HEAD Content-Length: got %d, want %d", head.length, len(get.body))
			}
			if head.header.Get("ETag") != get.header.Get("ETag") {
				t.Errorf("HEAD ETag: got %s, want %s", head.header.Get("ETag"), get.header.Get("ETag"))
			}
		})
	}
}

func TestRange(t *testing.T) {
	s := startServer(t, Config{})
	c := newClient(t)
	const path = "/bench/1k.bin"
	full := do(t, c, "GET", s.URL()+path, nil)
	etag, lm := full.header.Get("ETag"), full.header.Get("Last-Modified")
	size := len(full.body)

	tests := []struct {
		name         string
		hdr          map[string]string
		wantStatus   int
		first, last  int // wanted body: full[first:last+1] for 206
		contentRange string
	}{
		{"first ten", map[string]string{"Range": "bytes=0-9"}, 206, 0, 9, "bytes 0-9/1024"},
		{"open ended", map[string]string{"Range": "bytes=1000-"}, 206, 1000, 1023, "bytes 1000-1023/1024"},
		{"suffix", map[string]string{"Range": "bytes=-24"}, 206, 1000, 1023, "bytes 1000-1023/1024"},
		{"suffix longer than object", map[string]string{"Range": "bytes=-5000"}, 206, 0, 1023, "bytes 0-1023/1024"},
		{"last clamped", map[string]string{"Range": "bytes=1020-99999999999999999999"}, 206, 1020, 1023, "bytes 1020-1023/1024"},
		{"unit case and spaces", map[string]string{"Range": " Bytes = 5 - 6 "}, 206, 5, 6, "bytes 5-6/1024"},
		{"past the end", map[string]string{"Range": "bytes=1024-"}, 416, 0, 0, "bytes */1024"},
		{"empty suffix", map[string]string{"Range": "bytes=-0"}, 416, 0, 0, "bytes */1024"},
		{"malformed", map[string]string{"Range": "bytes=a-b"}, 200, 0, 0, ""},
		{"reversed", map[string]string{"Range": "bytes=9-0"}, 200, 0, 0, ""},
		{"multiple ranges", map[string]string{"Range": "bytes=0-1,5-6"}, 200, 0, 0, ""},
		{"other unit", map[string]string{"Range": "items=0-1"}, 200, 0, 0, ""},
		{"If-Range etag match", map[string]string{"Range": "bytes=0-9", "If-Range": etag}, 206, 0, 9, "bytes 0-9/1024"},
		{"If-Range etag mismatch", map[string]string{"Range": "bytes=0-9", "If-Range": `"old"`}, 200, 0, 0, ""},
		{"If-Range weak etag", map[string]string{"Range": "bytes=0-9", "If-Range": "W/" + etag}, 200, 0, 0, ""},
		{"If-Range date match", map[string]string{"Range": "bytes=0-9", "If-Range": lm}, 206, 0, 9, "bytes 0-9/1024"},
		{"If-Range date mismatch", map[string]string{"Range": "bytes=0-9", "If-Range": "Mon, 02 Jun 2025 12:00:00 GMT"}, 200, 0, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, c, "GET", s.URL()+path, tt.hdr)
			if r.status != tt.wantStatus {
				t.Fatalf("status: got %d, want %d", r.status, tt.wantStatus)
			}
			if got := r.header.Get("Content-Range"); got != tt.contentRange {
				t.Errorf("Content-Range: got %q, want %q", got, tt.contentRange)
			}
			switch tt.wantStatus {
			case 206:
				if want := full.body[tt.first : tt.last+1]; !bytes.Equal(r.body, want) {
					t.Errorf("body: got %d bytes, want bytes %d-%d of the object", len(r.body), tt.first, tt.last)
				}
			case 200:
				if len(r.body) != size {
					t.Errorf("body: got %d bytes, want the full %d", len(r.body), size)
				}
			case 416:
				if got := r.header.Get("Cache-Control"); got != "" {
					t.Errorf("416 Cache-Control: got %q, want none (a 416 must not be cached)", got)
				}
			}
		})
	}

	t.Run("range ignored for HEAD", func(t *testing.T) {
		r := do(t, c, "HEAD", s.URL()+path, map[string]string{"Range": "bytes=0-9"})
		if r.status != 200 || r.length != int64(size) {
			t.Errorf("HEAD with Range: got %d, Content-Length %d, want 200 and %d", r.status, r.length, size)
		}
	})
	t.Run("range on the large video", func(t *testing.T) {
		video := do(t, c, "GET", s.URL()+"/media/intro.mp4", nil).body
		r := do(t, c, "GET", s.URL()+"/media/intro.mp4", map[string]string{"Range": "bytes=5000000-5000099"})
		if r.status != 206 || !bytes.Equal(r.body, video[5000000:5000100]) {
			t.Errorf("got %d with %d bytes, want 206 with bytes 5000000-5000099", r.status, len(r.body))
		}
	})
}

func TestNotFoundAndMethods(t *testing.T) {
	s := startServer(t, Config{})
	c := newClient(t)
	tests := []struct {
		method, path string
		wantStatus   int
		wantAllow    string
	}{
		{"GET", "/nope.html", 404, ""},
		{"GET", "/dyn", 404, ""},
		{"GET", "/__origin/nope", 404, ""},
		{"POST", "/css/site.css", 405, "GET, HEAD"},
		{"PUT", "/", 405, "GET, HEAD"},
		{"DELETE", "/img/logo.svg", 405, "GET, HEAD"},
		{"OPTIONS", "/index.html", 405, "GET, HEAD"},
		{"POST", "/__origin/health", 405, "GET, HEAD"},
		{"PUT", "/__origin/counts", 405, "GET, HEAD, DELETE"},
		{"GET", "/__origin/reset", 405, "POST"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			r := do(t, c, tt.method, s.URL()+tt.path, nil)
			if r.status != tt.wantStatus {
				t.Errorf("status: got %d, want %d", r.status, tt.wantStatus)
			}
			if got := r.header.Get("Allow"); got != tt.wantAllow {
				t.Errorf("Allow: got %q, want %q", got, tt.wantAllow)
			}
			if got := r.header.Get("Cache-Control"); got != "" {
				t.Errorf("Cache-Control: got %q, want none on an error", got)
			}
		})
	}
}

func TestCounts(t *testing.T) {
	s := startServer(t, Config{})
	c := newClient(t)
	get := func(method, path string, hdr map[string]string) reply {
		t.Helper()
		return do(t, c, method, s.URL()+path, hdr)
	}
	etag := get("GET", "/css/site.css", nil).header.Get("ETag")
	get("GET", "/css/site.css", map[string]string{"If-None-Match": etag}) // a 304 counts
	get("HEAD", "/css/site.css", nil)
	get("GET", "/dyn/a?size=1", nil)
	get("GET", "/dyn/a?size=2", nil) // the query is not part of the key
	get("POST", "/dyn/a", nil)
	get("GET", "/missing", nil)
	get("GET", "/__origin/health", nil) // /__origin/ is never counted
	get("GET", "/__origin/counts", nil)

	want := map[string]int64{"/css/site.css": 3, "/dyn/a": 3, "/missing": 1}
	if got := s.Counts(); !equalCounts(got, want) {
		t.Errorf("Counts: got %v, want %v", got, want)
	}
	for path, n := range want {
		if got := s.Count(path); got != n {
			t.Errorf("Count(%q): got %d, want %d", path, got, n)
		}
	}
	if got := s.CountMethod("HEAD", "/css/site.css"); got != 1 {
		t.Errorf("CountMethod(HEAD): got %d, want 1", got)
	}
	if got := s.CountMethod("POST", "/dyn/a"); got != 1 {
		t.Errorf("CountMethod(POST): got %d, want 1", got)
	}

	var doc CountsSnapshot
	r := get("GET", "/__origin/counts", nil)
	if err := json.Unmarshal(r.body, &doc); err != nil {
		t.Fatalf("decode %q: %v", r.body, err)
	}
	if doc.Total != 7 || !equalCounts(doc.Paths, want) || doc.Methods["GET"]["/dyn/a"] != 2 {
		t.Errorf("/__origin/counts: got %+v, want total 7, paths %v, 2 GETs of /dyn/a", doc, want)
	}
	if got := r.header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("/__origin/counts Cache-Control: got %q, want no-store", got)
	}

	// DELETE returns the counts it clears.
	r = get("DELETE", "/__origin/counts", nil)
	if err := json.Unmarshal(r.body, &doc); err != nil || doc.Total != 7 {
		t.Errorf("DELETE /__origin/counts: got %s (%v), want the total of 7 before the reset", r.body, err)
	}
	if got := s.Count("/css/site.css"); got != 0 {
		t.Errorf("after DELETE: got %d, want 0", got)
	}

	get("GET", "/", nil)
	get("POST", "/__origin/reset", nil)
	if got := s.Snapshot(); got.Total != 0 || len(got.Paths) != 0 {
		t.Errorf("after POST /__origin/reset: got %+v, want empty", got)
	}

	get("GET", "/", nil)
	s.ResetCounts()
	if got := s.Count("/"); got != 0 {
		t.Errorf("after ResetCounts: got %d, want 0", got)
	}
}

func equalCounts(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// Counting is exact under concurrency.
func TestCountsConcurrent(t *testing.T) {
	s := startServer(t, Config{})
	c := newClient(t)
	const workers, each = 8, 25
	errs := make(chan error, workers)
	for w := range workers {
		go func() {
			for i := range each {
				r, err := doErr(c, "GET", s.URL()+"/dyn/c"+strconv.Itoa(w%2)+"?i="+strconv.Itoa(i), nil)
				if err == nil && r.status != 200 {
					err = errors.New("status " + strconv.Itoa(r.status))
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range workers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got, want := s.Count("/dyn/c0")+s.Count("/dyn/c1"), int64(workers*each); got != want {
		t.Errorf("got %d requests counted, want %d", got, want)
	}
}

// The handler works when mounted in another fasthttp server.
func TestHandlerEmbedded(t *testing.T) {
	s, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	ln := fasthttputil.NewInmemoryListener()
	srv := &fasthttp.Server{Handler: s.Handler()}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := srv.Shutdown(); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	c := &fasthttp.HostClient{Addr: "origin.test", Dial: func(string) (net.Conn, error) { return ln.Dial() }}
	t.Cleanup(c.CloseIdleConnections)

	status, body, err := c.Get(nil, "http://origin.test/bench/1k.bin")
	if err != nil || status != 200 || len(body) != 1024 {
		t.Errorf("GET: got %d, %d bytes, err %v, want 200 with 1024 bytes", status, len(body), err)
	}
	var req fasthttp.Request
	var resp fasthttp.Response
	req.SetRequestURI("http://origin.test/")
	req.Header.Set(HeaderReset, "1")
	if err := c.Do(&req, &resp); err == nil {
		t.Errorf("GET with %s: got %d, want a connection error", HeaderReset, resp.StatusCode())
	}
	if got := s.Count("/bench/1k.bin"); got != 1 {
		t.Errorf("Count: got %d, want 1", got)
	}
}

// Faults are copied by New: changing the caller's slice later has no effect.
func TestFaultsCopied(t *testing.T) {
	faults := []Fault{{PathPrefix: "/css/", Status: 503}}
	s := startServer(t, Config{Faults: faults})
	faults[0].Status = 500
	if r := do(t, newClient(t), "GET", s.URL()+"/css/site.css", nil); r.status != 503 {
		t.Errorf("status: got %d, want 503 from the rule as given to New", r.status)
	}
}

// syncBuffer is a bytes.Buffer safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *syncBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func TestDebugLog(t *testing.T) {
	var buf syncBuffer
	logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := startServer(t, Config{Logger: logger})
	c := newClient(t)
	do(t, c, "GET", s.URL()+"/css/site.css", nil)
	doErr(c, "GET", s.URL()+"/js/app.js", map[string]string{HeaderReset: "1"})
	for _, want := range []string{
		"msg=\"demo origin listening\"",
		"uri=/css/site.css status=200 outcome=served",
		"uri=/js/app.js status=0 outcome=reset",
	} {
		if got := buf.String(); !strings.Contains(got, want) {
			t.Errorf("log: got %q, want it to contain %q", got, want)
		}
	}
}

// Request heads of the size an edge forwards with real cookies are accepted.
func TestLargeRequestHead(t *testing.T) {
	s := startServer(t, Config{})
	r := do(t, newClient(t), "GET", s.URL()+"/dyn/h?echo=1", map[string]string{"Cookie": strings.Repeat("c", 12<<10)})
	if r.status != 200 {
		t.Errorf("12 KiB cookie: got %d, want 200", r.status)
	}
}

// A panic below the handler becomes a 500, and a reset registered before
// it is withdrawn so the client does get that 500.
func TestRecoverPanic(t *testing.T) {
	var buf syncBuffer
	s, err := New(Config{Logger: slog.New(slog.NewTextHandler(&buf, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	var ctx fasthttp.RequestCtx
	func() {
		defer s.recoverPanic(&ctx)
		s.resetConn(&ctx)
		panic("boom")
	}()
	if got := ctx.Response.StatusCode(); got != 500 || ctx.Hijacked() {
		t.Errorf("got status %d, hijacked %v, want 500 and not hijacked", got, ctx.Hijacked())
	}
	if !strings.Contains(buf.String(), "panic=boom") {
		t.Errorf("log: got %q, want the panic logged", buf.String())
	}
}

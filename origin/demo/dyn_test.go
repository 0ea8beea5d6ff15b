package demo

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestDynamic(t *testing.T) {
	s := startServer(t, Config{})
	c := newClient(t)
	tests := []struct {
		name       string
		method     string
		query      string
		hdr        map[string]string
		wantStatus int
		wantSize   int // -1: don't check
		wantHeader map[string]string
		noHeader   []string
	}{
		{name: "defaults", query: "", wantStatus: 200, wantSize: 1024,
			wantHeader: map[string]string{"Content-Type": "text/plain; charset=utf-8", "Accept-Ranges": "bytes"},
			noHeader:   []string{"Cache-Control", "ETag", "Last-Modified", "Vary"}},
		{name: "size", query: "size=100", wantStatus: 200, wantSize: 100},
		{name: "empty", query: "size=0", wantStatus: 200, wantSize: 0},
		{name: "headers", query: "h.Cache-Control=max-age%3D60&h.Surrogate-Key=a%20b&h.X-Test=1", wantStatus: 200, wantSize: 1024,
			wantHeader: map[string]string{"Cache-Control": "max-age=60", "Surrogate-Key": "a b", "X-Test": "1"}},
		{name: "content type override", query: "h.Content-Type=image/png", wantStatus: 200, wantSize: 1024,
			wantHeader: map[string]string{"Content-Type": "image/png"}},
		{name: "status", query: "status=404&h.Cache-Control=max-age%3D10", wantStatus: 404, wantSize: 1024,
			wantHeader: map[string]string{"Cache-Control": "max-age=10"}},
		{name: "status 503", query: "status=503", wantStatus: 503, wantSize: 1024},
		{name: "status 204 has no body", query: "status=204", wantStatus: 204, wantSize: 0},
		{name: "etag", query: "etag=v1", wantStatus: 200, wantSize: 1024, wantHeader: map[string]string{"ETag": `"v1"`}},
		{name: "weak etag", query: "etag=W/%22v1%22", wantStatus: 200, wantSize: 1024, wantHeader: map[string]string{"ETag": `W/"v1"`}},
		{name: "etag match", query: "etag=v1&h.Cache-Control=max-age%3D5", hdr: map[string]string{"If-None-Match": `"v1"`}, wantStatus: 304, wantSize: 0,
			wantHeader: map[string]string{"ETag": `"v1"`, "Cache-Control": "max-age=5"}},
		{name: "etag mismatch", query: "etag=v2", hdr: map[string]string{"If-None-Match": `"v1"`}, wantStatus: 200, wantSize: 1024},
		{name: "last-modified", query: "lm=1700000000", wantStatus: 200, wantSize: 1024,
			wantHeader: map[string]string{"Last-Modified": "Tue, 14 Nov 2023 22:13:20 GMT"}},
		{name: "last-modified IMS", query: "lm=1700000000", hdr: map[string]string{"If-Modified-Since": "Tue, 14 Nov 2023 22:13:20 GMT"}, wantStatus: 304, wantSize: 0},
		{name: "no conditional on error status", query: "etag=v1&status=404", hdr: map[string]string{"If-None-Match": `"v1"`}, wantStatus: 404, wantSize: 1024},
		{name: "range", query: "size=100", hdr: map[string]string{"Range": "bytes=10-19"}, wantStatus: 206, wantSize: 10,
			wantHeader: map[string]string{"Content-Range": "bytes 10-19/100"}},
		{name: "unknown params ignored", query: "v=123&cachebust", wantStatus: 200, wantSize: 1024},
		{name: "POST", method: "POST", query: "size=10", wantStatus: 200, wantSize: 10},
		{name: "PUT", method: "PUT", query: "size=10", wantStatus: 200, wantSize: 10},
		{name: "DELETE", method: "DELETE", query: "size=10", wantStatus: 200, wantSize: 10},
		{name: "PATCH", method: "PATCH", wantStatus: 405, wantSize: -1, wantHeader: map[string]string{"Allow": "GET, HEAD, POST, PUT, DELETE"}},
		{name: "bad size", query: "size=abc", wantStatus: 400, wantSize: -1},
		{name: "negative size", query: "size=-1", wantStatus: 400, wantSize: -1},
		{name: "size too big", query: "size=67108865", wantStatus: 400, wantSize: -1},
		{name: "bad status", query: "status=99", wantStatus: 400, wantSize: -1},
		{name: "framing header", query: "h.Content-Length=5", wantStatus: 400, wantSize: -1},
		{name: "bad header name", query: "h.Bad%20Name=1", wantStatus: 400, wantSize: -1},
		{name: "header injection", query: "h.X=a%0D%0AX-Evil:%201", wantStatus: 400, wantSize: -1},
		{name: "bad etag", query: "etag=a%22b", wantStatus: 400, wantSize: -1},
		{name: "bad chunked", query: "chunked=maybe", wantStatus: 400, wantSize: -1},
		{name: "bad chunkdelay", query: "chunked=1&chunkdelay=1h", wantStatus: 400, wantSize: -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := tt.method
			if method == "" {
				method = "GET"
			}
			r := do(t, c, method, s.URL()+"/dyn/obj?"+tt.query, tt.hdr)
			if r.status != tt.wantStatus {
				t.Fatalf("status: got %d (%q), want %d", r.status, r.body, tt.wantStatus)
			}
			if tt.wantSize >= 0 && len(r.body) != tt.wantSize {
				t.Errorf("body: got %d bytes, want %d", len(r.body), tt.wantSize)
			}
			for k, v := range tt.wantHeader {
				if got := r.header.Get(k); got != v {
					t.Errorf("%s: got %q, want %q", k, got, v)
				}
			}
			for _, k := range tt.noHeader {
				if got := r.header.Get(k); got != "" {
					t.Errorf("%s: got %q, want none", k, got)
				}
			}
		})
	}
}

func TestDynamicBodyIsDeterministic(t *testing.T) {
	a, b := startServer(t, Config{}), startServer(t, Config{})
	c := newClient(t)
	small := do(t, c, "GET", a.URL()+"/dyn/x?size=100", nil).body
	large := do(t, c, "GET", b.URL()+"/dyn/x?size=5000&ignored=1", nil).body
	other := do(t, c, "GET", a.URL()+"/dyn/y?size=100", nil).body
	if !bytes.HasPrefix(large, small) {
		t.Errorf("got different bytes for the same path on two servers, want the 100-byte body to prefix the 5000-byte one")
	}
	if bytes.Equal(small, other) {
		t.Errorf("got equal bodies for /dyn/x and /dyn/y, want content derived from the path")
	}
	for i, c := range large {
		if c != '\n' && !strings.ContainsRune(textLetter, rune(c)) {
			t.Fatalf("byte %d is %q, want printable text", i, c)
		}
	}
}

func TestDynamicRepeatedHeader(t *testing.T) {
	s := startServer(t, Config{})
	r := do(t, newClient(t), "GET", s.URL()+"/dyn/v?h.Vary=Accept-Encoding&h.Vary=Accept-Language", nil)
	if got, want := r.header.Values("Vary"), []string{"Accept-Encoding", "Accept-Language"}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("Vary: got %q, want %q", got, want)
	}
}

func TestDynamicChunked(t *testing.T) {
	s := startServer(t, Config{})
	c := newClient(t)
	plain := do(t, c, "GET", s.URL()+"/dyn/ch?size=3000", nil)
	r := do(t, c, "GET", s.URL()+"/dyn/ch?size=3000&chunked=1&chunksize=512", nil)
	if r.length != -1 || len(r.te) != 1 || r.te[0] != "chunked" {
		t.Errorf("framing: got Content-Length %d, Transfer-Encoding %q, want -1 and [chunked]", r.length, r.te)
	}
	if !bytes.Equal(r.body, plain.body) {
		t.Errorf("chunked body: got %d bytes, want the same 3000 bytes as unchunked", len(r.body))
	}
	head := do(t, c, "HEAD", s.URL()+"/dyn/ch?size=3000&chunked=1", nil)
	if head.status != 200 || len(head.body) != 0 {
		t.Errorf("HEAD chunked: got %d with %d bytes, want 200 without body", head.status, len(head.body))
	}
	// The connection is still usable after the HEAD: no stray bytes.
	if again := do(t, c, "GET", s.URL()+"/dyn/ch?size=10", nil); again.status != 200 || len(again.body) != 10 {
		t.Errorf("GET after chunked HEAD: got %d with %d bytes, want 200 with 10", again.status, len(again.body))
	}
}

// With a chunk delay the body streams: the first chunk arrives while the
// second one is still minutes away. Close then ends the delays and the body
// completes.
func TestDynamicChunkedStreams(t *testing.T) {
	s := startServer(t, Config{})
	conn, br := rawConn(t, s, "GET /dyn/stream?size=300&chunked=1&chunksize=100&chunkdelay=10m HTTP/1.1\r\nHost: x\r\n\r\n")
	status, h := readHead(t, br)
	if status != "HTTP/1.1 200 OK" || h["transfer-encoding"] != "chunked" {
		t.Fatalf("got %q with Transfer-Encoding %q, want 200 chunked", status, h["transfer-encoding"])
	}
	size, err := br.ReadString('\n')
	if err != nil || strings.TrimSpace(size) != "64" { // 100 in hex
		t.Fatalf("first chunk size line: got %q (%v), want 64", size, err)
	}
	first := make([]byte, 100+2)
	if _, err := io.ReadFull(br, first); err != nil {
		t.Fatalf("first chunk: %v", err)
	}
	// Nothing more can arrive before the 10-minute delay.
	conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := br.Read(make([]byte, 1)); !isTimeout(err) {
		t.Fatalf("read during chunk delay: got %d bytes, err %v, want a timeout", n, err)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	// Without delays the remaining chunks may coalesce; what matters is
	// that the chunked body completes with the right bytes.
	rest, err := io.ReadAll(httputil.NewChunkedReader(br))
	if err != nil {
		t.Fatalf("read rest after Close: %v", err)
	}
	want := make([]byte, 300)
	pattern{seed: seedOf("/dyn/stream"), text: true}.ReadAt(want, 0)
	if got := append(first[:100:100], rest...); !bytes.Equal(got, want) {
		t.Errorf("body: got %d bytes %q, want the 300-byte body of /dyn/stream", len(got), got)
	}
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded)
}

func TestEcho(t *testing.T) {
	s := startServer(t, Config{})
	c := newClient(t)
	req, err := http.NewRequest("POST", s.URL()+"/dyn/echo?echo=1&h.Cache-Control=no-store", strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Forwarded-For", "203.0.113.7")
	req.Header.Add("Via", "1.1 edge-a")
	req.Header.Add("Via", "1.1 edge-b")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc echoDoc
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatalf("decode: %v", err)
	}
	if got := resp.Header.Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type: got %q, want application/json", got)
	}
	if got := resp.Header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control: got %q, want no-store from h.Cache-Control", got)
	}
	checks := []struct{ name, got, want string }{
		{"method", doc.Method, "POST"},
		{"uri", doc.URI, "/dyn/echo?echo=1&h.Cache-Control=no-store"},
		{"path", doc.Path, "/dyn/echo"},
		{"host", doc.Host, s.Addr()},
		{"proto", doc.Proto, "HTTP/1.1"},
		{"X-Forwarded-For", strings.Join(doc.Headers["X-Forwarded-For"], ","), "203.0.113.7"},
		{"Via", strings.Join(doc.Headers["Via"], ","), "1.1 edge-a,1.1 edge-b"},
		{"Host header", strings.Join(doc.Headers["Host"], ","), s.Addr()},
		{"body_size", strconv.Itoa(doc.BodySize), "5"},
	}
	for _, ck := range checks {
		if ck.got != ck.want {
			t.Errorf("%s: got %q, want %q", ck.name, ck.got, ck.want)
		}
	}
	if !strings.HasPrefix(doc.RemoteAddr, "127.0.0.1:") {
		t.Errorf("remote_addr: got %q, want 127.0.0.1:port", doc.RemoteAddr)
	}
}

// Hop-by-hop headers an edge forgot to strip are visible in the echo.
func TestEchoShowsHopByHopHeaders(t *testing.T) {
	s := startServer(t, Config{})
	_, br := rawConn(t, s, "GET /dyn/e?echo=1 HTTP/1.1\r\nHost: origin.test\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nTE: trailers\r\nKeep-Alive: timeout=5\r\n\r\n")
	status, h := readHead(t, br)
	n, err := strconv.Atoi(h["content-length"])
	if status != "HTTP/1.1 200 OK" || err != nil {
		t.Fatalf("got %q, Content-Length %q, want 200 with a length", status, h["content-length"])
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(br, body); err != nil {
		t.Fatal(err)
	}
	var doc echoDoc
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatalf("decode %q: %v", body, err)
	}
	for name, want := range map[string]string{"Connection": "keep-alive, X-Hop", "X-Hop": "1", "Te": "trailers", "Keep-Alive": "timeout=5", "Host": "origin.test"} {
		if got := strings.Join(doc.Headers[name], ","); got != want {
			t.Errorf("%s: got %q, want %q (headers %v)", name, got, want, doc.Headers)
		}
	}
}

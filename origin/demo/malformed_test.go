package demo

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// Malformed requests get an error response or a closed connection, and the
// server keeps serving.
func TestMalformedRequests(t *testing.T) {
	s := startServer(t, Config{})
	c := newClient(t)
	tests := []struct {
		name, raw  string
		wantPrefix string // "" = any outcome but a crash
	}{
		{"binary garbage", "\x00\x01\x02\xff\r\n\r\n", ""},
		{"no request line", "\r\n\r\n", ""},
		{"method only", "GET\r\n\r\n", ""},
		{"bad version", "GET / HTTP/9.9\r\nHost: x\r\n\r\n", ""},
		{"no host", "GET / HTTP/1.1\r\n\r\n", ""},
		{"huge header", "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 64<<10) + "\r\n\r\n", ""},
		{"bad percent encoding", "GET /%zz%/%%% HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 404"},
		{"dot segments", "GET /../../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 404"},
		{"absolute form", "GET http://other.test/css/site.css HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 200"},
		{"bad chunked body", "POST /dyn/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n", ""},
		{"negative length", "POST /dyn/x HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", ""},
		{"conflicting lengths", "POST /dyn/x HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", ""},
		{"huge size", "GET /dyn/x?size=99999999999999999999999 HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 400"},
		{"NUL in query header", "GET /dyn/x?h.X=%00 HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 400"},
		{"weird range", "GET /bench/1k.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=--1-\r\n\r\n", "HTTP/1.1 200"},
		{"weird conditionals", "GET / HTTP/1.1\r\nHost: x\r\nIf-None-Match: W/\r\nIf-Range: \"\r\n\r\n", "HTTP/1.1 200"},
		{"truncated request", "GET / HTTP/1.1\r\nHo", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := net.DialTimeout("tcp", s.Addr(), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.WriteString(conn, tt.raw); err != nil {
				t.Fatalf("write: %v", err)
			}
			// Half-close: a server waiting for more bytes gives up, and a
			// keep-alive connection ends after its response.
			conn.(*net.TCPConn).CloseWrite()
			got, _ := io.ReadAll(io.LimitReader(conn, 512))
			if tt.wantPrefix != "" && !strings.HasPrefix(string(got), tt.wantPrefix) {
				t.Errorf("got %q, want a response starting %q", got, tt.wantPrefix)
			}
		})
	}
	if r := do(t, c, "GET", s.URL()+"/__origin/health", nil); r.status != 200 {
		t.Errorf("health after malformed requests: got %d, want 200", r.status)
	}
}

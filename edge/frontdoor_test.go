package edge

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeshield/edgeshield/edge/certs"
)

// framingRow is one raw-bytes attack (or control) on the public listener.
type framingRow struct {
	name   string
	raw    string // exact bytes written; a request for /smug is appended when closed
	want   []int  // statuses of the responses, in order
	closed bool   // the node closes the connection after them
}

func post(hdr, body string) string {
	return "POST /p HTTP/1.1\r\nHost: x\r\n" + hdr + "\r\n" + body
}

var framingRows = []framingRow{
	// RFC 9112 §6.1: Content-Length together with Transfer-Encoding.
	{"CL and TE", post("Content-Length: 66\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"), []int{400}, true},
	{"TE then CL", post("Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", "0\r\n\r\n"), []int{400}, true},
	{"CL and TE trailing space", post("Content-Length: 66\r\nTransfer-Encoding: chunked \r\n", "0\r\n\r\n"), []int{400}, true},
	{"CL and TE tab", post("Content-Length: 66\r\nTransfer-Encoding:\tchunked\r\n", "0\r\n\r\n"), []int{400}, true},
	{"CL and TE upper case", post("Content-Length: 66\r\nTransfer-Encoding: CHUNKED\r\n", "0\r\n\r\n"), []int{400}, true},
	{"CL and TE behind bare LF", post("Content-Length: 66\r\nX-A: b\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"), []int{400}, true},
	{"TE behind bare LF", post("X-A: b\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"), []int{400}, true},
	{"bare LF after request line", "POST /p HTTP/1.1\nHost: x\r\nContent-Length: 0\r\n\r\n", []int{400}, true},
	{"bare LF ending the head", "GET /p HTTP/1.1\r\nHost: x\r\n\n", []int{400}, true},
	{"TE in HTTP/1.0", "POST /p HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", []int{400}, true},
	// Transfer-Encoding values (RFC 9112 §6.1, §6.3 item 4).
	{"TE chunked, chunked", post("Transfer-Encoding: chunked, chunked\r\n", "0\r\n\r\n"), []int{400}, true},
	{"TE identity", post("Transfer-Encoding: identity\r\n", ""), []int{400}, true},
	{"TE gzip, chunked", post("Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n"), []int{501}, true},
	{"TE chunked, gzip", post("Transfer-Encoding: chunked, gzip\r\n", "0\r\n\r\n"), []int{400}, true},
	{"TE two lines", post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"), []int{400}, true},
	{"TE empty element", post("Transfer-Encoding: ,chunked\r\n", "0\r\n\r\n"), []int{400}, true},
	{"TE with vertical tab", post("Transfer-Encoding: \vchunked\r\n", "0\r\n\r\n"), []int{400}, true},
	// Content-Length values (RFC 9112 §6.2, §6.3 item 5).
	{"CL plus sign", post("Content-Length: +5\r\n", "hello"), []int{400}, true},
	{"CL minus", post("Content-Length: -1\r\n", ""), []int{400}, true},
	{"CL list", post("Content-Length: 5, 6\r\n", "hello"), []int{400}, true},
	{"CL list of equal values", post("Content-Length: 5, 5\r\n", "hello"), []int{400}, true},
	{"CL two lines differing", post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello"), []int{400}, true},
	{"CL two lines equal", post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"), []int{400}, true},
	{"CL inner space", post("Content-Length: 1 5\r\n", "hello"), []int{400}, true},
	{"CL hex", post("Content-Length: 0x5\r\n", "hello"), []int{400}, true},
	{"CL overflow", post("Content-Length: 99999999999999999999999\r\n", "hello"), []int{400}, true},
	{"CL empty", post("Content-Length:\r\n", ""), []int{400}, true},
	// Leading zeros and OWS are valid (1*DIGIT, §5.5): the body is framed
	// by the decimal value, so the request behind it is served normally.
	{"CL leading zeros", post("Content-Length: 005\r\n", "hello") + "GET /after HTTP/1.1\r\nHost: x\r\n\r\n", []int{200, 200}, false},
	{"CL leading spaces", post("Content-Length:    5  \r\n", "hello") + "GET /after HTTP/1.1\r\nHost: x\r\n\r\n", []int{200, 200}, false},
	// Chunked syntax (RFC 9112 §7.1).
	{"chunk ext NUL", post("Transfer-Encoding: chunked\r\n", "1;\x00junk\r\nA\r\n0\r\n\r\n"), []int{400}, true},
	{"chunk ext CR", post("Transfer-Encoding: chunked\r\n", "1;a\rb\r\nA\r\n0\r\n\r\n"), []int{400}, true},
	{"chunk ext bare LF", post("Transfer-Encoding: chunked\r\n", "1;a\nA\r\n0\r\n\r\n"), []int{400}, true},
	{"chunk size overflow", post("Transfer-Encoding: chunked\r\n", "ffffffffffffffffff\r\nA\r\n0\r\n\r\n"), []int{400}, true},
	{"chunk size trailing garbage", post("Transfer-Encoding: chunked\r\n", "5x\r\nhello\r\n0\r\n\r\n"), []int{400}, true},
	{"chunk size trailing space", post("Transfer-Encoding: chunked\r\n", "5 \r\nhello\r\n0\r\n\r\n"), []int{400}, true},
	{"chunk size empty", post("Transfer-Encoding: chunked\r\n", "\r\nhello\r\n0\r\n\r\n"), []int{400}, true},
	{"chunk size negative", post("Transfer-Encoding: chunked\r\n", "-5\r\nhello\r\n0\r\n\r\n"), []int{400}, true},
	{"chunk size bare LF", post("Transfer-Encoding: chunked\r\n", "5\nhello\r\n0\r\n\r\n"), []int{400}, true},
	{"chunk data too long", post("Transfer-Encoding: chunked\r\n", "3\r\nhello\r\n0\r\n\r\n"), []int{400}, true},
	{"chunk data bare LF", post("Transfer-Encoding: chunked\r\n", "5\r\nhello\n0\r\n\r\n"), []int{400}, true},
	{"trailer bare LF", post("Transfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\nX-T: 1\n\r\n"), []int{400}, true},
	{"chunked with extension and trailer", post("Transfer-Encoding: chunked\r\n", "5;n=\"v\"\r\nhello\r\n0\r\nX-T: 1\r\n\r\n") +
		"GET /after HTTP/1.1\r\nHost: x\r\n\r\n", []int{200, 200}, false},
	// Connection is a case-insensitive token list (RFC 9110 §7.6.1): close
	// anywhere in it closes after the response. The pipelined request
	// behind it must not be served.
	{"Connection: close", "GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", []int{200}, true},
	{"Connection: Close", "GET /c HTTP/1.1\r\nHost: x\r\nConnection: Close\r\n\r\n", []int{200}, true},
	{"Connection: keep-alive, close", "GET /c HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, close\r\n\r\n", []int{200}, true},
	{"Connection: close, X-Foo", "GET /c HTTP/1.1\r\nHost: x\r\nConnection: close, X-Foo\r\n\r\n", []int{200}, true},
	{"Connection: two lines", "GET /c HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nConnection: CLOSE\r\n\r\n", []int{200}, true},
	{"Connection close on an error path", "GET /c HTTP/1.1\r\nHost: x\r\nConnection: x, close\r\nX-Edgeshield-Hop: 1\r\n\r\n", []int{403}, true},
	{"Connection close on a POST", post("Connection: Close\r\nContent-Length: 5\r\n", "hello"), []int{200}, true},
	{"Connection: keep-alive stays open", "GET /c HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n", []int{200}, false},
	{"HTTP/1.0 closes", "GET /c HTTP/1.0\r\n\r\n", []int{200}, true},
	// Field syntax (RFC 9112 §5, RFC 9110 §5).
	{"space inside field name", "GET /p HTTP/1.1\r\nHost: x\r\nBad Header: v\r\n\r\n", []int{400}, true},
	{"space before colon", "GET /p HTTP/1.1\r\nHost: x\r\nX-A : v\r\n\r\n", []int{400}, true},
	{"tab before colon", "GET /p HTTP/1.1\r\nHost: x\r\nX-A\t: v\r\n\r\n", []int{400}, true},
	{"invalid name char", "GET /p HTTP/1.1\r\nHost: x\r\nX(A): v\r\n\r\n", []int{400}, true},
	{"non-ASCII name", "GET /p HTTP/1.1\r\nHost: x\r\nX-\xc3\xa9: v\r\n\r\n", []int{400}, true},
	{"empty name", "GET /p HTTP/1.1\r\nHost: x\r\n: v\r\n\r\n", []int{400}, true},
	{"no colon", "GET /p HTTP/1.1\r\nHost: x\r\nX-A v\r\n\r\n", []int{400}, true},
	{"obs-fold", "GET /p HTTP/1.1\r\nHost: x\r\nX-A: b\r\n c\r\n\r\n", []int{400}, true},
	{"whitespace line after request line", "GET /p HTTP/1.1\r\n X-A: b\r\nHost: x\r\n\r\n", []int{400}, true},
	{"NUL in field value", "GET /p HTTP/1.1\r\nHost: x\r\nX-A: b\x00c\r\n\r\n", []int{400}, true},
	{"CR in field value", "GET /p HTTP/1.1\r\nHost: x\r\nX-A: b\rc\r\n\r\n", []int{400}, true},
	{"DEL in field value", "GET /p HTTP/1.1\r\nHost: x\r\nX-A: b\x7fc\r\n\r\n", []int{400}, true},
	{"missing Host", "GET /p HTTP/1.1\r\n\r\n", []int{400}, true},
	{"two Host lines", "GET /p HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", []int{400}, true},
	// Request line (RFC 9112 §3, §2.3).
	{"HTTP/2.0", "GET /p HTTP/2.0\r\nHost: x\r\n\r\n", []int{505}, true},
	{"HTTP/9.9", "GET /p HTTP/9.9\r\nHost: x\r\n\r\n", []int{505}, true},
	{"HTTP/0.9 line", "GET /smug\r\n\r\n", []int{400}, true},
	{"lower-case HTTP name", "GET /p http/1.1\r\nHost: x\r\n\r\n", []int{400}, true},
	{"long version", "GET /p HTTP/1.10\r\nHost: x\r\n\r\n", []int{400}, true},
	{"two spaces before target", "GET  /p HTTP/1.1\r\nHost: x\r\n\r\n", []int{400}, true},
	{"two spaces before version", "GET /p  HTTP/1.1\r\nHost: x\r\n\r\n", []int{400}, true},
	{"tab separator", "GET\t/p HTTP/1.1\r\nHost: x\r\n\r\n", []int{400}, true},
	{"space in target", "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", []int{400}, true},
	{"lower-case method", "get /smug HTTP/1.1\r\nHost: x\r\n\r\n", []int{400}, true},
	{"NUL in path", "GET /a\x00b HTTP/1.1\r\nHost: x\r\n\r\n", []int{400}, true},
	{"absolute-form naming another host", "GET http://evil.example/abs HTTP/1.1\r\nHost: x\r\n\r\n", []int{400}, true},
	{"absolute-form with userinfo", "GET http://a@x/abs HTTP/1.1\r\nHost: x\r\n\r\n", []int{400}, true},
	{"absolute-form naming Host", "GET http://x/abs HTTP/1.1\r\nHost: x\r\n\r\n", []int{200}, false},
	{"empty lines before request line", "\r\n\r\nGET /p HTTP/1.1\r\nHost: x\r\n\r\n", []int{200}, false},
	{"plain GET", "GET /p HTTP/1.1\r\nHost: x\r\n\r\n", []int{200}, false},
}

// TestFrontDoorFraming writes each row's exact bytes on a fresh connection
// to the public listener (plain and TLS): the statuses, whether the node
// closes the connection, and that the origin never sees the request
// smuggled behind the attack. The node keeps serving after all of it.
func TestFrontDoorFraming(t *testing.T) {
	o := newTestOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Cache-Control", "no-store")
		io.WriteString(w, "ok")
	})
	n := newTestNode(t, o.srv.URL, nil, func(c *Config) {
		c.TLS = TLSConfig{Config: certs.Config{Mode: "internal", Names: []string{"edge.test"}, Storage: t.TempDir()}, Listen: "127.0.0.1:0", HTTP: "serve"}
	})
	tlsConf := internalTLSClient(t, n)
	listeners := []struct {
		name string
		dial func() (net.Conn, error)
	}{
		{"plain", func() (net.Conn, error) { return net.Dial("tcp", n.Addr()) }},
		{"tls", func() (net.Conn, error) { return tls.Dial("tcp", n.TLSAddr(), tlsConf) }},
	}
	for _, l := range listeners {
		for i, row := range framingRows {
			t.Run(l.name+"/"+row.name, func(t *testing.T) {
				// A path of its own, so that one row's failure is not
				// blamed on the next.
				smug := fmt.Sprintf("/smug-%s-%d", l.name, i)
				row.raw = strings.ReplaceAll(row.raw, "/smug", smug)
				runFramingRow(t, l.dial, row, smug)
				if c := o.count(smug); c != 0 {
					t.Fatalf("origin saw the smuggled request %d times, want 0", c)
				}
			})
		}
	}
	if r, _ := get(t, "http://"+n.Addr()+"/p"); r.StatusCode != 200 {
		t.Fatalf("GET after the attacks: %d, want 200", r.StatusCode)
	}
}

func internalTLSClient(t *testing.T, n *Node) *tls.Config {
	t.Helper()
	waitFor(t, "certificate for edge.test", 15*time.Second, func() bool {
		_, b := get(t, "http://"+n.AdminAddr()+"/tls")
		return strings.Contains(b, `"not_after"`) && !strings.Contains(b, `"not_after": "0001`)
	})
	_, rootPEM := get(t, "http://"+n.AdminAddr()+"/tls/root.pem")
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(rootPEM)) {
		t.Fatalf("no root PEM from /tls/root.pem: %q", rootPEM)
	}
	return &tls.Config{RootCAs: pool, ServerName: "edge.test", NextProtos: []string{"http/1.1"}}
}

// runFramingRow writes the row (with a request for smug behind it when the
// connection must close) and checks the answers.
func runFramingRow(t *testing.T, dial func() (net.Conn, error), row framingRow, smug string) {
	t.Helper()
	c, err := dial()
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	raw := row.raw
	if row.closed {
		raw += "GET " + smug + " HTTP/1.1\r\nHost: x\r\n\r\n"
	}
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatalf("write: %v", err)
	}
	br := bufio.NewReader(c)
	for i, want := range row.want {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d: %v, want status %d", i+1, err, want)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("response %d: got status %d, want %d", i+1, resp.StatusCode, want)
		}
	}
	if !row.closed {
		// Still open: a further request on it is answered.
		if _, err := io.WriteString(c, "GET /probe HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatalf("connection closed, want it open (write: %v)", err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("connection closed, want it open (%v)", err)
		}
		resp.Body.Close()
		return
	}
	// Closed: nothing more comes (the smuggled request is not answered).
	b, err := br.ReadByte()
	if err == nil {
		rest, _ := br.Peek(br.Buffered())
		t.Fatalf("got more bytes after the responses (%q), want the connection closed", append([]byte{b}, rest...))
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after the responses, want it closed")
	}
}

// syncBuffer is a log sink shared by the node's goroutines.
type syncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestFrontDoorLogsNoSecrets sends malformed requests carrying credentials
// and checks that no log line of the node (debug level: every line that
// can carry request bytes) holds them.
func TestFrontDoorLogsNoSecrets(t *testing.T) {
	const secret = "s3cr3t-T0KEN"
	o := newTestOrigin(t, nil, static("ok"))
	var logs syncBuffer
	cfg := DefaultConfig()
	cfg.Name = "edge-test"
	cfg.Listen = "127.0.0.1:0"
	cfg.Origin.URL = o.srv.URL
	n, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown(t.Context())
	creds := "Authorization: Bearer " + secret + "\r\nCookie: sid=" + secret + "\r\nProxy-Authorization: Basic " + secret +
		"\r\nX-Api-Key: " + secret + "\r\n"
	attacks := []string{
		"GET /p HTTP/1.1\r\nHost: x\r\n" + creds + "Bad Header: v\r\n\r\n",
		"GET /p HTTP/1.1\r\nHost: x\r\n" + creds + "X-A: \x00\r\n\r\n",
		"GET /p HTTP/1.1\r\nHost: x\r\nCookie: sid=" + secret + "\x01\r\n\r\n",
		"GET /p HTTP/1.1\r\nHost: x\r\nAuthorization: " + secret + "\x00\r\n\r\n",
		"GET /p HTTP/2.0\r\nHost: x\r\n" + creds + "\r\n",
		post(creds+"Transfer-Encoding: chunked\r\n", "zz\r\n"),
		"GET noslash HTTP/1.1\r\nHost: x\r\n" + creds + "\r\n",
		"GET /p HTTP/1.1\r\nHost: x\r\n" + creds + strings.Repeat("X-Pad: "+strings.Repeat("a", 1000)+"\r\n", 40) + "\r\n",
	}
	for _, a := range attacks {
		c, err := net.Dial("tcp", n.Addr())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, a)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		c.Close()
		if err != nil || resp.StatusCode < 400 {
			t.Fatalf("attack %q: %v, want an error status", a[:20], err)
		}
	}
	if r, _ := get(t, "http://"+n.Addr()+"/p"); r.StatusCode != 200 {
		t.Fatalf("GET after the attacks: %d, want 200", r.StatusCode)
	}
	n.Shutdown(t.Context())
	got := logs.String()
	if !strings.Contains(got, "malformed request") {
		t.Fatalf("no malformed-request log line captured; the test proves nothing:\n%s", got)
	}
	if strings.Contains(got, secret) {
		t.Fatalf("the logs hold the secret %q:\n%s", secret, got)
	}
}

func TestRedactSecrets(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"Authorization: Bearer abc\r\nX: y", "Authorization: [redacted]\r\nX: y"},
		{`contents: "GET / HTTP/1.1\r\ncookie: a=b\r\nHost: x\r\n"`, `contents: "GET / HTTP/1.1\r\ncookie: [redacted]\r\nHost: x\r\n"`},
		{`contents: "Proxy-Authorization : Basic \"x\\y\"\r\n"`, `contents: "Proxy-Authorization : [redacted]\r\n"`},
		{`invalid header value "a=SECRET\x01"`, `invalid header value "[redacted]"`},
		{"X-Cookie-Name: keep", "X-Cookie-Name: keep"},
		{"no secrets here", "no secrets here"},
	} {
		if got := redactSecrets(tc.in); got != tc.want {
			t.Errorf("redactSecrets(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestFrameCheckAllocatesNothing: the connection-level check costs no
// allocation per request (it runs on every fresh hit).
func TestFrameCheckAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race")
	}
	req := []byte("GET /assets/app.js?v=3 HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: Mozilla/5.0\r\n" +
		"Accept: */*\r\nAccept-Encoding: gzip, deflate, br, zstd\r\nConnection: keep-alive\r\nCookie: a=b\r\n\r\n" +
		"POST /api HTTP/1.1\r\nHost: www.example.com\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\n\r\n")
	var f frameCheck
	allocs := testing.AllocsPerRun(1000, func() {
		if ok, err := f.feed(req); err != nil || ok != len(req) {
			t.Fatalf("feed: %d, %v", ok, err)
		}
	})
	if allocs != 0 {
		t.Fatalf("frameCheck allocates %.1f times per request, want 0", allocs)
	}
}

// TestFrameCheckSplitReads: the verdict does not depend on how the bytes
// arrive (one read or one byte per read).
func TestFrameCheckSplitReads(t *testing.T) {
	for _, row := range framingRows {
		var whole, bytewise frameCheck
		_, errWhole := whole.feed([]byte(row.raw))
		var errBytes *framingError
		for i := 0; i < len(row.raw) && errBytes == nil; i++ {
			_, errBytes = bytewise.feed([]byte{row.raw[i]})
		}
		if errWhole != errBytes {
			t.Errorf("%s: whole read %v, byte by byte %v", row.name, errWhole, errBytes)
		}
	}
}

// BenchmarkFrameCheck is the check's cost for a browser-like GET head.
func BenchmarkFrameCheck(b *testing.B) {
	req := []byte("GET /assets/app.js?v=3 HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36\r\n" +
		"Accept: */*\r\nAccept-Language: en-US,en;q=0.9\r\nAccept-Encoding: gzip, deflate, br, zstd\r\nConnection: keep-alive\r\n\r\n")
	var f frameCheck
	b.SetBytes(int64(len(req)))
	b.ReportAllocs()
	for b.Loop() {
		f.feed(req)
	}
}

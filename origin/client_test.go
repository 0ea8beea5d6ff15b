package origin

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeshield/edgeshield/internal/testnet"
	"github.com/valyala/fasthttp"
)

func TestNewClientValidation(t *testing.T) {
	tests := []struct {
		name    string
		cfg     ClientConfig
		wantErr bool
	}{
		{"http", ClientConfig{URL: "http://127.0.0.1:8080"}, false},
		{"https default port", ClientConfig{URL: "https://example.com"}, false},
		{"trailing slash", ClientConfig{URL: "http://example.com/"}, false},
		{"path", ClientConfig{URL: "http://example.com/api"}, true},
		{"query", ClientConfig{URL: "http://example.com?x=1"}, true},
		{"userinfo", ClientConfig{URL: "http://u:p@example.com"}, true},
		{"scheme", ClientConfig{URL: "ftp://example.com"}, true},
		{"no host", ClientConfig{URL: "http://"}, true},
		{"empty", ClientConfig{}, true},
		{"negative timeout", ClientConfig{URL: "http://a", HeaderTimeout: -1}, true},
		{"negative conns", ClientConfig{URL: "http://a", MaxConns: -1}, true},
		{"tiny header cap", ClientConfig{URL: "http://a", MaxHeaderBytes: 100}, true},
		{"tiny idle duration", ClientConfig{URL: "http://a", MaxIdleConnDuration: 1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := NewClient(tt.cfg)
			if (err != nil) != tt.wantErr {
				t.Fatalf("NewClient(%q): got err %v, want error %v", tt.cfg.URL, err, tt.wantErr)
			}
			if c != nil {
				c.Close()
			}
		})
	}
}

func TestNewClientDefaults(t *testing.T) {
	c := newTestClient(t, ClientConfig{URL: "https://example.com"})
	want := ClientConfig{
		URL: "https://example.com", ConnectTimeout: 5 * time.Second, HeaderTimeout: 30 * time.Second,
		IdleReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second, MaxConns: 512,
		MaxConnWait: time.Second, MaxIdleConnDuration: 90 * time.Second, MaxHeaderBytes: 16 << 10,
	}
	if got := c.cfg; got != want {
		t.Errorf("defaults: got %+v, want %+v", got, want)
	}
	if got, want := c.Addr(), "example.com:443"; got != want {
		t.Errorf("Addr: got %q, want %q", got, want)
	}
	if got := c.tls.ServerName; got != "example.com" {
		t.Errorf("TLS ServerName: got %q, want %q", got, "example.com")
	}
	if got := c.tls.NextProtos; len(got) != 1 || got[0] != "http/1.1" {
		t.Errorf("TLS NextProtos: got %q, want [http/1.1]", got)
	}
}

func TestClientKeepAlive(t *testing.T) {
	url, ln := startFastServer(t, func(ctx *fasthttp.RequestCtx) {
		fmt.Fprintf(ctx, "hello %s", ctx.Path())
	})
	c := newTestClient(t, ClientConfig{URL: url})
	for i := range 10 {
		status, body, err := get(t, c, fmt.Sprintf("/r%d", i))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if want := fmt.Sprintf("hello /r%d", i); status != 200 || body != want {
			t.Fatalf("request %d: got %d %q, want 200 %q", i, status, body, want)
		}
	}
	if got := ln.accepted.Load(); got != 1 {
		t.Errorf("accepted connections: got %d, want 1 (keep-alive reuse)", got)
	}
}

// TestClientRequestVerbatim checks what reaches the upstream: request line
// byte for byte, Host, forwarded fields, framing managed by the client.
func TestClientRequestVerbatim(t *testing.T) {
	got := make(chan string, 1)
	srv := startRawServer(t, func(c net.Conn, _ int) {
		br := bufio.NewReader(c)
		var head strings.Builder
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			head.WriteString(line)
			if line == "\r\n" {
				break
			}
		}
		body := make([]byte, 4)
		io.ReadFull(br, body)
		got <- head.String() + string(body)
		io.WriteString(c, "HTTP/1.1 204 No Content\r\n\r\n")
	})
	c := newTestClient(t, ClientConfig{URL: srv.url(), Name: "edgeshield-test"})
	resp, err := c.Do(context.Background(), &Request{
		Method:     "POST",
		RequestURI: "/a//b/../c?x=1&y=%2F&u=https://e.com/p",
		Host:       "www.example.com",
		Header: []Field{
			{"Accept", "text/html"}, {"X-Multi", "1"}, {"Cookie", `sess="quoted value"; flag`}, {"X-Multi", "2"},
			{"Content-Length", "999"}, {"Connection", "close"}, {"Host", "evil"},
		},
		Body: []byte("data"),
	})
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	resp.Body.Close()
	raw := <-got
	for _, want := range []string{
		"POST /a//b/../c?x=1&y=%2F&u=https://e.com/p HTTP/1.1\r\nHost: www.example.com\r\n",
		"Accept: text/html\r\nX-Multi: 1\r\nCookie: sess=\"quoted value\"; flag\r\nX-Multi: 2\r\n", // verbatim, in order
		"Content-Length: 4\r\n", "User-Agent: edgeshield-test\r\n", "\r\n\r\ndata",
	} {
		if !strings.Contains(raw, want) {
			t.Errorf("request: got %q, want it to contain %q", raw, want)
		}
	}
	for _, bad := range []string{"evil", "999", "Connection"} {
		if strings.Contains(raw, bad) {
			t.Errorf("request: got %q, want no %q", raw, bad)
		}
	}
	if n := strings.Count(raw, "Host:"); n != 1 {
		t.Errorf("request: got %d Host fields, want 1", n)
	}
}

func TestClientUserAgent(t *testing.T) {
	got := make(chan []string, 2)
	url, _ := startFastServer(t, func(ctx *fasthttp.RequestCtx) {
		var uas []string
		for k, v := range ctx.Request.Header.All() {
			if strings.EqualFold(string(k), "User-Agent") {
				uas = append(uas, string(v))
			}
		}
		got <- uas
	})
	c := newTestClient(t, ClientConfig{URL: url, Name: "edgeshield/1"})
	tests := []struct {
		name   string
		header []Field
		want   string
	}{
		{"none forwarded", nil, "edgeshield/1"},
		{"client's kept", []Field{{"user-agent", "curl/8"}}, "curl/8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := c.Do(context.Background(), &Request{Method: "GET", RequestURI: "/", Header: tt.header})
			if err != nil {
				t.Fatalf("Do: %v", err)
			}
			resp.Body.Close()
			if uas := <-got; len(uas) != 1 || uas[0] != tt.want {
				t.Errorf("User-Agent: got %q, want [%q]", uas, tt.want)
			}
		})
	}
}

// TestClientResponseCookiesVerbatim: Set-Cookie lines with the same cookie
// name (different paths) all survive, byte for byte.
func TestClientResponseCookiesVerbatim(t *testing.T) {
	cookies := []string{`a=1; Path=/x`, `a=2; Path=/y`, `q="quoted value"; HttpOnly`}
	srv := startRawServer(t, func(c net.Conn, _ int) {
		if _, err := readRequest(bufio.NewReader(c), nil); err != nil {
			return
		}
		var sb strings.Builder
		sb.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n")
		for _, v := range cookies {
			sb.WriteString("Set-Cookie: " + v + "\r\n")
		}
		sb.WriteString("\r\n")
		io.WriteString(c, sb.String())
	})
	c := newTestClient(t, ClientConfig{URL: srv.url()})
	resp, err := c.Do(context.Background(), &Request{Method: "GET", RequestURI: "/"})
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	resp.Body.Close()
	if got := header(resp.Header, "Set-Cookie"); strings.Join(got, "|") != strings.Join(cookies, "|") {
		t.Errorf("Set-Cookie: got %q, want %q", got, cookies)
	}
}

func TestClientResponseFields(t *testing.T) {
	url, ln := startFastServer(t, func(ctx *fasthttp.RequestCtx) {
		h := &ctx.Response.Header
		h.Add("Set-Cookie", "a=1")
		h.Add("Set-Cookie", "b=2")
		h.Add("Cache-Control", "max-age=60")
		switch string(ctx.Path()) {
		case "/chunked":
			ctx.SetBodyStreamWriter(func(w *bufio.Writer) { w.WriteString("streamed") })
		case "/empty":
			ctx.SetStatusCode(fasthttp.StatusNotModified)
		default:
			ctx.SetBodyString("twelve bytes")
		}
	})
	c := newTestClient(t, ClientConfig{URL: url})
	tests := []struct {
		method, uri string
		wantStatus  int
		wantLen     int64
		wantBody    string
	}{
		{"GET", "/fixed", 200, 12, "twelve bytes"},
		{"GET", "/chunked", 200, -1, "streamed"},
		{"HEAD", "/fixed", 200, 0, ""},
		{"GET", "/empty", 304, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.method+tt.uri, func(t *testing.T) {
			resp, err := c.Do(context.Background(), &Request{Method: tt.method, RequestURI: tt.uri})
			if err != nil {
				t.Fatalf("Do: %v", err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatalf("read body: %v", err)
			}
			if resp.Status != tt.wantStatus || resp.ContentLength != tt.wantLen || string(b) != tt.wantBody {
				t.Errorf("got %d len=%d %q, want %d len=%d %q", resp.Status, resp.ContentLength, b, tt.wantStatus, tt.wantLen, tt.wantBody)
			}
			if got := header(resp.Header, "Set-Cookie"); len(got) != 2 || got[0] != "a=1" || got[1] != "b=2" {
				t.Errorf("Set-Cookie: got %q, want [a=1 b=2]", got)
			}
			if got := header(resp.Header, "Cache-Control"); len(got) != 1 || got[0] != "max-age=60" {
				t.Errorf("Cache-Control: got %q, want [max-age=60]", got)
			}
			if got := header(resp.Header, "Content-Length"); tt.uri == "/fixed" && (len(got) != 1 || got[0] != "12") {
				t.Errorf("Content-Length field: got %q, want [12] (kept for HEAD too)", got)
			}
			if got := header(resp.Header, "Content-Type"); tt.wantStatus == 304 && len(got) != 0 {
				t.Errorf("Content-Type: got %q, want none (no default invented)", got)
			}
		})
	}
	if got := ln.accepted.Load(); got != 1 {
		t.Errorf("accepted connections: got %d, want 1 (HEAD/304/chunked keep the connection)", got)
	}
}

// TestClientRetry: the upstream answers the first request on a connection,
// then closes the connection upon reading the next one (the classic "server
// closed an idle keep-alive connection" race). A GET or HEAD is retried once
// on another connection; a POST is not; and a retry that fails the same
// way is not retried again.
func TestClientRetry(t *testing.T) {
	tests := []struct {
		name      string
		method    string
		idle      int   // keep-alive connections primed before the request
		wantReqs  int64 // requests the upstream reads for the tested call
		wantError error
	}{
		{"GET retried on a fresh connection", "GET", 1, 2, nil},
		{"HEAD retried on a fresh connection", "HEAD", 1, 2, nil},
		{"POST not retried", "POST", 1, 1, ErrReset},
		{"GET retried at most once", "GET", 2, 2, ErrReset},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var reqs atomic.Int64
			srv := startRawServer(t, func(c net.Conn, _ int) {
				br := bufio.NewReader(c)
				if _, err := readRequest(br, &reqs); err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				readRequest(br, &reqs) // then close without answering
			})
			c := newTestClient(t, ClientConfig{URL: srv.url()})
			// Prime tt.idle connections: hold each body open so that the
			// next request needs another connection.
			var bodies []io.Closer
			for range tt.idle {
				resp, err := c.Do(context.Background(), &Request{Method: "GET", RequestURI: "/prime"})
				if err != nil {
					t.Fatalf("priming: %v", err)
				}
				io.ReadAll(resp.Body)
				bodies = append(bodies, resp.Body)
			}
			for _, b := range bodies {
				b.Close()
			}
			before := reqs.Load()
			resp, err := c.Do(context.Background(), &Request{Method: tt.method, RequestURI: "/x"})
			if resp != nil {
				resp.Body.Close()
			}
			// The upstream counts a request after reading it; the client may
			// see the close before that bookkeeping is done.
			eventually(t, "upstream request count", func() bool { return reqs.Load()-before >= tt.wantReqs })
			if got := reqs.Load() - before; got != tt.wantReqs {
				t.Errorf("upstream requests: got %d, want %d", got, tt.wantReqs)
			}
			switch {
			case tt.wantError == nil && err != nil:
				t.Errorf("Do: got %v, want success", err)
			case tt.wantError != nil && !errors.Is(err, tt.wantError):
				t.Errorf("Do: got %v, want %v", err, tt.wantError)
			}
		})
	}
}

// TestClientNoRetryOnTimeout: a header timeout on a reused connection is
// not retried.
func TestClientNoRetryOnTimeout(t *testing.T) {
	var reqs atomic.Int64
	srv := startRawServer(t, func(c net.Conn, _ int) {
		br := bufio.NewReader(c)
		if _, err := readRequest(br, &reqs); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		readRequest(br, &reqs)
		io.Copy(io.Discard, br) // never answer; wait for the client to give up
	})
	c := newTestClient(t, ClientConfig{URL: srv.url(), HeaderTimeout: 100 * time.Millisecond})
	if _, _, err := get(t, c, "/prime"); err != nil {
		t.Fatalf("priming: %v", err)
	}
	_, _, err := get(t, c, "/slow")
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("Do: got %v, want ErrTimeout", err)
	}
	sentinel(t, err)
	if got := reqs.Load(); got != 2 {
		t.Errorf("upstream requests: got %d, want 2 (prime + one attempt)", got)
	}
}

// TestClientErrors maps upstream misbehaviour to the sentinels.
func TestClientErrors(t *testing.T) {
	refusedURL := "http://" + testnet.RefusedAddr(t)

	script := func(write string) func(c net.Conn, _ int) {
		return func(c net.Conn, _ int) {
			br := bufio.NewReader(c)
			if _, err := readRequest(br, nil); err != nil {
				return
			}
			io.WriteString(c, write)
		}
	}
	tests := []struct {
		name   string
		handle func(c net.Conn, i int) // nil: use refusedURL
		cfg    ClientConfig
		want   error
	}{
		{"refused port", nil, ClientConfig{}, ErrRefused},
		{"header timeout", func(c net.Conn, _ int) { io.Copy(io.Discard, c) }, ClientConfig{HeaderTimeout: 50 * time.Millisecond}, ErrTimeout},
		{"close before any byte", script(""), ClientConfig{}, ErrReset},
		{"close mid status line", script("HTTP/1.1 20"), ClientConfig{}, ErrReset},
		{"close mid headers", script("HTTP/1.1 200 OK\r\nContent-Type: te"), ClientConfig{}, ErrReset},
		{"garbage", script("HELLO WORLD\r\n\r\n"), ClientConfig{}, ErrBadResponse},
		{"binary garbage", script("\x00\x01\x02\xff\xfe\r\n\r\n"), ClientConfig{}, ErrBadResponse},
		{"bad status code", script("HTTP/1.1 abc OK\r\n\r\n"), ClientConfig{}, ErrBadResponse},
		{"bad content length", script("HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n"), ClientConfig{}, ErrBadResponse},
		{"huge header", script("HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("a", 32<<10) + "\r\n\r\n"), ClientConfig{MaxHeaderBytes: 16 << 10}, ErrBadResponse},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.URL = refusedURL
			if tt.handle != nil {
				cfg.URL = startRawServer(t, tt.handle).url()
			}
			c := newTestClient(t, cfg)
			_, _, err := get(t, c, "/")
			if !errors.Is(err, tt.want) {
				t.Fatalf("Do: got %v, want %v", err, tt.want)
			}
			sentinel(t, err)
		})
	}
}

func TestClientDialTimeout(t *testing.T) {
	// 192.0.2.0/24 (TEST-NET-1, RFC 5737) is not routed: the SYN goes
	// nowhere. Some sandboxes answer "unreachable" at once instead, which
	// is a refusal, not a timeout.
	c := newTestClient(t, ClientConfig{URL: "http://192.0.2.1:80", ConnectTimeout: 50 * time.Millisecond})
	_, _, err := get(t, c, "/")
	if errors.Is(err, ErrRefused) {
		t.Skipf("network answers for TEST-NET-1 at once: %v", err)
	}
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("Do: got %v, want ErrTimeout", err)
	}
	sentinel(t, err)
}

// TestClientWriteTimeout: an upstream that stops reading a large request
// body makes Do fail with ErrTimeout after WriteTimeout, not hang.
func TestClientWriteTimeout(t *testing.T) {
	stop := make(chan struct{})
	srv := startRawServer(t, func(c net.Conn, _ int) {
		io.CopyN(io.Discard, c, 1024) // read a little, then stop reading
		<-stop
	})
	t.Cleanup(func() { close(stop) }) // runs before the server's cleanup
	c := newTestClient(t, ClientConfig{URL: srv.url(), WriteTimeout: 100 * time.Millisecond})
	_, err := c.Do(context.Background(), &Request{Method: "PUT", RequestURI: "/upload", Body: make([]byte, 64<<20)})
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("Do: got %v, want ErrTimeout", err)
	}
	sentinel(t, err)
}

func TestClientStalledBody(t *testing.T) {
	srv := startRawServer(t, func(c net.Conn, _ int) {
		br := bufio.NewReader(c)
		if _, err := readRequest(br, nil); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
		io.Copy(io.Discard, br) // stall until the client gives up
	})
	const idle = 100 * time.Millisecond
	c := newTestClient(t, ClientConfig{URL: srv.url(), IdleReadTimeout: idle, HeaderTimeout: time.Minute})
	resp, err := c.Do(context.Background(), &Request{Method: "GET", RequestURI: "/"})
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	defer resp.Body.Close()
	start := time.Now()
	b, err := io.ReadAll(resp.Body)
	if string(b) != "0123456789" {
		t.Errorf("body before the stall: got %q, want %q", b, "0123456789")
	}
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("Read: got %v, want ErrTimeout", err)
	}
	sentinel(t, err)
	if elapsed := time.Since(start); elapsed < idle {
		t.Errorf("Read failed after %v, before IdleReadTimeout %v", elapsed, idle)
	}
	// The error is sticky.
	if _, err2 := resp.Body.Read(make([]byte, 1)); !errors.Is(err2, ErrTimeout) {
		t.Errorf("second Read: got %v, want ErrTimeout", err2)
	}
}

// TestClientBodyIdleTimeoutIsPerRead: a slow but steady body takes longer
// than IdleReadTimeout in total and still succeeds.
func TestClientBodyIdleTimeoutIsPerRead(t *testing.T) {
	const idle = 200 * time.Millisecond
	srv := startRawServer(t, func(c net.Conn, _ int) {
		br := bufio.NewReader(c)
		if _, err := readRequest(br, nil); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n")
		for i := range 6 {
			time.Sleep(idle / 4) // pacing the upstream, not synchronisation
			fmt.Fprint(c, i)
		}
	})
	c := newTestClient(t, ClientConfig{URL: srv.url(), IdleReadTimeout: idle})
	_, body, err := get(t, c, "/")
	if err != nil || body != "012345" {
		t.Fatalf("got %q, %v; want %q, nil", body, err, "012345")
	}
}

func TestClientContext(t *testing.T) {
	arrived := make(chan struct{}, 1)
	srv := startRawServer(t, func(c net.Conn, _ int) {
		br := bufio.NewReader(c)
		if _, err := readRequest(br, nil); err != nil {
			return
		}
		arrived <- struct{}{}
		io.Copy(io.Discard, br) // never answer
	})
	c := newTestClient(t, ClientConfig{URL: srv.url(), HeaderTimeout: time.Minute})

	t.Run("cancel", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			<-arrived
			cancel()
		}()
		_, err := c.Do(ctx, &Request{Method: "GET", RequestURI: "/"})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Do: got %v, want context.Canceled", err)
		}
		for _, s := range []error{ErrTimeout, ErrRefused, ErrReset, ErrBusy, ErrBadResponse} {
			if errors.Is(err, s) {
				t.Errorf("Do: got %v, want no origin sentinel (%v) for a cancellation", err, s)
			}
		}
	})
	t.Run("deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_, err := c.Do(ctx, &Request{Method: "GET", RequestURI: "/"})
		<-arrived
		if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Do: got %v, want ErrTimeout and context.DeadlineExceeded", err)
		}
	})
	t.Run("already done", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := c.Do(ctx, &Request{Method: "GET", RequestURI: "/"}); !errors.Is(err, context.Canceled) {
			t.Fatalf("Do: got %v, want context.Canceled", err)
		}
	})
}

func TestClientBusy(t *testing.T) {
	url, _ := startFastServer(t, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("x") })
	c := newTestClient(t, ClientConfig{URL: url, MaxConns: 1, MaxConnWait: 50 * time.Millisecond})
	resp, err := c.Do(context.Background(), &Request{Method: "GET", RequestURI: "/"})
	if err != nil {
		t.Fatalf("first Do: %v", err)
	}
	// The only connection is busy until the body is closed.
	_, err = c.Do(context.Background(), &Request{Method: "GET", RequestURI: "/"})
	if !errors.Is(err, ErrBusy) {
		t.Fatalf("second Do: got %v, want ErrBusy", err)
	}
	sentinel(t, err)
	// A context deadline shorter than MaxConnWait is the caller's timeout.
	c2 := newTestClient(t, ClientConfig{URL: url, MaxConns: 1, MaxConnWait: time.Minute})
	held, err := c2.Do(context.Background(), &Request{Method: "GET", RequestURI: "/"})
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	defer held.Body.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c2.Do(ctx, &Request{Method: "GET", RequestURI: "/"}); !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Do with a short deadline and no free connection: got %v, want ErrTimeout", err)
	}

	io.ReadAll(resp.Body)
	resp.Body.Close()
	if _, _, err := get(t, c, "/"); err != nil {
		t.Fatalf("Do after release: got %v, want success", err)
	}
}

func TestClientInvalidRequest(t *testing.T) {
	c := newTestClient(t, ClientConfig{URL: "http://127.0.0.1:1"})
	tests := []struct {
		name string
		req  *Request
	}{
		{"nil", nil},
		{"empty method", &Request{RequestURI: "/"}},
		{"method with space", &Request{Method: "GET /x", RequestURI: "/"}},
		{"absolute uri", &Request{Method: "GET", RequestURI: "http://a/"}},
		{"uri with space", &Request{Method: "GET", RequestURI: "/a b"}},
		{"uri with crlf", &Request{Method: "GET", RequestURI: "/a\r\nX: y"}},
		{"host with crlf", &Request{Method: "GET", RequestURI: "/", Host: "a\r\nX: y"}},
		{"header name", &Request{Method: "GET", RequestURI: "/", Header: []Field{{"Bad Name", "v"}}}},
		{"header value crlf", &Request{Method: "GET", RequestURI: "/", Header: []Field{{"X", "a\r\nInjected: 1"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Do(context.Background(), tt.req)
			if !errors.Is(err, ErrInvalidRequest) {
				t.Fatalf("Do: got %v, want ErrInvalidRequest", err)
			}
		})
	}
}

func TestClientClosed(t *testing.T) {
	url, _ := startFastServer(t, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("x") })
	c := newTestClient(t, ClientConfig{URL: url})
	resp, err := c.Do(context.Background(), &Request{Method: "GET", RequestURI: "/"})
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	c.Close()
	c.Close() // idempotent
	if _, _, err := get(t, c, "/"); !errors.Is(err, ErrRefused) {
		t.Errorf("Do after Close: got %v, want ErrRefused", err)
	}
	// A body still open works and its connection is closed, not pooled.
	if b, err := io.ReadAll(resp.Body); err != nil || string(b) != "x" {
		t.Errorf("body after Close: got %q, %v; want %q", b, err, "x")
	}
	resp.Body.Close()
	if got := c.Conns(); got != 0 {
		t.Errorf("connections after Close: got %d, want 0", got)
	}
}

// TestClientBodyCloseInterruptsRead: Close from another goroutine unblocks
// a Read waiting on a stalled upstream, and the connection is dropped.
func TestClientBodyCloseInterruptsRead(t *testing.T) {
	srv := startRawServer(t, func(c net.Conn, _ int) {
		br := bufio.NewReader(c)
		if _, err := readRequest(br, nil); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
		io.Copy(io.Discard, br)
	})
	c := newTestClient(t, ClientConfig{URL: srv.url(), IdleReadTimeout: time.Minute})
	resp, err := c.Do(context.Background(), &Request{Method: "GET", RequestURI: "/"})
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	readErr := make(chan error, 1)
	go func() {
		_, err := resp.Body.Read(make([]byte, 10))
		readErr <- err
	}()
	// Close while the Read is (very likely) blocked; correctness holds
	// either way.
	resp.Body.Close()
	select {
	case err := <-readErr:
		if err == nil {
			t.Errorf("Read after Close: got nil error, want one")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Read still blocked 10s after Close")
	}
	eventually(t, "connection dropped", func() bool { return c.Conns() == 0 })
}

func TestClientStreamsLargeBody(t *testing.T) {
	const size = 64 << 20
	chunk := bytes.Repeat([]byte("0123456789abcdef"), 2048) // 32 KiB
	url, _ := startFastServer(t, func(ctx *fasthttp.RequestCtx) {
		ctx.Response.SetBodyStreamWriter(func(w *bufio.Writer) {
			for sent := 0; sent < size; sent += len(chunk) {
				if _, err := w.Write(chunk); err != nil {
					return
				}
				w.Flush()
			}
		})
	})
	c := newTestClient(t, ClientConfig{URL: url})
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse

	resp, err := c.Do(context.Background(), &Request{Method: "GET", RequestURI: "/big"})
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 64<<10)
	var total int64
	var peak uint64
	for i := 0; ; i++ {
		n, err := resp.Body.Read(buf)
		total += int64(n)
		if i%256 == 0 {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("Read after %d bytes: %v", total, err)
		}
	}
	if total != size {
		t.Fatalf("body size: got %d, want %d", total, size)
	}
	if growth := int64(peak) - int64(base); growth > size/8 {
		t.Errorf("heap growth while streaming %d MiB: got %d KiB, want under %d KiB", size>>20, growth>>10, size/8>>10)
	}
}

func TestClientConcurrent(t *testing.T) {
	var served atomic.Int64
	url, _ := startFastServer(t, func(ctx *fasthttp.RequestCtx) {
		served.Add(1)
		ctx.SetBody(ctx.Path())
	})
	c := newTestClient(t, ClientConfig{URL: url, MaxConns: 4, MaxConnWait: 10 * time.Second})
	errs := make(chan error, 32)
	for i := range 32 {
		go func() {
			uri := fmt.Sprintf("/c%d", i)
			_, body, err := get(t, c, uri)
			if err == nil && body != uri {
				err = fmt.Errorf("body: got %q, want %q", body, uri)
			}
			errs <- err
		}()
	}
	for range 32 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if got := c.Conns(); got > 4 {
		t.Errorf("connections: got %d, want <= MaxConns 4", got)
	}
}

// TestClientIdleConnsExpire: once the client has been idle for
// MaxIdleConnDuration, its keep-alive connections are closed.
func TestClientIdleConnsExpire(t *testing.T) {
	url, ln := startFastServer(t, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("ok") })
	c := newTestClient(t, ClientConfig{URL: url, MaxIdleConnDuration: 50 * time.Millisecond})
	if _, _, err := get(t, c, "/"); err != nil {
		t.Fatalf("Do: %v", err)
	}
	if got := c.Conns(); got != 1 {
		t.Fatalf("connections after a request: got %d, want 1 (kept alive)", got)
	}
	eventually(t, "idle connection closed", func() bool { return c.Conns() == 0 })
	if _, _, err := get(t, c, "/"); err != nil {
		t.Fatalf("Do after expiry: %v", err)
	}
	if got := ln.accepted.Load(); got != 2 {
		t.Errorf("accepted connections: got %d, want 2 (a new one after expiry)", got)
	}
}

// TestClientStaleIdleConnNotUsed: while the client stays busy (so the
// janitor keeps the pool), a connection idle for longer than
// MaxIdleConnDuration is dropped when taken from the pool instead of being
// used.
func TestClientStaleIdleConnNotUsed(t *testing.T) {
	url, ln := startFastServer(t, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("ok") })
	const idle = 50 * time.Millisecond
	c := newTestClient(t, ClientConfig{URL: url, MaxIdleConnDuration: idle})
	busy, err := c.Do(context.Background(), &Request{Method: "GET", RequestURI: "/"})
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	defer busy.Body.Close()
	if _, _, err := get(t, c, "/"); err != nil { // second connection, then idle
		t.Fatalf("Do: %v", err)
	}
	idleFrom := time.Now()
	eventually(t, "connection idle past the limit", func() bool { return time.Since(idleFrom) > 2*idle })
	if _, _, err := get(t, c, "/"); err != nil {
		t.Fatalf("Do: %v", err)
	}
	if got := ln.accepted.Load(); got != 3 {
		t.Errorf("accepted connections: got %d, want 3 (the stale idle one replaced)", got)
	}
}

// TestClientNoGoroutineLeak: requests, failures, an abandoned body and Close
// leave no goroutine behind (fasthttp's idle cleaner exits within
// MaxIdleConnDuration once no connection is left).
func TestClientNoGoroutineLeak(t *testing.T) {
	checkNoLeaks(t)
	url, _ := startFastServer(t, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/big" {
			ctx.SetBody(bytes.Repeat([]byte("x"), 1<<20))
			return
		}
		ctx.SetBodyString("ok")
	})
	c, err := NewClient(ClientConfig{URL: url, MaxIdleConnDuration: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if _, _, err := get(t, c, "/"); err != nil {
			t.Fatalf("Do: %v", err)
		}
	}
	resp, err := c.Do(context.Background(), &Request{Method: "GET", RequestURI: "/big"})
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	resp.Body.Read(make([]byte, 10))
	resp.Body.Close() // abandoned mid-body: the connection is closed
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c.Do(ctx, &Request{Method: "GET", RequestURI: "/"})
	c.Close()
}

func BenchmarkClientDo(b *testing.B) {
	payload := bytes.Repeat([]byte("x"), 1024)
	url, _ := startFastServer(b, func(ctx *fasthttp.RequestCtx) { ctx.SetBody(payload) })
	c := newTestClient(b, ClientConfig{URL: url})
	req := &Request{Method: "GET", RequestURI: "/bench", Header: []Field{{"Accept", "*/*"}}}
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, 4096)
		for pb.Next() {
			resp, err := c.Do(context.Background(), req)
			if err != nil {
				b.Error(err)
				return
			}
			for {
				if _, err := resp.Body.Read(buf); err != nil {
					break
				}
			}
			resp.Body.Close()
		}
	})
}

// TestClientContended: many more callers than connections, each waiting its
// turn in the client's slots (which keep them out of fasthttp's own
// connection queue, see Client.slots). Every request must succeed, within
// the connection cap. It does not reproduce fasthttp#2391 on demand: that
// window is too narrow to hit reliably.
func TestClientContended(t *testing.T) {
	url, _ := startFastServer(t, func(ctx *fasthttp.RequestCtx) { ctx.SetBody(ctx.Path()) })
	c := newTestClient(t, ClientConfig{URL: url, MaxConns: 2, MaxConnWait: 2 * time.Second})
	const callers, each = 64, 40
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range each {
				uri := fmt.Sprintf("/w%d-%d", i, j)
				_, body, err := get(t, c, uri)
				if err != nil || body != uri {
					if failed.Add(1) <= 3 {
						t.Errorf("%s: %q, %v", uri, body, err)
					}
				}
			}
		}()
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d of %d requests failed", n, callers*each)
	}
	if got := c.Conns(); got > 2 {
		t.Errorf("connections: got %d, want <= MaxConns 2", got)
	}
}

package demo

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestHeaderFaults(t *testing.T) {
	s := startServer(t, Config{})
	c := newClient(t)

	t.Run("delay", func(t *testing.T) {
		start := time.Now()
		r := do(t, c, "GET", s.URL()+"/css/site.css", map[string]string{HeaderDelay: "150ms"})
		if elapsed := time.Since(start); elapsed < 150*time.Millisecond {
			t.Errorf("elapsed: got %v, want at least 150ms", elapsed)
		}
		if r.status != 200 {
			t.Errorf("status: got %d, want 200", r.status)
		}
	})

	t.Run("status", func(t *testing.T) {
		before := s.Count("/img/logo.svg")
		r := do(t, c, "GET", s.URL()+"/img/logo.svg", map[string]string{HeaderStatus: "503"})
		if r.status != 503 || !strings.Contains(string(r.body), "injected fault") {
			t.Errorf("got %d %q, want 503 with an injected-fault body", r.status, r.body)
		}
		if r.header.Get("Cache-Control") != "" || r.header.Get("ETag") != "" {
			t.Errorf("got Cache-Control %q and ETag %q, want neither on an injected error",
				r.header.Get("Cache-Control"), r.header.Get("ETag"))
		}
		if got := s.Count("/img/logo.svg"); got != before+1 {
			t.Errorf("count: got %d, want %d (faulted requests are counted)", got, before+1)
		}
	})

	t.Run("reset", func(t *testing.T) {
		_, err := doErr(c, "GET", s.URL()+"/css/site.css", map[string]string{HeaderReset: "1"})
		if err == nil {
			t.Fatalf("got a response, want a connection error")
		}
	})

	t.Run("reset is a TCP RST", func(t *testing.T) {
		_, br := rawConn(t, s, "GET /css/site.css HTTP/1.1\r\nHost: x\r\nX-Origin-Reset: true\r\n\r\n")
		n, err := br.Read(make([]byte, 1))
		if n != 0 || !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("read: got %d bytes, err %v, want 0 bytes and ECONNRESET", n, err)
		}
	})

	t.Run("server healthy after faults", func(t *testing.T) {
		if r := do(t, c, "GET", s.URL()+"/__origin/health", nil); r.status != 200 {
			t.Errorf("health: got %d, want 200", r.status)
		}
	})

	for _, tt := range []struct{ name, header, value string }{
		{"bad delay", HeaderDelay, "soon"},
		{"negative delay", HeaderDelay, "-1s"},
		{"delay too long", HeaderDelay, "11m"},
		{"bad status", HeaderStatus, "abc"},
		{"status out of range", HeaderStatus, "700"},
		{"bad reset", HeaderReset, "yes please"},
		{"bad stall", HeaderStall, "1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, c, "GET", s.URL()+"/", map[string]string{tt.header: tt.value})
			if r.status != 400 || !strings.Contains(string(r.body), tt.header) {
				t.Errorf("got %d %q, want 400 naming %s", r.status, r.body, tt.header)
			}
		})
	}
}

func TestStall(t *testing.T) {
	s := startServer(t, Config{})
	c := newClient(t)
	full := do(t, c, "GET", s.URL()+"/bench/64k.bin", nil).body

	t.Run("completes after the stall", func(t *testing.T) {
		start := time.Now()
		r := do(t, c, "GET", s.URL()+"/bench/64k.bin", map[string]string{HeaderStall: "200ms"})
		if elapsed := time.Since(start); elapsed < 200*time.Millisecond {
			t.Errorf("elapsed: got %v, want at least 200ms", elapsed)
		}
		if r.status != 200 || !bytes.Equal(r.body, full) {
			t.Errorf("got %d with %d bytes, want 200 with the full %d", r.status, len(r.body), len(full))
		}
	})

	t.Run("client timeout sees a truncated body", func(t *testing.T) {
		short := newClient(t)
		short.Timeout = 300 * time.Millisecond
		_, err := doErr(short, "GET", s.URL()+"/bench/64k.bin", map[string]string{HeaderStall: "10m"})
		if err == nil {
			t.Errorf("got a complete response, want a timeout while reading the body")
		}
	})

	t.Run("headers and half the body, then nothing", func(t *testing.T) {
		conn, br := rawConn(t, s, "GET /bench/64k.bin HTTP/1.1\r\nHost: x\r\nX-Origin-Stall: 10m\r\n\r\n")
		status, h := readHead(t, br)
		if status != "HTTP/1.1 200 OK" || h["content-length"] != strconv.Itoa(len(full)) || h["connection"] != "close" {
			t.Fatalf("got %q, Content-Length %q, Connection %q, want 200, %d, close", status, h["content-length"], h["connection"], len(full))
		}
		half := make([]byte, len(full)/2)
		if _, err := io.ReadFull(br, half); err != nil || !bytes.Equal(half, full[:len(half)]) {
			t.Fatalf("first half: err %v, equal %v, want the first %d bytes", err, bytes.Equal(half, full[:len(half)]), len(half))
		}
		conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if n, err := br.Read(make([]byte, 1)); !isTimeout(err) {
			t.Fatalf("read during stall: got %d bytes, err %v, want a timeout", n, err)
		}
	})

	t.Run("HEAD sends only the head", func(t *testing.T) {
		r := do(t, c, "HEAD", s.URL()+"/bench/64k.bin", map[string]string{HeaderStall: "50ms"})
		if r.status != 200 || r.length != int64(len(full)) {
			t.Errorf("got %d with Content-Length %d, want 200 with %d", r.status, r.length, len(full))
		}
	})

	t.Run("chunked dyn body is stalled with a length", func(t *testing.T) {
		r := do(t, c, "GET", s.URL()+"/dyn/st?size=5000&chunked=1", map[string]string{HeaderStall: "50ms"})
		if r.status != 200 || len(r.body) != 5000 || r.length != 5000 {
			t.Errorf("got %d, %d bytes, Content-Length %d, want 200 with 5000", r.status, len(r.body), r.length)
		}
	})
}

func TestConfigFaults(t *testing.T) {
	s := startServer(t, Config{Faults: []Fault{
		{PathPrefix: "/img/", Status: 503},
		{PathPrefix: "/bench/1k", Reset: true},
		{PathPrefix: "/js/", Delay: 150 * time.Millisecond},
		{PathPrefix: "/js/", Status: 500}, // shadowed: the rule above always fires first
	}})
	c := newClient(t)
	tests := []struct {
		path       string
		hdr        map[string]string
		wantStatus int // 0: want a connection error
		minElapsed time.Duration
	}{
		{"/img/logo.svg", nil, 503, 0},
		{"/img/photo-64k.jpg", nil, 503, 0},
		{"/css/site.css", nil, 200, 0},
		{"/bench/1k.bin", nil, 0, 0},
		{"/bench/64k.bin", nil, 200, 0},
		{"/js/app.js", nil, 200, 150 * time.Millisecond},
		{"/img/logo.svg", map[string]string{HeaderStatus: "502"}, 502, 0}, // the header overrides the rule
		{"/js/app.js", map[string]string{HeaderDelay: "50ms"}, 200, 200 * time.Millisecond},
		{"/__origin/health", nil, 200, 0},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			start := time.Now()
			r, err := doErr(c, "GET", s.URL()+tt.path, tt.hdr)
			elapsed := time.Since(start)
			switch {
			case tt.wantStatus == 0 && err == nil:
				t.Fatalf("got %d, want a connection error", r.status)
			case tt.wantStatus == 0:
				return
			case err != nil:
				t.Fatalf("got error %v, want %d", err, tt.wantStatus)
			case r.status != tt.wantStatus:
				t.Errorf("status: got %d, want %d", r.status, tt.wantStatus)
			}
			if elapsed < tt.minElapsed {
				t.Errorf("elapsed: got %v, want at least %v", elapsed, tt.minElapsed)
			}
		})
	}
}

func TestFaultRate(t *testing.T) {
	s := startServer(t, Config{Faults: []Fault{{PathPrefix: "/dyn/", Status: 503, Rate: 0.5}}})
	c := newClient(t)
	const n = 200
	failed := 0
	for i := range n {
		r := do(t, c, "GET", s.URL()+"/dyn/r?i="+strconv.Itoa(i), nil)
		if r.status == 503 {
			failed++
		}
	}
	// Binomial(200, 0.5): 60..140 is more than five standard deviations
	// wide, so a correct server fails this test about once in 10^8 runs; a
	// rate ignored (0 or 200 failures) always fails it.
	if failed < 60 || failed > 140 {
		t.Errorf("got %d of %d requests failed, want about half", failed, n)
	}
	if got := s.Count("/dyn/r"); got != n {
		t.Errorf("count: got %d, want %d", got, n)
	}
}

func TestLatency(t *testing.T) {
	s := startServer(t, Config{Latency: 120 * time.Millisecond})
	c := newClient(t)
	start := time.Now()
	if r := do(t, c, "GET", s.URL()+"/", nil); r.status != 200 {
		t.Errorf("status: got %d, want 200", r.status)
	}
	if elapsed := time.Since(start); elapsed < 120*time.Millisecond {
		t.Errorf("elapsed: got %v, want at least 120ms", elapsed)
	}
}

// Control endpoints never wait: with ten minutes of latency configured, a
// counts request still answers within the client's timeout.
func TestControlEndpointsSkipLatency(t *testing.T) {
	s := startServer(t, Config{Latency: 10 * time.Minute, Faults: []Fault{{Reset: true}}})
	c := newClient(t)
	for _, req := range []struct{ method, path string }{{"GET", "/__origin/counts"}, {"POST", "/__origin/reset"}} {
		if r := do(t, c, req.method, s.URL()+req.path, nil); r.status != 200 {
			t.Errorf("%s %s: got %d, want 200", req.method, req.path, r.status)
		}
	}
}

// Close ends an injected wait at once instead of waiting ten minutes.
func TestCloseInterruptsDelay(t *testing.T) {
	s, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	c := newClient(t)
	got := make(chan error, 1)
	go func() {
		_, err := doErr(c, "GET", s.URL()+"/css/site.css", map[string]string{HeaderDelay: "10m"})
		got <- err
	}()
	waitFor(t, "the request to reach the handler", func() bool { return s.Count("/css/site.css") == 1 })
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := <-got; err != nil {
		t.Errorf("delayed request after Close: got %v, want the response", err)
	}
}

func TestSetDown(t *testing.T) {
	s := startServer(t, Config{})
	c := newClient(t)
	if r := do(t, c, "GET", s.URL()+"/", nil); r.status != 200 {
		t.Fatalf("before: got %d, want 200", r.status)
	}
	s.SetDown(true)
	for _, path := range []string{"/", "/dyn/x", "/__origin/health", "/__origin/counts"} {
		if _, err := doErr(c, "GET", s.URL()+path, nil); err == nil {
			t.Errorf("GET %s while down: got a response, want a connection error", path)
		}
	}
	if got := s.Count("/"); got != 1 {
		t.Errorf("count while down: got %d, want 1 (requests refused while down are not counted)", got)
	}
	s.SetDown(false)
	if r := do(t, c, "GET", s.URL()+"/", nil); r.status != 200 {
		t.Errorf("after: got %d, want 200", r.status)
	}
	if got := s.Count("/"); got != 2 {
		t.Errorf("count after: got %d, want 2", got)
	}
}

// A client that stops reading a stalled response cannot hold Close: the
// hijacked connection's writes are bounded.
func TestCloseWithUnreadStall(t *testing.T) {
	s, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	// A client with a tiny receive buffer that reads only the status line:
	// 8 MiB (half the body) overflow any socket buffer, so the server's first
	// write blocks.
	conn, err := net.DialTimeout("tcp", s.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := conn.(*net.TCPConn).SetReadBuffer(4 << 10); err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(conn, "GET /dyn/big?size=16777216 HTTP/1.1\r\nHost: x\r\nX-Origin-Stall: 10m\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if status, err := bufio.NewReaderSize(conn, 16).ReadString('\n'); err != nil || !strings.HasPrefix(status, "HTTP/1.1 200") {
		t.Fatalf("status line: got %q (%v), want 200", status, err)
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("Close still blocked after 20s, want it bounded by the close grace")
	}
}

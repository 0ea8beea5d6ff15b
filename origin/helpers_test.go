package origin

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// countingListener counts accepted connections (keep-alive reuse checks).
type countingListener struct {
	net.Listener
	accepted atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}

func listenLoopback(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	return ln
}

// startFastServer runs a fasthttp server on loopback and returns its URL and
// accept counter. It is shut down in t.Cleanup.
func startFastServer(t testing.TB, h fasthttp.RequestHandler) (string, *countingListener) {
	t.Helper()
	ln := &countingListener{Listener: listenLoopback(t)}
	s := &fasthttp.Server{Handler: h, IdleTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(ln)
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.ShutdownWithContext(ctx)
		<-done
	})
	return "http://" + ln.Addr().String(), ln
}

// rawServer is a loopback TCP server whose behaviour per connection is
// scripted by the test: garbage, stalls, resets, request counting.
type rawServer struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
}

// startRawServer calls handle(conn, i) in its own goroutine for the i-th
// accepted connection (from 0). Every connection is closed in t.Cleanup.
func startRawServer(t testing.TB, handle func(c net.Conn, i int)) *rawServer {
	t.Helper()
	s := &rawServer{ln: listenLoopback(t)}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for i := 0; ; i++ {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				handle(c, i)
			}()
		}
	}()
	t.Cleanup(func() {
		s.ln.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *rawServer) url() string { return "http://" + s.ln.Addr().String() }

// readRequest reads one request (and its body) from br and, once it is
// complete, adds it to count (which may be nil).
func readRequest(br *bufio.Reader, count *atomic.Int64) (*http.Request, error) {
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, err
	}
	if _, err := io.Copy(io.Discard, req.Body); err != nil {
		return nil, err
	}
	if count != nil {
		count.Add(1)
	}
	return req, nil
}

func newTestClient(t testing.TB, cfg ClientConfig) *Client {
	t.Helper()
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatalf("NewClient(%+v): %v", cfg, err)
	}
	t.Cleanup(c.Close)
	return c
}

// get performs a GET of uri and returns status and body.
func get(t testing.TB, c *Client, uri string) (int, string, error) {
	t.Helper()
	resp, err := c.Do(context.Background(), &Request{Method: "GET", RequestURI: uri})
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.Status, string(b), err
}

// sentinel returns the one origin sentinel err wraps, or fails the test if
// it wraps none or several.
func sentinel(t testing.TB, err error) error {
	t.Helper()
	var found []error
	for _, s := range []error{ErrTimeout, ErrRefused, ErrReset, ErrBusy, ErrBadResponse} {
		if errors.Is(err, s) {
			found = append(found, s)
		}
	}
	if len(found) != 1 {
		t.Fatalf("error %q wraps %d origin sentinels %v, want exactly 1", err, len(found), found)
	}
	return found[0]
}

// eventually polls cond until it holds or the bounded deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// checkNoLeaks fails the test if, once it ends (after every later-registered
// cleanup has stopped servers and clients), goroutines are still running
// code of this package or fasthttp's HostClient, after a bounded grace
// period. Other goroutines (fasthttp's server-side background sleepers, the
// runtime, the test framework) are not ours to judge.
func checkNoLeaks(t *testing.T) {
	t.Helper()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			leaked := leakedGoroutines()
			if len(leaked) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("leaked goroutines: got %d, want 0:\n%s", len(leaked), strings.Join(leaked, "\n\n"))
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

func leakedGoroutines() []string {
	buf := make([]byte, 1<<20)
	stacks := strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n")
	var leaked []string
	for _, g := range stacks[1:] { // [0] is this goroutine
		if strings.Contains(g, "edgeshield/edgeshield/origin.") || strings.Contains(g, "fasthttp.(*HostClient)") {
			leaked = append(leaked, g)
		}
	}
	return leaked
}

func header(fields []Field, name string) []string {
	var vs []string
	for _, f := range fields {
		if strings.EqualFold(f.Name, name) {
			vs = append(vs, f.Value)
		}
	}
	return vs
}

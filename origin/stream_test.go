package origin

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// patternReader yields n deterministic, non-repeating-looking bytes in
// reads of at most step bytes (a client that sends in small pieces).
type patternReader struct {
	n, off int64
	step   int
}

func (r *patternReader) Read(p []byte) (int, error) {
	if r.off >= r.n {
		return 0, io.EOF
	}
	if r.step > 0 && len(p) > r.step {
		p = p[:r.step]
	}
	if rem := r.n - r.off; int64(len(p)) > rem {
		p = p[:rem]
	}
	for i := range p {
		x := uint64(r.off + int64(i))
		p[i] = byte(x*2654435761>>13) ^ byte(x)
	}
	r.off += int64(len(p))
	return len(p), nil
}

func patternSum(n int64) [32]byte {
	h := sha256.New()
	io.Copy(h, &patternReader{n: n})
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

// TestClientStreamsRequestBody: a BodyStream arrives byte-exact, framed by
// Content-Length or chunked as asked.
func TestClientStreamsRequestBody(t *testing.T) {
	const size = 3<<20 + 17
	want := patternSum(size)
	tests := []struct {
		name     string
		cl       int64
		wantTE   []string
		wantCLen int64
	}{
		{"content-length", size, nil, size},
		{"chunked", -1, []string{"chunked"}, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			type seen struct {
				n   int64
				sum [32]byte
				te  []string
				cl  int64
			}
			got := make(chan seen, 1)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				h := sha256.New()
				n, _ := io.Copy(h, r.Body)
				var s seen
				s.n, s.te, s.cl = n, r.TransferEncoding, r.ContentLength
				copy(s.sum[:], h.Sum(nil))
				got <- s
				io.WriteString(w, "ok")
			}))
			t.Cleanup(srv.Close)
			c := newTestClient(t, ClientConfig{URL: srv.URL})
			resp, err := c.Do(context.Background(), &Request{Method: "POST", RequestURI: "/up",
				BodyStream: &patternReader{n: size, step: 5000}, ContentLength: tt.cl})
			if err != nil {
				t.Fatalf("Do: %v", err)
			}
			io.ReadAll(resp.Body)
			resp.Body.Close()
			s := <-got
			if s.n != size || s.sum != want {
				t.Errorf("origin body: got %d bytes (sha256 match %v), want %d bytes matching", s.n, s.sum == want, size)
			}
			if fmt.Sprint(s.te) != fmt.Sprint(tt.wantTE) || s.cl != tt.wantCLen {
				t.Errorf("framing: got Transfer-Encoding %v Content-Length %d, want %v %d", s.te, s.cl, tt.wantTE, tt.wantCLen)
			}
		})
	}
}

// TestClientStreamedBodyNotRetried: a GET with a streamed body that meets
// the keep-alive race is not replayed (TestClientRetry shows a plain GET
// is): the stream has been consumed.
func TestClientStreamedBodyNotRetried(t *testing.T) {
	for _, cl := range []int64{5, -1} {
		t.Run(fmt.Sprintf("content-length %d", cl), func(t *testing.T) {
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
			if _, _, err := get(t, c, "/prime"); err != nil {
				t.Fatalf("priming: %v", err)
			}
			before := reqs.Load()
			resp, err := c.Do(context.Background(), &Request{Method: "GET", RequestURI: "/x",
				BodyStream: strings.NewReader("hello"), ContentLength: cl})
			if resp != nil {
				resp.Body.Close()
			}
			eventually(t, "upstream request count", func() bool { return reqs.Load()-before >= 1 })
			if got := reqs.Load() - before; got != 1 {
				t.Errorf("upstream requests: got %d, want 1", got)
			}
			if !errors.Is(err, ErrReset) {
				t.Errorf("Do: got %v, want ErrReset", err)
			}
		})
	}
}

// failingReader yields n bytes, then err.
type failingReader struct {
	n   int
	err error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, r.err
	}
	k := min(len(p), r.n)
	for i := range p[:k] {
		p[i] = 'x'
	}
	r.n -= k
	return k, nil
}

// TestClientStreamedBodyError: a body that fails (or ends early) mid-way
// aborts the request: Do reports ErrRequestBody with the cause, no origin
// sentinel, and the origin sees a truncated body, never a complete one.
func TestClientStreamedBodyError(t *testing.T) {
	errClient := errors.New("client went away")
	tests := []struct {
		name    string
		body    io.Reader
		cl      int64
		wantErr error
	}{
		{"reader error, content-length", &failingReader{n: 100 << 10, err: errClient}, 1 << 20, errClient},
		{"reader error, chunked", &failingReader{n: 100 << 10, err: errClient}, -1, errClient},
		{"short body", &failingReader{n: 1000, err: io.EOF}, 2000, io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			type seen struct {
				n   int64
				err error
			}
			got := make(chan seen, 1)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				n, err := io.Copy(io.Discard, r.Body)
				got <- seen{n, err}
			}))
			t.Cleanup(srv.Close)
			c := newTestClient(t, ClientConfig{URL: srv.URL})
			resp, err := c.Do(context.Background(), &Request{Method: "PUT", RequestURI: "/up", BodyStream: tt.body, ContentLength: tt.cl})
			if resp != nil {
				resp.Body.Close()
			}
			if !errors.Is(err, ErrRequestBody) || !errors.Is(err, tt.wantErr) {
				t.Fatalf("Do: got %v, want ErrRequestBody wrapping %v", err, tt.wantErr)
			}
			for _, s := range []error{ErrTimeout, ErrRefused, ErrReset, ErrBusy, ErrBadResponse} {
				if errors.Is(err, s) {
					t.Errorf("Do: got %v, which also wraps %v; want ErrRequestBody alone", err, s)
				}
			}
			s := <-got
			if s.err == nil {
				t.Errorf("origin read %d bytes and a complete body, want a truncated one", s.n)
			}
		})
	}
}

// TestClientStreamedBodyInvalid: a BodyStream cannot be combined with Body
// or a ContentLength below -1.
func TestClientStreamedBodyInvalid(t *testing.T) {
	c := newTestClient(t, ClientConfig{URL: "http://127.0.0.1:1"})
	for _, req := range []*Request{
		{Method: "POST", RequestURI: "/", Body: []byte("x"), BodyStream: strings.NewReader("y"), ContentLength: 1},
		{Method: "POST", RequestURI: "/", BodyStream: strings.NewReader("y"), ContentLength: -2},
	} {
		if _, err := c.Do(context.Background(), req); !errors.Is(err, ErrInvalidRequest) {
			t.Errorf("Do(%+v): got %v, want ErrInvalidRequest", req, err)
		}
	}
}

package edge

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// gateConn is the TLS connection under a coalescedConn: it records each
// Write as one call and, while gated, holds every Write until release.
type gateConn struct {
	net.Conn // nil: only Write, Close and the deadlines are used
	mu       sync.Mutex
	calls    [][]byte
	gate     chan struct{} // nil: writes pass at once
	entered  chan struct{} // a Write is waiting at the gate
	err      error         // returned by every Write when set
	closed   bool
}

func newGateConn(gated bool) *gateConn {
	g := &gateConn{entered: make(chan struct{}, 100)}
	if gated {
		g.gate = make(chan struct{})
	}
	return g
}

func (g *gateConn) Write(p []byte) (int, error) {
	g.mu.Lock()
	g.calls = append(g.calls, bytes.Clone(p))
	gate, err := g.gate, g.err
	g.mu.Unlock()
	if gate != nil {
		g.entered <- struct{}{}
		<-gate
	}
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

func (g *gateConn) release() {
	g.mu.Lock()
	close(g.gate)
	g.gate = nil
	g.mu.Unlock()
}

func (g *gateConn) written() (calls int, all []byte) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, c := range g.calls {
		all = append(all, c...)
	}
	return len(g.calls), all
}

func (g *gateConn) Close() error                     { g.mu.Lock(); g.closed = true; g.mu.Unlock(); return nil }
func (g *gateConn) SetWriteDeadline(time.Time) error { return nil }
func (g *gateConn) SetReadDeadline(time.Time) error  { return nil }

// TestCoalescedConnBatches: writes made while one batch is on its way go
// out as the next batch, in one call and in order.
func TestCoalescedConnBatches(t *testing.T) {
	g := newGateConn(true)
	c := newCoalescedConn(g, 0)
	var want []byte
	write := func(s string) {
		t.Helper()
		if n, err := c.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", s, n, err)
		}
		want = append(want, s...)
	}
	write("frame-0;")
	<-g.entered // the flusher is writing frame-0
	for i := 1; i <= 10; i++ {
		write("frame-" + string(rune('0'+i%10)) + ";")
	}
	g.release()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	calls, got := g.written()
	if calls != 2 {
		t.Errorf("%d writes reached the connection, want 2 (the first frame, then the ten written meanwhile)", calls)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("connection got %q, want %q", got, want)
	}
}

// TestCoalescedConnLargeWriteKeepsOrder: a large write (a frame of a big
// body) goes out on its own, after what was buffered before it.
func TestCoalescedConnLargeWriteKeepsOrder(t *testing.T) {
	g := newGateConn(false)
	c := newCoalescedConn(g, 0)
	big := bytes.Repeat([]byte("B"), coalesceDirect)
	var want []byte
	for _, p := range [][]byte{[]byte("head;"), big, []byte("tail;"), big} {
		if _, err := c.Write(p); err != nil {
			t.Fatal(err)
		}
		want = append(want, p...)
	}
	c.Close()
	_, got := g.written()
	if !bytes.Equal(got, want) {
		t.Errorf("connection got %d bytes out of order or incomplete, want %d in order", len(got), len(want))
	}
}

// TestCoalescedConnBackpressure: a write that would buffer more than
// coalesceMax waits until the batch ahead of it is written.
func TestCoalescedConnBackpressure(t *testing.T) {
	g := newGateConn(true)
	c := newCoalescedConn(g, 0)
	c.Write([]byte("x"))
	<-g.entered
	chunk := make([]byte, coalesceDirect-1)
	for range coalesceMax / len(chunk) {
		if _, err := c.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { _, err := c.Write(chunk); done <- err }()
	select {
	case err := <-done:
		t.Fatalf("a write past %d buffered bytes returned (%v) while the connection was blocked", coalesceMax, err)
	case <-time.After(50 * time.Millisecond):
	}
	g.release()
	if err := <-done; err != nil {
		t.Fatalf("the blocked write failed after the connection drained: %v", err)
	}
	c.Close()
	if _, got := g.written(); len(got) != 1+(coalesceMax/len(chunk)+1)*len(chunk) {
		t.Errorf("connection got %d bytes, want every byte written", len(got))
	}
}

// TestCoalescedConnWriteError: once the connection fails, writes say so.
func TestCoalescedConnWriteError(t *testing.T) {
	g := newGateConn(false)
	boom := errors.New("broken pipe")
	g.err = boom
	c := newCoalescedConn(g, 0)
	c.Write([]byte("lost"))
	// A large write waits for the batch ahead of it, so it sees its error.
	if _, err := c.Write(make([]byte, coalesceDirect)); !errors.Is(err, boom) {
		t.Errorf("large Write after a failed write: %v, want %v", err, boom)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, boom) {
		t.Errorf("Write after a failed write: %v, want %v", err, boom)
	}
	c.Close()
	if _, err := c.Write([]byte("x")); err == nil {
		t.Error("Write after Close succeeded")
	}
}

// TestCoalescedConnCloseFlushes: Close sends what is buffered (a GOAWAY)
// before closing, and a second Close is harmless.
func TestCoalescedConnCloseFlushes(t *testing.T) {
	a, b := tcpPair(t)
	c := newCoalescedConn(a, time.Second)
	c.Write([]byte("response;"))
	c.Write([]byte("GOAWAY"))
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c.Close()
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(b)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "response;GOAWAY" {
		t.Errorf("peer read %q, want %q", got, "response;GOAWAY")
	}
}

// TestCoalescedConnSlowReader: a client that never reads cannot hold a
// writer forever: once nothing could be written for the timeout, writes
// fail and Close returns.
func TestCoalescedConnSlowReader(t *testing.T) {
	a, _ := tcpPair(t)
	c := newCoalescedConn(a, 100*time.Millisecond)
	start := time.Now()
	chunk := make([]byte, 1024)
	var err error
	for i := 0; i < 1<<16 && err == nil; i++ { // 64 MiB at most: far past the socket buffers
		_, err = c.Write(chunk)
	}
	if ne, ok := errors.AsType[net.Error](err); !ok || !ne.Timeout() {
		t.Fatalf("writing to a client that never reads: %v, want a timeout", err)
	}
	c.Close()
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("writes and Close took %v against a client that never reads", d)
	}
}

// tcpPair is a connected loopback TCP pair, closed at cleanup.
func tcpPair(t *testing.T) (server, client net.Conn) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

package edge

// Write coalescing under the HTTP/2 server. net/http's HTTP/2 server
// flushes its 4 KiB frame buffer whenever its write queue runs empty, and
// with one goroutine per stream that happens after nearly every frame: a
// profile of 1 KiB hits under h2load (BenchmarkH2Hit1KH2load) showed two
// write(2) calls and two TLS records per request, and those writes were a
// third of the node's CPU (on loopback a write also runs the receiver's TCP
// stack). nginx answers the ten requests a client sends at once with one
// write. coalescedConn gives the server's writes the same shape: a write
// is copied and returns; one flusher, started when the first bytes arrive,
// yields once (runtime.Gosched) so that every stream already runnable adds
// its frames, then hands them to TLS in one call, and keeps going while
// more arrive. No timer, so an idle connection's answer waits for no one:
// the flusher runs as soon as the writing goroutine blocks or yields.

import (
	"errors"
	"net"
	"runtime"
	"sync"
	"time"
)

const (
	// coalesceMax is the most a connection buffers before a write waits
	// for the flusher: a few TLS records, and the bound on memory per
	// connection (buffers return to a pool when a burst is written).
	coalesceMax = 64 << 10
	// coalesceDirect: a write this large (a frame of a large body) goes
	// to TLS as it is once the buffer ahead of it is out: copying it would
	// cost more than the call it saves.
	coalesceDirect = 16 << 10
	// coalesceCloseWait bounds how long Close spends sending what is
	// buffered (a GOAWAY, the end of a response) to a client that does not
	// read, when no write timeout is configured.
	coalesceCloseWait = 2 * time.Second
)

var errCoalescedClosed = errors.New("edge: write on a closed HTTP/2 connection")

// coalescePool holds the buffers of connections between bursts.
var coalescePool = sync.Pool{New: func() any { b := make([]byte, 0, coalesceMax); return &b }}

// coalescedConn buffers the writes of an HTTP/2 server connection and
// writes them to Conn in batches. It owns Conn's write deadline: each batch
// gets timeout (none if zero) to make progress, as the server's
// WriteByteTimeout would give each of its writes, so SetWriteDeadline from
// the server is ignored. Reads pass through. Safe for concurrent use.
type coalescedConn struct {
	net.Conn
	timeout time.Duration
	onClose func() // called once, after Conn is closed; nil: none

	mu      sync.Mutex // guards the fields below
	cond    sync.Cond  // signalled when writing ends or buf is taken
	buf     *[]byte    // pending bytes; nil when none
	writing bool       // a flusher or a direct write owns Conn's writes
	closed  bool
	err     error // the first write error; every later Write returns it
}

func newCoalescedConn(c net.Conn, timeout time.Duration) *coalescedConn {
	cc := &coalescedConn{Conn: c, timeout: timeout}
	cc.cond.L = &cc.mu
	return cc
}

func (c *coalescedConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(p) >= coalesceDirect {
		return c.writeDirect(p)
	}
	for c.err == nil && c.buf != nil && len(*c.buf)+len(p) > coalesceMax {
		c.cond.Wait() // backpressure: the flusher takes buf soon
	}
	if c.err != nil {
		return 0, c.err
	}
	if c.buf == nil {
		c.buf = coalescePool.Get().(*[]byte)
	}
	*c.buf = append(*c.buf, p...)
	if !c.writing {
		c.writing = true
		go c.flush()
	}
	return len(p), nil
}

// writeDirect writes p itself once no flusher is writing (c.mu held). What
// is buffered ahead of it (typically the frame header the server's own
// buffer flushed first) is written here too, before p, instead of by a
// new flusher goroutine this call would then wait for: a large body is a
// run of such pairs.
func (c *coalescedConn) writeDirect(p []byte) (int, error) {
	for c.err == nil && c.writing {
		c.cond.Wait()
	}
	if c.err != nil {
		return 0, c.err
	}
	c.writing = true
	b := c.buf
	c.buf = nil
	c.cond.Broadcast() // writers held back by a full buffer may go on
	c.mu.Unlock()
	var err error
	if b != nil {
		_, err = c.write(*b)
		*b = (*b)[:0]
		coalescePool.Put(b)
	}
	n := 0
	if err == nil {
		n, err = c.write(p)
	}
	c.mu.Lock()
	c.writing = false
	c.fail(err)
	c.cond.Broadcast()
	if c.buf != nil && c.err == nil { // written meanwhile
		c.writing = true
		go c.flush()
	}
	return n, err
}

// flush writes the buffer in batches until it stays empty, then returns.
func (c *coalescedConn) flush() {
	for {
		// Let the goroutines that are ready (streams finishing their
		// answers, the server's loop) add their frames to this batch.
		runtime.Gosched()
		c.mu.Lock()
		b := c.buf
		if b == nil || c.err != nil {
			c.writing = false
			c.cond.Broadcast()
			c.mu.Unlock()
			return
		}
		c.buf = nil
		c.cond.Broadcast()
		c.mu.Unlock()
		_, err := c.write(*b)
		*b = (*b)[:0]
		coalescePool.Put(b)
		c.mu.Lock()
		c.fail(err)
		c.mu.Unlock()
	}
}

// fail records the first write error (c.mu held).
func (c *coalescedConn) fail(err error) {
	if err != nil && c.err == nil {
		c.err = err
	}
}

// write sends p to Conn within the write timeout.
func (c *coalescedConn) write(p []byte) (int, error) {
	if c.timeout > 0 {
		c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
	}
	return c.Conn.Write(p)
}

// SetWriteDeadline is ignored: the batches have their own (see type).
func (c *coalescedConn) SetWriteDeadline(time.Time) error { return nil }

// SetDeadline sets the read deadline only (see SetWriteDeadline).
func (c *coalescedConn) SetDeadline(t time.Time) error { return c.Conn.SetReadDeadline(t) }

// Close sends what is buffered (bounded by the write timeout, or
// coalesceCloseWait without one), then closes Conn. Safe to call twice.
func (c *coalescedConn) Close() error {
	wait := c.timeout
	if wait <= 0 {
		wait = coalesceCloseWait
	}
	// A flusher stuck on a client that does not read gives up by then.
	c.Conn.SetWriteDeadline(time.Now().Add(wait))
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	for c.writing {
		c.cond.Wait()
	}
	b := c.buf
	c.buf = nil
	failed := c.err != nil
	c.fail(errCoalescedClosed)
	c.cond.Broadcast()
	c.mu.Unlock()
	if b != nil {
		if !failed {
			c.Conn.SetWriteDeadline(time.Now().Add(wait))
			c.Conn.Write(*b)
		}
		*b = (*b)[:0]
		coalescePool.Put(b)
	}
	err := c.Conn.Close()
	if c.onClose != nil {
		c.onClose()
	}
	return err
}

package origin

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// call is the per-request state shared by Do, the transport and the body.
// Pooled: a call lives from Do until the body is closed.
type call struct {
	req  fasthttp.Request
	resp fasthttp.Response
	ctx  context.Context // only while Do runs
	num  []byte          // scratch for formatting Content-Length

	// A streamed request body (Request.BodyStream, ContentLength).
	body    io.Reader
	bodyLen int64

	// Set by the transport on success when the response has a body.
	conn      *conn
	done      func(br *bufio.Reader, reuse bool) // gives br and the connection back
	br        *bufio.Reader
	stream    io.Reader
	closeConn bool // the connection cannot be reused after this response
}

// conn wraps every upstream connection. Its fields are touched only by the
// goroutine that currently holds the connection (the pool hands it over
// under a mutex), so they need no locking.
type conn struct {
	net.Conn
	// idle, when positive, makes every Read first push the read deadline
	// idle into the future: the IdleReadTimeout of a streaming body.
	idle time.Duration
	// served counts responses completed on this connection; a positive
	// count means the connection is a reused keep-alive one.
	served int
	// idleSince is when the connection last went back to the pool.
	idleSince time.Time
	// nread counts bytes read since the current request was written.
	nread int64
}

func (c *conn) Read(p []byte) (int, error) {
	if c.idle > 0 {
		if err := c.Conn.SetReadDeadline(time.Now().Add(c.idle)); err != nil {
			return 0, err
		}
	}
	n, err := c.Conn.Read(p)
	c.nread += int64(n)
	return n, err
}

// noStop stands in for context.AfterFunc's stop when the context can never
// be done: nothing to stop, and "not yet run" is the truth.
func noStop() bool { return true }

// aLongTimeAgo is a deadline in the past: setting it aborts blocked I/O.
var aLongTimeAgo = time.Unix(1, 0)

// dial connects to addr within ConnectTimeout (or fasthttp's timeout, when
// shorter: the caller's context deadline), including the TLS handshake.
func (c *Client) dial(addr string, timeout time.Duration) (net.Conn, error) {
	if timeout <= 0 || timeout > c.cfg.ConnectTimeout {
		timeout = c.cfg.ConnectTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	nc, err := c.dialContextTLS(ctx, addr)
	if err != nil {
		return nil, err
	}
	return &conn{Conn: nc}, nil
}

// dialContextTLS opens a connection to addr within ctx: TCP, plus the TLS
// handshake for an https upstream. Failures are *dialError.
func (c *Client) dialContextTLS(ctx context.Context, addr string) (net.Conn, error) {
	raw, err := c.dialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, &dialError{err}
	}
	if c.tls == nil {
		return raw, nil
	}
	tc := tls.Client(raw, c.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, &dialError{fmt.Errorf("tls handshake with %s: %w", addr, err)}
	}
	return tc, nil
}

// transport is the fasthttp.RoundTripper of a Client. fasthttp's own
// transport applies one read deadline to headers and body together; ours
// separates HeaderTimeout from IdleReadTimeout, honours the request's
// context, writes the request line verbatim, and tells the retry loop
// whether a failure happened on a reused connection.
type transport struct{ c *Client }

func (t transport) RoundTrip(hc *fasthttp.HostClient, req *fasthttp.Request, resp *fasthttp.Response) (retry bool, err error) {
	v, ok := t.c.calls.Load(req)
	if !ok {
		return false, errors.New("origin: request not started by Client.Do")
	}
	cl := v.(*call)
	ctx := cl.ctx
	if err := ctx.Err(); err != nil {
		return false, err
	}
	var wait time.Duration // 0: fasthttp waits MaxConnWaitTimeout
	if dl, ok := ctx.Deadline(); ok {
		if wait = time.Until(dl); wait <= 0 {
			return false, context.DeadlineExceeded
		}
	}
	// connectionClose=true only keeps fasthttp from starting its idle
	// cleaner goroutine (see Client.janitor); keep-alive is unaffected.
	cc, err := hc.AcquireConn(wait, true)
	// A connection idle for longer than MaxIdleConnDuration has most likely
	// been closed by the upstream: drop it rather than bet on the retry.
	for i := 0; err == nil && i < t.c.cfg.MaxConns; i++ {
		if cn := cc.Conn().(*conn); cn.served == 0 || time.Since(cn.idleSince) <= t.c.cfg.MaxIdleConnDuration {
			break
		}
		hc.CloseConn(cc)
		cc, err = hc.AcquireConn(wait, true)
	}
	if err != nil {
		if err == fasthttp.ErrTimeout && wait > 0 {
			// The wait was cut short by the context deadline, not MaxConnWait.
			err = fmt.Errorf("waiting for a connection: %w", context.DeadlineExceeded)
		}
		return false, err
	}
	cn := cc.Conn().(*conn)
	reused := cn.served > 0
	cn.idle, cn.nread = 0, 0
	stop := noStop
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, func() { cn.Conn.SetDeadline(aLongTimeAgo) })
	}

	fail := func(err error) (bool, error) {
		stop()
		hc.CloseConn(cc)
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		// The keep-alive race: the upstream closed an idle connection just
		// as we picked it. Nothing was received, so a replay is safe for an
		// idempotent request (retryIfErr checks the method) — unless its
		// body was streamed: what was read from it is gone.
		return reused && cn.nread == 0 && !isTimeout(err) && cl.body == nil, err
	}

	if err := setDeadline(ctx, cn.Conn.SetWriteDeadline, t.c.cfg.WriteTimeout); err != nil {
		return fail(err)
	}
	bw := hc.AcquireWriter(cn)
	err = req.Header.Write(bw)
	if body := req.Body(); err == nil && len(body) > 0 {
		_, err = bw.Write(body)
	}
	if err == nil && cl.body != nil {
		err = t.c.writeBodyStream(ctx, cn, bw, cl)
	}
	if err == nil {
		err = bw.Flush()
	}
	hc.ReleaseWriter(bw)
	if err != nil {
		if errors.Is(err, ErrRequestBody) {
			return fail(err)
		}
		return fail(fmt.Errorf("writing request: %w", err))
	}

	if err := setDeadline(ctx, cn.Conn.SetReadDeadline, t.c.cfg.HeaderTimeout); err != nil {
		return fail(err)
	}
	resp.Header.SetNoDefaultContentType(true)
	resp.SkipBody = req.Header.IsHead()
	br := hc.AcquireReader(cn)
	if err := resp.ReadLimitBody(br, 0); err != nil {
		hc.ReleaseReader(br)
		return fail(err)
	}
	if code := resp.StatusCode(); code < 200 || code > 599 {
		// RFC 9110 §15: a status code is three digits, 100-599; fasthttp
		// has consumed the interim 1xx responses, and the edge never asks
		// for a protocol switch (101), so anything else here is bogus.
		hc.ReleaseReader(br)
		return fail(fmt.Errorf("%w: final status code %d", ErrBadResponse, code))
	}
	if !stop() {
		// The context fired after the headers arrived; its deadline may
		// already be set on the connection, so the connection is unusable.
		hc.ReleaseReader(br)
		return fail(ctx.Err())
	}

	closeConn := req.ConnectionClose() || resp.ConnectionClose() || resp.Header.ContentLength() == -2
	stream := resp.BodyStream()
	// done hands the reader and the connection back once the exchange is
	// over. (A closure, because fasthttp's connection type is unexported.)
	done := func(br *bufio.Reader, reuse bool) {
		hc.ReleaseReader(br)
		if !reuse || t.c.closed.Load() {
			hc.CloseConn(cc)
			return
		}
		cn.served++
		cn.idle = 0
		cn.idleSince = time.Now()
		// A pooled connection must not carry the last read deadline.
		if err := cn.Conn.SetReadDeadline(time.Time{}); err != nil {
			hc.CloseConn(cc)
			return
		}
		hc.ReleaseConn(cc)
	}
	if stream == nil {
		// No body to read (HEAD, 204, 304): the exchange is complete.
		done(br, !closeConn)
		return false, nil
	}
	cn.idle = t.c.cfg.IdleReadTimeout
	cl.conn, cl.done, cl.br, cl.stream, cl.closeConn = cn, done, br, stream, closeConn
	return false, nil
}

// streamBufSize is the copy buffer of a streamed request body: large enough
// that a fast upload costs one write per 32 KiB, small enough that many
// uploads at once cost little.
const streamBufSize = 32 << 10

// writeBodyStream copies cl's streamed body to the connection, after the
// header block already in bw: cl.bodyLen bytes with Content-Length, or as
// chunks until io.EOF. Each piece is flushed at once, so the origin receives
// what the client sent as it arrives (nothing waits in bw for the next
// piece). WriteTimeout applies to each write rather than to the whole body:
// a slow client's upload may take longer than it, but a stalled origin
// still fails the request. A read error is wrapped in ErrRequestBody.
func (c *Client) writeBodyStream(ctx context.Context, cn *conn, bw *bufio.Writer, cl *call) error {
	bp := c.bufs.Get().(*[]byte)
	defer c.bufs.Put(bp)
	buf := *bp
	chunked, left := cl.bodyLen < 0, cl.bodyLen
	for chunked || left > 0 {
		p := buf
		if !chunked && int64(len(p)) > left {
			p = p[:left]
		}
		n, rerr := cl.body.Read(p)
		if n > 0 {
			if err := setDeadline(ctx, cn.Conn.SetWriteDeadline, c.cfg.WriteTimeout); err != nil {
				return err
			}
			if err := writePiece(bw, p[:n], chunked); err != nil {
				return err
			}
			left -= int64(n)
		}
		switch {
		case rerr == io.EOF && !chunked && left > 0:
			return fmt.Errorf("%w: %w: %d of %d bytes", ErrRequestBody, io.ErrUnexpectedEOF, cl.bodyLen-left, cl.bodyLen)
		case rerr == io.EOF && chunked:
			_, err := bw.WriteString("0\r\n\r\n") // last-chunk, no trailers
			return err
		case rerr == io.EOF:
			return nil
		case rerr != nil:
			return fmt.Errorf("%w: %w", ErrRequestBody, rerr)
		}
	}
	return nil
}

// writePiece writes p (as one chunk when chunked) and flushes it.
func writePiece(bw *bufio.Writer, p []byte, chunked bool) error {
	if chunked {
		var size [16]byte
		bw.Write(strconv.AppendInt(size[:0], int64(len(p)), 16))
		bw.WriteString("\r\n")
	}
	bw.Write(p)
	if chunked {
		bw.WriteString("\r\n")
	}
	return bw.Flush()
}

// setDeadline sets a deadline d from now, unless ctx is already done. The
// context's AfterFunc sets a past deadline; if it ran just before us, our
// deadline would silently undo it. ctx.Err() is set before AfterFunc
// callbacks run, so checking it after setting ours closes that window: either
// we see the error, or the callback's past deadline lands after ours.
func setDeadline(ctx context.Context, set func(time.Time) error, d time.Duration) error {
	if err := set(time.Now().Add(d)); err != nil {
		return err
	}
	return ctx.Err()
}

// body is a Response.Body that streams from the connection.
type body struct {
	c      *Client
	cl     *call
	mu     sync.Mutex // serializes Read, and Close's cleanup after a Read
	closed atomic.Bool
	eof    bool  // guarded by mu
	err    error // sticky read error; guarded by mu
}

var errBodyClosed = errors.New("origin: read on closed response body")

func (b *body) Read(p []byte) (int, error) {
	if b.closed.Load() {
		return 0, errBodyClosed
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed.Load() {
		return 0, errBodyClosed
	}
	if b.eof {
		return 0, io.EOF
	}
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.cl.stream.Read(p)
	switch {
	case err == io.EOF:
		b.eof = true
	case err != nil:
		b.err = classify(fmt.Errorf("reading body: %w", err))
		err = b.err
	}
	return n, err
}

// Close releases the connection: back to the pool if the body was read to
// the end, closed otherwise. A Read blocked in another goroutine is
// interrupted by closing the connection. Close is idempotent.
func (b *body) Close() error {
	if b.closed.Swap(true) {
		return nil
	}
	interrupted := false
	if !b.mu.TryLock() {
		// A Read is in flight: unblock it, then wait for it to return
		// before the connection and reader go back to their pools.
		b.cl.conn.Conn.Close()
		interrupted = true
		b.mu.Lock()
	}
	defer b.mu.Unlock()
	cl := b.cl
	b.cl = nil // pooled again below; Read checks closed before touching it
	cl.done(cl.br, b.eof && !interrupted && !cl.closeConn && !cl.resp.ConnectionClose())
	b.c.putCall(cl)
	return nil
}

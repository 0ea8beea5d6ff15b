package edge

// The HTTP/2 front (RFC 9113). The HTTPS listener offers "h2" before
// "http/1.1" by ALPN; a connSplit completes each TLS handshake and sends an
// h2 connection to net/http's HTTP/2 server, any other (http/1.1, or an
// acme-tls/1 validation, which never gets this far) to the fasthttp server
// as before. With server.h2c the plain listener does the same with
// cleartext connections that open with the HTTP/2 preface (prior
// knowledge, RFC 9113 §3.3), as a load balancer in front may send. The
// HTTP/2 servers run the shared translator (front_http.go).
//
// net/http serves the already decrypted connection as HTTP/2 with prior
// knowledge (Protocols: unencrypted HTTP/2 only): that lets resetGuard sit
// between the TLS record layer and the frame parser, which is where the
// rapid-reset attack (CVE-2023-44487) is visible, and coalescedConn
// (h2write.go) gather the server's writes. net/http's own mitigation
// only bounds handlers queued behind MaxConcurrentStreams; a client that
// opens and cancels streams answered from the cache never fills that queue
// and costs the node a request each, at no cost to itself.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// HTTP/2 protocol limits. Streams: as nginx (http2_max_concurrent_streams
// 128) and Go (250) do, a bound per connection; header lists: bounded by
// server.max_header_bytes (SETTINGS_MAX_HEADER_LIST_SIZE, RFC 9113 §6.5.2)
// and an HPACK table of the default 4 KiB (RFC 7541 §4.2), so a header bomb
// costs the node no more than one header block.
const (
	h2MaxStreams      = 250
	h2HeaderTableSize = 4 << 10
	// Receive windows for request bodies (uploads): large enough that one
	// upload reaches full speed on a long-haul path (the sender waits for
	// WINDOW_UPDATE once per window), small enough to bound memory per
	// connection. Downloads are bounded by the client's windows.
	h2ConnWindow   = 16 << 20
	h2StreamWindow = 4 << 20

	// resetBurst and resetRate bound client stream resets (RST_STREAM)
	// per connection: a token bucket that allows bursts a browser
	// cancelling a page's requests can produce, refilled at resetRate a
	// second. A client past it is disconnected.
	resetBurst = 200
	resetRate  = 100
)

// maxSniffing bounds the connections whose protocol is being found out
// at once (TLS handshakes on the HTTPS listener, the preface read with
// server.h2c), as server.concurrency bounds served ones: each costs a
// goroutine and a handshake's memory, and a client that opens connections
// and never speaks holds one until server.read_timeout. Past it the
// listener stops accepting (the kernel's backlog queues) until one ends.
const maxSniffing = 1024

// h2Front is an HTTP/2 server and the connections it was handed.
type h2Front struct {
	srv    *http.Server
	conns  *connQueue
	resets atomic.Uint64 // connections closed for rapid resets
}

// newH2Front serves HTTP/2 with h on the connections put to its queue
// (take); what names it in logs.
func (n *Node) newH2Front(h http.Handler, addr net.Addr, what string) *h2Front {
	c := n.cfg.Server
	f := &h2Front{conns: newConnQueue(addr)}
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	f.srv = &http.Server{
		Handler:        h,
		Protocols:      &protos,
		ReadTimeout:    c.ReadTimeout.D(),
		WriteTimeout:   c.WriteTimeout.D(),
		IdleTimeout:    c.IdleTimeout.D(),
		MaxHeaderBytes: int(c.MaxHeaderBytes),
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams:          h2MaxStreams,
			MaxDecoderHeaderTableSize:     h2HeaderTableSize,
			MaxEncoderHeaderTableSize:     h2HeaderTableSize,
			MaxReceiveBufferPerConnection: h2ConnWindow,
			MaxReceiveBufferPerStream:     h2StreamWindow,
			// A client that stops reading (a slow reader holding
			// windows open forever) is dropped once no byte could be
			// written for this long (coalescedConn applies it).
			WriteByteTimeout: c.IdleTimeout.D(),
		},
		ErrorLog: slog.NewLogLogger(n.log.With("component", "http2").Handler(), slog.LevelDebug),
	}
	n.serveWG.Add(1)
	go func() {
		defer n.serveWG.Done()
		if err := f.srv.Serve(f.conns); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			n.log.Error("listener stopped", "listener", what, "err", err)
		}
	}()
	return f
}

// take hands c to f's server behind the reset guard and write coalescing;
// raw is the accepted connection, whose server.max_conns_per_ip slot is
// given back when the server closes c.
func (n *Node) takeH2(f *h2Front, c, raw net.Conn) {
	g := &resetGuard{Conn: c, skip: len(h2Preface), tokens: resetBurst, onLimit: func() { f.resets.Add(1) }}
	cc := newCoalescedConn(g, n.cfg.Server.IdleTimeout.D())
	if n.conns != nil {
		cc.onClose = func() { n.conns.releaseConn(raw) }
	}
	if !f.conns.put(cc) {
		cc.Close()
	}
}

// startH2 serves HTTP/2 for the h2 connections of tlsLn and returns the
// listener of the others, for the HTTP/1.1 server.
func (n *Node) startH2(tlsLn net.Listener) net.Listener {
	f := n.newH2Front(n.newHTTPFront(protoH2, n.fronts.altSvc), tlsLn.Addr(), "https-h2")
	n.fronts.h2 = f
	return n.startSplit(tlsLn, f, sniffALPN)
}

// startH2C serves prior-knowledge cleartext HTTP/2 on the plain listener
// ln when server.h2c is on, and returns the listener of the HTTP/1.1
// connections; ln itself when it is off.
func (n *Node) startH2C(ln net.Listener) net.Listener {
	if !n.cfg.Server.H2C {
		return ln
	}
	front := n.newHTTPFront(protoH2, "")
	front.cleartext = true
	f := n.newH2Front(front, ln.Addr(), "http-h2c")
	n.fronts.h2c = f
	return n.startSplit(ln, f, sniffPreface)
}

// startSplit runs a connSplit of ln that hands HTTP/2 connections to f.
func (n *Node) startSplit(ln net.Listener, f *h2Front, sniff sniffFunc) net.Listener {
	c := n.cfg.Server
	split := newConnSplit(ln, c.ReadTimeout.D(), min(c.Concurrency, maxSniffing), sniff, func(conn, raw net.Conn) { n.takeH2(f, conn, raw) })
	if n.conns != nil {
		split.release = n.conns.releaseConn
	}
	n.serveWG.Add(1)
	go func() {
		defer n.serveWG.Done()
		split.run()
		f.conns.Close() // no more HTTP/2 connections: Serve returns
	}()
	return split
}

// stop sends GOAWAY on every HTTP/2 connection (RFC 9113 §6.8), lets
// their streams finish within ctx, then closes what is left.
func (f *h2Front) stop(ctx context.Context) error {
	err := f.srv.Shutdown(ctx)
	if err != nil {
		f.srv.Close()
		return fmt.Errorf("http/2 shutdown: %w", err)
	}
	return nil
}

// h2Preface is the client connection preface (RFC 9113 §3.4).
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

var errRapidReset = errors.New("edge: too many stream resets from the client (CVE-2023-44487)")

// resetGuard counts the RST_STREAM frames a client sends, reading frame
// headers as the bytes pass (no copy), and fails the connection's reads
// once the client resets streams faster than resetRate after a burst of
// resetBurst: the HTTP/2 server then closes the connection.
type resetGuard struct {
	net.Conn
	skip    int // bytes of preface or frame payload still to pass over
	hdr     [9]byte
	nh      int
	tokens  float64
	last    time.Time
	err     error
	onLimit func()
}

func (g *resetGuard) Read(p []byte) (int, error) {
	if g.err != nil {
		return 0, g.err
	}
	n, err := g.Conn.Read(p)
	g.scan(p[:n])
	return n, err
}

func (g *resetGuard) scan(b []byte) {
	for len(b) > 0 {
		if g.skip > 0 {
			k := min(g.skip, len(b))
			g.skip -= k
			b = b[k:]
			continue
		}
		k := copy(g.hdr[g.nh:], b)
		g.nh += k
		b = b[k:]
		if g.nh < len(g.hdr) {
			return
		}
		g.nh = 0
		g.skip = int(g.hdr[0])<<16 | int(g.hdr[1])<<8 | int(g.hdr[2])
		if g.hdr[3] == 0x3 { // RST_STREAM (RFC 9113 §6.4)
			g.onReset(time.Now())
		}
	}
}

func (g *resetGuard) onReset(now time.Time) {
	if !g.last.IsZero() {
		g.tokens = min(resetBurst, g.tokens+now.Sub(g.last).Seconds()*resetRate)
	}
	g.last = now
	g.tokens--
	if g.tokens < 0 && g.err == nil {
		g.err = errRapidReset
		if g.onLimit != nil {
			g.onLimit()
		}
	}
}

// connQueue is a net.Listener fed by put: the HTTP/2 server's listener.
type connQueue struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newConnQueue(addr net.Addr) *connQueue {
	return &connQueue{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

// put hands c to Accept; false once the queue is closed.
func (q *connQueue) put(c net.Conn) bool {
	select {
	case q.ch <- c:
		return true
	case <-q.done:
		return false
	}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.ch:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	q.once.Do(func() { close(q.done) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return q.addr }

// sniffFunc finds out within ctx whether a connection speaks HTTP/2: a
// TLS handshake's ALPN, or the start of a cleartext one. It returns the
// connection to serve, with any bytes it read put back.
type sniffFunc func(ctx context.Context, c net.Conn) (net.Conn, bool, error)

// sniffALPN completes the TLS handshake: h2 if the client chose it.
func sniffALPN(ctx context.Context, c net.Conn) (net.Conn, bool, error) {
	tc := c.(*tls.Conn)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, false, err
	}
	return tc, tc.ConnectionState().NegotiatedProtocol == "h2", nil
}

// sniffPreface reads the start of a cleartext connection: HTTP/2 if it is
// the connection preface (RFC 9113 §3.4), anything else is HTTP/1.x. It
// reads no further than the first byte that differs, so an HTTP/1.1
// request costs one read.
func sniffPreface(ctx context.Context, c net.Conn) (net.Conn, bool, error) {
	if d, ok := ctx.Deadline(); ok {
		c.SetReadDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Now()) }) // the listener closed
	pc := &prefixConn{Conn: c}
	n := 0
	for n < len(h2Preface) && pc.pre[:n] == h2Preface[:n] {
		k, err := c.Read(pc.buf[n:])
		n += k
		pc.pre = string(pc.buf[:n])
		if err != nil && (n == 0 || pc.pre == h2Preface[:n]) {
			stop()
			return nil, false, err // gone or silent before saying which
		}
	}
	stop()
	c.SetReadDeadline(time.Time{})
	return pc, pc.pre == h2Preface, nil
}

// prefixConn is a connection whose first bytes were read by sniffPreface:
// Read returns them before the rest.
type prefixConn struct {
	net.Conn
	buf [len(h2Preface)]byte
	pre string // read and not yet returned
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if c.pre == "" {
		return c.Conn.Read(p)
	}
	k := copy(p, c.pre)
	c.pre = c.pre[k:]
	return k, nil
}

// connSplit accepts connections, finds out each one's protocol (sniff) on
// its own goroutine, at most slots at once (a slow client delays nobody; a
// flood of silent ones cannot grow goroutines without bound), hands the
// HTTP/2 ones to take and queues the rest for its own Accept (HTTP/1.1).
type connSplit struct {
	ln      net.Listener
	timeout time.Duration
	sniff   sniffFunc
	take    func(c, raw net.Conn)
	release func(net.Conn) // gives back a max_conns_per_ip slot; nil: no limit
	slots   chan struct{}  // a token per connection being sniffed
	h1      *connQueue
	ctx     context.Context // canceled by Close: aborts sniffing
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

func newConnSplit(ln net.Listener, timeout time.Duration, slots int, sniff sniffFunc, take func(c, raw net.Conn)) *connSplit {
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &connSplit{ln: ln, timeout: timeout, sniff: sniff, take: take, slots: make(chan struct{}, max(slots, 1)),
		h1: newConnQueue(ln.Addr()), ctx: ctx, cancel: cancel}
}

// run accepts until the listener is closed, then waits for the sniffing.
func (s *connSplit) run() {
	defer s.wg.Wait()
	defer s.h1.Close()
	for {
		select {
		case s.slots <- struct{}{}:
		case <-s.ctx.Done():
			return
		}
		c, err := s.ln.Accept()
		if err != nil {
			<-s.slots
			if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
				time.Sleep(5 * time.Millisecond) // EMFILE and the like: back off
				continue
			}
			s.cancel()
			return
		}
		s.wg.Add(1)
		go s.route(c)
	}
}

// route sniffs c and hands it on, or closes it.
func (s *connSplit) route(raw net.Conn) {
	defer s.wg.Done()
	ctx, cancel := context.WithTimeout(s.ctx, s.timeout)
	c, h2, err := s.sniff(ctx, raw)
	cancel()
	<-s.slots
	switch {
	case err != nil:
		s.drop(raw)
	case h2:
		s.take(c, raw)
	case !s.h1.put(c):
		s.drop(raw)
	}
}

// drop closes a connection no server got: its slot is given back here.
func (s *connSplit) drop(c net.Conn) {
	c.Close()
	if s.release != nil {
		s.release(c)
	}
}

func (s *connSplit) Accept() (net.Conn, error) { return s.h1.Accept() }

// Close stops accepting (the node's shutdown closes it): the listener
// closes, run returns once pending sniffing ends.
func (s *connSplit) Close() error {
	s.cancel()
	s.h1.Close()
	return s.ln.Close()
}

func (s *connSplit) Addr() net.Addr { return s.ln.Addr() }

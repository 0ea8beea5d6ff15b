package edge

// The HTTP/2 front (RFC 9113). The HTTPS listener offers "h2" before
// "http/1.1" by ALPN; alpnSplit completes each TLS handshake and sends an
// h2 connection to net/http's HTTP/2 server, any other (http/1.1, or an
// acme-tls/1 validation, which never gets this far) to the fasthttp server
// as before. The HTTP/2 server runs the shared translator (front_http.go).
//
// net/http serves the already decrypted connection as HTTP/2 with prior
// knowledge (Protocols: unencrypted HTTP/2 only): that lets resetGuard sit
// between the TLS record layer and the frame parser, which is where the
// rapid-reset attack (CVE-2023-44487) is visible. net/http's own mitigation
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

// h2Front is the HTTP/2 server and the connections it was handed.
type h2Front struct {
	srv    *http.Server
	conns  *connQueue
	resets atomic.Uint64 // connections closed for rapid resets
}

// startH2 serves HTTP/2 for the h2 connections of tlsLn and returns the
// listener of the others, for the HTTP/1.1 server.
func (n *Node) startH2(tlsLn net.Listener) net.Listener {
	c := n.cfg.Server
	f := &h2Front{conns: newConnQueue(tlsLn.Addr())}
	front := n.newHTTPFront(protoH2, n.fronts.altSvc)
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	f.srv = &http.Server{
		Handler:        front,
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
			// written for this long.
			WriteByteTimeout: c.IdleTimeout.D(),
		},
		ErrorLog: slog.NewLogLogger(n.log.With("component", "http2").Handler(), slog.LevelDebug),
	}
	n.fronts.h2 = f
	n.serveWG.Add(1)
	go func() {
		defer n.serveWG.Done()
		if err := f.srv.Serve(f.conns); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			n.log.Error("listener stopped", "listener", "https-h2", "err", err)
		}
	}()
	split := newALPNSplit(tlsLn, c.ReadTimeout.D(), func(conn *tls.Conn) bool {
		if conn.ConnectionState().NegotiatedProtocol != "h2" {
			return false
		}
		g := &resetGuard{Conn: conn, skip: len(h2Preface), tokens: resetBurst, onLimit: func() { f.resets.Add(1) }}
		if !f.conns.put(newCoalescedConn(g, c.IdleTimeout.D())) {
			conn.Close()
		}
		return true
	})
	n.serveWG.Add(1)
	go func() {
		defer n.serveWG.Done()
		split.run()
		f.conns.Close() // no more h2 connections: Serve returns
	}()
	return split
}

// stopH2 sends GOAWAY on every HTTP/2 connection (RFC 9113 §6.8), lets
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

// alpnSplit accepts TLS connections, completes each handshake on its own
// goroutine (a slow client delays nobody), offers the connection to take
// (the HTTP/2 front) and queues the rest for its own Accept (HTTP/1.1).
type alpnSplit struct {
	ln      net.Listener // a tls.NewListener
	timeout time.Duration
	take    func(*tls.Conn) bool
	h1      *connQueue
	ctx     context.Context // canceled by Close: aborts handshakes
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

func newALPNSplit(ln net.Listener, timeout time.Duration, take func(*tls.Conn) bool) *alpnSplit {
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &alpnSplit{ln: ln, timeout: timeout, take: take, h1: newConnQueue(ln.Addr()), ctx: ctx, cancel: cancel}
}

// run accepts until the listener is closed, then waits for handshakes.
func (s *alpnSplit) run() {
	defer s.wg.Wait()
	defer s.h1.Close()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(5 * time.Millisecond) // EMFILE and the like: back off
				continue
			}
			s.cancel()
			return
		}
		s.wg.Add(1)
		go s.handshake(c.(*tls.Conn))
	}
}

func (s *alpnSplit) handshake(c *tls.Conn) {
	defer s.wg.Done()
	ctx, cancel := context.WithTimeout(s.ctx, s.timeout)
	err := c.HandshakeContext(ctx)
	cancel()
	if err != nil {
		c.Close()
		return
	}
	if s.take(c) {
		return
	}
	if !s.h1.put(c) {
		c.Close()
	}
}

func (s *alpnSplit) Accept() (net.Conn, error) { return s.h1.Accept() }

// Close stops accepting (the node's shutdown closes it): the TLS listener
// closes, run returns once pending handshakes end.
func (s *alpnSplit) Close() error {
	s.cancel()
	s.h1.Close()
	return s.ln.Close()
}

func (s *alpnSplit) Addr() net.Addr { return s.ln.Addr() }

package edge

// The net/http fronts (HTTP/2 in h2.go, HTTP/3 in h3.go) share one
// translator: each request becomes a *fasthttp.RequestCtx handed to the
// very handler the HTTP/1.1 listener runs (n.handle, behind withDate), and
// the fasthttp response it leaves is written back. No caching rule lives
// here: a front only translates a request in and a response out
// (DESIGN.md, request flow step 0).
//
// What the pipeline takes from the connection, and what it gets here:
//   - RemoteAddr / RemoteIP (X-Forwarded-For, rate limits, access log): a
//     *net.TCPAddr built from the client's address, since fasthttp and the
//     limiters only understand that type (QUIC's UDP address included).
//   - IsTLS (X-Forwarded-Proto: https): fasthttp asks whether the
//     connection has Handshake and ConnectionState; streamConn has both.
//   - Conn for sendfile (cache.BlobReader): streamConn is not a
//     *net.TCPConn, so memory-file bodies take the copying path, as over
//     HTTP/1.1 with TLS.
//   - the request's protocol (access log): "HTTP/2.0" or "HTTP/3.0".

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeshield/edgeshield/internal/ascii"
	"github.com/valyala/fasthttp"
)

// Protocol labels of the fronts (metrics, logs), and their indices in
// counters.byProto.
const (
	protoH1 = "h1"
	protoH2 = "h2"
	protoH3 = "h3"
)

const (
	protoIdxH1 = iota
	protoIdxH2
	protoIdxH3
	numProtos
)

// handleH1 is n.handle as the HTTP/1.x servers run it: counted as an h1
// request. Each front counts right before the pipeline, which counts every
// request it is handed, so the protocols add up to Stats.Requests.
func (n *Node) handleH1(ctx *fasthttp.RequestCtx) {
	n.stats.byProto[protoIdxH1].Add(1)
	n.handle(ctx)
}

// streamConn stands for the client's connection under one HTTP/2 or HTTP/3
// stream: only its addresses and its TLS-ness are used; the bytes go
// through net/http or quic-go, never through it.
type streamConn struct {
	remote, local net.TCPAddr
	proto         string // protoH2 or protoH3
	state         tls.ConnectionState
}

var errStreamConn = errors.New("edge: an HTTP/2 or HTTP/3 stream is not read or written as a connection")

func (c *streamConn) Read([]byte) (int, error)             { return 0, errStreamConn }
func (c *streamConn) Write([]byte) (int, error)            { return 0, errStreamConn }
func (c *streamConn) Close() error                         { return nil }
func (c *streamConn) LocalAddr() net.Addr                  { return &c.local }
func (c *streamConn) RemoteAddr() net.Addr                 { return &c.remote }
func (c *streamConn) SetDeadline(time.Time) error          { return nil }
func (c *streamConn) SetReadDeadline(time.Time) error      { return nil }
func (c *streamConn) SetWriteDeadline(time.Time) error     { return nil }
func (c *streamConn) Handshake() error                     { return nil }
func (c *streamConn) ConnectionState() tls.ConnectionState { return c.state }

// frontCtx is one pooled translation: the fasthttp context and its stand-in
// connection.
type frontCtx struct {
	ctx  fasthttp.RequestCtx
	conn streamConn
}

// httpFront is the net/http handler of the HTTP/2 and HTTP/3 servers.
type httpFront struct {
	n        *Node
	proto    string // protoH2 or protoH3
	protocol string // the request's protocol as the access log shows it
	h        fasthttp.RequestHandler
	altSvc   string // Alt-Svc value for responses; "" for none
	pool     sync.Pool
	count    *atomic.Uint64 // the protocol's request counter (counters.byProto)
}

func (n *Node) newHTTPFront(proto, altSvc string) *httpFront {
	f := &httpFront{n: n, proto: proto, h: n.withDate(n.handle), altSvc: altSvc}
	f.protocol, f.count = "HTTP/2.0", &n.stats.byProto[protoIdxH2]
	if proto == protoH3 {
		f.protocol, f.count = "HTTP/3.0", &n.stats.byProto[protoIdxH3]
	}
	f.pool.New = func() any { return new(frontCtx) }
	return f
}

// hopByHop are the fields HTTP/2 and HTTP/3 forbid in a response (RFC 9113
// §8.2.2, RFC 9114 §4.2): connection-specific, meaningless on a stream.
func hopByHopResponseField(k []byte) bool {
	switch len(k) {
	case len("Connection"): // = len("Keep-Alive")
		return ascii.EqualFoldLower(k, "connection") || ascii.EqualFoldLower(k, "keep-alive")
	case len("Transfer-Encoding"):
		return ascii.EqualFoldLower(k, "transfer-encoding")
	case len("Upgrade"):
		return ascii.EqualFoldLower(k, "upgrade")
	case len("Proxy-Connection"):
		return ascii.EqualFoldLower(k, "proxy-connection")
	case len("Content-Length"):
		// Set from the body below (fasthttp keeps it apart anyway).
		return ascii.EqualFoldLower(k, "content-length")
	}
	return false
}

func (f *httpFront) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	fc := f.pool.Get().(*frontCtx)
	defer func() {
		fc.ctx.Request.Reset()
		fc.ctx.Response.Reset()
		fc.ctx.ResetUserValues()
		fc.conn = streamConn{}
		f.pool.Put(fc)
	}()
	ctx := &fc.ctx
	fc.conn.proto = f.proto
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		fc.conn.remote = net.TCPAddr{IP: ap.Addr().AsSlice(), Port: int(ap.Port())}
	}
	if r.TLS != nil {
		fc.conn.state = *r.TLS
	}
	ctx.Init2(&fc.conn, fasthttpLogger{f.n.log}, false)

	req := &ctx.Request
	req.Header.SetMethod(r.Method)
	req.Header.SetRequestURI(r.RequestURI)
	req.Header.SetProtocol(f.protocol)
	if r.Host == "" {
		// RFC 9113 §8.3.1: a request without :authority or Host has no
		// target host; the cache key needs one.
		http.Error(w, "missing :authority (Host)", http.StatusBadRequest)
		return
	}
	req.Header.SetHost(r.Host)
	for k, vs := range r.Header {
		if k == "Host" || k == "Content-Length" {
			continue
		}
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	switch {
	case r.ContentLength > 0:
		req.SetBodyStream(r.Body, int(r.ContentLength))
	case r.ContentLength < 0:
		// No declared length: read to the end of the stream, cut at
		// server.max_request_body by the pipeline (requestBody).
		req.SetBodyStream(r.Body, -1)
	}

	f.count.Add(1)
	f.h(ctx)
	f.writeResponse(w, r, ctx)
}

// writeResponse writes ctx.Response to w: status, end-to-end fields, then
// the body, flushed as it comes when it is a stream (a fill in progress).
func (f *httpFront) writeResponse(w http.ResponseWriter, r *http.Request, ctx *fasthttp.RequestCtx) {
	resp := &ctx.Response
	hdr := w.Header()
	for k, v := range resp.Header.All() {
		if hopByHopResponseField(k) {
			continue
		}
		name := string(k)
		hdr[name] = append(hdr[name], string(v))
	}
	if f.altSvc != "" {
		hdr["Alt-Svc"] = []string{f.altSvc}
	}
	status := resp.StatusCode()
	noBody := r.Method == http.MethodHead || resp.SkipBody || status < 200 || status == http.StatusNoContent || status == http.StatusNotModified
	if noBody {
		// A HEAD answer states the length a GET would have (RFC 9110
		// §9.3.2): fasthttp derives it from the body it then skips.
		cl := resp.Header.ContentLength()
		if resp.IsBodyStream() {
			resp.CloseBodyStream()
		} else if b := resp.Body(); len(b) > 0 {
			cl = len(b)
		}
		if cl >= 0 && status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified {
			hdr["Content-Length"] = []string{strconv.Itoa(cl)}
		}
		w.WriteHeader(status)
		return
	}
	if !resp.IsBodyStream() {
		body := resp.Body()
		hdr["Content-Length"] = []string{strconv.Itoa(len(body))}
		w.WriteHeader(status)
		w.Write(body)
		return
	}
	if cl := resp.Header.ContentLength(); cl >= 0 {
		hdr["Content-Length"] = []string{strconv.Itoa(cl)}
	}
	w.WriteHeader(status)
	// BodyWriteTo closes the stream (releasing a memory file, returning an
	// origin connection) whatever happens to the client.
	fw := flushWriter{w: w, rc: http.NewResponseController(w)}
	if err := resp.BodyWriteTo(fw); err != nil && !errors.Is(err, io.EOF) {
		// The client is gone or the fill failed mid-body: cut the stream
		// (RST_STREAM / a reset QUIC stream) so the client cannot take a
		// truncated body for a complete one.
		panic(http.ErrAbortHandler)
	}
}

// flushWriter sends each piece of a streamed body at once, so a client
// sees a large object arrive while it fills instead of when it is done.
type flushWriter struct {
	w  io.Writer
	rc *http.ResponseController
}

func (fw flushWriter) Write(p []byte) (int, error) {
	n, err := fw.w.Write(p)
	if err != nil {
		return n, err
	}
	return n, fw.rc.Flush()
}

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
//     connection has Handshake and ConnectionState; tlsStreamConn has
//     both, streamConn (cleartext HTTP/2, server.h2c) neither.
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

// protoParam is the Cache-Status parameter that says which protocol the
// client spoke to this cache (h1, h2 or h3). RFC 9211 §2 lets a cache add
// parameters beyond those it defines, and recipients ignore the ones they
// do not know; §4 asks that a parameter not registered with IANA carry a
// prefix naming the implementation, hence not a bare "proto". `detail`
// (§2.8) is taken: it says why a stale answer was served.
const protoParam = "; edgeshield-proto="

// appendProtoParam appends protoParam and ctx's protocol to a Cache-Status
// member. The fronts set the request's protocol (HTTP/2.0, HTTP/3.0);
// anything else came over HTTP/1.x.
func appendProtoParam(dst []byte, ctx *fasthttp.RequestCtx) []byte {
	dst = append(dst, protoParam...)
	switch string(ctx.Request.Header.Protocol()) {
	case protocolH2:
		return append(dst, protoH2...)
	case protocolH3:
		return append(dst, protoH3...)
	}
	return append(dst, protoH1...)
}

// The request protocols the HTTP/2 and HTTP/3 fronts give the pipeline (the
// access log shows them).
const (
	protocolH2 = "HTTP/2.0"
	protocolH3 = "HTTP/3.0"
)

// handleH1 is n.handle as the HTTP/1.x servers run it: counted as an h1
// request. Each front counts right before the pipeline, which counts every
// request it is handed, so the protocols add up to Stats.Requests.
func (n *Node) handleH1(ctx *fasthttp.RequestCtx) {
	n.pipe.stats.byProto[protoIdxH1].Add(1)
	n.pipe.handle(ctx)
}

// streamConn stands for the client's connection under one HTTP/2 or HTTP/3
// stream: only its addresses and its TLS-ness are used; the bytes go
// through net/http or quic-go, never through it.
type streamConn struct {
	remote, local net.TCPAddr
	proto         string // protoH2 or protoH3
}

// tlsStreamConn is a streamConn over TLS (h2, h3).
type tlsStreamConn struct {
	streamConn
	state tls.ConnectionState
}

var errStreamConn = errors.New("edge: an HTTP/2 or HTTP/3 stream is not read or written as a connection")

func (c *streamConn) Read([]byte) (int, error)                { return 0, errStreamConn }
func (c *streamConn) Write([]byte) (int, error)               { return 0, errStreamConn }
func (c *streamConn) Close() error                            { return nil }
func (c *streamConn) LocalAddr() net.Addr                     { return &c.local }
func (c *streamConn) RemoteAddr() net.Addr                    { return &c.remote }
func (c *streamConn) SetDeadline(time.Time) error             { return nil }
func (c *streamConn) SetReadDeadline(time.Time) error         { return nil }
func (c *streamConn) SetWriteDeadline(time.Time) error        { return nil }
func (c *tlsStreamConn) Handshake() error                     { return nil }
func (c *tlsStreamConn) ConnectionState() tls.ConnectionState { return c.state }

// frontCtx is one pooled translation: the fasthttp context and its stand-in
// connection.
type frontCtx struct {
	ctx  fasthttp.RequestCtx
	conn tlsStreamConn
	ip   [16]byte // conn.remote.IP's storage
	vals []byte   // response field values, copied into one string (copyHeader)
}

// httpFront is the net/http handler of the HTTP/2 and HTTP/3 servers.
type httpFront struct {
	n        *Node
	proto    string // protoH2 or protoH3
	protocol string // the request's protocol as the access log shows it
	// cleartext: requests come over plain TCP (server.h2c), so the
	// pipeline must not see TLS (X-Forwarded-Proto: http).
	cleartext bool
	h         fasthttp.RequestHandler
	altSvc    []string // Alt-Svc value for responses; nil for none
	pool      sync.Pool
	count     *atomic.Uint64 // the protocol's request counter (counters.byProto)
}

func (n *Node) newHTTPFront(proto, altSvc string) *httpFront {
	f := &httpFront{n: n, proto: proto, h: n.pipe.withDate(n.pipe.handle)}
	if altSvc != "" {
		f.altSvc = []string{altSvc}
	}
	f.protocol, f.count = protocolH2, &n.pipe.stats.byProto[protoIdxH2]
	if proto == protoH3 {
		f.protocol, f.count = protocolH3, &n.pipe.stats.byProto[protoIdxH3]
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
		// Set from the body (copyHeader; fasthttp keeps it apart anyway).
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
		fc.conn = tlsStreamConn{}
		f.pool.Put(fc)
	}()
	ctx := &fc.ctx
	f.initConn(fc, r)

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
	f.writeResponse(w, r, fc)
}

// initConn points fc's context at its stand-in connection: the client's
// address, TLS or not (server.h2c), the front's protocol.
func (f *httpFront) initConn(fc *frontCtx, r *http.Request) {
	fc.conn.proto = f.proto
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		// The address's bytes live in fc, not in a new slice per request.
		ip := fc.ip[:16]
		if a := ap.Addr().Unmap(); a.Is4() {
			b := a.As4()
			ip = fc.ip[:copy(fc.ip[:], b[:])]
		} else {
			b := a.As16()
			copy(ip, b[:])
		}
		fc.conn.remote = net.TCPAddr{IP: ip, Port: int(ap.Port())}
	}
	if r.TLS != nil {
		fc.conn.state = *r.TLS
	}
	if f.cleartext {
		fc.ctx.Init2(&fc.conn.streamConn, fasthttpLogger{f.n.log}, false)
	} else {
		fc.ctx.Init2(&fc.conn, fasthttpLogger{f.n.log}, false)
	}
}

// writeResponse writes ctx.Response to w: status, end-to-end fields, then
// the body, flushed as it comes when it is a stream (a fill in progress).
func (f *httpFront) writeResponse(w http.ResponseWriter, r *http.Request, fc *frontCtx) {
	resp := &fc.ctx.Response
	status := resp.StatusCode()
	noBody := r.Method == http.MethodHead || resp.SkipBody || status < 200 || status == http.StatusNoContent || status == http.StatusNotModified
	// Content-Length: set from the body (fasthttp keeps it apart); -1 for
	// none (a stream of unknown length, or an answer that has none).
	cl := -1
	switch {
	case noBody:
		// A HEAD answer states the length a GET would have (RFC 9110
		// §9.3.2): fasthttp derives it from the body it then skips.
		cl = resp.Header.ContentLength()
		if resp.IsBodyStream() {
			resp.CloseBodyStream()
		} else if b := resp.Body(); len(b) > 0 {
			cl = len(b)
		}
		if status < 200 || status == http.StatusNoContent || status == http.StatusNotModified {
			cl = -1
		}
	case !resp.IsBodyStream():
		cl = len(resp.Body())
	default:
		cl = resp.Header.ContentLength()
	}
	f.copyHeader(w.Header(), fc, cl)
	w.WriteHeader(status)
	if noBody {
		return
	}
	if !resp.IsBodyStream() {
		w.Write(resp.Body())
		return
	}
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

// copyHeader copies the end-to-end fields of fc's response, Content-Length
// cl (none if negative) and Alt-Svc into hdr. http.Header wants a string
// and a []string per field: done naively that is three allocations a
// field, most of a hit's cost in this front. Here all values share one
// string and all slices one array (two allocations whatever the count),
// and common names come from commonFieldNames.
func (f *httpFront) copyHeader(hdr http.Header, fc *frontCtx, cl int) {
	resp := &fc.ctx.Response
	vals := fc.vals[:0]
	nf := 0
	for k, v := range resp.Header.All() {
		if !hopByHopResponseField(k) {
			vals = append(vals, v...)
			nf++
		}
	}
	if cl >= 0 {
		vals = strconv.AppendInt(vals, int64(cl), 10)
		nf++
	}
	fc.vals = vals
	all := string(vals)
	slots := make([]string, nf)
	i, off := 0, 0
	add := func(name string, n int) {
		slots[i] = all[off : off+n]
		if prev, ok := hdr[name]; ok {
			hdr[name] = append(prev, slots[i]) // a repeated field: rare
		} else {
			hdr[name] = slots[i : i+1 : i+1]
		}
		i++
		off += n
	}
	for k, v := range resp.Header.All() {
		if hopByHopResponseField(k) {
			continue
		}
		name, ok := commonFieldNames[string(k)]
		if !ok {
			name = string(k)
		}
		add(name, len(v))
	}
	if cl >= 0 {
		add("Content-Length", len(all)-off)
	}
	if f.altSvc != nil {
		// Shared by every response: the servers only read it.
		hdr["Alt-Svc"] = f.altSvc
	}
}

// commonFieldNames are the response fields the node and origins usually
// send, keyed as fasthttp spells them, valued as net/http does: looking a
// name up here costs no allocation, converting it would. Read-only.
var commonFieldNames = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{
		"Accept-Ranges", "Age", "Cache-Control", "Cache-Status", "Content-Encoding", "Content-Language",
		"Content-Location", "Content-Range", "Content-Security-Policy", "Content-Type", "Date", "ETag", "Expires",
		"Last-Modified", "Link", "Location", "Retry-After", "Server", "Set-Cookie", "Strict-Transport-Security",
		"Timing-Allow-Origin", "Vary", "Via", "X-Cache", "X-Content-Type-Options", "X-Frame-Options",
		"Access-Control-Allow-Origin", "Access-Control-Allow-Credentials", "Access-Control-Expose-Headers",
		"Cross-Origin-Resource-Policy", "Referrer-Policy", "Permissions-Policy", "Report-To", "NEL",
		"Alt-Svc", "Server-Timing", "Content-Disposition", "Trailer", "Warning", "X-Served-By",
	} {
		m[k] = http.CanonicalHeaderKey(k)
		m[string(fasthttpCanonical(k))] = http.CanonicalHeaderKey(k)
	}
	return m
}()

// fasthttpCanonical spells k as fasthttp's normalised header keys do:
// upper case after '-' and at the start, lower case elsewhere.
func fasthttpCanonical(k string) []byte {
	b := []byte(k)
	up := true
	for i, c := range b {
		switch {
		case up && 'a' <= c && c <= 'z':
			b[i] = c - 'a' + 'A'
		case !up && 'A' <= c && c <= 'Z':
			b[i] = c - 'A' + 'a'
		}
		up = c == '-'
	}
	return b
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

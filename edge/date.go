package edge

import (
	"bufio"
	"bytes"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// The Date of a response served from the cache is the origin's: the moment
// the response was generated, which with Age tells a client how old it is
// (RFC 9110 §6.6.1, RFC 9111 §4.2.3, §5.1). A response that arrived without
// one gets the receipt time when stored (§6.6.1: "MUST record the time it
// was received and append a corresponding Date header field ... if it is
// cached or forwarded downstream"), and any other answer of the node gets
// the node's clock.
//
// fasthttp v1.74 makes that awkward: ResponseHeader.Set and Add drop a Date
// field ("managed automatically") and the server writes its own clock unless
// Server.NoDefaultDate is set. Its trailer parser, though, appends a Date
// field to the ordinary header list, which the server writes when
// NoDefaultDate is set. So the public, peer and plain servers set
// NoDefaultDate, the node puts its Date fields in through ReadTrailer, and
// withDate guarantees every answer one.

// dateSetter holds the scratch of one Date insertion, pooled so that the
// fresh-hit path does not allocate.
type dateSetter struct {
	buf []byte
	rd  bytes.Reader
	br  *bufio.Reader
}

var datePool = sync.Pool{New: func() any {
	d := &dateSetter{buf: make([]byte, 0, 64)}
	d.br = bufio.NewReaderSize(&d.rd, 128)
	return d
}}

var (
	strDate     = []byte("Date")
	strDateLine = []byte("Date: ")
	strCRLF2    = []byte("\r\n\r\n")
)

// setDate sets the response's Date field to v, which must be an HTTP-date
// (callers pass values cache.ParseHTTPDate accepted, or their own). A
// previous Date field is replaced. It reports false if fasthttp refused the
// value (it never should).
func setDate(h *fasthttp.ResponseHeader, v []byte) bool {
	if len(v) > 64 {
		return false
	}
	h.DelBytes(strDate) // harmless when absent; keeps one Date field
	d := datePool.Get().(*dateSetter)
	d.buf = append(append(append(d.buf[:0], strDateLine...), v...), strCRLF2...)
	d.rd.Reset(d.buf)
	d.br.Reset(&d.rd)
	err := h.ReadTrailer(d.br)
	datePool.Put(d)
	return err == nil
}

// ensureDate gives a response without a Date field the node's clock.
func (pl *pipeline) ensureDate(h *fasthttp.ResponseHeader) {
	if len(h.PeekBytes(strDate)) > 0 {
		return // the usual case for a hit: no clock read
	}
	setDate(h, appendHTTPDate(nil, pl.now()))
}

func appendHTTPDate(dst []byte, t time.Time) []byte { return fasthttp.AppendHTTPDate(dst, t) }

// withDate wraps a handler of a server with NoDefaultDate so that every
// answer carries a Date field (RFC 9110 §6.6.1).
func (pl *pipeline) withDate(h fasthttp.RequestHandler) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		h(ctx)
		pl.ensureDate(&ctx.Response.Header)
	}
}

// withDateOnError does the same for a server's ErrorHandler.
func (pl *pipeline) withDateOnError(h func(*fasthttp.RequestCtx, error)) func(*fasthttp.RequestCtx, error) {
	return func(ctx *fasthttp.RequestCtx, err error) {
		h(ctx, err)
		pl.ensureDate(&ctx.Response.Header)
	}
}

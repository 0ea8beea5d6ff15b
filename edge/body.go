package edge

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"

	"github.com/edgeshield/edgeshield/origin"
	"github.com/valyala/fasthttp"
)

// Request bodies (server.max_request_body). The public servers stream them
// (fasthttp StreamRequestBody): the handler runs once the headers and at
// most prefetchedBody bytes are in, and pass copies the rest to the origin
// as it arrives, through the origin client's 32 KiB buffer. fasthttp does
// not skip what a handler leaves unread, so whatever is left on the
// connection would be parsed as the next request: every path that does not
// read a body to its end closes the connection after answering.

// errBodyTooLarge cuts a chunked body that grows past
// server.max_request_body.
var errBodyTooLarge = errors.New("request body larger than server.max_request_body")

// prefetchedBody is how much of a Content-Length body fasthttp v1.74.0 reads
// before calling the handler (readBodyWithStreaming: min(length, 8 KiB)).
// A body no longer than this is already in memory: reading it to the end
// costs no wait on the client. TestRequestBodyLeftoverNotParsed guards the
// figure.
const prefetchedBody = 8 << 10

// requestBody is the client's body as pass forwards it: it counts what was
// read and cuts a chunked body at the limit. It lives in reqState (no
// allocation per request).
type requestBody struct {
	r      io.Reader // the fasthttp stream; nil when the body is not streamed
	length int64     // Content-Length, -1 for chunked
	limit  int64     // server.max_request_body
	read   int64
	eof    bool
}

func (b *requestBody) Read(p []byte) (int, error) {
	if b.length < 0 && int64(len(p)) > b.limit-b.read+1 {
		// One byte past the limit is enough to know it is exceeded.
		p = p[:b.limit-b.read+1]
	}
	n, err := b.r.Read(p)
	b.read += int64(n)
	if err == io.EOF {
		b.eof = true
	}
	if b.length < 0 && b.read > b.limit {
		return n - int(b.read-b.limit), errBodyTooLarge
	}
	return n, err
}

// done reports whether the body was read to its end, so that the
// connection is positioned at the next request.
func (b *requestBody) done() bool {
	return b.eof || (b.length >= 0 && b.read == b.length)
}

// finish makes the connection close after this response unless the body
// was read to its end, and lets go of the stream.
func (b *requestBody) finish(ctx *fasthttp.RequestCtx) {
	if b.r != nil && !b.done() {
		ctx.SetConnectionClose()
	}
	*b = requestBody{}
}

// attachBody gives oreq the client's body: streamed when fasthttp streams
// it, else (a request built in memory) as bytes. A declared length above
// server.max_request_body fails with errBodyTooLarge, before anything is
// sent (the caller answers it with bodyFailed).
func (pl *pipeline) attachBody(ctx *fasthttp.RequestCtx, st *reqState, oreq *origin.Request) error {
	req := &ctx.Request
	st.body = requestBody{}
	if !req.IsBodyStream() {
		oreq.Body = req.Body()
		return nil
	}
	limit := int64(pl.conf().Server.MaxRequestBody)
	length := int64(req.Header.ContentLength())
	if length > limit {
		return errBodyTooLarge
	}
	if length < 0 {
		length = -1 // chunked; fasthttp never streams a close-delimited request body
	}
	st.body = requestBody{r: req.BodyStream(), length: length, limit: limit}
	oreq.BodyStream, oreq.ContentLength = &st.body, length
	return nil
}

// bodyTooLarge answers 413 (RFC 9110 §15.5.14) and closes the connection:
// the rest of the body is not read.
func (pl *pipeline) bodyTooLarge(ctx *fasthttp.RequestCtx) outcome {
	pl.stats.bodiesTooLarge.Add(1)
	ctx.Error("request body larger than "+pl.conf().Server.MaxRequestBody.String()+"\n", fasthttp.StatusRequestEntityTooLarge)
	ctx.SetConnectionClose()
	return outError
}

// bodyFailed answers a forward that failed while reading the client's body
// (origin.ErrRequestBody): the origin request was aborted; nothing has been
// sent to the client yet. 413 past the limit, 408 when the client stalled,
// 400 otherwise (a broken chunked body, or the client is gone anyway).
func (pl *pipeline) bodyFailed(ctx *fasthttp.RequestCtx, err error) outcome {
	if errors.Is(err, errBodyTooLarge) {
		return pl.bodyTooLarge(ctx)
	}
	status := fasthttp.StatusBadRequest
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		status = fasthttp.StatusRequestTimeout
	}
	if pl.log.Enabled(context.Background(), slog.LevelDebug) {
		pl.log.Debug("request body failed; origin request aborted", "status", status, "uri", string(ctx.RequestURI()), "err", err)
	}
	ctx.Error(fasthttp.StatusMessage(status)+"\n", status)
	ctx.SetConnectionClose()
	return outError
}

// skipBody deals with the body of a request answered without forwarding
// it (a GET or HEAD served from the cache): one already in memory is read
// to its end and the connection kept; any other closes the connection.
func skipBody(ctx *fasthttp.RequestCtx) {
	switch length := ctx.Request.Header.ContentLength(); {
	case length == 0:
	case length > 0 && length <= prefetchedBody:
		if _, err := io.Copy(io.Discard, ctx.RequestBodyStream()); err != nil {
			ctx.SetConnectionClose()
		}
	default:
		ctx.SetConnectionClose()
	}
}

// withBodySkipped runs h, a handler that never reads request bodies, then
// skips what it left (skipBody).
func withBodySkipped(h fasthttp.RequestHandler) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		h(ctx)
		if ctx.Request.IsBodyStream() {
			skipBody(ctx)
		}
	}
}

// expectContinue answers "Expect: 100-continue" (RFC 9110 §10.1.1): a
// declared body above server.max_request_body gets its 413 at once, so
// the client never sends it; any other gets 100 Continue.
func (pl *pipeline) expectContinue(ctx *fasthttp.RequestCtx) int {
	if int64(ctx.Request.Header.ContentLength()) > int64(pl.conf().Server.MaxRequestBody) {
		pl.stats.bodiesTooLarge.Add(1)
		return fasthttp.StatusRequestEntityTooLarge
	}
	return fasthttp.StatusContinue
}

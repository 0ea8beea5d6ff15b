package demo

import (
	"bytes"
	"io"
	"math"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
)

// entity is one selected representation (RFC 9110 §3.2) with its validators.
type entity struct {
	size int64
	// Exactly one body source is set: data holds the whole body in memory
	// (immutable, so it is handed to fasthttp without copying), or ra is read
	// on demand through a section for the selected range.
	data   []byte
	ra     io.ReaderAt
	closer io.Closer // released once the response is written; may be nil
	chunks *chunking // non-nil: stream with chunked coding instead of Content-Length

	etag         string    // quoted entity-tag; "" = none
	lastModified time.Time // zero = none
	lmText       string    // lastModified as an HTTP-date, when preformatted
	contentType  string    // "" = leave whatever the caller set
	cacheControl string    // "" = leave whatever the caller set
}

func (e *entity) close() {
	if e.closer != nil {
		e.closer.Close()
	}
}

// serveEntity writes e as a 200, 206, 304 or 416 response to a GET or HEAD
// (or, for /dyn, to any method: preconditions and ranges then only apply to
// GET and HEAD). The status already set on ctx is kept when it is not 200:
// /dyn?status=404 must not turn into a 304 or 206.
func serveEntity(ctx *fasthttp.RequestCtx, e entity) {
	h := &ctx.Response.Header
	if e.etag != "" {
		h.Set(fasthttp.HeaderETag, e.etag)
	}
	switch {
	case e.lmText != "":
		h.Set(fasthttp.HeaderLastModified, e.lmText)
	case !e.lastModified.IsZero():
		h.Set(fasthttp.HeaderLastModified, httpDate(e.lastModified))
	}
	if e.cacheControl != "" {
		h.Set(fasthttp.HeaderCacheControl, e.cacheControl)
	}
	safe := ctx.IsGet() || ctx.IsHead()
	plain := ctx.Response.StatusCode() == fasthttp.StatusOK
	if safe && plain && notModified(&ctx.Request.Header, e) {
		// RFC 9110 §15.4.5: a 304 carries the validators and caching
		// headers a 200 would (ETag, Last-Modified, Cache-Control; Date is
		// added by fasthttp), but no content metadata and no body.
		ctx.SetStatusCode(fasthttp.StatusNotModified)
		e.close()
		return
	}
	if e.contentType != "" {
		h.SetContentType(e.contentType)
	}
	off, n := int64(0), e.size
	if plain {
		h.Set(fasthttp.HeaderAcceptRanges, "bytes")
	}
	// RFC 9110 §14.2: Range is defined only for GET; other methods ignore it.
	if plain && ctx.IsGet() && rangeApplies(&ctx.Request.Header, e) {
		first, last, res := parseRange(ctx.Request.Header.Peek(fasthttp.HeaderRange), e.size)
		switch res {
		case rangeOK:
			off, n = first, last-first+1
			ctx.SetStatusCode(fasthttp.StatusPartialContent)
			h.Set(fasthttp.HeaderContentRange, "bytes "+itoa(first)+"-"+itoa(last)+"/"+itoa(e.size))
		case rangeUnsatisfiable:
			// RFC 9110 §15.5.17: 416 with the complete length. The
			// representation's validators and freshness do not describe
			// this error, and an explicit max-age would make the 416
			// storable by a cache (RFC 9111 §3), so they are dropped.
			e.close()
			h.Del(fasthttp.HeaderCacheControl)
			h.Del(fasthttp.HeaderETag)
			h.Del(fasthttp.HeaderLastModified)
			h.Set(fasthttp.HeaderContentRange, "bytes */"+itoa(e.size))
			plainError(ctx, fasthttp.StatusRequestedRangeNotSatisfiable, "range not satisfiable")
			return
		}
	}
	setBody(ctx, e, off, n)
}

// setBody attaches bytes [off, off+n) of e. HEAD gets the Content-Length a
// GET would get and no body (RFC 9110 §9.3.2).
func setBody(ctx *fasthttp.RequestCtx, e entity, off, n int64) {
	switch {
	case ctx.IsHead():
		e.close()
		if e.chunks != nil {
			// A HEAD answer shows the framing a GET would get (chunked);
			// -1 makes fasthttp send Transfer-Encoding: chunked.
			n = -1
		}
		ctx.Response.Header.SetContentLength(int(n))
	case e.chunks != nil:
		ra := e.ra
		if ra == nil {
			ra = bytes.NewReader(e.data)
		}
		ctx.Response.SetBodyStreamWriter(e.chunks.streamChunks(ra, off, n))
	case e.data != nil:
		ctx.Response.SetBodyRaw(e.data[off : off+n])
		e.close()
	case e.ra != nil:
		var body io.Reader = io.NewSectionReader(e.ra, off, n)
		if e.closer != nil {
			// fasthttp closes a body stream that is an io.Closer once the
			// response is written, or when the response is reset.
			body = readCloser{body, e.closer}
		}
		ctx.Response.SetBodyStream(body, int(n))
	default:
		e.close()
		ctx.Response.SetBodyRaw(nil)
	}
}

type readCloser struct {
	io.Reader
	io.Closer
}

// notModified evaluates If-None-Match, or If-Modified-Since when there is no
// If-None-Match, for a GET or HEAD (RFC 9110 §13.2.2 steps 3 and 4).
func notModified(req *fasthttp.RequestHeader, e entity) bool {
	if inm := req.Peek(fasthttp.HeaderIfNoneMatch); len(inm) > 0 {
		// §13.1.2: weak comparison; "*" matches any current representation.
		return e.etag != "" && etagListMatch(inm, e.etag, false)
	}
	ims := req.Peek(fasthttp.HeaderIfModifiedSince)
	if len(ims) == 0 || e.lastModified.IsZero() {
		return false
	}
	t, err := fasthttp.ParseHTTPDate(ims)
	if err != nil {
		// §13.1.3: an invalid date is ignored.
		return false
	}
	return !e.lastModified.Truncate(time.Second).After(t)
}

// rangeApplies evaluates If-Range (RFC 9110 §13.1.5): with an entity-tag it
// needs a strong match, with a date an exact match of Last-Modified;
// otherwise the Range header is ignored and the full representation is sent.
func rangeApplies(req *fasthttp.RequestHeader, e entity) bool {
	ir := bytes.TrimSpace(req.Peek(fasthttp.HeaderIfRange))
	if len(ir) == 0 {
		return true
	}
	if ir[0] == '"' || bytes.HasPrefix(ir, []byte("W/")) {
		return e.etag != "" && etagListMatch(ir, e.etag, true) && !bytes.Contains(ir, []byte(","))
	}
	t, err := fasthttp.ParseHTTPDate(ir)
	return err == nil && !e.lastModified.IsZero() && e.lastModified.Truncate(time.Second).Equal(t)
}

// etagListMatch reports whether the comma-separated entity-tag list (or "*")
// contains tag. Weak comparison ignores the W/ prefix; strong comparison
// never matches a weak tag (RFC 9110 §8.8.3.2). Malformed members are skipped.
func etagListMatch(list []byte, tag string, strong bool) bool {
	if string(bytes.TrimSpace(list)) == "*" {
		return true
	}
	tagWeak, tagOpaque := splitETag([]byte(tag))
	for len(list) > 0 {
		var member []byte
		if i := bytes.IndexByte(list, ','); i >= 0 {
			member, list = list[:i], list[i+1:]
		} else {
			member, list = list, nil
		}
		weak, opaque := splitETag(bytes.TrimSpace(member))
		if opaque == nil {
			continue
		}
		if strong && (weak || tagWeak) {
			continue
		}
		if bytes.Equal(opaque, tagOpaque) {
			return true
		}
	}
	return false
}

// splitETag splits `W/"x"` or `"x"` into its weakness and opaque-tag (with
// quotes). It returns a nil opaque-tag when t is not an entity-tag.
func splitETag(t []byte) (weak bool, opaque []byte) {
	if bytes.HasPrefix(t, []byte("W/")) {
		weak, t = true, t[2:]
	}
	if len(t) < 2 || t[0] != '"' || t[len(t)-1] != '"' || bytes.IndexByte(t[1:len(t)-1], '"') >= 0 {
		return false, nil
	}
	return weak, t
}

type rangeResult int

const (
	rangeIgnore        rangeResult = iota // no, malformed, multi-part or foreign-unit Range: send 200
	rangeOK                               // one satisfiable range: send 206
	rangeUnsatisfiable                    // send 416
)

// parseRange parses a Range header value against a representation of size
// bytes and returns the inclusive byte positions of the one range it selects.
// RFC 9110 §14.1.2 grammar; a server MAY ignore Range (§14.2), which is what
// happens to malformed values and to multiple ranges (no multipart/byteranges
// here: the edge only forwards single ranges).
func parseRange(v []byte, size int64) (first, last int64, res rangeResult) {
	v = bytes.TrimSpace(v)
	eq := bytes.IndexByte(v, '=')
	if eq < 0 || !bytes.EqualFold(bytes.TrimSpace(v[:eq]), []byte("bytes")) {
		return 0, 0, rangeIgnore
	}
	spec := bytes.TrimSpace(v[eq+1:])
	if len(spec) == 0 || bytes.IndexByte(spec, ',') >= 0 {
		return 0, 0, rangeIgnore
	}
	dash := bytes.IndexByte(spec, '-')
	if dash < 0 {
		return 0, 0, rangeIgnore
	}
	a, b := bytes.TrimSpace(spec[:dash]), bytes.TrimSpace(spec[dash+1:])
	if len(a) == 0 {
		// suffix-range: the last b bytes.
		n, ok := parseDigits(b)
		if !ok {
			return 0, 0, rangeIgnore
		}
		if n == 0 || size == 0 {
			return 0, 0, rangeUnsatisfiable
		}
		return max(size-n, 0), size - 1, rangeOK
	}
	first, ok := parseDigits(a)
	if !ok {
		return 0, 0, rangeIgnore
	}
	last = size - 1
	if len(b) > 0 {
		if last, ok = parseDigits(b); !ok || last < first {
			return 0, 0, rangeIgnore
		}
	}
	if first >= size {
		return 0, 0, rangeUnsatisfiable
	}
	return first, min(last, size-1), rangeOK
}

// parseDigits parses a non-empty run of ASCII digits, rejecting signs and
// spaces. Values beyond int64 saturate: "bytes=0-99999999999999999999" is a
// valid range meaning "to the end".
func parseDigits(b []byte) (int64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		if n > (math.MaxInt64-9)/10 {
			n = math.MaxInt64
			continue
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

func httpDate(t time.Time) string {
	return string(fasthttp.AppendHTTPDate(nil, t))
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

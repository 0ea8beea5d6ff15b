package demo

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
)

const (
	dynDefaultSize  = 1024
	dynMaxSize      = 64 << 20
	dynDefaultChunk = 1024
	dynMaxChunk     = 1 << 20
)

// dynQuery is the parsed query of a /dyn/ request; see the package comment.
type dynQuery struct {
	size         int64
	status       int
	etag         string
	lastModified time.Time
	chunked      bool
	chunkSize    int64
	chunkDelay   time.Duration
	echo         bool
	headers      [][2]string // from h.<Name>=<value>, in query order
}

var errBadQuery = errors.New("bad query parameter")

func parseDynQuery(args *fasthttp.Args) (dynQuery, error) {
	q := dynQuery{size: dynDefaultSize, status: fasthttp.StatusOK, chunkSize: dynDefaultChunk}
	var err error
	for k, v := range args.All() {
		key, val := string(k), string(v)
		switch {
		case strings.HasPrefix(key, "h."):
			err = q.addHeader(key[2:], val)
		case key == "size":
			q.size, err = parseBounded(val, 0, dynMaxSize)
		case key == "status":
			var n int64
			n, err = parseBounded(val, 200, 599)
			q.status = int(n)
		case key == "etag":
			q.etag, err = quoteETag(val)
		case key == "lm":
			var n int64
			n, err = parseBounded(val, 0, 253402300799) // up to year 9999
			q.lastModified = time.Unix(n, 0).UTC()
		case key == "chunked":
			q.chunked, err = strconv.ParseBool(val)
		case key == "chunksize":
			q.chunkSize, err = parseBounded(val, 1, dynMaxChunk)
		case key == "chunkdelay":
			q.chunkDelay, err = parseFaultDuration(val)
		case key == "echo":
			q.echo, err = strconv.ParseBool(val)
		}
		if err != nil {
			return dynQuery{}, fmt.Errorf("%w %q: %w", errBadQuery, key, err)
		}
	}
	return q, nil
}

func (q *dynQuery) addHeader(name, value string) error {
	if !validToken(name) {
		return errors.New("invalid header name")
	}
	if strings.ContainsAny(value, "\r\n\x00") {
		return errors.New("header value contains CR, LF or NUL")
	}
	switch strings.ToLower(name) {
	case "content-length", "transfer-encoding":
		// Message framing is the server's job; a test that could set it
		// would only produce a broken connection.
		return errors.New("framing header cannot be set")
	}
	q.headers = append(q.headers, [2]string{name, value})
	return nil
}

// validToken reports whether s is an RFC 9110 §5.6.2 token.
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// quoteETag accepts `abc`, `"abc"` or `W/"abc"` and returns a valid quoted
// entity-tag.
func quoteETag(v string) (string, error) {
	if strings.HasPrefix(v, `"`) || strings.HasPrefix(v, `W/"`) {
		if _, opaque := splitETag([]byte(v)); opaque == nil {
			return "", errors.New("malformed entity-tag")
		}
		return v, nil
	}
	for i := 0; i < len(v); i++ {
		// etagc = %x21 / %x23-7E / obs-text (RFC 9110 §8.8.3)
		if c := v[i]; c == '"' || c <= 0x20 || c == 0x7F {
			return "", errors.New("malformed entity-tag")
		}
	}
	return `"` + v + `"`, nil
}

func parseBounded(v string, lo, hi int64) (int64, error) {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, err
	}
	if n < lo || n > hi {
		return 0, fmt.Errorf("%d outside %d..%d", n, lo, hi)
	}
	return n, nil
}

// serveDyn answers /dyn/<anything>; see the package comment.
func (s *Server) serveDyn(ctx *fasthttp.RequestCtx) {
	switch string(ctx.Method()) {
	case fasthttp.MethodGet, fasthttp.MethodHead, fasthttp.MethodPost, fasthttp.MethodPut, fasthttp.MethodDelete:
	default:
		methodNotAllowed(ctx, "GET, HEAD, POST, PUT, DELETE")
		return
	}
	q, err := parseDynQuery(ctx.QueryArgs())
	if err != nil {
		plainError(ctx, fasthttp.StatusBadRequest, err.Error())
		return
	}
	e := entity{etag: q.etag, lastModified: q.lastModified}
	if q.echo {
		body, err := echo(ctx)
		if err != nil {
			plainError(ctx, fasthttp.StatusInternalServerError, err.Error())
			return
		}
		e.data, e.size, e.contentType = body, int64(len(body)), "application/json"
	} else {
		e.ra, e.size, e.contentType = pattern{seed: seedOf(string(ctx.Path())), text: true}, q.size, "text/plain; charset=utf-8"
	}
	if q.chunked {
		e.chunks = &chunking{size: q.chunkSize, delay: q.chunkDelay, done: s.done}
	}
	h := &ctx.Response.Header
	for _, kv := range q.headers {
		if strings.EqualFold(kv[0], fasthttp.HeaderContentType) {
			e.contentType = kv[1]
			continue
		}
		h.Add(kv[0], kv[1])
	}
	ctx.SetStatusCode(q.status)
	if q.status == fasthttp.StatusNoContent || q.status == fasthttp.StatusNotModified {
		// These statuses never carry content (RFC 9110 §6.4.1).
		if e.etag != "" {
			h.Set(fasthttp.HeaderETag, e.etag)
		}
		if !e.lastModified.IsZero() {
			h.Set(fasthttp.HeaderLastModified, httpDate(e.lastModified))
		}
		return
	}
	serveEntity(ctx, e)
}

// chunking makes setBody stream the body with chunked transfer coding, one
// flushed chunk of size bytes at a time with delay between chunks.
type chunking struct {
	size  int64
	delay time.Duration
	done  <-chan struct{} // Close: stop delaying, finish the body at once
}

// streamChunks writes [off, off+n) of ra as flushed chunks. It runs on
// fasthttp's stream goroutine after the handler returned, so it holds no
// reference to the request context. When Close starts it drops the delays
// but still completes the body: returning early would end the chunked body
// cleanly and a truncated body would look complete to the client.
func (c *chunking) streamChunks(ra io.ReaderAt, off, n int64) func(w *bufio.Writer) {
	return func(w *bufio.Writer) {
		buf := make([]byte, min(c.size, max(n, 1)))
		for pos := int64(0); pos < n; {
			if pos > 0 && c.delay > 0 {
				t := time.NewTimer(c.delay)
				select {
				case <-t.C:
				case <-c.done:
				}
				t.Stop()
			}
			k := min(int64(len(buf)), n-pos)
			if _, err := ra.ReadAt(buf[:k], off+pos); err != nil && err != io.EOF {
				return
			}
			if _, err := w.Write(buf[:k]); err != nil {
				return
			}
			if err := w.Flush(); err != nil {
				return // the client went away
			}
			pos += k
		}
	}
}

// echoDoc is the JSON body of /dyn/...?echo=1: what the origin received.
type echoDoc struct {
	Method     string              `json:"method"`
	URI        string              `json:"uri"`
	Path       string              `json:"path"`
	Proto      string              `json:"proto"`
	Host       string              `json:"host"`
	RemoteAddr string              `json:"remote_addr"`
	Headers    map[string][]string `json:"headers"`
	BodySize   int                 `json:"body_size"`
}

func echo(ctx *fasthttp.RequestCtx) ([]byte, error) {
	req := &ctx.Request
	doc := echoDoc{
		Method:     string(req.Header.Method()),
		URI:        string(req.Header.RequestURI()),
		Path:       string(ctx.Path()),
		Proto:      string(req.Header.Protocol()),
		Host:       string(req.Header.Host()),
		RemoteAddr: ctx.RemoteAddr().String(),
		Headers:    make(map[string][]string),
		BodySize:   len(req.Body()),
	}
	// Prefer the headers exactly as received: fasthttp folds some of them
	// (Connection, Content-Length, …) into fields, and the point of echo is
	// to show what the edge really forwarded, hop-by-hop headers included.
	all := req.Header.All()
	if len(req.Header.RawHeaders()) > 0 {
		all = req.Header.AllInOrder()
	}
	for k, v := range all {
		doc.Headers[string(k)] = append(doc.Headers[string(k)], string(v))
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("encode echo: %w", err)
	}
	return append(b, '\n'), nil
}

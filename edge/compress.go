package edge

import (
	"bytes"
	"io"
	"strings"
	"sync"

	"github.com/andybalholm/brotli"
	"github.com/edgeshield/edgeshield/cache"
	"github.com/edgeshield/edgeshield/origin"
	"github.com/klauspost/compress/gzip"
)

// coding is a content coding the edge applies itself (cache.compress).
type coding uint8

const (
	codingNone coding = iota // the body is stored and sent as the origin sent it
	codingBr                 // brotli, RFC 7932
	codingGzip               // gzip, RFC 9110 §8.4.1.3
)

var (
	strBr   = []byte("br")
	strGzip = []byte("gzip")
)

func (c coding) token() []byte {
	switch c {
	case codingBr:
		return strBr
	case codingGzip:
		return strGzip
	}
	return nil
}

const (
	// brotliQuality is the brotli level the edge compresses at: 5 keeps
	// compression well ahead of a gigabit origin link on one core while
	// already beating gzip -6 by 15-20 % on text (nginx's brotli module and
	// Cloudflare pick 4-6 for on-the-fly compression for the same reason).
	brotliQuality = 5
	// compressFlushEvery: the coder is flushed after every this many bytes
	// of origin body, so waiters and the client receive coded bytes while
	// the body still arrives. Flushing at fixed offsets of the input, not
	// per read, makes the coded bytes the same on every fill (and every
	// member of a cluster) however the origin's bytes were split on the
	// wire, so byte ranges of the compressed variant stay consistent.
	compressFlushEvery = 16 << 10
)

// compressor compresses identity responses of compressible types for
// clients that accept br or gzip (cache.compress). The coded response is
// what is stored, once per set of accepted codings (the normalised
// Accept-Encoding is the variant key), so each variant costs one compression,
// not one per request. It is safe for concurrent use; coders are pooled
// because a brotli coder holds about a megabyte of tables.
type compressor struct {
	exact    []string // media types, lower-cased
	prefixes []string // "text/" for a "text/*" entry
	minSize  int64
	// codings[i] is what the edge makes for cache.accept_encodings[i]
	// (codingNone for a coding it cannot produce, such as zstd).
	codings []coding
	br, gz  sync.Pool
}

// newCompressor returns nil when cache.compress is off or no configured
// coding is one the edge can produce.
func newCompressor(cfg CacheConfig, encodings [][]byte) *compressor {
	if !cfg.Compress {
		return nil
	}
	c := &compressor{minSize: int64(cfg.CompressMinSize), codings: make([]coding, len(encodings))}
	usable := false
	for i, e := range encodings {
		switch string(e) {
		case "br":
			c.codings[i], usable = codingBr, true
		case "gzip", "x-gzip":
			c.codings[i], usable = codingGzip, true
		}
	}
	if !usable {
		return nil
	}
	for _, t := range cfg.CompressTypes {
		t = strings.ToLower(t)
		if p, ok := strings.CutSuffix(t, "/*"); ok {
			c.prefixes = append(c.prefixes, p+"/")
		} else {
			c.exact = append(c.exact, t)
		}
	}
	c.br.New = func() any {
		return brotli.NewWriterOptions(io.Discard, brotli.WriterOptions{Quality: brotliQuality})
	}
	c.gz.New = func() any {
		w, _ := gzip.NewWriterLevel(io.Discard, gzip.DefaultCompression) // a valid level: no error
		return w
	}
	return c
}

// plan decides what the edge does with a storable response to a GET whose
// normalised Accept-Encoding accepts set (bits over cache.accept_encodings).
// vary is true when the response is one the edge compresses for some
// clients: every variant of it, identity included, then carries
// "Vary: Accept-Encoding" (as nginx's gzip_vary), or a cache downstream, and
// our own store, would hand one client's coding to another. c is the coding
// for this request: the first of the set, in the configured order, that the
// edge can produce; codingNone when it accepts none of them.
//
// Not compressed: responses other than 200 (a 206 is a range of the origin's
// representation, other statuses are rarely large), responses that already
// carry a Content-Encoding, responses with Cache-Control no-transform (RFC
// 9110 §7.7, RFC 9111 §5.2.2.6: a proxy must not change the content coding),
// types outside cache.compress_types, and bodies the origin's Content-Length
// says are below cache.compress_min_size.
func (cp *compressor) plan(set uint, status int, h []origin.Field, contentLength int64) (vary bool, c coding) {
	if cp == nil || status != 200 || contentLength >= 0 && contentLength < cp.minSize {
		return false, codingNone
	}
	if header1(h, "Content-Encoding") != "" || header1(h, "Content-Range") != "" || noTransform(h) ||
		!cp.compressible(header1(h, "Content-Type")) {
		return false, codingNone
	}
	for i, cd := range cp.codings {
		if set&(1<<i) != 0 && cd != codingNone {
			return true, cd
		}
	}
	return true, codingNone
}

// compressible reports whether a Content-Type is one of cache.compress_types
// (its media type, case-insensitively; parameters ignored).
func (cp *compressor) compressible(ct string) bool {
	mt, _, _ := strings.Cut(ct, ";")
	mt = strings.ToLower(strings.TrimSpace(mt))
	if mt == "" {
		return false
	}
	for _, t := range cp.exact {
		if mt == t {
			return true
		}
	}
	for _, p := range cp.prefixes {
		if strings.HasPrefix(mt, p) {
			return true
		}
	}
	return false
}

// noTransform reports whether any Cache-Control (or CDN-targeted) field of a
// response carries no-transform.
func noTransform(h []origin.Field) bool {
	var d cache.Directives
	d.Reset()
	for _, f := range h {
		if strings.EqualFold(f.Name, "Cache-Control") || strings.EqualFold(f.Name, "CDN-Cache-Control") {
			cache.ParseCacheControl(&d, []byte(f.Value))
		}
	}
	return d.NoTransform
}

var (
	strVaryName        = []byte("Vary")
	strAcceptEncLower  = []byte("accept-encoding")
	strContentEncoding = []byte("Content-Encoding")
)

// apply makes a new entry describe what plan decided: Vary on
// Accept-Encoding (the field and the entry's variant names), and for a coded
// body its Content-Encoding and a weak ETag. The ETag turns weak because the
// coded bytes are not the origin's (RFC 9110 §8.8.3: a strong tag promises
// byte-identical content; nginx's gzip and Caddy's encode do the same), so a
// client's If-Range never matches it (§13.1.5 strong comparison) while
// If-None-Match still does (weak comparison). Content-Length is never stored.
func (cp *compressor) apply(e *cache.Entry, vary bool, c coding) {
	if vary && !containsName(e.Vary, strAcceptEncLower) {
		e.Vary = append(e.Vary, strAcceptEncLower)
		e.Header = append(e.Header, cache.Field{Name: strVaryName, Value: []byte("Accept-Encoding")})
	}
	if c == codingNone {
		return
	}
	e.Header = append(e.Header, cache.Field{Name: strContentEncoding, Value: c.token()})
	if len(e.ETag) > 0 && !bytes.HasPrefix(e.ETag, []byte("W/")) {
		e.ETag = append([]byte("W/"), e.ETag...)
		for i := range e.Header {
			if bytes.EqualFold(e.Header[i].Name, []byte("ETag")) {
				e.Header[i].Value = e.ETag
			}
		}
	}
}

func containsName(names [][]byte, name []byte) bool {
	for _, n := range names {
		if bytes.Equal(n, name) {
			return true
		}
	}
	return false
}

// encoder is a streaming coder: brotli.Writer or gzip.Writer.
type encoder interface {
	io.WriteCloser
	Flush() error
}

// writer returns a pooled coder for c writing to dst; give it back with
// release once closed (or abandoned).
func (cp *compressor) writer(c coding, dst io.Writer) encoder {
	if c == codingBr {
		w := cp.br.Get().(*brotli.Writer)
		w.Reset(dst)
		return w
	}
	w := cp.gz.Get().(*gzip.Writer)
	w.Reset(dst)
	return w
}

func (cp *compressor) release(c coding, w encoder) {
	if c == codingBr {
		bw := w.(*brotli.Writer)
		bw.Reset(io.Discard) // drop the reference to the flight
		cp.br.Put(bw)
		return
	}
	gw := w.(*gzip.Writer)
	gw.Reset(io.Discard)
	cp.gz.Put(gw)
}

// codedWriter feeds a coder and flushes it at every compressFlushEvery bytes
// of input (see there).
type codedWriter struct {
	enc   encoder
	since int // input bytes since the last flush
}

func (w *codedWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := min(len(p), compressFlushEvery-w.since)
		if _, err := w.enc.Write(p[:k]); err != nil {
			return n, err
		}
		n += k
		p = p[k:]
		if w.since += k; w.since == compressFlushEvery {
			w.since = 0
			if err := w.enc.Flush(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// keepRepresentation filters the fields a 304 would update on a stored entry
// (RFC 9111 §4.3.4) down to those that can change: a 304 never changes the
// stored body, so it cannot change its Content-Encoding, and the entry's Vary
// names stay those of the stored response, so its Vary field does too. An
// ETag the entry holds in weak form (the edge weakened it when it coded the
// body) stays weak when the 304 names the same tag in strong form.
func keepRepresentation(stale *cache.Entry, updates []cache.Field) []cache.Field {
	out := updates[:0]
	for _, f := range updates {
		switch {
		case bytes.EqualFold(f.Name, strVaryName), bytes.EqualFold(f.Name, strContentEncoding):
			continue
		case bytes.EqualFold(f.Name, []byte("ETag")) && bytes.HasPrefix(stale.ETag, []byte("W/")) &&
			bytes.Equal(bytes.TrimPrefix(f.Value, []byte("W/")), stale.ETag[2:]):
			continue
		}
		out = append(out, f)
	}
	return out
}

// acceptedSet is the set of cache.accept_encodings a (normalised) request
// accepts.
func (pl *pipeline) acceptedSet(h interface{ PeekAll(string) [][]byte }) uint {
	return cache.AcceptedEncodings(h.PeekAll("Accept-Encoding"), pl.encodings)
}

// planCoding decides cache.compress for the entry of a flight and applies
// it (see compressor.plan and apply); it returns the body length the flight
// announces: unknown (-1, sent chunked) when the edge codes the body.
func (pl *pipeline) planCoding(p *pending, set uint, resp *origin.Response) int64 {
	vary, c := pl.compress.plan(set, resp.Status, resp.Header, resp.ContentLength)
	if !vary {
		return resp.ContentLength
	}
	pl.compress.apply(p.entry, vary, c)
	if p.coding = c; c != codingNone {
		return -1
	}
	return resp.ContentLength
}

package edge

import (
	"bytes"
	"net/netip"

	"github.com/edgeshield/edgeshield/internal/ascii"
	"github.com/valyala/fasthttp"
)

// The request fields the front removes before anything looks at the request
// (lookup, Vary variant keys, forwarding), so that every later step sees ONE
// header set: the one the origin receives. A field the edge removed must
// never select a cached variant, or a client could poison the variant real
// clients select (issue 10).

// frontHopHeaders are the hop-by-hop request fields the front deletes (RFC
// 9110 §7.6.1): hopHeaders but Connection, which stays (fasthttp reads it for
// keep-alive; it is never forwarded nor used as a key), and
// Transfer-Encoding, framing already consumed by the server.
var frontHopHeaders = func() (out [][]byte) {
	for _, h := range hopHeaders {
		if string(h) != "Connection" && string(h) != "Transfer-Encoding" {
			out = append(out, h)
		}
	}
	return out
}()

// Connection options that name framing or routing fields: a client listing
// them must not make the front delete them (RFC 9110 §7.6.1 forbids listing
// end-to-end fields; Go's reverse proxy likewise never drops Host).
var connectionProtected = [][]byte{
	[]byte("Connection"),
	[]byte("Host"),
	[]byte("Content-Length"),
	[]byte("Transfer-Encoding"),
	[]byte("Close"),
	[]byte("Keep-Alive"), // already a hop field; listing it changes nothing
}

// The forwarding fields the edge sets itself (see forwardedValue). A client's
// copies are deleted unless the client is a trusted proxy
// (server.trusted_proxies); a reflecting origin would otherwise put an
// attacker's X-Forwarded-Host into a response served to everyone.
const (
	fwdFor = iota
	fwdProto
	fwdHost
	fwdForwarded
	fwdFields
)

var forwardingHeaders = [fwdFields][]byte{
	fwdFor:       []byte("X-Forwarded-For"),
	fwdProto:     []byte("X-Forwarded-Proto"),
	fwdHost:      []byte("X-Forwarded-Host"),
	fwdForwarded: []byte("Forwarded"),
}

// overrideHeaders are unkeyed fields that frameworks read to override the
// URL, host, scheme, port or method of a request. Nothing legitimate reaches
// an origin through a CDN with them, and each is a known cache-poisoning
// vector (the response depends on them, the cache key does not), so they are
// always removed, from trusted proxies too.
var overrideHeaders = [][]byte{
	[]byte("X-Forwarded-Scheme"),
	[]byte("X-Forwarded-Port"),
	[]byte("X-Forwarded-Prefix"),
	[]byte("X-Forwarded-Server"),
	[]byte("X-Host"),
	[]byte("X-Original-Host"),
	[]byte("X-Original-Url"),
	[]byte("X-Rewrite-Url"),
	[]byte("X-Http-Method-Override"),
	[]byte("X-Http-Method"),
	[]byte("X-Method-Override"),
}

// sanitizeRequest runs at the front of the public listener, before lookup:
// it deletes hop-by-hop fields and the fields the Connection field lists
// (RFC 9110 §7.6.1), the override fields, and, from clients that are not
// trusted proxies, the forwarding fields the edge sets itself. It is
// idempotent and allocation-free (the fresh-hit path runs it).
//
// Speed: asking fasthttp to delete two dozen names costs more than the rest
// of a hit (each DelBytes validates and normalises its key), so the raw
// header block the server kept is scanned once and only the fields present
// are deleted; the usual request has none and costs one pass over its
// header bytes. A request not parsed from the wire (no raw headers), or
// with a chunked body (whose trailer fields fasthttp adds to the header),
// gets every name deleted.
func (pl *pipeline) sanitizeRequest(ctx *fasthttp.RequestCtx) {
	h := &ctx.Request.Header
	raw := h.RawHeaders()
	if len(raw) == 0 {
		pl.sanitizeAll(ctx) // built in memory
		return
	}
	trusted, trustKnown := false, false
	for len(raw) > 0 {
		var line []byte
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			line, raw = raw, nil
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			continue
		}
		name := bytes.TrimRight(line[:colon], " \t")
		switch {
		case ascii.EqualFold(name, strTransferEncoding):
			// A chunked body may end in trailer fields, which fasthttp
			// adds to the header and which the raw block lacks.
			pl.sanitizeAll(ctx)
			return
		case ascii.EqualFold(name, strConnection):
			deleteConnectionListed(h, bytes.TrimSpace(line[colon+1:]))
		case inList(frontHopHeaders, name) || inList(overrideHeaders, name):
			h.DelBytes(name)
		case forwardingIndex(name) >= 0:
			if !trustKnown {
				trusted, trustKnown = pl.trustedClient(ctx), true
			}
			if !trusted {
				h.DelBytes(name)
			}
		}
	}
}

var (
	strConnection       = []byte(fasthttp.HeaderConnection)
	strTransferEncoding = []byte(fasthttp.HeaderTransferEncoding)
)

// sanitizeAll is sanitizeRequest for a request built in memory.
func (pl *pipeline) sanitizeAll(ctx *fasthttp.RequestCtx) {
	h := &ctx.Request.Header
	deleteConnectionListed(h, h.PeekBytes(strConnection))
	for _, name := range frontHopHeaders {
		h.DelBytes(name)
	}
	for _, name := range overrideHeaders {
		h.DelBytes(name)
	}
	if !pl.trustedClient(ctx) {
		for _, name := range forwardingHeaders {
			h.DelBytes(name)
		}
	}
}

// deleteConnectionListed deletes the fields a Connection value names, but
// never framing or routing fields (connectionProtected). The value's bytes
// stay valid while fields are deleted: fasthttp only moves slice headers.
func deleteConnectionListed(h *fasthttp.RequestHeader, conn []byte) {
	for len(conn) > 0 {
		var tok []byte
		if i := bytes.IndexByte(conn, ','); i >= 0 {
			tok, conn = conn[:i], conn[i+1:]
		} else {
			tok, conn = conn, nil
		}
		tok = bytes.TrimSpace(tok)
		if len(tok) > 0 && !inList(connectionProtected, tok) {
			h.DelBytes(tok)
		}
	}
}

// trustedClient reports whether the client's address is in
// server.trusted_proxies: its X-Forwarded-For / Forwarded are then extended
// and its X-Forwarded-Host / X-Forwarded-Proto kept, as Caddy does.
func (pl *pipeline) trustedClient(ctx *fasthttp.RequestCtx) bool {
	trusted := pl.set().trusted
	if len(trusted) == 0 {
		return false
	}
	a, ok := netip.AddrFromSlice(ctx.RemoteIP())
	if !ok {
		return false
	}
	a = a.Unmap()
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// appendForwarded appends the value of forwarding field f (fwdFor…) that the
// edge sends upstream for the request; nil means the field is not sent. It
// is the one definition both the forward (forwardRequest) and the Vary
// variant key (reqState.peek) use, so a response that varies on one of these
// fields is stored under the value the origin saw.
//
// On a shield hop the fields are the peer's, describing the real client (the
// peer is trusted through the hop's signature): they pass verbatim, and this
// node, a second hop inside one CDN, adds nothing. Otherwise the sanitized
// header holds client copies only for trusted proxies (sanitizeRequest):
// X-Forwarded-For and Forwarded (RFC 7239 §4: one element per hop) are
// extended, X-Forwarded-Host and X-Forwarded-Proto kept; for anyone else the
// edge's own values are all there is.
func appendForwarded(dst []byte, ctx *fasthttp.RequestCtx, f int, hop bool) []byte {
	h := &ctx.Request.Header
	name := forwardingHeaders[f]
	if hop {
		if v := h.PeekBytes(name); v != nil {
			return append(dst, v...)
		}
		return nil
	}
	switch f {
	case fwdFor, fwdForwarded:
		start := len(dst)
		for _, v := range h.PeekAll(string(name)) {
			if len(dst) > start {
				dst = append(dst, ", "...)
			}
			dst = append(dst, v...)
		}
		if len(dst) > start {
			dst = append(dst, ", "...)
		}
		a, _ := netip.AddrFromSlice(ctx.RemoteIP())
		a = a.Unmap()
		if f == fwdFor {
			return a.AppendTo(dst)
		}
		// RFC 7239 §4, §6: an IPv6 node is quoted and bracketed; host
		// (which may carry ":port") is quoted when it is not a token.
		dst = append(dst, "for="...)
		if a.Is6() {
			dst = append(dst, `"[`...)
			dst = a.AppendTo(dst)
			dst = append(dst, `]"`...)
		} else {
			dst = a.AppendTo(dst)
		}
		dst = append(dst, ";host="...)
		dst = appendTokenOrQuoted(dst, ctx.Request.URI().Host())
		dst = append(dst, ";proto="...)
		return append(dst, ownProto(ctx)...)
	case fwdProto:
		if v := h.PeekBytes(name); len(v) > 0 {
			return append(dst, v...)
		}
		return append(dst, ownProto(ctx)...)
	default: // fwdHost: the Host this node received (RFC 9112 §3.2.2: an absolute-form target's wins)
		if v := h.PeekBytes(name); len(v) > 0 {
			return append(dst, v...)
		}
		return append(dst, ctx.Request.URI().Host()...)
	}
}

func ownProto(ctx *fasthttp.RequestCtx) string {
	if ctx.IsTLS() {
		return "https"
	}
	return "http"
}

// forwardingIndex returns the fwd* index of a forwarding field name, or -1.
func forwardingIndex(name []byte) int {
	for i, f := range forwardingHeaders {
		if ascii.EqualFold(f, name) {
			return i
		}
	}
	return -1
}

// appendTokenOrQuoted appends v as an RFC 9110 §5.6.2 token when it is one,
// else as a quoted-string (§5.6.4).
func appendTokenOrQuoted(dst, v []byte) []byte {
	token := len(v) > 0
	for _, c := range v {
		if !isTokenChar(c) {
			token = false
			break
		}
	}
	if token {
		return append(dst, v...)
	}
	dst = append(dst, '"')
	for _, c := range v {
		if c == '"' || c == '\\' {
			dst = append(dst, '\\')
		}
		dst = append(dst, c)
	}
	return append(dst, '"')
}

func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return c != 0 && bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), c) >= 0
}

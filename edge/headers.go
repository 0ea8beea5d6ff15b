package edge

import (
	"bytes"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/edgeshield/edgeshield/cache"
	"github.com/edgeshield/edgeshield/internal/ascii"
	"github.com/edgeshield/edgeshield/origin"
	"github.com/valyala/fasthttp"
)

// hopHeaders are hop-by-hop fields a proxy must not forward (RFC 9110 §7.6.1),
// plus the de-facto ones (Keep-Alive, Proxy-Connection) and TE/Trailer.
// Fields listed in Connection are removed too.
var hopHeaders = [][]byte{
	[]byte("Connection"),
	[]byte("Keep-Alive"),
	[]byte("Proxy-Connection"),
	[]byte("Proxy-Authenticate"),
	[]byte("Proxy-Authorization"),
	[]byte("Te"),
	[]byte("Trailer"),
	[]byte("Transfer-Encoding"),
	[]byte("Upgrade"),
}

// Fields the edge computes itself or answers itself on a cacheable fetch, so
// the client's copies are not forwarded: the node fetches the whole object
// unconditionally (or with its own validators) and serves ranges and
// conditionals from it.
var ownRequestHeaders = [][]byte{
	[]byte("Range"),
	[]byte("If-Range"),
	[]byte("If-None-Match"),
	[]byte("If-Modified-Since"),
	[]byte("If-Match"),
	[]byte("If-Unmodified-Since"),
}

// Response fields never stored nor replayed: computed per response (Age,
// Cache-Status, Content-Length), meant for this cache only (Surrogate-Key,
// Cache-Tag), or per-user (Set-Cookie). Date is stored and replayed: it is
// when the origin generated the response (RFC 9110 §6.6.1; see date.go).
var unstoredResponseHeaders = [][]byte{
	[]byte("Age"),
	[]byte("Cache-Status"),
	[]byte("Content-Length"),
	[]byte("Surrogate-Key"),
	[]byte("Cache-Tag"),
	[]byte("Set-Cookie"),
	[]byte("Surrogate-Control"),
}

func inList(list [][]byte, name []byte) bool {
	for _, h := range list {
		if ascii.EqualFold(h, name) {
			return true
		}
	}
	return false
}

// connectionListed reports whether name is a token in the comma-separated
// list conn (the Connection field, or any other token list).
func connectionListed(conn, name []byte) bool {
	for len(conn) > 0 {
		var tok []byte
		if i := bytes.IndexByte(conn, ','); i >= 0 {
			tok, conn = conn[:i], conn[i+1:]
		} else {
			tok, conn = conn, nil
		}
		if ascii.EqualFold(bytes.TrimSpace(tok), name) {
			return true
		}
	}
	return false
}

var strAcceptEncoding = []byte(fasthttp.HeaderAcceptEncoding)

// normalizeAcceptEncoding rewrites a GET or HEAD request's Accept-Encoding to
// the set of cache.accept_encodings codings the client accepts, in the
// configured order ("br, gzip" for every current browser, "gzip" for a
// gzip-only client; see cache.AcceptedEncodings), or removes it when the
// client accepts none of them (no Accept-Encoding asks for identity). It runs
// before the variant key is built and before the request is forwarded, so the
// origin chooses its coding from the same value the response is stored
// under, and a response with "Vary: Accept-Encoding" (RFC 9111 §4.1) is
// stored once per set of capabilities instead of once per browser's spelling
// of the field. Varnish and Fastly normalise too; keeping the whole set
// rather than the single best coding is what lets an origin without brotli
// still answer gzip: the rewrite must never turn a client that takes a coding
// the origin offers into one that gets identity.
//
// Unsafe methods are left alone: their responses are never stored, so the
// rewrite would only narrow what the origin may send (a client that takes
// only zstd would lose it) and buy nothing. GET and HEAD are all rewritten,
// including those that end up passed (uncacheable, hit-for-pass): whether a
// response is stored is not known until it arrives, and one rule for every
// lookup keeps the origin's view consistent.
//
// It is idempotent (a value it wrote is left as it is, without a write) and
// allocation-free once the request's header buffers have grown, which the
// fresh-hit path relies on: the values it writes are precomputed per set.
func (pl *pipeline) normalizeAcceptEncoding(h *fasthttp.RequestHeader) {
	if len(pl.encodings) == 0 {
		return // cache.accept_encodings: []: pass the field through
	}
	lines := h.PeekAll(fasthttp.HeaderAcceptEncoding)
	if len(lines) == 0 {
		return // absent: identity, as wanted
	}
	set := cache.AcceptedEncodings(lines, pl.encodings)
	v := pl.aeFields[set]
	switch {
	case set == 0:
		h.DelBytes(strAcceptEncoding)
	case len(lines) == 1 && bytes.Equal(lines[0], v):
		// Already normalised: a repeat, or a client that sends exactly it.
	default:
		if len(lines) > 1 {
			h.DelBytes(strAcceptEncoding) // SetCanonical replaces only the first line
		}
		h.SetCanonical(strAcceptEncoding, v)
	}
}

// forwardRequest builds the origin request for a client request. cacheable
// strips the client's range and conditional fields (see ownRequestHeaders);
// validators from a stale entry are added by the caller. hop marks a shield
// hop from a cluster peer, whose forwarding fields pass verbatim
// (appendForwarded). The request-target goes out as received, in
// origin-form (RFC 9110 §7.7; see target.go).
func (pl *pipeline) forwardRequest(ctx *fasthttp.RequestCtx, method string, cacheable, hop bool) *origin.Request {
	req := &ctx.Request
	conn := req.Header.Peek("Connection")
	out := &origin.Request{
		Method:     method,
		RequestURI: string(appendOriginForm(nil, req.Header.RequestURI())),
		Header:     make([]origin.Field, 0, 16),
	}
	for k, v := range req.Header.All() {
		if inList(hopHeaders, k) || connectionListed(conn, k) || bytes.EqualFold(k, []byte("Host")) ||
			bytes.EqualFold(k, []byte(shieldHopHeader)) || bytes.EqualFold(k, []byte(revalidateHeader)) ||
			forwardingIndex(k) >= 0 || inList(overrideHeaders, k) || inList(frontHopHeaders, k) {
			continue // the front removed these already (sanitizeRequest); defence in depth
		}
		if cacheable && inList(ownRequestHeaders, k) {
			continue
		}
		out.Header = append(out.Header, origin.Field{Name: string(k), Value: string(v)})
	}
	out.Host = pl.originHost(string(req.URI().Host()))
	var buf []byte
	for f := range forwardingHeaders {
		if v := appendForwarded(buf[:0], ctx, f, hop); v != nil {
			out.Header = append(out.Header, origin.Field{Name: string(forwardingHeaders[f]), Value: string(v)})
			buf = v
		}
	}
	out.Header = append(out.Header, origin.Field{Name: "Via", Value: pl.via})
	return out
}

// originHost is the Host field sent to the origin for a request to host
// (origin.host_header).
func (pl *pipeline) originHost(host string) string {
	switch pl.conf().Origin.HostHeader {
	case "pass", "":
		return host
	case "origin":
		return "" // the client uses the origin URL's host
	default:
		return pl.conf().Origin.HostHeader
	}
}

// storedHeaders filters an origin response's fields into the form stored in
// an entry and replayed to every client: no hop-by-hop fields (§7.6.1), none
// of unstoredResponseHeaders, not the targeted cache-control field meant for
// this cache alone (RFC 9213 §2.1), none named by a qualified private
// directive (RFC 9111 §5.2.2.7: "a shared cache MUST NOT store the specified
// field names(s)"), and only the first Date, when it is a valid HTTP-date.
func (pl *pipeline) storedHeaders(h []origin.Field, cc *cache.Directives) []cache.Field {
	conn := connectionValue(h)
	out := make([]cache.Field, 0, len(h))
	date := false
	for _, f := range h {
		name := []byte(f.Name)
		if !pl.endToEnd(name, conn, false) || cc.PrivateField(name) {
			continue
		}
		if bytes.EqualFold(name, strDate) {
			if _, ok := cache.ParseHTTPDate([]byte(f.Value)); !ok || date {
				continue
			}
			date = true
		}
		out = append(out, cache.Field{Name: []byte(http.CanonicalHeaderKey(f.Name)), Value: []byte(f.Value)})
	}
	return out
}

// endToEnd reports whether a response field goes on to clients: not
// hop-by-hop (RFC 9110 §7.6.1, including fields named in Connection, whose
// value is conn), not one of unstoredResponseHeaders, not the targeted
// cache-control field meant for this cache (RFC 9213 §2.1). Set-Cookie
// passes only withCookies (a response not shared with other clients).
func (pl *pipeline) endToEnd(name, conn []byte, withCookies bool) bool {
	if inList(hopHeaders, name) || connectionListed(conn, name) {
		return false
	}
	if inList(unstoredResponseHeaders, name) && !(withCookies && bytes.EqualFold(name, []byte("Set-Cookie"))) {
		return false
	}
	return pl.conf().Cache.TargetedField == "" || !bytes.EqualFold(name, []byte(pl.conf().Cache.TargetedField))
}

// connectionValue joins every Connection field line (RFC 9110 §7.6.1).
func connectionValue(h []origin.Field) []byte {
	var conn []byte
	for _, f := range h {
		if strings.EqualFold(f.Name, "Connection") {
			conn = append(append(conn, ','), f.Value...)
		}
	}
	return conn
}

// header returns the values of name in h (case-insensitive).
func header(h []origin.Field, name string) []string {
	var out []string
	for _, f := range h {
		if len(f.Name) == len(name) && bytes.EqualFold([]byte(f.Name), []byte(name)) {
			out = append(out, f.Value)
		}
	}
	return out
}

func header1(h []origin.Field, name string) string {
	if v := header(h, name); len(v) > 0 {
		return v[0]
	}
	return ""
}

// responseMeta extracts what the caching policy needs from response fields.
// The targeted field (configured name first, then CDN-Cache-Control) replaces
// Cache-Control for this cache when present (RFC 9213 §2.1).
func (pl *pipeline) responseMeta(status int, h []origin.Field) cache.ResponseMeta {
	m := cache.ResponseMeta{Status: status, AgeHeader: -1}
	m.CC.Reset()
	// The targeted field (RFC 9213) replaces Cache-Control when it parses
	// as a Structured Fields Dictionary whose directives have their types;
	// otherwise it is ignored as a whole (§2.1).
	var tf []string
	if pl.conf().Cache.TargetedField != "" {
		tf = header(h, pl.conf().Cache.TargetedField)
	}
	if len(tf) == 0 {
		tf = header(h, "CDN-Cache-Control")
	}
	if len(tf) > 0 && cache.ParseTargeted(&m.CC, []byte(strings.Join(tf, ", "))) {
		m.Targeted = true
	} else {
		m.CC.Reset()
		cc := header(h, "Cache-Control")
		if len(cc) == 0 && containsToken(header(h, "Pragma"), "no-cache") {
			// RFC 9111 §5.4 deprecates Pragma but origins still send it
			// alone; honour it as no-cache like other caches do.
			cc = []string{"no-cache"}
		}
		for _, v := range cc {
			cache.ParseCacheControl(&m.CC, []byte(v))
		}
	}
	m.Date = parseHTTPDate(header1(h, "Date"))
	m.LastModified = parseHTTPDate(header1(h, "Last-Modified"))
	if ex := header(h, "Expires"); len(ex) > 0 {
		m.ExpiresPresent = true
		if len(ex) == 1 { // several Expires fields: invalid (RFC 9111 §5.3)
			m.Expires = parseHTTPDate(ex[0])
		}
		m.ExpiresInvalid = m.Expires.IsZero()
	}
	m.AgeHeader = ageValue(header(h, "Age"))
	m.SetCookie = len(header(h, "Set-Cookie")) > 0
	m.VaryStar = containsToken(header(h, "Vary"), "*")
	return m
}

// varyNames returns the lower-cased field names of Vary, nil when none.
func varyNames(h []origin.Field) [][]byte {
	var out [][]byte
	for _, v := range header(h, "Vary") {
		for _, tok := range bytes.Split([]byte(v), []byte(",")) {
			tok = bytes.ToLower(bytes.TrimSpace(tok))
			if len(tok) > 0 {
				out = append(out, tok)
			}
		}
	}
	return out
}

// surrogateKeys collects Surrogate-Key and Cache-Tag values (space or comma
// separated) for tag purges.
func surrogateKeys(h []origin.Field) [][]byte {
	var out [][]byte
	for _, name := range []string{"Surrogate-Key", "Cache-Tag"} {
		for _, v := range header(h, name) {
			out = append(out, bytes.FieldsFunc([]byte(v), func(r rune) bool { return r == ' ' || r == ',' || r == '\t' })...)
		}
	}
	return out
}

// containsToken reports whether tok is a member of any of the comma-separated
// lists in values.
func containsToken(values []string, tok string) bool {
	for _, v := range values {
		if connectionListed([]byte(v), []byte(tok)) {
			return true
		}
	}
	return false
}

// parseHTTPDate parses an HTTP-date strictly (cache.ParseHTTPDate); zero
// when absent or invalid.
func parseHTTPDate(s string) time.Time {
	t, _ := cache.ParseHTTPDate([]byte(s))
	return t
}

// ageValue reads the Age field (RFC 9111 §5.1), -1 when absent or invalid.
// Age is a singleton, but a list (several lines, or "a, b") uses its first
// member; a value that is not a non-negative integer ("abc", "-10", "1.5",
// "10abc") is ignored, so the response keeps its freshness. Values beyond
// 2^31 are clamped (§1.2.2).
func ageValue(lines []string) int64 {
	if len(lines) == 0 {
		return -1
	}
	v, _, _ := strings.Cut(lines[0], ",")
	v = strings.Trim(v, " \t")
	if v == "" || len(v) > 19 {
		if len(v) > 19 && strings.Trim(v, "0123456789") == "" {
			return 1 << 31
		}
		return -1
	}
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return -1
		}
	}
	a, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return -1
	}
	return min(a, 1<<31)
}

// requestMeta fills the policy's view of the client request without
// allocating (it runs on the hit path).
func requestMeta(m *cache.RequestMeta, req *fasthttp.Request) {
	m.CC.Reset()
	m.Method = methodString(req.Header.Method())
	found := false
	for _, v := range req.Header.PeekAll("Cache-Control") {
		cache.ParseCacheControl(&m.CC, v)
		found = true
	}
	m.PragmaNoCache = false
	if !found {
		if p := req.Header.Peek("Pragma"); len(p) > 0 && connectionListed(p, []byte("no-cache")) {
			m.PragmaNoCache = true
		}
	}
	m.Authorization = len(req.Header.Peek("Authorization")) > 0
	m.Cookie = len(req.Header.Peek("Cookie")) > 0
	m.Revalidate = false
}

// methodString maps the common methods to constants so the hit path does not
// allocate a string per request.
func methodString(m []byte) string {
	switch string(m) {
	case "GET":
		return "GET"
	case "HEAD":
		return "HEAD"
	case "POST":
		return "POST"
	case "PUT":
		return "PUT"
	case "DELETE":
		return "DELETE"
	case "PATCH":
		return "PATCH"
	case "OPTIONS":
		return "OPTIONS"
	}
	return string(m)
}

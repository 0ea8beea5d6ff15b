package edge

// The front door: strict HTTP/1.1 message framing (RFC 9112) in front of
// fasthttp, whose request parser is lenient (bare LF line endings, chunk
// extensions holding NUL, a request with both Content-Length and
// Transfer-Encoding, which it frames by the latter and keeps the connection
// open: the classic request-smuggling desync of RFC 9112 §11.2).
//
// Design. fasthttp decodes a chunked body before the handler runs and keeps
// neither the request line nor the chunk syntax, so a handler cannot see
// everything that decides where one request ends and the next begins. The
// check therefore sits under fasthttp, on the connection: frontConn runs
// every byte it reads through frameCheck, an allocation-free incremental
// parser of the RFC 9112 grammar (request line, field lines, then the body
// framed by Content-Length or chunked coding, trailers included), and hands
// fasthttp only the bytes that passed. At the first violation it stops:
// fasthttp receives the valid prefix, then a read error carrying the
// status (a *framingError), and answers through the server's ErrorHandler
// (badRequest: 400, or 505 / 501) and closes the connection. Bytes after the
// violation, a smuggled request included, never reach fasthttp's parser.
// Requests that pass are ones every conforming parser frames the same way,
// so fasthttp and frameCheck agree on every boundary.
//
// What only the parsed request shows (a Connection token list, an
// absolute-form target naming another host than Host) is checked by the
// frontDoor handler wrapper.

import (
	"bytes"
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"strconv"
	"strings"

	"github.com/edgeshield/edgeshield/internal/ascii"
	"github.com/valyala/fasthttp"
)

// framingError is a framing violation: the status the client gets and a
// fixed reason that never quotes request bytes (it is logged).
type framingError struct {
	status int
	reason string
}

func (e *framingError) Error() string { return "malformed request framing: " + e.reason }

func badFraming(reason string) *framingError {
	return &framingError{status: fasthttp.StatusBadRequest, reason: reason}
}

// The violations, allocated once: the check never allocates.
var (
	errBareLF         = badFraming("bare LF line ending (RFC 9112 §2.2)")
	errCR             = badFraming("CR not followed by LF (RFC 9112 §2.2)")
	errMethod         = badFraming("invalid method (RFC 9110 §9.1: an upper-case token)")
	errTarget         = badFraming("invalid request-target (RFC 9112 §3.2)")
	errRequestLine    = badFraming("malformed request-line (RFC 9112 §3)")
	errVersion        = badFraming("malformed HTTP-version (RFC 9112 §2.3)")
	errUnsupportedVer = &framingError{status: fasthttp.StatusHTTPVersionNotSupported, reason: "unsupported HTTP major version (RFC 9110 §15.6.6)"}
	errObsFold        = badFraming("field line starting with whitespace (obs-fold, RFC 9112 §5.2)")
	errFieldName      = badFraming("invalid field name (RFC 9110 §5.1: a token)")
	errSpaceBeforeCol = badFraming("whitespace between field name and colon (RFC 9112 §5.1)")
	errFieldValue     = badFraming("control character in field value (RFC 9110 §5.5)")
	errFieldTooLong   = badFraming("framing field value too long")
	errCLAndTE        = badFraming("both Content-Length and Transfer-Encoding (RFC 9112 §6.1)")
	errTEHTTP10       = badFraming("Transfer-Encoding in an HTTP/1.0 request (RFC 9112 §6.1)")
	errDupCL          = badFraming("more than one Content-Length (RFC 9112 §6.3)")
	errBadCL          = badFraming("invalid Content-Length (RFC 9112 §6.2: 1*DIGIT)")
	errDupTE          = badFraming("more than one Transfer-Encoding field line")
	errTENotChunked   = badFraming("Transfer-Encoding whose final coding is not chunked (RFC 9112 §6.3)")
	errTEChunkedTwice = badFraming("chunked applied more than once (RFC 9112 §6.1)")
	errTESyntax       = badFraming("malformed Transfer-Encoding list (RFC 9112 §6.1)")
	errTEUnsupported  = &framingError{status: fasthttp.StatusNotImplemented, reason: "unsupported transfer coding before chunked (RFC 9112 §6.1)"}
	errHost           = badFraming("missing or repeated Host (RFC 9112 §3.2)")
	errChunkSize      = badFraming("malformed chunk size (RFC 9112 §7.1)")
	errChunkSizeLong  = badFraming("chunk size too large")
	errChunkExt       = badFraming("invalid byte in chunk extension (RFC 9112 §7.1.1)")
	errChunkData      = badFraming("chunk data not followed by CRLF (RFC 9112 §7.1)")
	errAbsoluteHost   = badFraming("absolute-form target names another host than Host (RFC 9112 §3.2.2)")
)

// Byte classes of the grammar (RFC 9110 §5.6.2, §5.5; RFC 9112 §3.2).
const (
	clTchar  = 1 << iota // token character
	clVchar              // field-value byte other than SP/HT: VCHAR or obs-text
	clTarget             // request-target byte: VCHAR or obs-text (no SP, no CTL)
	clHex                // HEXDIG
)

var byteClass = func() (t [256]uint8) {
	for c := 0; c < 256; c++ {
		if c > 0x20 && c != 0x7f {
			t[c] |= clVchar | clTarget
		}
		if c < 0x80 && (c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' ||
			strings.IndexByte("!#$%&'*+-.^_`|~", byte(c)) >= 0) {
			t[c] |= clTchar
		}
		if c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' {
			t[c] |= clHex
		}
	}
	return t
}()

type frameState uint8

const (
	sLineStart   frameState = iota // before a request line (empty CRLF lines allowed, §2.2)
	sLineLF                        // CR of an empty line seen
	sMethod                        // in the method
	sTargetStart                   // at the request-target's first byte
	sTarget                        // in the request-target
	sVersion                       // in the HTTP-version
	sVersionLF                     // CR after the version seen
	sFieldStart                    // at the start of a field line (or of the blank line ending the section)
	sName                          // in a field name
	sValue                         // in a field value
	sValueLF                       // CR after a field value seen
	sSectionLF                     // CR of the blank line ending the section seen
	sBodyCL                        // in a Content-Length body
	sChunkSize                     // in a chunk size
	sChunkExt                      // in chunk extensions
	sChunkSizeLF                   // CR after the chunk size line seen
	sChunkData                     // in chunk data
	sChunkDataCR                   // chunk data done, CR expected
	sChunkDataLF                   // LF after chunk data expected
)

// Fields whose values decide the framing.
const (
	fOther uint8 = iota
	fContentLength
	fTransferEncoding
	fHost
)

// frameCheck is the incremental RFC 9112 request parser. It keeps only what
// framing needs: counters, the current field's name (up to 17 bytes) and the
// value of a framing field (up to len(val) bytes). The zero value expects a
// request line.
type frameCheck struct {
	state   frameState
	trailer bool // parsing a trailer section, not a header section
	http10  bool
	field   uint8 // kind of the current field line
	nameLen int
	name    [17]byte // the current field name, lower-cased (len("transfer-encoding"))
	valLen  int
	val     [64]byte // the current framing field's value
	verLen  int
	ver     [8]byte // the HTTP-version
	cl      int64   // Content-Length value
	nCL     int     // Content-Length field lines
	nTE     int     // Transfer-Encoding field lines
	nHost   int     // Host field lines
	chunked bool
	remain  int64 // body or chunk bytes still to pass
	digits  int   // chunk size digits seen
}

// maxChunkSizeDigits bounds a chunk size (15 hex digits: fasthttp's own
// bound, below int64 overflow).
const maxChunkSizeDigits = 15

// feed checks the next bytes of the stream. It returns how many bytes of p
// are valid and, if a violation was found at p[ok], the error. Each step
// consumes bytes from p[i:] in one state family and returns the index of
// the next byte to look at (or, with an error, of the offending byte).
func (f *frameCheck) feed(p []byte) (ok int, err *framingError) {
	i := 0
	for i < len(p) {
		switch f.state {
		case sLineStart, sLineLF, sMethod, sTargetStart:
			i, err = f.stepMethod(p, i)
		case sTarget, sVersion, sVersionLF:
			i, err = f.stepTargetVersion(p, i)
		case sFieldStart, sValueLF, sSectionLF:
			i, err = f.stepLineEnd(p, i)
		case sName:
			i, err = f.stepName(p, i)
		case sValue:
			i, err = f.stepValue(p, i)
		case sChunkSize, sChunkExt, sChunkSizeLF:
			i, err = f.stepChunkSize(p, i)
		default: // sBodyCL, sChunkData, sChunkDataCR, sChunkDataLF
			i, err = f.stepBody(p, i)
		}
		if err != nil {
			return i, err
		}
	}
	return len(p), nil
}

// isUpperTchar: methods are case-sensitive tokens, upper case in practice
// (RFC 9110 §9.1); a lower-case one is refused as nginx does.
func isUpperTchar(c byte) bool { return byteClass[c]&clTchar != 0 && (c < 'a' || c > 'z') }

// stepMethod: empty lines before a request (§2.2), the method, the SP after it.
func (f *frameCheck) stepMethod(p []byte, i int) (int, *framingError) {
	c := p[i]
	switch f.state {
	case sLineStart:
		switch {
		case c == '\r':
			f.state = sLineLF
		case c == '\n':
			return i, errBareLF
		case isUpperTchar(c):
			f.resetMessage()
			f.state = sMethod
		default:
			return i, errMethod
		}
	case sLineLF:
		if c != '\n' {
			return i, errCR
		}
		f.state = sLineStart
	case sMethod:
		switch {
		case c == ' ':
			f.state = sTargetStart
		case isUpperTchar(c):
		case c == '\r' || c == '\n':
			return i, errRequestLine
		default:
			return i, errMethod
		}
	case sTargetStart:
		if byteClass[c]&clTarget == 0 {
			return i, errRequestLine // "GET  /": exactly one SP (§3)
		}
		f.state = sTarget
	}
	return i + 1, nil
}

// stepTargetVersion: the request-target (a run of target bytes), the SP,
// the HTTP-version and the line's CRLF.
func (f *frameCheck) stepTargetVersion(p []byte, i int) (int, *framingError) {
	c := p[i]
	switch f.state {
	case sTarget:
		j := i
		for j < len(p) && byteClass[p[j]]&clTarget != 0 {
			j++
		}
		if j == len(p) {
			return j, nil
		}
		switch p[j] {
		case ' ':
			f.state = sVersion
			f.verLen = 0
		case '\r', '\n':
			return j, errRequestLine // HTTP/0.9 style, no version
		default:
			return j, errTarget
		}
		return j + 1, nil
	case sVersion:
		switch c {
		case '\r':
			if err := f.checkVersion(); err != nil {
				return i, err
			}
			f.state = sVersionLF
		case '\n':
			return i, errBareLF
		default:
			if f.verLen == len(f.ver) {
				return i, errVersion
			}
			f.ver[f.verLen] = c
			f.verLen++
		}
	case sVersionLF:
		if c != '\n' {
			return i, errCR
		}
		f.state = sFieldStart
	}
	return i + 1, nil
}

// stepLineEnd: the start of a field line (or of the blank line ending the
// section), and the LF ending a field line or the section.
func (f *frameCheck) stepLineEnd(p []byte, i int) (int, *framingError) {
	c := p[i]
	switch f.state {
	case sFieldStart:
		switch {
		case c == '\r':
			f.state = sSectionLF
		case c == '\n':
			return i, errBareLF
		case c == ' ' || c == '\t':
			return i, errObsFold
		case byteClass[c]&clTchar != 0:
			f.nameLen = 0
			f.addNameByte(c)
			f.state = sName
		default:
			return i, errFieldName
		}
	case sValueLF:
		if c != '\n' {
			return i, errCR
		}
		if err := f.endField(); err != nil {
			return i, err
		}
		f.state = sFieldStart
	case sSectionLF:
		if c != '\n' {
			return i, errCR
		}
		if err := f.endSection(); err != nil {
			return i, err
		}
	}
	return i + 1, nil
}

// stepName: a run of field-name bytes, then the colon.
func (f *frameCheck) stepName(p []byte, i int) (int, *framingError) {
	j := i
	for j < len(p) && byteClass[p[j]]&clTchar != 0 {
		j++
	}
	for _, b := range p[i:min(j, i+len(f.name)+1)] {
		f.addNameByte(b)
	}
	f.nameLen += max(0, j-i-len(f.name)-1)
	if j == len(p) {
		return j, nil
	}
	switch c := p[j]; {
	case c == ':':
		f.startValue()
		f.state = sValue
	case c == ' ' || c == '\t':
		return j, errSpaceBeforeCol
	case c == '\n':
		return j, errBareLF
	default:
		return j, errFieldName
	}
	return j + 1, nil
}

// stepValue: a run of field-value bytes (kept for framing fields), then CR.
func (f *frameCheck) stepValue(p []byte, i int) (int, *framingError) {
	j := i
	for j < len(p) && (byteClass[p[j]]&clVchar != 0 || p[j] == ' ' || p[j] == '\t') {
		j++
	}
	if f.field != fOther {
		if f.valLen+j-i > len(f.val) {
			return i, errFieldTooLong
		}
		f.valLen += copy(f.val[f.valLen:], p[i:j])
	}
	if j == len(p) {
		return j, nil
	}
	switch p[j] {
	case '\r':
		f.state = sValueLF
	case '\n':
		return j, errBareLF
	default:
		return j, errFieldValue
	}
	return j + 1, nil
}

// stepChunkSize: a chunk-size line: hex digits, extensions, CRLF (§7.1).
func (f *frameCheck) stepChunkSize(p []byte, i int) (int, *framingError) {
	c := p[i]
	switch f.state {
	case sChunkSize:
		switch {
		case byteClass[c]&clHex != 0:
			if f.digits == maxChunkSizeDigits {
				return i, errChunkSizeLong
			}
			f.digits++
			f.remain = f.remain<<4 | int64(hexValue(c))
		case f.digits == 0:
			return i, errChunkSize
		case c == ';':
			f.state = sChunkExt
		case c == '\r':
			f.state = sChunkSizeLF
		default:
			return i, errChunkSize
		}
	case sChunkExt:
		// RFC 9112 §7.1.1: tokens, "=", quoted strings, BWS: nothing
		// below SP but HT, no DEL. Only CRLF ends the line.
		switch {
		case c == '\r':
			f.state = sChunkSizeLF
		case byteClass[c]&clVchar != 0 || c == ' ' || c == '\t':
		case c == '\n':
			return i, errBareLF
		default:
			return i, errChunkExt
		}
	case sChunkSizeLF:
		if c != '\n' {
			return i, errCR
		}
		if f.remain == 0 {
			f.trailer = true
			f.state = sFieldStart
		} else {
			f.state = sChunkData
		}
	}
	return i + 1, nil
}

// stepBody: Content-Length body bytes, chunk data and the CRLF after it.
func (f *frameCheck) stepBody(p []byte, i int) (int, *framingError) {
	switch f.state {
	case sBodyCL, sChunkData:
		n := min(int64(len(p)-i), f.remain)
		f.remain -= n
		if f.remain == 0 {
			if f.state == sBodyCL {
				f.state = sLineStart
			} else {
				f.state = sChunkDataCR
			}
		}
		return i + int(n), nil
	case sChunkDataCR:
		if p[i] != '\r' {
			return i, errChunkData
		}
		f.state = sChunkDataLF
	case sChunkDataLF:
		if p[i] != '\n' {
			return i, errChunkData
		}
		f.state, f.remain, f.digits = sChunkSize, 0, 0
	}
	return i + 1, nil
}

func hexValue(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

func (f *frameCheck) resetMessage() {
	f.trailer, f.http10, f.chunked = false, false, false
	f.cl, f.nCL, f.nTE, f.nHost = 0, 0, 0, 0
	f.remain, f.digits = 0, 0
}

func (f *frameCheck) addNameByte(c byte) {
	if f.nameLen < len(f.name) {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		f.name[f.nameLen] = c
	}
	f.nameLen++
}

func (f *frameCheck) startValue() {
	f.field, f.valLen = fOther, 0
	if f.trailer || f.nameLen > len(f.name) {
		return
	}
	switch string(f.name[:f.nameLen]) { // no allocation: compared in place
	case "content-length":
		f.field = fContentLength
	case "transfer-encoding":
		f.field = fTransferEncoding
	case "host":
		f.field = fHost
	}
}

// checkVersion: HTTP-version = "HTTP/" DIGIT "." DIGIT (case-sensitive).
// HTTP/1.x is served (a higher minor version as 1.1, §2.3); another major
// version gets 505.
func (f *frameCheck) checkVersion() *framingError {
	v := f.ver[:f.verLen]
	if len(v) != 8 || string(v[:5]) != "HTTP/" || v[6] != '.' ||
		v[5] < '0' || v[5] > '9' || v[7] < '0' || v[7] > '9' {
		return errVersion
	}
	if v[5] != '1' {
		return errUnsupportedVer
	}
	f.http10 = v[7] == '0'
	return nil
}

// endField applies a complete framing field line.
func (f *frameCheck) endField() *framingError {
	v := trimOWS(f.val[:f.valLen])
	switch f.field {
	case fContentLength:
		// One field line with one decimal value: a list, even of equal
		// values (which §6.3 lets a recipient accept), is refused.
		if f.nCL++; f.nCL > 1 {
			return errDupCL
		}
		if len(v) == 0 || len(v) > 18 {
			return errBadCL
		}
		var n int64
		for _, c := range v {
			if c < '0' || c > '9' {
				return errBadCL
			}
			n = n*10 + int64(c-'0')
		}
		f.cl = n
	case fTransferEncoding:
		if f.nTE++; f.nTE > 1 {
			return errDupTE
		}
		return f.transferCodings(v)
	case fHost:
		f.nHost++
	}
	return nil
}

// transferCodings accepts a list of codings whose final one is chunked,
// applied once (case-insensitive, §7). Another coding before it is valid
// HTTP but not implemented here: 501 (§6.1).
func (f *frameCheck) transferCodings(v []byte) *framingError {
	other := false
	for len(v) > 0 {
		elem := v
		rest := []byte(nil)
		if k := bytes.IndexByte(v, ','); k >= 0 {
			elem, rest = v[:k], v[k+1:]
			if len(trimOWS(rest)) == 0 {
				return errTESyntax
			}
		}
		elem = trimOWS(elem)
		if len(elem) == 0 {
			return errTESyntax
		}
		for _, c := range elem {
			if byteClass[c]&clTchar == 0 {
				return errTESyntax
			}
		}
		if f.chunked {
			if ascii.EqualFoldLower(elem, "chunked") {
				return errTEChunkedTwice
			}
			return errTENotChunked // a coding after chunked
		}
		if ascii.EqualFoldLower(elem, "chunked") {
			f.chunked = true
		} else {
			other = true
		}
		v = rest
	}
	switch {
	case !f.chunked:
		return errTENotChunked
	case other:
		return errTEUnsupported
	}
	return nil
}

// endSection ends a header section (choosing the body framing, §6.3) or a
// trailer section (the message is complete).
func (f *frameCheck) endSection() *framingError {
	if f.trailer {
		f.state = sLineStart
		return nil
	}
	switch {
	case f.nTE > 0 && f.nCL > 0:
		// §6.1 lets a server frame by Transfer-Encoding and close after the
		// response; a reverse proxy refusing the request outright is safer
		// (a front proxy may have framed it by Content-Length).
		return errCLAndTE
	case f.nTE > 0 && f.http10:
		return errTEHTTP10
	case f.nHost > 1 || f.nHost == 0 && !f.http10:
		return errHost
	}
	switch {
	case f.chunked:
		f.state, f.remain, f.digits = sChunkSize, 0, 0
	case f.cl > 0:
		f.state, f.remain = sBodyCL, f.cl
	default:
		f.state = sLineStart
	}
	return nil
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// frontListener wraps a public (or peer) listener so that every connection
// it accepts is checked by frameCheck.
type frontListener struct{ net.Listener }

func (l frontListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	fc := &frontConn{Conn: c}
	if tc, ok := c.(*tls.Conn); ok {
		// fasthttp finds TLS (IsTLS, ALPN) through these two methods.
		return &frontTLSConn{frontConn: fc, tc: tc}, nil
	}
	return fc, nil
}

// frontConn passes fasthttp only bytes that frameCheck accepted. Read is
// called by the connection's one serving goroutine.
type frontConn struct {
	net.Conn
	check frameCheck
	err   *framingError // the violation; every later Read returns it
}

func (c *frontConn) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.Conn.Read(p)
	if n > 0 {
		ok, ferr := c.check.feed(p[:n])
		if ferr != nil {
			c.err = ferr
			if ok == 0 {
				return 0, ferr
			}
			return ok, nil
		}
	}
	return n, err
}

type frontTLSConn struct {
	*frontConn
	tc *tls.Conn
}

func (c *frontTLSConn) Handshake() error                     { return c.tc.Handshake() }
func (c *frontTLSConn) ConnectionState() tls.ConnectionState { return c.tc.ConnectionState() }

// frontDoor wraps a public handler with the checks that need the parsed
// request: an absolute-form target must name the Host it is sent with
// (the cache key takes the target's host, §3.2.2, while the origin would be
// asked for Host: they must not differ), and a "close" token anywhere in
// Connection (a case-insensitive list, RFC 9110 §7.6.1) closes the
// connection after the response, whatever path answered it.
func (pl *pipeline) frontDoor(h fasthttp.RequestHandler) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		hdr := &ctx.Request.Header
		if err := checkTarget(hdr); err != nil {
			pl.rejectFraming(ctx, err)
			return
		}
		closeAfter := hdr.ConnectionClose() || connectionHasClose(hdr.RawHeaders())
		h(ctx)
		if closeAfter {
			ctx.SetConnectionClose()
		}
	}
}

// checkTarget refuses what frameCheck may not have seen (a handler called
// on a connection it does not wrap): a major version other than 1, and an
// absolute-form target whose authority differs from Host.
func checkTarget(hdr *fasthttp.RequestHeader) *framingError {
	if p := hdr.Protocol(); len(p) == 8 && p[5] != '1' {
		return errUnsupportedVer
	}
	uri := hdr.RequestURI()
	if len(uri) == 0 || uri[0] == '/' || uri[0] == '*' {
		return nil
	}
	k := bytes.Index(uri, []byte("://"))
	if k < 0 {
		return nil
	}
	auth := uri[k+3:]
	if e := bytes.IndexAny(auth, "/?#"); e >= 0 {
		auth = auth[:e]
	}
	if at := bytes.LastIndexByte(auth, '@'); at >= 0 {
		return errAbsoluteHost // userinfo is not allowed in http(s) URIs (RFC 9110 §4.2.4)
	}
	if !bytes.EqualFold(auth, hdr.Host()) {
		return errAbsoluteHost
	}
	return nil
}

// connectionHasClose reports whether a Connection field line in the raw
// header block lists "close". The block passed frameCheck: CRLF lines, no
// folding.
func connectionHasClose(raw []byte) bool {
	for len(raw) > 0 {
		line := raw
		if k := bytes.IndexByte(raw, '\n'); k >= 0 {
			line, raw = raw[:k], raw[k+1:]
		} else {
			raw = nil
		}
		colon := bytes.IndexByte(line, ':')
		if colon != len("connection") || !ascii.EqualFoldLower(line[:colon], "connection") {
			continue
		}
		v := line[colon+1:]
		for len(v) > 0 {
			tok := v
			if k := bytes.IndexByte(v, ','); k >= 0 {
				tok, v = v[:k], v[k+1:]
			} else {
				v = nil
			}
			if ascii.EqualFoldLower(bytes.TrimRight(trimOWS(tok), "\r"), "close") {
				return true
			}
		}
	}
	return false
}

// rejectFraming answers a request the front door refuses and closes the
// connection, so nothing behind it in the read buffer is ever parsed.
func (pl *pipeline) rejectFraming(ctx *fasthttp.RequestCtx, err *framingError) {
	if pl.log.Enabled(context.Background(), slog.LevelDebug) {
		pl.log.Debug("request refused", "status", err.status, "reason", err.reason, "remote", ctx.RemoteAddr().String())
	}
	ctx.Error(fasthttp.StatusMessage(err.status)+": "+err.reason+"\n", err.status)
	ctx.SetConnectionClose()
}

// sensitiveFields are the fields whose values never reach a log line.
var sensitiveFields = []string{"proxy-authorization", "authorization", "set-cookie", "cookie", "x-api-key", "x-auth-token"}

// redactSecrets returns s with the value of every sensitive field replaced
// by "[redacted]". s is a log message that may quote request bytes, raw or
// as Go-quoted strings (fasthttp's errors use %q): quoted strings are
// unquoted, redacted and quoted again, so an escape cannot hide a value's
// end. A quoted string that is a bare field value (fasthttp's "invalid
// header value %q") is dropped whole: its field name is unknown.
func redactSecrets(s string) string {
	var b strings.Builder
	for len(s) > 0 {
		q := strings.IndexByte(s, '"')
		if q < 0 {
			b.WriteString(redactFields(s))
			break
		}
		b.WriteString(redactFields(s[:q]))
		quoted, err := strconv.QuotedPrefix(s[q:])
		if err != nil {
			b.WriteString(redactFields(s[q:]))
			break
		}
		raw, _ := strconv.Unquote(quoted)
		if strings.HasSuffix(s[:q], "value ") {
			b.WriteString(`"[redacted]"`)
		} else {
			b.WriteString(strconv.Quote(redactFields(raw)))
		}
		s = s[q+len(quoted):]
	}
	return b.String()
}

// redactFields replaces what follows "<sensitive name>:" up to the end of
// the line.
func redactFields(s string) string {
	lower := strings.ToLower(s)
	var b strings.Builder
	last := 0
	for i := 0; i < len(lower); i++ {
		for _, name := range sensitiveFields {
			if !strings.HasPrefix(lower[i:], name) || i > 0 && byteClass[lower[i-1]]&clTchar != 0 {
				continue
			}
			j := i + len(name)
			for j < len(s) && (s[j] == ' ' || s[j] == '\t') {
				j++
			}
			if j >= len(s) || s[j] != ':' {
				continue
			}
			j++
			end := strings.IndexAny(s[j:], "\r\n")
			if end < 0 {
				end = len(s) - j
			}
			b.WriteString(s[last:j])
			b.WriteString(" [redacted]")
			last = j + end
			i = last - 1
			break
		}
	}
	if last == 0 {
		return s
	}
	b.WriteString(s[last:])
	return b.String()
}

// sendConn is the connection a response body may be written to directly
// (sendfile, cache.BlobReader): the TCP connection under a plain frontConn,
// whose check only concerns reads, and under the count of open
// connections (handover.go), which only concerns Close. A TLS connection
// stays wrapped, so its bodies are encrypted.
func sendConn(c net.Conn) net.Conn {
	fc, ok := c.(*frontConn)
	if !ok {
		return c
	}
	c = fc.Conn
	for {
		switch w := c.(type) {
		case *prefixConn: // server.h2c read its first bytes (h2.go)
			c = w.Conn
		case *countedConn:
			c = w.Conn
		default:
			return c
		}
	}
}

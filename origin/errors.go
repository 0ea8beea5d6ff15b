package origin

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"

	"github.com/valyala/fasthttp"
)

// Sentinel errors. Every error returned by Client.Do wraps exactly one of
// them (plus the underlying cause, for the log), so that the edge maps an
// error to a status code with errors.Is in a single place. Reads from a
// Response.Body are classified the same way.
var (
	// ErrTimeout: the dial, the TLS handshake, the wait for response headers
	// (or a stalled body read, for Body.Read) exceeded its limit, or the
	// context's deadline passed. The edge answers 504.
	ErrTimeout = errors.New("origin timeout")
	// ErrRefused: no connection could be established (refused, unreachable,
	// DNS failure, TLS handshake or certificate failure), or the client is
	// closed. The edge answers 502.
	ErrRefused = errors.New("origin refused connection")
	// ErrReset: the connection broke after it was established, including an
	// EOF before the response headers. The edge answers 502.
	ErrReset = errors.New("origin reset connection")
	// ErrBusy: MaxConns connections are in use and none became free within
	// MaxConnWait. The edge answers 503.
	ErrBusy = errors.New("origin connection limit reached")
	// ErrBadResponse: the upstream sent something that is not a valid
	// HTTP/1.x response (garbage, oversized headers, broken chunking).
	// The edge answers 502.
	ErrBadResponse = errors.New("origin sent a malformed response")
)

// ErrInvalidRequest is returned by Do, before anything is sent, when the
// Request cannot be written safely (empty or non-token method, a RequestURI
// that is not origin-form, CR/LF or other control bytes in a header).
// It is a caller bug, not an origin failure, so it is not one of the five
// origin sentinels above.
var ErrInvalidRequest = errors.New("invalid origin request")

// ErrRequestBody is returned by Do when reading Request.BodyStream failed
// (the client uploading it went away, stalled, or sent more than the edge
// allows): the request was aborted mid-body. It is the caller's side that
// failed, not the origin, so it is not one of the five origin sentinels
// either; the reader's error is wrapped too, for errors.Is.
var ErrRequestBody = errors.New("reading the request body failed")

// dialError marks an error that happened while establishing a connection
// (TCP connect or TLS handshake), so that classify can tell "could not
// connect" (ErrRefused) from "connection broke" (ErrReset).
type dialError struct{ err error }

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// classify wraps err with the one sentinel that describes it. Errors that
// already carry a sentinel are returned unchanged.
func classify(err error) error {
	if err == nil {
		return nil
	}
	for _, s := range [...]error{ErrTimeout, ErrRefused, ErrReset, ErrBusy, ErrBadResponse, ErrInvalidRequest, ErrRequestBody} {
		if errors.Is(err, s) {
			return err
		}
	}
	return fmt.Errorf("%w: %w", kindOf(err), err)
}

// kindOf picks the sentinel for an unclassified error. Timeouts are checked
// first: a deadline that fires during the dial is still a timeout (504), not
// a refusal.
func kindOf(err error) error {
	if isTimeout(err) {
		return ErrTimeout
	}
	if errors.Is(err, fasthttp.ErrNoFreeConns) {
		return ErrBusy
	}
	var de *dialError
	if errors.As(err, &de) {
		return ErrRefused
	}
	var (
		certErr  *tls.CertificateVerificationError
		unkAuth  x509.UnknownAuthorityError
		hostErr  x509.HostnameError
		alertErr tls.AlertError
	)
	if errors.As(err, &certErr) || errors.As(err, &unkAuth) || errors.As(err, &hostErr) || errors.As(err, &alertErr) ||
		errors.Is(err, syscall.ECONNREFUSED) {
		return ErrRefused
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, fasthttp.ErrConnectionClosed) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ECONNABORTED) {
		return ErrReset
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) {
		// Any other socket-level failure after the connection was up.
		return ErrReset
	}
	// What remains comes from parsing: fasthttp's header and chunk parsers,
	// *fasthttp.ErrSmallBuffer for headers larger than MaxHeaderBytes, …
	return ErrBadResponse
}

// isTimeout reports whether err is any flavour of timeout: fasthttp's, a
// net.Error deadline, a context deadline.
func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, fasthttp.ErrTimeout) ||
		errors.Is(err, fasthttp.ErrTLSHandshakeTimeout) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

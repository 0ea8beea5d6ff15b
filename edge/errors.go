package edge

import (
	"context"
	"errors"
	"log/slog"
	"strconv"

	"github.com/edgeshield/edgeshield/origin"
	"github.com/valyala/fasthttp"
)

// statusError is an upstream answer that counts as a failure for
// stale-if-error (a 5xx, RFC 5861 §4).
type statusError struct{ status int }

func (e *statusError) Error() string { return "origin answered " + strconv.Itoa(e.status) }

// statusFor is the one place that maps upstream failures to the status the
// client sees: a timeout is 504, a full connection pool 503, anything else
// (refused, reset, malformed, down by health check) 502 (RFC 9110 §15.6.3,
// §15.6.5).
func statusFor(err error) int {
	var se *statusError
	switch {
	case errors.As(err, &se):
		return se.status
	case errors.Is(err, origin.ErrTimeout):
		return fasthttp.StatusGatewayTimeout
	case errors.Is(err, origin.ErrBusy):
		return fasthttp.StatusServiceUnavailable
	default:
		return fasthttp.StatusBadGateway
	}
}

// writeError answers a failed upstream fetch with a short plain body.
func (pl *pipeline) writeError(ctx *fasthttp.RequestCtx, err error) outcome {
	status := statusFor(err)
	pl.stats.errors.Add(1)
	if errors.Is(err, origin.ErrDown) {
		// One line per request while the origin is down would flood the
		// log; the transition itself is logged once at warn.
		if pl.log.Enabled(context.Background(), slog.LevelDebug) {
			pl.log.Debug("origin down; not sent", "status", status, "method", string(ctx.Method()), "uri", string(ctx.RequestURI()))
		}
	} else {
		pl.log.Warn("upstream failed", "status", status, "method", string(ctx.Method()), "uri", string(ctx.RequestURI()), "err", err)
	}
	ctx.Response.Reset()
	ctx.Response.Header.AddBytesKV(strVia, pl.viaBytes)
	cs := pl.appendCacheStatus(nil, ctx, csFwd, fwdURIMiss, 0, 0, false)
	cs = append(cs, `; detail="`...)
	cs = append(cs, errDetail(err)...)
	cs = append(cs, '"')
	ctx.Response.Header.SetBytesV("Cache-Status", cs)
	ctx.Response.Header.Set("Cache-Control", "no-store")
	// Not ctx.Error: it resets the headers just set.
	ctx.SetStatusCode(status)
	ctx.SetContentType("text/plain; charset=utf-8")
	ctx.SetBodyString(fasthttp.StatusMessage(status) + ": " + errDetail(err) + "\n")
	return outError
}

func errDetail(err error) string {
	switch {
	case errors.Is(err, origin.ErrTimeout):
		return "origin timeout"
	case errors.Is(err, origin.ErrRefused):
		return "origin refused connection"
	case errors.Is(err, origin.ErrReset):
		return "origin reset connection"
	case errors.Is(err, origin.ErrBusy):
		return "origin connection limit reached"
	case errors.Is(err, origin.ErrBadResponse):
		return "origin sent a malformed response"
	case errors.Is(err, origin.ErrDown):
		return "origin down (health checks failing)"
	}
	var se *statusError
	if errors.As(err, &se) {
		return se.Error()
	}
	return "origin unavailable"
}

package certs

import (
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
)

// acmeChallengePrefix is the HTTP-01 path prefix (RFC 8555 §8.3).
const acmeChallengePrefix = "/.well-known/acme-challenge/"

// HTTPHandler wraps next, the plain-HTTP listener's handler, so that ACME
// HTTP-01 validation requests are answered through the ACME issuer's
// HTTPChallengeHandler. That handler looks in this process's memory and
// then in the shared storage, so a challenge presented by another node is
// answered too. Every other request, and challenge paths with no matching
// challenge, go to next. Outside acme mode it returns next unchanged.
func (m *Manager) HTTPHandler(next fasthttp.RequestHandler) fasthttp.RequestHandler {
	if m.acme == nil {
		return next
	}
	return func(ctx *fasthttp.RequestCtx) {
		// string(b) in a comparison does not allocate.
		if p := ctx.Path(); len(p) < len(acmeChallengePrefix) || string(p[:len(acmeChallengePrefix)]) != acmeChallengePrefix {
			next(ctx)
			return
		}
		// The adaptor runs the net/http handler on its own goroutine and
		// waits for it, so the flag is written before it is read.
		handled := true
		miss := http.HandlerFunc(func(http.ResponseWriter, *http.Request) { handled = false })
		fasthttpadaptor.NewFastHTTPHandler(m.acme.HTTPChallengeHandler(miss))(ctx)
		if !handled {
			ctx.Response.Reset()
			next(ctx)
		}
	}
}

// RedirectHandler answers every request with 308 Permanent Redirect to the
// same host, path and query over https (RFC 9110 §15.4.9: unlike 301, a
// 308 keeps the method and body). The port is added when TLSPort is not
// 443. A missing or malformed Host is answered 400, so the redirect can
// never point at a host the client did not name in a well-formed way.
// Compose as m.HTTPHandler(m.RedirectHandler()) so challenges still work.
func (m *Manager) RedirectHandler() fasthttp.RequestHandler {
	port := m.cfg.TLSPort
	if port == 0 {
		port = DefaultTLSPort
	}
	return func(ctx *fasthttp.RequestCtx) {
		target, ok := redirectTarget(ctx.Host(), ctx.URI().RequestURI(), port)
		if !ok {
			ctx.Error("invalid Host header", fasthttp.StatusBadRequest)
			return
		}
		ctx.Response.Header.Set(fasthttp.HeaderLocation, target)
		ctx.SetStatusCode(fasthttp.StatusPermanentRedirect)
	}
}

// redirectTarget builds "https://host[:port]/uri" from a Host header value
// and a request URI. It reports false for hosts that are not a valid DNS
// name or IP literal.
func redirectTarget(hostHeader, requestURI []byte, tlsPort int) (string, bool) {
	host := string(hostHeader)
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	} else if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	host = normalizeName(host)
	ip := net.ParseIP(host)
	if host == "" || strings.HasPrefix(host, "*") || (ip == nil && !validName(host)) {
		return "", false
	}
	if ip != nil && strings.Contains(host, "%") {
		return "", false // zone identifiers have no meaning to a remote client
	}
	if ip != nil && ip.To4() == nil {
		host = "[" + host + "]"
	}
	uri := string(requestURI)
	if !strings.HasPrefix(uri, "/") {
		uri = "/" + uri
	}
	if tlsPort != DefaultTLSPort {
		host += ":" + strconv.Itoa(tlsPort)
	}
	return "https://" + host + uri, true
}

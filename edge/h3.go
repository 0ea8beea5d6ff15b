package edge

// The HTTP/3 front (RFC 9114) on quic-go, over UDP on the HTTPS port number
// (tls.http3_listen), advertised on HTTPS responses with Alt-Svc (RFC 7838)
// so that browsers switch to it. It runs the shared translator
// (front_http.go). 0-RTT stays off: early data can be replayed (RFC 9001
// §9.2, RFC 8470), and a replayed unsafe request would reach the origin
// twice.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/valyala/fasthttp"
)

// fronts are the HTTP/2 and HTTP/3 servers beside the fasthttp ones.
type fronts struct {
	h2     *h2Front
	h2c    *h2Front // server.h2c on the plain listener
	h3     *h3Front
	udp    net.PacketConn // bound by listenH3, before anything serves
	altSvc string         // Alt-Svc for HTTPS responses; "" without HTTP/3
}

// HTTP/3 limits: as HTTP/2's (h2.go). QUIC flow-control windows: the
// receive windows start small and grow with the path's bandwidth-delay
// product up to these maxima (quic-go's auto-tuning).
const (
	h3MaxStreams       = h2MaxStreams
	h3MaxStreamWindow  = 16 << 20
	h3MaxConnWindow    = 64 << 20
	altSvcMaxAge       = 86400 // seconds clients may remember the alternative
	defaultHTTP3Listen = ""    // the HTTPS listener's address, over UDP
)

type h3Front struct {
	srv *http3.Server
	tr  *quic.Transport // on fronts.udp; closed by stop
}

// listenH3 binds the UDP socket of HTTP/3 (tls.http3_listen, default the
// HTTPS listener's address) and computes Alt-Svc: the port clients reach,
// tls.tls_port when it maps a different public port onto the HTTPS one.
func (n *Node) listenH3(tlsLn net.Listener) error {
	c := n.cfg.TLS
	if !c.HTTP3 {
		return nil
	}
	addr := c.HTTP3Listen
	if addr == defaultHTTP3Listen {
		addr = tlsLn.Addr().String()
	}
	pc, err := n.listenUDP(addr)
	if err != nil {
		return &ConfigError{Key: "tls.http3_listen", Msg: fmt.Sprintf("listen udp %s: %v", addr, err)}
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	if c.HTTP3Listen == defaultHTTP3Listen && c.TLSPort != 0 {
		port = c.TLSPort
	}
	n.fronts.udp = pc
	n.fronts.altSvc = `h3=":` + strconv.Itoa(port) + `"; ma=` + strconv.Itoa(altSvcMaxAge)
	return nil
}

// startH3 serves HTTP/3 on the socket listenH3 bound.
func (n *Node) startH3(tlsConf *tls.Config) {
	if n.fronts.udp == nil {
		return
	}
	c := n.cfg.Server
	qc := &quic.Config{
		Allow0RTT:                  false,
		MaxIncomingStreams:         h3MaxStreams,
		MaxIncomingUniStreams:      16,
		MaxIdleTimeout:             c.IdleTimeout.D(),
		MaxStreamReceiveWindow:     h3MaxStreamWindow,
		MaxConnectionReceiveWindow: h3MaxConnWindow,
	}
	f := &h3Front{tr: &quic.Transport{Conn: n.fronts.udp}}
	if n.conns != nil {
		// server.max_conns_per_ip counts QUIC connections with the TCP ones.
		f.tr.ConnContext = n.conns.quicConnContext
	}
	f.srv = &http3.Server{
		Handler:        n.newHTTPFront(protoH3, ""),
		MaxHeaderBytes: int(c.MaxHeaderBytes),
		IdleTimeout:    c.IdleTimeout.D(),
		QUICConfig:     qc,
		Logger:         n.log.With("component", "http3"),
	}
	ln, err := f.tr.ListenEarly(http3.ConfigureTLSConfig(tlsConf), qc)
	if err != nil { // only when the transport is already listening: a bug
		n.log.Error("listener stopped", "listener", "https-h3", "err", err)
		return
	}
	n.fronts.h3 = f
	n.serveWG.Add(1)
	go func() {
		defer n.serveWG.Done()
		defer ln.Close()
		if err := f.srv.ServeListener(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) && !errors.Is(err, quic.ErrServerClosed) {
			n.log.Error("listener stopped", "listener", "https-h3", "err", err)
		}
	}()
}

// stop sends GOAWAY on every HTTP/3 connection (RFC 9114 §5.2), lets
// their requests finish within ctx, then closes them.
func (f *h3Front) stop(ctx context.Context) error {
	err := f.srv.Shutdown(ctx)
	f.srv.Close()
	f.tr.Close()
	if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("http/3 shutdown: %w", err)
	}
	if err != nil {
		return fmt.Errorf("http/3 shutdown: requests still running: %w", err)
	}
	return nil
}

// startFronts serves HTTP/2 (tls.http2) and HTTP/3 (tls.http3) beside
// HTTP/1.1 on the HTTPS listener, and returns the listener the HTTP/1.1
// server must serve.
func (n *Node) startFronts(tlsLn net.Listener, tlsConf *tls.Config) net.Listener {
	if n.cfg.TLS.HTTP3 {
		n.startH3(tlsConf.Clone())
	}
	if n.cfg.TLS.HTTP2 {
		return n.startH2(tlsLn)
	}
	return tlsLn
}

// stopFronts stops the HTTP/2 and HTTP/3 servers (GOAWAY, then close),
// bounded by ctx.
func (n *Node) stopFronts(ctx context.Context) error {
	var errs []error
	for _, f := range []*h2Front{n.fronts.h2, n.fronts.h2c} {
		if f != nil {
			errs = append(errs, f.stop(ctx))
		}
	}
	if n.fronts.h3 != nil {
		errs = append(errs, n.fronts.h3.stop(ctx))
	}
	if n.fronts.udp != nil {
		n.fronts.udp.Close()
	}
	return errors.Join(errs...)
}

// withAltSvc advertises HTTP/3 on the HTTP/1.1-over-TLS answers.
func (n *Node) withAltSvc(h fasthttp.RequestHandler) fasthttp.RequestHandler {
	if n.fronts.altSvc == "" {
		return h
	}
	v := []byte(n.fronts.altSvc)
	return func(ctx *fasthttp.RequestCtx) {
		h(ctx)
		ctx.Response.Header.SetBytesKV(strAltSvc, v)
	}
}

var strAltSvc = []byte("Alt-Svc")

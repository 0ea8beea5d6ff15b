package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/edgeshield/edgeshield/edge/certs"
)

// buildTLS creates the certificate manager once both public listeners are
// bound (so ACME challenges reach this process, not a listener certmagic
// would open itself); serveTLS then serves on them.
func (n *Node) buildTLS(tlsLn net.Listener) error {
	cc := n.cfg.TLS.Config // the operator's keys; the rest is the node's
	cc.Logger = n.log.With("component", "tls")
	if cc.HTTPPort == 0 {
		cc.HTTPPort = n.publicLn.Addr().(*net.TCPAddr).Port
	}
	if cc.TLSPort == 0 {
		cc.TLSPort = tlsLn.Addr().(*net.TCPAddr).Port
	}
	m, err := certs.New(context.Background(), cc)
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	if err := n.listenH3(tlsLn); err != nil {
		m.Close()
		return err
	}
	n.certs, n.api.certs = m, m
	return nil
}

// serveTLS serves HTTPS on tlsLn and the plain listener, which answers
// HTTP-01 challenges — including ones another node sharing the storage
// started — and redirects or serves everything else (tls.http).
func (n *Node) serveTLS(plainLn, tlsLn net.Listener) {
	// The redirect never reads a body: skip it (see body.go); n.handle
	// deals with its own.
	plain := withBodySkipped(n.certs.RedirectHandler())
	if n.cfg.TLS.HTTP == "serve" {
		plain = n.handleH1
	}
	n.plain = n.newPublicServer(n.certs.HTTPHandler(plain))
	n.serve(n.plain, n.startH2C(plainLn), "http")
	conf := n.certs.TLSConfig()
	if n.cfg.TLS.HTTP2 {
		conf.NextProtos = append([]string{"h2"}, conf.NextProtos...) // server preference: h2 first
	}
	n.tlsLn = tls.NewListener(tlsLn, conf)
	n.public = n.newPublicServer(n.withAltSvc(n.handleH1)) // h2.go, h3.go
	n.serve(n.public, n.startFronts(n.tlsLn, n.certs.TLSConfig()), "https")
}

// ReloadTLS re-reads manual certificate files (SIGHUP).
func (n *Node) ReloadTLS() error {
	if n.certs == nil {
		return nil
	}
	return n.certs.Reload()
}

// exportTLSRoot writes the internal CA's root certificate (tls.mode
// internal), for clients to trust in development (GET /tls/root.pem).
func exportTLSRoot(m *certs.Manager, w io.Writer) error {
	if m == nil {
		return errors.New("tls is off")
	}
	return m.ExportRoot(w)
}

// TLSAddr is the HTTPS listener's address ("" when TLS is off).
func (n *Node) TLSAddr() string {
	if n.tlsLn == nil {
		return ""
	}
	return n.tlsLn.Addr().String()
}

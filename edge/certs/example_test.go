package certs_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"log"
	"net"
	"os"

	"github.com/edgeshield/edgeshield/edge/certs"
	"github.com/valyala/fasthttp"
)

// Example shows the wiring the edge node does: bind both public listeners
// first, then create the Manager, then serve TLS with m.TLSConfig() and
// plain HTTP with ACME challenges plus a redirect to https.
func Example() {
	storage, err := os.MkdirTemp("", "edgeshield-certs")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(storage)

	httpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	tlsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}

	m, err := certs.New(context.Background(), certs.Config{
		Mode:     certs.ModeInternal, // offline; ModeACME in production
		Names:    []string{"www.example.test"},
		Storage:  storage,
		HTTPPort: httpLn.Addr().(*net.TCPAddr).Port,
		TLSPort:  tlsLn.Addr().(*net.TCPAddr).Port,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	app := func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("hello") }
	httpsSrv := &fasthttp.Server{Handler: app}
	httpSrv := &fasthttp.Server{Handler: m.HTTPHandler(m.RedirectHandler())}
	go httpsSrv.Serve(tls.NewListener(tlsLn, m.TLSConfig()))
	go httpSrv.Serve(httpLn)
	defer httpsSrv.Shutdown()
	defer httpSrv.Shutdown()

	fmt.Println(m.TLSConfig().NextProtos)
	// Output: [http/1.1 acme-tls/1]
}

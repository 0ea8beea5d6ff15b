package certs

import (
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// BenchmarkTLSHandshake measures full handshakes (no session resumption)
// against a loopback listener using m.TLSConfig() with an internal-CA
// ECDSA P-256 certificate. Client and server share the machine, so the
// figure is a lower bound for the server alone.
func BenchmarkTLSHandshake(b *testing.B) {
	for _, v := range []struct {
		name    string
		version uint16
	}{{"TLS1.2", tls.VersionTLS12}, {"TLS1.3", tls.VersionTLS13}} {
		b.Run(v.name, func(b *testing.B) {
			const host = "bench.dev.test"
			tlsLn := listen(b)
			m := newManager(b, Config{Mode: ModeInternal, Storage: b.TempDir(), Names: []string{host}, Logger: infoLogger()})
			go func() {
				for {
					c, err := tlsLn.Accept()
					if err != nil {
						return
					}
					go func() {
						defer c.Close()
						s := tls.Server(c, m.TLSConfig())
						_ = s.Handshake()
					}()
				}
			}()
			addr := tlsLn.Addr().String()
			conf := &tls.Config{ServerName: host, InsecureSkipVerify: true, MinVersion: v.version, MaxVersion: v.version}
			eventually(b, 20*time.Second, "certificate", func() error {
				c, err := tls.Dial("tcp", addr, conf)
				if err == nil {
					c.Close()
				}
				return err
			})
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for b.Loop() {
				raw, err := net.Dial("tcp", addr)
				if err != nil {
					b.Fatal(err)
				}
				c := tls.Client(raw, conf) // no ClientSessionCache: always a full handshake
				if err := c.Handshake(); err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "handshakes/s")
		})
	}
}

// BenchmarkGetCertificate measures the per-handshake certificate lookup
// (certmagic's in-memory cache) for a managed name.
func BenchmarkGetCertificate(b *testing.B) {
	const host = "lookup.dev.test"
	m := newManager(b, Config{Mode: ModeInternal, Storage: b.TempDir(), Names: []string{host}, Logger: infoLogger()})
	hello := &tls.ClientHelloInfo{ServerName: host, SupportedProtos: []string{"http/1.1"}, Conn: fakeConn{}}
	eventually(b, 20*time.Second, "certificate", func() error {
		_, err := m.getCertificate(hello)
		return err
	})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.getCertificate(hello); err != nil {
			b.Fatal(err)
		}
	}
}

// infoLogger discards logs at the production level (Info), so that
// benchmarks do not measure debug formatting.
func infoLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// fakeConn supplies addresses to a ClientHelloInfo built outside a handshake.
type fakeConn struct{ net.Conn }

func (fakeConn) LocalAddr() net.Addr  { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 443} }
func (fakeConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 50000} }

// BenchmarkHTTPHandlerPassThrough is the plain listener's cost per
// non-challenge request (the "serve" configuration).
func BenchmarkHTTPHandlerPassThrough(b *testing.B) {
	m := newManager(b, Config{Mode: ModeACME, AgreeTerms: true, CA: "https://127.0.0.1:1/dir", Storage: b.TempDir(), Logger: infoLogger()})
	h := m.HTTPHandler(func(*fasthttp.RequestCtx) {})
	var ctx fasthttp.RequestCtx
	ctx.Request.SetRequestURI("/assets/app.js")
	ctx.Request.Header.SetHost("www.example.com")
	b.ReportAllocs()
	for b.Loop() {
		h(&ctx)
	}
}

func TestHTTPHandlerPassThroughAllocs(t *testing.T) {
	m := newManager(t, Config{Mode: ModeACME, AgreeTerms: true, CA: "https://127.0.0.1:1/dir", Storage: t.TempDir(), Logger: infoLogger()})
	h := m.HTTPHandler(func(*fasthttp.RequestCtx) {})
	var ctx fasthttp.RequestCtx
	ctx.Request.SetRequestURI("/assets/app.js")
	ctx.Request.Header.SetHost("www.example.com")
	if got := testing.AllocsPerRun(100, func() { h(&ctx) }); got != 0 {
		t.Errorf("allocations per pass-through request: got %v, want 0", got)
	}
}

// BenchmarkHTTPSKeepAlive1KiB is the steady-state cost of a 1 KiB response
// over an established TLS connection (fasthttp server on m.TLSConfig(),
// fasthttp client, same machine): the TLS record layer, not the handshake.
func BenchmarkHTTPSKeepAlive1KiB(b *testing.B) {
	const host = "keepalive.dev.test"
	tlsLn := listen(b)
	m := newManager(b, Config{Mode: ModeInternal, Storage: b.TempDir(), Names: []string{host}, Logger: infoLogger()})
	body := make([]byte, 1024)
	serve(b, tls.NewListener(tlsLn, m.TLSConfig()), func(ctx *fasthttp.RequestCtx) { ctx.SetBody(body) })
	addr := tlsLn.Addr().String()
	eventually(b, 20*time.Second, "certificate", func() error {
		c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: host, InsecureSkipVerify: true})
		if err == nil {
			c.Close()
		}
		return err
	})
	client := &fasthttp.HostClient{
		Addr: addr, IsTLS: true, MaxConns: 1,
		TLSConfig: &tls.Config{ServerName: host, InsecureSkipVerify: true},
	}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("https://" + host + "/1k")
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	start := time.Now()
	for b.Loop() {
		if err := client.Do(req, resp); err != nil || len(resp.Body()) != len(body) {
			b.Fatalf("request: %v (%d bytes)", err, len(resp.Body()))
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
}

package certs

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// lockedBuffer is an io.Writer safe for concurrent use (logs from
// background goroutines, child process output).
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testLogger returns a debug logger into a buffer that is printed when the
// test fails. (t.Log cannot be used: certmagic logs from goroutines that
// may outlive the test.)
func testLogger(t testing.TB) *slog.Logger {
	return bufferLogger(t, &lockedBuffer{})
}

// bufferLogger logs to buf (for tests that inspect the log) and dumps it
// when the test fails.
func bufferLogger(t testing.TB, buf *lockedBuffer) *slog.Logger {
	t.Helper()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("manager log:\n%s", tail(buf.String(), 200))
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func tail(s string, lines int) string {
	parts := strings.Split(s, "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}

// listen binds a loopback TCP port and closes it at the end of the test.
func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func portOf(ln net.Listener) int { return ln.Addr().(*net.TCPAddr).Port }

// okHandler answers every request with a fixed body naming the node.
func okHandler(node string) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("text/plain")
		ctx.SetBodyString("hello from " + node)
	}
}

// serve runs a fasthttp server on ln until the test ends.
func serve(t testing.TB, ln net.Listener, h fasthttp.RequestHandler) {
	t.Helper()
	srv := &fasthttp.Server{Handler: h, ReadTimeout: 10 * time.Second, Logger: discardLogger{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = srv.Shutdown()
		<-done
	})
}

type discardLogger struct{}

func (discardLogger) Printf(string, ...any) {}

// serveNode starts the HTTPS (m.TLSConfig) and plain HTTP (m.HTTPHandler)
// servers the way the edge will. It returns the number of ACME challenge
// requests the plain listener received.
func serveNode(t testing.TB, m *Manager, tlsLn, httpLn net.Listener, node string) *atomic.Int64 {
	t.Helper()
	var challenges atomic.Int64
	if tlsLn != nil {
		serve(t, tls.NewListener(tlsLn, m.TLSConfig()), okHandler(node))
	}
	if httpLn != nil {
		h := m.HTTPHandler(okHandler(node + " (plain)"))
		serve(t, httpLn, func(ctx *fasthttp.RequestCtx) {
			if strings.HasPrefix(string(ctx.Path()), acmeChallengePrefix) {
				challenges.Add(1)
			}
			h(ctx)
		})
	}
	return &challenges
}

// handshake dials addr with SNI and the given roots, offering h2 as well
// so that the test sees the server refuse it.
func handshake(addr, sni string, roots *x509.CertPool) (tls.ConnectionState, error) {
	d := &net.Dialer{Timeout: 10 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{
		ServerName: sni,
		RootCAs:    roots,
		NextProtos: []string{"h2", "http/1.1"},
	})
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer conn.Close()
	return conn.ConnectionState(), nil
}

// httpsGet performs one GET over a verified TLS connection and returns the
// status, body and negotiated ALPN protocol.
func httpsGet(addr, sni string, roots *x509.CertPool) (status int, body, alpn string, err error) {
	d := &net.Dialer{Timeout: 10 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{
		ServerName: sni,
		RootCAs:    roots,
		NextProtos: []string{"h2", "http/1.1"},
	})
	if err != nil {
		return 0, "", "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", sni)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, "", "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), conn.ConnectionState().NegotiatedProtocol, err
}

// eventually polls f until it returns nil or the deadline passes.
func eventually(t testing.TB, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond) // polling interval, not a correctness guess
	}
	t.Fatalf("%s: not reached within %v: %v", what, timeout, err)
}

// certSpec describes a test certificate.
type certSpec struct {
	names     []string
	notBefore time.Time
	notAfter  time.Time
	isCA      bool
	parent    *x509.Certificate // nil = self-signed
	parentKey *ecdsa.PrivateKey
}

// makeCert creates a certificate and returns it with its key and PEMs.
func makeCert(t testing.TB, s certSpec) (*x509.Certificate, *ecdsa.PrivateKey, []byte, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := randomSerial()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "edgeshield test"},
		NotBefore:    s.notBefore,
		NotAfter:     s.notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if len(s.names) > 0 {
		tmpl.Subject.CommonName = s.names[0]
	}
	for _, n := range s.names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	if s.isCA {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	parent, parentKey := tmpl, key
	if s.parent != nil {
		parent, parentKey = s.parent, s.parentKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key,
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
}

// writeCertFiles writes a self-signed certificate for names into dir and
// returns the pair.
func writeCertFiles(t testing.TB, dir, base string, names []string, notBefore, notAfter time.Time) (CertFile, *x509.Certificate) {
	t.Helper()
	cert, _, certPEM, keyPEM := makeCert(t, certSpec{names: names, notBefore: notBefore, notAfter: notAfter})
	f := CertFile{Cert: filepath.Join(dir, base+".crt"), Key: filepath.Join(dir, base+".key")}
	if err := os.WriteFile(f.Cert, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.Key, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return f, cert
}

func poolOf(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

// newManager creates a Manager closed at the end of the test.
func newManager(t testing.TB, cfg Config) *Manager {
	t.Helper()
	m, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// uniqueHost returns label.<random>.test. certmagic keeps some state per
// name process-wide (renewal back-off, active challenges), so names must
// not repeat across tests or -count runs in one process.
func uniqueHost(label string) string {
	return label + "." + strings.ToLower(rand.Text()[:10]) + ".test"
}

// statusOf returns the status entry for name.
func statusOf(m *Manager, name string) (CertStatus, error) {
	for _, s := range m.Status() {
		if s.Name == name {
			return s, nil
		}
	}
	return CertStatus{}, errors.New("no status for " + name)
}

package origin

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// selfSigned returns a certificate for 127.0.0.1 and origin.test, and a
// pool that trusts it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "origin.test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"origin.test"},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// hello records what the TLS server saw from the client.
type hello struct {
	mu        sync.Mutex
	sni       string
	protocols []string
}

func startTLSServer(t *testing.T, cert tls.Certificate) (string, *hello) {
	t.Helper()
	h := &hello{}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		GetConfigForClient: func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
			h.mu.Lock()
			h.sni, h.protocols = chi.ServerName, chi.SupportedProtos
			h.mu.Unlock()
			return nil, nil
		},
	}
	ln := listenLoopback(t)
	s := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("secure") }}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(tls.NewListener(ln, cfg))
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.ShutdownWithContext(ctx)
		<-done
	})
	return ln.Addr().String(), h
}

func TestClientHTTPS(t *testing.T) {
	cert, pool := selfSigned(t)
	addr, seen := startTLSServer(t, cert)
	tests := []struct {
		name       string
		tls        *tls.Config
		wantErr    error
		wantInErr  string
		wantSNI    string
		checkHello bool
	}{
		{"trusted, ip host", &tls.Config{RootCAs: pool}, nil, "", "", true},
		{"trusted, server name for sni", &tls.Config{RootCAs: pool, ServerName: "origin.test", NextProtos: []string{"h2"}}, nil, "", "origin.test", true},
		{"system roots do not trust it", nil, ErrRefused, "certificate", "", false},
		{"name mismatch", &tls.Config{RootCAs: pool, ServerName: "other.test"}, ErrRefused, "certificate", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestClient(t, ClientConfig{URL: "https://" + addr, TLS: tt.tls})
			status, body, err := get(t, c, "/")
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.wantInErr) {
					t.Fatalf("Do: got %v, want %v mentioning %q", err, tt.wantErr, tt.wantInErr)
				}
				sentinel(t, err)
				return
			}
			if err != nil || status != 200 || body != "secure" {
				t.Fatalf("Do: got %d %q %v, want 200 %q", status, body, err, "secure")
			}
			if tt.checkHello {
				seen.mu.Lock()
				defer seen.mu.Unlock()
				if seen.sni != tt.wantSNI {
					t.Errorf("SNI: got %q, want %q", seen.sni, tt.wantSNI)
				}
				if len(seen.protocols) != 1 || seen.protocols[0] != "http/1.1" {
					t.Errorf("ALPN offered: got %q, want [http/1.1] (never h2)", seen.protocols)
				}
			}
		})
	}
	if tt := (&tls.Config{}); tt.NextProtos != nil {
		t.Fatal("caller's tls.Config was modified")
	}
}

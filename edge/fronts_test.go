package edge

import (
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
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeshield/edgeshield/edge/certs"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// testCert writes a self-signed certificate for edge.test and 127.0.0.1
// and returns the files and a pool trusting it.
func testCert(t testing.TB) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "edge.test"},
		DNSNames:              []string{"edge.test"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(c)
	return certFile, keyFile, pool
}

// tlsNode is a node with HTTPS (a manual certificate), HTTP/2 and HTTP/3,
// and one client per protocol.
type tlsNode struct {
	*Node
	clients map[string]*http.Client // by protocol: h1, h2, h3
	base    string                  // https://edge.test:<port>
}

func newTLSTestNode(t testing.TB, originURL string, clock *testClock, mutate func(*Config)) *tlsNode {
	t.Helper()
	certFile, keyFile, pool := testCert(t)
	n := newTestNode(t, originURL, clock, func(c *Config) {
		c.TLS.Mode = "manual"
		c.TLS.Listen = "127.0.0.1:0"
		c.TLS.HTTP = "serve"
		c.TLS.Storage = t.TempDir()
		c.TLS.DefaultServerName = "edge.test"
		c.TLS.Certificates = []certs.CertFile{{Cert: certFile, Key: keyFile}}
		if mutate != nil {
			mutate(c)
		}
	})
	addr := n.TLSAddr()
	dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	tc := func(protos ...string) *tls.Config {
		return &tls.Config{RootCAs: pool, ServerName: "edge.test", NextProtos: protos}
	}
	tn := &tlsNode{Node: n, base: "https://edge.test:" + portOf(addr), clients: map[string]*http.Client{
		protoH1: {Timeout: 20 * time.Second, Transport: &http.Transport{DialContext: dial, TLSClientConfig: tc("http/1.1"), DisableCompression: true}},
		protoH2: {Timeout: 20 * time.Second, Transport: &http.Transport{DialContext: dial, TLSClientConfig: tc("h2"), ForceAttemptHTTP2: true, DisableCompression: true}},
		protoH3: {Timeout: 20 * time.Second, Transport: &http3.Transport{TLSClientConfig: tc(),
			Dial: func(ctx context.Context, _ string, tlsConf *tls.Config, qc *quic.Config) (*quic.Conn, error) {
				return quic.DialAddr(ctx, addr, tlsConf, qc)
			}, DisableCompression: true}},
	}}
	t.Cleanup(func() {
		for _, c := range tn.clients {
			if tr, ok := c.Transport.(interface{ CloseIdleConnections() }); ok {
				tr.CloseIdleConnections()
			}
			if tr, ok := c.Transport.(io.Closer); ok {
				tr.Close()
			}
		}
	})
	return tn
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// fetch sends a request over proto and checks the response came over it.
func (tn *tlsNode) fetch(t *testing.T, proto, method, path string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, tn.base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hdr {
		k, v, _ := strings.Cut(h, ":")
		req.Header.Add(k, strings.TrimSpace(v))
	}
	resp, err := tn.clients[proto].Do(req)
	if err != nil {
		t.Fatalf("%s %s over %s: %v", method, path, proto, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s over %s: reading body: %v", method, path, proto, err)
	}
	want := map[string]string{protoH1: "HTTP/1.1", protoH2: "HTTP/2.0", protoH3: "HTTP/3.0"}[proto]
	if resp.Proto != want {
		t.Fatalf("%s %s over %s: resp.Proto %q, want %q", method, path, proto, resp.Proto, want)
	}
	return resp, string(b)
}

var allProtos = []string{protoH1, protoH2, protoH3}

// behaviourOrigin answers the paths of TestBehaviourOverEveryProtocol.
func behaviourOrigin(t *testing.T, clock *testClock, release <-chan struct{}, failing *atomicBool) *testOrigin {
	big := strings.Repeat("x", 256<<10)
	return newTestOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		if failing.get() {
			http.Error(w, "origin broken", http.StatusInternalServerError)
			return
		}
		switch r.URL.Path {
		case "/slow":
			time.Sleep(200 * time.Millisecond)
			w.Header().Set("Cache-Control", "max-age=60")
			io.WriteString(w, "slow")
		case "/vary":
			w.Header().Set("Cache-Control", "max-age=60")
			w.Header().Set("Vary", "Accept-Language")
			io.WriteString(w, "lang="+r.Header.Get("Accept-Language"))
		case "/swr":
			w.Header().Set("Cache-Control", "max-age=1, stale-while-revalidate=60, stale-if-error=600")
			w.Header().Set("ETag", `"v1"`)
			io.WriteString(w, "swr")
		case "/stream":
			w.Header().Set("Cache-Control", "max-age=60")
			// No Content-Length: fasthttp's HTTP/1.1 front sends a
			// body of known length only once it has all of it (a
			// limit of the HTTP/1.1 side, noted in the report).
			w.Header().Set("Content-Type", "application/octet-stream")
			io.WriteString(w, big)
			w.(http.Flusher).Flush()
			<-release // the second half only once the client saw the first
			io.WriteString(w, big)
		case "/hang":
			time.Sleep(1500 * time.Millisecond)
		default:
			w.Header().Set("Cache-Control", "max-age=60")
			w.Header().Set("ETag", `"e1"`)
			w.Header().Set("Content-Type", "application/octet-stream")
			if inm := r.Header.Get("If-None-Match"); inm == `"e1"` {
				w.WriteHeader(http.StatusNotModified)
				return
			}
			io.WriteString(w, "0123456789")
		}
	})
}

type atomicBool struct {
	mu sync.Mutex
	v  bool
}

func (b *atomicBool) get() bool  { b.mu.Lock(); defer b.mu.Unlock(); return b.v }
func (b *atomicBool) set(v bool) { b.mu.Lock(); b.v = v; b.mu.Unlock() }

// TestBehaviourOverEveryProtocol runs the edge's behaviours as one table
// over HTTP/1.1, HTTP/2 and HTTP/3 clients: the fronts only translate, so
// every row must hold whatever the protocol (issue 12).
func TestBehaviourOverEveryProtocol(t *testing.T) {
	for _, proto := range allProtos {
		t.Run(proto, func(t *testing.T) {
			clock := newTestClock()
			release := make(chan struct{})
			var failing atomicBool
			o := behaviourOrigin(t, clock, release, &failing)
			tn := newTLSTestNode(t, o.srv.URL, clock, func(c *Config) {
				c.Server.HealthPath = "/.edge/ready"
				c.Origin.HeaderTimeout = 500 * time.Millisecond
				c.Origin.HealthCheck.Interval = 0
			})
			fetch := func(method, path string, hdr ...string) (*http.Response, string) {
				t.Helper()
				return tn.fetch(t, proto, method, path, hdr...)
			}
			settle := func() {
				waitFor(t, "fills stored", 5*time.Second, func() bool { return tn.pipe.flights.Len() == 0 })
			}
			rows := []struct {
				name string
				run  func(t *testing.T)
			}{
				{"miss then hit with Age, Via, Cache-Status", func(t *testing.T) {
					r, b := fetch("GET", "/a")
					if r.StatusCode != 200 || b != "0123456789" || isHit(r) {
						t.Fatalf("first: got %d %q %q, want 200 miss", r.StatusCode, b, csOf(r))
					}
					settle()
					clock.advance(2 * time.Second)
					r, b = fetch("GET", "/a")
					if !isHit(r) || b != "0123456789" {
						t.Errorf("second: got Cache-Status %q body %q, want a hit", csOf(r), b)
					}
					if r.Header.Get("Age") != "2" || !strings.Contains(r.Header.Get("Via"), "edge-test") {
						t.Errorf("got Age %q Via %q, want Age 2 and our Via", r.Header.Get("Age"), r.Header.Get("Via"))
					}
					if got := o.count("/a"); got != 1 {
						t.Errorf("origin saw /a %d times, want 1", got)
					}
				}},
				{"HEAD hit keeps Content-Length", func(t *testing.T) {
					r, b := fetch("HEAD", "/a")
					if r.StatusCode != 200 || b != "" || r.ContentLength != 10 {
						t.Errorf("got %d body %q length %d, want 200, no body, length 10", r.StatusCode, b, r.ContentLength)
					}
				}},
				{"coalescing", func(t *testing.T) {
					var wg sync.WaitGroup
					for i := 0; i < 8; i++ {
						wg.Add(1)
						go func() {
							defer wg.Done()
							req, _ := http.NewRequest("GET", tn.base+"/slow", nil)
							resp, err := tn.clients[proto].Do(req)
							if err != nil {
								t.Errorf("coalesced GET: %v", err)
								return
							}
							b, _ := io.ReadAll(resp.Body)
							resp.Body.Close()
							if string(b) != "slow" {
								t.Errorf("coalesced GET: got %q, want slow", b)
							}
						}()
					}
					wg.Wait()
					if got := o.count("/slow"); got != 1 {
						t.Errorf("origin saw /slow %d times for 8 concurrent clients, want 1", got)
					}
				}},
				{"Vary", func(t *testing.T) {
					fetch("GET", "/vary", "Accept-Language: de")
					settle()
					_, b := fetch("GET", "/vary", "Accept-Language: fr")
					settle()
					r, b2 := fetch("GET", "/vary", "Accept-Language: de")
					if b != "lang=fr" || b2 != "lang=de" || !isHit(r) {
						t.Errorf("got %q then %q (%q), want lang=fr then a hit lang=de", b, b2, csOf(r))
					}
				}},
				{"range and multipart", func(t *testing.T) {
					r, b := fetch("GET", "/a", "Range: bytes=2-5")
					if r.StatusCode != 206 || b != "2345" || r.Header.Get("Content-Range") != "bytes 2-5/10" {
						t.Errorf("got %d %q %q, want 206 2345", r.StatusCode, b, r.Header.Get("Content-Range"))
					}
					r, b = fetch("GET", "/a", "Range: bytes=0-1,8-9")
					if r.StatusCode != 206 || !strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/byteranges") ||
						!strings.Contains(b, "01") || !strings.Contains(b, "89") {
						t.Errorf("got %d %q %q, want 206 multipart with 01 and 89", r.StatusCode, r.Header.Get("Content-Type"), b)
					}
				}},
				{"304 from the cache", func(t *testing.T) {
					r, b := fetch("GET", "/a", `If-None-Match: "e1"`)
					if r.StatusCode != 304 || b != "" || !isHit(r) {
						t.Errorf("got %d %q %q, want a 304 hit", r.StatusCode, b, csOf(r))
					}
				}},
				{"stale-while-revalidate then stale-if-error", func(t *testing.T) {
					fetch("GET", "/swr")
					settle()
					clock.advance(5 * time.Second)
					r, b := fetch("GET", "/swr")
					if b != "swr" || !strings.Contains(csOf(r), "hit") || !strings.Contains(csOf(r), "stale") && r.Header.Get("Age") == "" {
						t.Errorf("within swr: got %q %q, want the stale copy", b, csOf(r))
					}
					settle()
					failing.set(true)
					defer failing.set(false)
					clock.advance(120 * time.Second)
					r, b = fetch("GET", "/swr")
					if r.StatusCode != 200 || b != "swr" {
						t.Errorf("origin failing within stale-if-error: got %d %q, want 200 swr", r.StatusCode, b)
					}
				}},
				{"purge", func(t *testing.T) {
					if _, err := tn.Purge("url", "edge.test:"+portOf(tn.TLSAddr())+"/a", true, 0); err != nil {
						t.Fatal(err)
					}
					r, _ := fetch("GET", "/a")
					if isHit(r) || o.count("/a") != 2 {
						t.Errorf("after purge: %q, origin count %d; want a miss and 2", csOf(r), o.count("/a"))
					}
					settle()
				}},
				{"streams a large body while it fills", func(t *testing.T) {
					req, _ := http.NewRequest("GET", tn.base+"/stream", nil)
					resp, err := tn.clients[proto].Do(req)
					if err != nil {
						t.Fatal(err)
					}
					defer resp.Body.Close()
					first := make([]byte, 256<<10)
					_, err = io.ReadFull(resp.Body, first) // before the origin sent the rest
					close(release)
					if err != nil {
						t.Fatalf("first half: %v", err)
					}
					rest, err := io.ReadAll(resp.Body)
					if err != nil || len(rest) != 256<<10 {
						t.Errorf("second half: %d bytes, %v; want 256 KiB", len(rest), err)
					}
				}},
				{"504 on origin timeout", func(t *testing.T) {
					r, _ := fetch("GET", "/hang")
					if r.StatusCode != 504 {
						t.Errorf("got %d, want 504", r.StatusCode)
					}
				}},
				{"health then drain", func(t *testing.T) {
					r, _ := fetch("GET", "/.edge/ready")
					if r.StatusCode != 200 {
						t.Errorf("ready: got %d, want 200", r.StatusCode)
					}
					tn.pipe.draining.Store(true)
					defer tn.pipe.draining.Store(false)
					r, _ = fetch("GET", "/.edge/ready")
					if r.StatusCode != 503 {
						t.Errorf("draining: got %d, want 503", r.StatusCode)
					}
				}},
			}
			for _, row := range rows {
				t.Run(row.name, row.run)
			}
		})
	}
}

// Test502OverEveryProtocol: an unreachable origin is a 502 on every front.
func Test502OverEveryProtocol(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	tn := newTLSTestNode(t, dead, nil, func(c *Config) { c.Origin.HealthCheck.Interval = 0 })
	for _, proto := range allProtos {
		t.Run(proto, func(t *testing.T) {
			r, _ := tn.fetch(t, proto, "GET", "/x")
			if r.StatusCode != 502 {
				t.Errorf("got %d, want 502", r.StatusCode)
			}
		})
	}
}

// TestHTTP2RapidResetDisconnects: a client that opens and cancels streams
// in a loop (CVE-2023-44487) is disconnected after a bounded number,
// while the node keeps serving others.
func TestHTTP2RapidResetDisconnects(t *testing.T) {
	o := newTestOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		io.WriteString(w, "ok")
	})
	tn := newTLSTestNode(t, o.srv.URL, nil, nil)
	tn.fetch(t, protoH2, "GET", "/a") // cached: each reset stream would be a cheap hit

	c, err := tls.Dial("tcp", tn.TLSAddr(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("ALPN: got %q, want h2", p)
	}
	io.WriteString(c, http2.ClientPreface)
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "edge.test"}, {":path", "/a"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	const attempts = 5000
	sent := 0
	for ; sent < attempts; sent++ {
		id := uint32(2*sent + 1)
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
			break
		}
		if err := fr.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
			break
		}
	}
	// The server must end the connection: a GOAWAY or a close, not a
	// read timeout.
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var rerr error
	for rerr == nil {
		var f http2.Frame
		f, rerr = fr.ReadFrame()
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			t.Logf("GOAWAY %v after %d streams sent", ga.ErrCode, sent)
			break
		}
	}
	var ne net.Error
	if errors.As(rerr, &ne) && ne.Timeout() {
		t.Fatalf("after %d HEADERS+RST_STREAM pairs the connection is still open; want it closed", sent)
	}
	if got := tn.fronts.h2.resets.Load(); got != 1 {
		t.Errorf("connections closed for rapid resets: got %d, want 1", got)
	}
	// Others are still served.
	if r, b := tn.fetch(t, protoH2, "GET", "/a"); r.StatusCode != 200 || b != "ok" {
		t.Errorf("another client after the attack: got %d %q, want 200 ok", r.StatusCode, b)
	}
}

// TestFrontLimits: oversized header lists are refused over HTTP/2 and
// HTTP/3 (HPACK/QPACK bombs cost at most server.max_header_bytes), HTTPS
// responses advertise HTTP/3, and shutdown stops both fronts.
func TestFrontLimits(t *testing.T) {
	o := newTestOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		io.WriteString(w, "ok")
	})
	tn := newTLSTestNode(t, o.srv.URL, nil, func(c *Config) { c.Server.MaxHeaderBytes = 8 << 10 })
	wantAlt := `h3=":` + portOf(tn.TLSAddr()) + `"; ma=86400`
	for _, proto := range allProtos {
		t.Run(proto, func(t *testing.T) {
			r, _ := tn.fetch(t, proto, "GET", "/a")
			if proto != protoH3 && r.Header.Get("Alt-Svc") != wantAlt {
				t.Errorf("Alt-Svc: got %q, want %q", r.Header.Get("Alt-Svc"), wantAlt)
			}
			if proto == protoH1 {
				return
			}
			req, _ := http.NewRequest("GET", tn.base+"/a", nil)
			for i := 0; i < 64; i++ {
				req.Header.Add(fmt.Sprintf("X-Bomb-%d", i), strings.Repeat("b", 1024))
			}
			resp, err := tn.clients[proto].Do(req)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
					t.Errorf("64 KiB of header fields: got %d, want 431 or a refused request", resp.StatusCode)
				}
			}
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tn.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	for _, proto := range []string{protoH2, protoH3} {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", tn.base+"/a", nil)
		if resp, err := tn.clients[proto].Do(req); err == nil {
			resp.Body.Close()
			t.Errorf("%s after Shutdown: got %d, want no answer", proto, resp.StatusCode)
		}
	}
}

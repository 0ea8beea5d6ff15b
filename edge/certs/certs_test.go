package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/valyala/fasthttp"
)

func TestNewValidation(t *testing.T) {
	dir := t.TempDir()
	good, _ := writeCertFiles(t, dir, "good", []string{"good.test"}, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	tests := []struct {
		name string
		cfg  Config
		want string // substring of the error
	}{
		{"unknown mode", Config{Mode: "magic", Storage: dir}, `mode "magic"`},
		{"no storage", Config{Mode: ModeInternal}, "storage: required"},
		{"acme without terms", Config{Mode: ModeACME, Storage: dir, Names: []string{"a.test"}}, "agree_terms"},
		{"acme without challenges", Config{Mode: ModeACME, Storage: dir, AgreeTerms: true, DisableHTTPChallenge: true, DisableTLSALPNChallenge: true}, "both ACME challenges"},
		{"manual without certs", Config{Mode: ModeManual, Storage: dir}, "at least one certificate"},
		{"manual with names", Config{Mode: ModeManual, Storage: dir, Certificates: []CertFile{good}, Names: []string{"a.test"}}, "cannot manage names"},
		{"bad name", Config{Mode: ModeInternal, Storage: dir, Names: []string{"a b.test"}}, "not a valid host name"},
		{"wildcard name", Config{Mode: ModeInternal, Storage: dir, Names: []string{"*.a.test"}}, "DNS-01"},
		{"cert without key", Config{Mode: ModeManual, Storage: dir, Certificates: []CertFile{{Cert: good.Cert}}}, "both cert and key"},
		{"port range", Config{Mode: ModeInternal, Storage: dir, TLSPort: 70000}, "tls_port 70000"},
		{"ratio", Config{Mode: ModeInternal, Storage: dir, RenewalWindowRatio: 1}, "renewal window ratio"},
		{"on-demand without allow-list", Config{Mode: ModeInternal, Storage: dir, OnDemand: &OnDemand{}}, "non-empty allow-list"},
		{"on-demand bad pattern", Config{Mode: ModeInternal, Storage: dir, OnDemand: &OnDemand{Allow: []string{"*.*.a.test"}}}, "allow pattern"},
		{"negative rate", Config{Mode: ModeInternal, Storage: dir, OnDemand: &OnDemand{Allow: []string{"a.test"}, RateLimit: -1}}, "must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := New(context.Background(), tt.cfg)
			if err == nil {
				m.Close()
				t.Fatalf("New: got nil error, want one containing %q", tt.want)
			}
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New: got %v, want ErrInvalidConfig containing %q", err, tt.want)
			}
		})
	}
}

func TestOffMode(t *testing.T) {
	m := newManager(t, Config{})
	if got := m.TLSConfig(); got != nil {
		t.Errorf("TLSConfig in off mode: got %v, want nil", got)
	}
	if got := m.Status(); len(got) != 0 {
		t.Errorf("Status in off mode: got %v, want empty", got)
	}
	if err := m.ExportRoot(io.Discard); !errors.Is(err, ErrNoInternalCA) {
		t.Errorf("ExportRoot in off mode: got %v, want ErrNoInternalCA", err)
	}
	if err := m.Close(); err != nil {
		t.Errorf("second Close: got %v, want nil", err)
	}
}

func TestTLSConfigShape(t *testing.T) {
	m := newManager(t, Config{Mode: ModeInternal, Storage: t.TempDir(), Logger: testLogger(t)})
	c := m.TLSConfig()
	if c.MinVersion != tls.VersionTLS12 {
		t.Errorf("MinVersion: got %x, want %x", c.MinVersion, tls.VersionTLS12)
	}
	if got, want := strings.Join(c.NextProtos, ","), "http/1.1,acme-tls/1"; got != want {
		t.Errorf("NextProtos: got %q, want %q", got, want)
	}
	if c.SessionTicketsDisabled {
		t.Error("SessionTicketsDisabled: got true, want false (resumption on)")
	}
	insecure := map[uint16]bool{}
	for _, s := range tls.InsecureCipherSuites() {
		insecure[s.ID] = true
	}
	for _, id := range c.CipherSuites {
		if insecure[id] {
			t.Errorf("cipher suite %s is insecure", tls.CipherSuiteName(id))
		}
	}
	c.NextProtos = append(c.NextProtos, "h2")
	if got := m.TLSConfig().NextProtos; len(got) != 2 {
		t.Errorf("TLSConfig returned shared state: mutation leaked, got NextProtos %v", got)
	}
}

// internalNode starts an internal-mode Manager serving HTTPS on loopback and
// waits until name is served. It returns the Manager, the TLS address and
// the exported root pool.
func internalNode(t *testing.T, cfg Config, waitFor string) (*Manager, string, *x509.CertPool) {
	t.Helper()
	tlsLn := listen(t)
	cfg.Mode = ModeInternal
	if cfg.Storage == "" {
		cfg.Storage = t.TempDir()
	}
	cfg.Logger = testLogger(t)
	cfg.TLSPort = portOf(tlsLn)
	m := newManager(t, cfg)
	serveNode(t, m, tlsLn, nil, "internal")
	var root bytes.Buffer
	if err := m.ExportRoot(&root); err != nil {
		t.Fatalf("ExportRoot: %v", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(root.Bytes()) {
		t.Fatalf("ExportRoot: got %q, want a PEM certificate", root.String())
	}
	addr := tlsLn.Addr().String()
	if waitFor != "" {
		eventually(t, 20*time.Second, "internal certificate for "+waitFor, func() error {
			_, err := handshake(addr, waitFor, roots)
			return err
		})
	}
	return m, addr, roots
}

func TestInternalModeServesVerifiedChain(t *testing.T) {
	m, addr, roots := internalNode(t, Config{Names: []string{"www.dev.test", "api.dev.test"}}, "www.dev.test")
	for _, name := range []string{"www.dev.test", "api.dev.test"} {
		t.Run(name, func(t *testing.T) {
			var status int
			var body, alpn string
			eventually(t, 20*time.Second, "GET "+name, func() (err error) {
				status, body, alpn, err = httpsGet(addr, name, roots)
				return err
			})
			if status != 200 || body != "hello from internal" {
				t.Errorf("GET: got %d %q, want 200 %q", status, body, "hello from internal")
			}
			if alpn != "http/1.1" {
				t.Errorf("ALPN: got %q, want http/1.1 (h2 was offered and must be refused)", alpn)
			}
			st, err := statusOf(m, name)
			if err != nil {
				t.Fatal(err)
			}
			if st.Source != ModeInternal || !st.Managed || st.LastError != "" {
				t.Errorf("Status: got source=%q managed=%v lastError=%q, want internal, true, \"\"", st.Source, st.Managed, st.LastError)
			}
			if !strings.HasPrefix(st.Issuer, "Edgeshield Internal Root CA") {
				t.Errorf("Status.Issuer: got %q, want the internal root", st.Issuer)
			}
			if !st.NextRenewal.Before(st.NotAfter) || time.Until(st.NextRenewal) <= 0 {
				t.Errorf("Status.NextRenewal: got %v (NotAfter %v), want in the future before expiry", st.NextRenewal, st.NotAfter)
			}
		})
	}
}

func TestInternalCASharedThroughStorage(t *testing.T) {
	storage := t.TempDir()
	a := newManager(t, Config{Mode: ModeInternal, Storage: storage, Logger: testLogger(t)})
	b := newManager(t, Config{Mode: ModeInternal, Storage: storage, Logger: testLogger(t)})
	var ra, rb bytes.Buffer
	if err := a.ExportRoot(&ra); err != nil {
		t.Fatal(err)
	}
	if err := b.ExportRoot(&rb); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ra.Bytes(), rb.Bytes()) {
		t.Error("two Managers on one storage: got different internal roots, want the same")
	}
}

func TestHandshakeBadInput(t *testing.T) {
	_, addr, roots := internalNode(t, Config{Names: []string{"known.dev.test"}}, "known.dev.test")
	tests := []struct {
		name    string
		sni     string
		wantErr bool
	}{
		{"known SNI", "known.dev.test", false},
		{"unknown SNI", "random-1234.attacker.test", true},
		{"no SNI and no default", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// ServerName "" sends no SNI (RFC 6066 §3); verify against
			// the known name so the only failure is the server's refusal.
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{
				ServerName:         tt.sni,
				RootCAs:            roots,
				InsecureSkipVerify: tt.sni == "",
			})
			if conn != nil {
				conn.Close()
			}
			if gotErr := err != nil; gotErr != tt.wantErr {
				t.Fatalf("handshake with SNI %q: got err=%v, want error=%v", tt.sni, err, tt.wantErr)
			}
		})
	}
	t.Run("plain HTTP on the TLS port", func(t *testing.T) {
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: known.dev.test\r\n\r\n")
		got, _ := io.ReadAll(conn)
		conn.Close()
		if bytes.Contains(got, []byte("hello from")) {
			t.Errorf("plain HTTP on the TLS port: got %q, want no application response", got)
		}
		// The server must still work afterwards.
		if _, err := handshake(addr, "known.dev.test", roots); err != nil {
			t.Errorf("handshake after plain HTTP: %v", err)
		}
	})
}

func TestDefaultServerNameForNoSNI(t *testing.T) {
	_, addr, roots := internalNode(t, Config{Names: []string{"default.dev.test"}, DefaultServerName: "default.dev.test"}, "default.dev.test")
	conn, err := tls.Dial("tcp", addr, &tls.Config{
		InsecureSkipVerify: true, // no SNI: verify by hand below
	})
	if err != nil {
		t.Fatalf("handshake without SNI: %v", err)
	}
	defer conn.Close()
	leaf := conn.ConnectionState().PeerCertificates[0]
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "default.dev.test", Roots: roots}); err != nil {
		t.Errorf("no-SNI certificate: got %v, want the default name's certificate", leaf.DNSNames)
	}
}

func TestManualCertificates(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	good, goodCert := writeCertFiles(t, dir, "good", []string{"manual.test"}, now.Add(-time.Hour), now.Add(24*time.Hour))
	expired, _ := writeCertFiles(t, dir, "expired", []string{"old.test"}, now.Add(-48*time.Hour), now.Add(-time.Hour))
	other, _ := writeCertFiles(t, dir, "other", []string{"other.test"}, now.Add(-time.Hour), now.Add(time.Hour))

	t.Run("load errors name the file", func(t *testing.T) {
		tests := []struct {
			name     string
			file     CertFile
			wantIs   error
			wantFile string
		}{
			{"expired certificate", expired, ErrCertExpired, expired.Cert},
			{"missing key file", CertFile{Cert: good.Cert, Key: filepath.Join(dir, "nope.key")}, ErrCertFile, "nope.key"},
			// Root reads files despite permissions, so a directory stands
			// in for an unreadable key file.
			{"unreadable key file", CertFile{Cert: good.Cert, Key: dir}, ErrCertFile, dir},
			{"missing certificate", CertFile{Cert: filepath.Join(dir, "nope.crt"), Key: good.Key}, ErrCertFile, "nope.crt"},
			{"key does not match", CertFile{Cert: good.Cert, Key: other.Key}, ErrCertFile, other.Key},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				m, err := New(context.Background(), Config{Mode: ModeManual, Storage: t.TempDir(), Certificates: []CertFile{tt.file}, Logger: testLogger(t)})
				if err == nil {
					m.Close()
					t.Fatal("New: got nil error")
				}
				if !errors.Is(err, tt.wantIs) || !strings.Contains(err.Error(), tt.wantFile) {
					t.Errorf("New: got %v, want %v naming %s", err, tt.wantIs, tt.wantFile)
				}
			})
		}
	})

	t.Run("serve, reload, keep old on bad file, poll", func(t *testing.T) {
		pair := CertFile{Cert: filepath.Join(dir, "live.crt"), Key: filepath.Join(dir, "live.key")}
		copyPair(t, good, pair)
		tlsLn := listen(t)
		m := newManager(t, Config{Mode: ModeManual, Storage: t.TempDir(), Certificates: []CertFile{pair},
			ReloadInterval: 20 * time.Millisecond, Logger: testLogger(t)})
		serveNode(t, m, tlsLn, nil, "manual")
		addr := tlsLn.Addr().String()

		// served returns the leaf the server presents (the test
		// certificates are self-signed, so compare instead of verifying).
		served := func() *x509.Certificate {
			t.Helper()
			conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "manual.test", InsecureSkipVerify: true})
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			defer conn.Close()
			return conn.ConnectionState().PeerCertificates[0]
		}
		if got := served(); !got.Equal(goodCert) {
			t.Fatalf("served: got serial %x, want %x", got.SerialNumber, goodCert.SerialNumber)
		}
		st, err := statusOf(m, "manual.test")
		if err != nil || st.Source != ModeManual || st.Managed || !st.NotAfter.Equal(goodCert.NotAfter) {
			t.Errorf("Status: got %+v (%v), want source manual, unmanaged, NotAfter %v", st, err, goodCert.NotAfter)
		}

		// A broken file: Reload reports it, the old certificate stays.
		if err := os.WriteFile(pair.Key, []byte("garbage"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := m.Reload(); !errors.Is(err, ErrCertFile) {
			t.Errorf("Reload with a broken key: got %v, want ErrCertFile", err)
		}
		if got := served(); !got.Equal(goodCert) {
			t.Errorf("after failed reload: got serial %x, want the old %x", got.SerialNumber, goodCert.SerialNumber)
		}

		// A new valid pair is picked up by the poller, without Reload.
		next, nextCert := writeCertFiles(t, dir, "next", []string{"manual.test"}, now.Add(-time.Hour), now.Add(48*time.Hour))
		copyPair(t, next, pair)
		eventually(t, 10*time.Second, "poller serves the new certificate", func() error {
			if got := served(); !got.Equal(nextCert) {
				return fmt.Errorf("serial %x, want %x", got.SerialNumber, nextCert.SerialNumber)
			}
			return nil
		})
		if err := m.Reload(); err != nil {
			t.Errorf("Reload of unchanged files: got %v, want nil", err)
		}
	})
}

func copyPair(t *testing.T, from, to CertFile) {
	t.Helper()
	for _, p := range [][2]string{{from.Cert, to.Cert}, {from.Key, to.Key}} {
		b, err := os.ReadFile(p[0])
		if err != nil {
			t.Fatal(err)
		}
		// Write to a temp name and rename: the poller never sees half a file.
		tmp := p[1] + ".tmp"
		if err := os.WriteFile(tmp, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, p[1]); err != nil {
			t.Fatal(err)
		}
	}
}

func TestOnDemandInternal(t *testing.T) {
	m, addr, roots := internalNode(t, Config{OnDemand: &OnDemand{Allow: []string{"*.tenants.test", "exact.test"}, RateLimit: 2, Interval: time.Hour}}, "")
	tests := []struct {
		sni     string
		wantErr error
	}{
		{"a.tenants.test", nil},
		{"exact.test", nil},
		{"a.tenants.test", nil}, // cached: no new order, not rate limited
		{"deep.a.tenants.test", ErrNotAllowed},
		{"evil.test", ErrNotAllowed},
		{"b.tenants.test", ErrRateLimited}, // third order within the hour
	}
	for _, tt := range tests {
		t.Run(tt.sni, func(t *testing.T) {
			_, err := handshake(addr, tt.sni, roots)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("handshake: got %v, want success", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("handshake: got success, want failure (%v)", tt.wantErr)
			}
			// The client sees only an alert; the reason is in Status.
			if tt.wantErr == ErrRateLimited {
				st, err := statusOf(m, tt.sni)
				if err != nil || !strings.Contains(st.LastError, "rate limited") {
					t.Errorf("Status: got %+v (%v), want LastError mentioning the rate limit", st, err)
				}
			}
		})
	}
	if err := m.decide(context.Background(), "evil.test"); !errors.Is(err, ErrNotAllowed) {
		t.Errorf("decide(evil.test): got %v, want ErrNotAllowed", err)
	}
	for _, s := range m.Status() {
		if s.Name == "evil.test" || s.Name == "deep.a.tenants.test" {
			t.Errorf("Status lists %q, which must never have been ordered", s.Name)
		}
	}
}

func TestAllowList(t *testing.T) {
	a := newAllowList([]string{"*.Example.com", "exact.test."})
	tests := []struct {
		name string
		want bool
	}{
		{"a.example.com", true},
		{"example.com", false},
		{"a.b.example.com", false},
		{"exact.test", true},
		{"x.exact.test", false},
		{"", false},
		{".example.com", false},
		{"*.example.com", false},
		{"aexample.com", false},
	}
	for _, tt := range tests {
		if got := a.match(tt.name); got != tt.want {
			t.Errorf("match(%q): got %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestRateLimiter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRateLimiter(2, time.Minute, time.Now)
		steps := []struct {
			wait time.Duration
			want bool
		}{
			{0, true}, {0, true}, {0, false},
			{59 * time.Second, false},
			{time.Second, true}, // the first two left the window
			{0, true}, {0, false},
		}
		for i, s := range steps {
			time.Sleep(s.wait) // synctest: advances the fake clock
			if got := r.allow(); got != s.want {
				t.Fatalf("step %d: allow got %v, want %v", i, got, s.want)
			}
		}
	})
}

func TestRedirectHandler(t *testing.T) {
	tests := []struct {
		name    string
		port    int
		host    string
		uri     string
		wantLoc string
		want    int
	}{
		{"default port", 0, "example.com", "/a/b?x=1&y=%20", "https://example.com/a/b?x=1&y=%20", 308},
		{"strips http port", 0, "example.com:80", "/", "https://example.com/", 308},
		{"alternate port", 8443, "Example.COM:8080", "/p", "https://example.com:8443/p", 308},
		{"ipv4", 0, "192.0.2.1", "/", "https://192.0.2.1/", 308},
		{"ipv6", 8443, "[2001:db8::1]:80", "/", "https://[2001:db8::1]:8443/", 308},
		{"no host", 0, "", "/", "", 400},
		{"bad host", 0, "evil.com/@x", "/", "", 400},
		{"wildcard host", 0, "*.example.com", "/", "", 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &Manager{cfg: Config{TLSPort: tt.port}}
			var ctx fasthttp.RequestCtx
			ctx.Request.SetRequestURI(tt.uri)
			ctx.Request.Header.SetHost(tt.host)
			m.RedirectHandler()(&ctx)
			if got := ctx.Response.StatusCode(); got != tt.want {
				t.Fatalf("status: got %d, want %d", got, tt.want)
			}
			if got := string(ctx.Response.Header.Peek("Location")); got != tt.wantLoc {
				t.Errorf("Location: got %q, want %q", got, tt.wantLoc)
			}
		})
	}
}

func FuzzRedirectTarget(f *testing.F) {
	for _, s := range []string{"example.com", "a:1", "[::1]:80", "[fe80::1%25eth0]", "", "::", "a..b", "*.x", "x/y"} {
		f.Add(s, "/p?q")
	}
	f.Fuzz(func(t *testing.T, host, uri string) {
		target, ok := redirectTarget([]byte(host), []byte(uri), 8443)
		if !ok {
			return
		}
		// Whatever the input, an accepted target has an https scheme, a
		// host without path characters, and the path starts with "/".
		rest, found := strings.CutPrefix(target, "https://")
		if !found {
			t.Fatalf("target %q lacks https://", target)
		}
		slash := strings.IndexByte(rest, '/')
		if slash < 0 {
			t.Fatalf("target %q has no path", target)
		}
		if h := rest[:slash]; strings.ContainsAny(h, "/?#@ \r\n") {
			t.Fatalf("target %q: host part %q holds a delimiter", target, h)
		}
	})
}

func TestHTTPHandlerWithoutChallenge(t *testing.T) {
	// acme mode against a CA that is never contacted (no names).
	m := newManager(t, Config{Mode: ModeACME, AgreeTerms: true, CA: "https://127.0.0.1:1/dir", Storage: t.TempDir(), Logger: testLogger(t)})
	h := m.HTTPHandler(okHandler("next"))
	for _, path := range []string{"/", "/.well-known/acme-challenge/unknowntoken", "/.well-known/acme-challenge/"} {
		t.Run(path, func(t *testing.T) {
			var ctx fasthttp.RequestCtx
			ctx.Request.SetRequestURI(path)
			ctx.Request.Header.SetHost("site.test")
			h(&ctx)
			if got := string(ctx.Response.Body()); got != "hello from next" || ctx.Response.StatusCode() != 200 {
				t.Errorf("got %d %q, want 200 from next", ctx.Response.StatusCode(), got)
			}
		})
	}
}

func TestRootPEMVerifiesLeaf(t *testing.T) {
	// ExportRoot's PEM is a CA certificate with the signing key usage.
	m := newManager(t, Config{Mode: ModeInternal, Storage: t.TempDir(), Logger: testLogger(t)})
	var buf bytes.Buffer
	if err := m.ExportRoot(&buf); err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(buf.Bytes())
	if blk == nil || blk.Type != "CERTIFICATE" {
		t.Fatalf("ExportRoot: got %q, want a CERTIFICATE block", buf.String())
	}
	root, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !root.IsCA || root.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("root: got IsCA=%v usage=%v, want a CA that signs certificates", root.IsCA, root.KeyUsage)
	}
}

func TestOnDemandEventChargesOrdersOnly(t *testing.T) {
	m := newManager(t, Config{Mode: ModeInternal, Storage: t.TempDir(), Logger: testLogger(t),
		OnDemand: &OnDemand{Allow: []string{"*.t.test"}, RateLimit: 1, Interval: time.Hour}})
	ctx := context.Background()
	steps := []struct {
		name    string
		event   string
		renewal bool
		wantErr bool
	}{
		{"first order", "cert_obtaining", false, false},
		{"renewal is not charged", "cert_obtaining", true, false},
		{"other events are not charged", "cached_managed_cert", false, false},
		{"second order refused", "cert_obtaining", false, true},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			err := m.onDemandEvent(ctx, s.event, map[string]any{"identifier": "x.t.test", "renewal": s.renewal})
			if gotErr := err != nil; gotErr != s.wantErr {
				t.Fatalf("got %v, want error=%v", err, s.wantErr)
			}
			if s.wantErr {
				var noRetry certmagic.ErrNoRetry
				if !errors.Is(err, ErrRateLimited) || !errors.As(err, &noRetry) {
					t.Errorf("got %v, want ErrRateLimited inside certmagic.ErrNoRetry", err)
				}
			}
		})
	}
	// With the window full, decide refuses before certmagic touches storage.
	if err := m.decide(ctx, "new.t.test"); !errors.Is(err, ErrRateLimited) {
		t.Errorf("decide with a full window: got %v, want ErrRateLimited", err)
	}
}

func FuzzAllowList(f *testing.F) {
	for _, s := range []string{"a.example.com", "example.com", "*.example.com", "", ".", "a..example.com", "A.EXAMPLE.COM."} {
		f.Add(s)
	}
	a := newAllowList([]string{"*.example.com", "exact.test"})
	f.Fuzz(func(t *testing.T, name string) {
		n := normalizeName(name)
		_ = validName(n)
		if !a.match(n) {
			return
		}
		// A match is the exact entry or exactly one non-empty label
		// without '*' in front of the wildcard's suffix.
		if n == "exact.test" {
			return
		}
		label, rest, ok := strings.Cut(n, ".")
		if !ok || rest != "example.com" || label == "" || strings.Contains(label, "*") {
			t.Fatalf("match(%q) = true, want false", n)
		}
	})
}

// TestOnDemandLoadsFromSharedStorageWhenRateLimited: a certificate another
// node obtained is served from storage even while this node's order budget
// is exhausted (loading is not an order).
func TestOnDemandLoadsFromSharedStorageWhenRateLimited(t *testing.T) {
	storage := t.TempDir()
	od := func() *OnDemand {
		return &OnDemand{Allow: []string{"*.shared.test"}, RateLimit: 1, Interval: time.Hour}
	}
	_, addrA, roots := internalNode(t, Config{Storage: storage, OnDemand: od()}, "")
	_, addrB, _ := internalNode(t, Config{Storage: storage, OnDemand: od()}, "")

	if _, err := handshake(addrA, "one.shared.test", roots); err != nil {
		t.Fatalf("node A orders one.shared.test: %v", err)
	}
	if _, err := handshake(addrB, "two.shared.test", roots); err != nil {
		t.Fatalf("node B orders two.shared.test (its one order): %v", err)
	}
	if _, err := handshake(addrB, "three.shared.test", roots); err == nil {
		t.Fatal("node B third.shared.test: got success, want the rate limit")
	}
	if _, err := handshake(addrB, "one.shared.test", roots); err != nil {
		t.Errorf("node B one.shared.test from shared storage: got %v, want success without an order", err)
	}
}

func TestCloseIdempotentAndRefusesHandshakes(t *testing.T) {
	m, addr, roots := internalNode(t, Config{Names: []string{"close.dev.test"}}, "close.dev.test")
	for i := range 2 {
		if err := m.Close(); err != nil {
			t.Fatalf("Close #%d: got %v, want nil", i+1, err)
		}
	}
	if _, err := handshake(addr, "close.dev.test", roots); err == nil {
		t.Error("handshake after Close: got success, want failure")
	}
	if err := m.Reload(); !errors.Is(err, ErrClosed) {
		t.Errorf("Reload after Close: got %v, want ErrClosed", err)
	}
}

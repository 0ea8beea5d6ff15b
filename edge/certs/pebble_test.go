package certs

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"go/build"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// This file runs a real ACME CA: Pebble (and pebble-challtestsrv as its
// DNS server), installed by .ci/install-pebble.sh. Without the binaries the
// tests skip, except under CI=true, where they fail.

// pebbleCA is one running Pebble with its DNS server.
type pebbleCA struct {
	dirURL  string
	tlsRoot string         // PEM file of Pebble's own HTTPS certificate
	roots   *x509.CertPool // Pebble's issuing root, for client checks
	out     *lockedBuffer  // Pebble's stdout (its log)
	proc    *exec.Cmd
}

type pebbleOpts struct {
	httpPort, tlsPort int           // where Pebble's VA validates
	validity          time.Duration // certificate lifetime; 0 = Pebble's 90 days
}

// orders counts the orders Pebble created so far, from its log ("Added
// order ... to the db" once per newOrder, wfe.go).
func (p *pebbleCA) orders() int { return strings.Count(p.out.String(), "Added order") }

// issued counts the certificates Pebble issued.
func (p *pebbleCA) issued() int { return strings.Count(p.out.String(), "Issued certificate serial") }

// stop kills Pebble (the CA becomes unreachable).
func (p *pebbleCA) stop() {
	_ = p.proc.Process.Kill()
}

func lookBinary(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	// Where `go install` puts it (the go command knows GOPATH best).
	gopath := build.Default.GOPATH
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil && len(strings.TrimSpace(string(out))) > 0 {
		gopath = strings.TrimSpace(string(out))
	}
	p := filepath.Join(gopath, "bin", name)
	if _, err := os.Stat(p); err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s not found in PATH or GOPATH/bin; CI must run .ci/install-pebble.sh", name)
	}
	t.Skipf("%s not installed (run .ci/install-pebble.sh); skipping the real-CA test", name)
	return ""
}

// freePort returns a loopback port that was free for both TCP and UDP a
// moment ago (for processes that cannot be handed a listener).
func freePort(t *testing.T) int {
	t.Helper()
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := portOf(ln)
		pc, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		ln.Close()
		if err == nil {
			pc.Close()
			return port
		}
	}
	t.Fatal("no free TCP+UDP port")
	return 0
}

// startProcess starts a helper binary whose output goes to out, and stops
// it at the end of the test.
func startProcess(t *testing.T, out *lockedBuffer, env []string, bin string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(bin), tail(out.String(), 80))
		}
	})
	return cmd
}

// startPebble runs pebble-challtestsrv (DNS only: every name resolves to
// 127.0.0.1, no AAAA so the VA never tries ::1) and Pebble in strict mode
// with its VA pointed at opts' ports.
func startPebble(t *testing.T, opts pebbleOpts) *pebbleCA {
	t.Helper()
	pebbleBin := lookBinary(t, "pebble")
	challBin := lookBinary(t, "pebble-challtestsrv")
	dir := t.TempDir()

	dnsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	challOut := &lockedBuffer{}
	startProcess(t, challOut, nil, challBin,
		"-dnsserver", dnsAddr,
		"-management", fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		"-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "",
		"-defaultIPv4", "127.0.0.1", "-defaultIPv6", "")

	// Pebble's own HTTPS certificate (ACME runs over TLS, RFC 8555 §6.1).
	now := time.Now()
	cert, _, certPEM, keyPEM := makeCert(t, certSpec{names: []string{"127.0.0.1", "localhost"}, notBefore: now.Add(-time.Hour), notAfter: now.Add(24 * time.Hour)})
	certFile, keyFile := filepath.Join(dir, "pebble.crt"), filepath.Join(dir, "pebble.key")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	listenAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	mgmtAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	validity := uint64(opts.validity / time.Second)
	conf := map[string]any{"pebble": map[string]any{
		"listenAddress":           listenAddr,
		"managementListenAddress": mgmtAddr,
		"certificate":             certFile,
		"privateKey":              keyFile,
		"httpPort":                opts.httpPort,
		"tlsPort":                 opts.tlsPort,
		"ocspResponderURL":        "",
		"keyAlgorithm":            "ecdsa",
		"profiles": map[string]any{"default": map[string]any{
			"description": "edgeshield tests", "validityPeriod": validity,
		}},
	}}
	confJSON, _ := json.Marshal(conf)
	confFile := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(confFile, confJSON, 0o600); err != nil {
		t.Fatal(err)
	}
	out := &lockedBuffer{}
	proc := startProcess(t, out, []string{
		"PEBBLE_VA_NOSLEEP=1",      // validate at once
		"PEBBLE_WFE_NONCEREJECT=0", // no random badNonce errors
		"PEBBLE_AUTHZREUSE=0",      // every order is really validated
	}, pebbleBin, "-config", confFile, "-strict", "-dnsserver", dnsAddr)

	tlsPool := poolOf(cert)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: tlsPool}}}
	t.Cleanup(client.CloseIdleConnections)
	p := &pebbleCA{dirURL: "https://" + listenAddr + "/dir", tlsRoot: certFile, out: out, proc: proc}
	eventually(t, 30*time.Second, "pebble directory", func() error {
		resp, err := client.Get(p.dirURL)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
	// Pebble makes a new root at every start and serves it on the
	// management interface.
	resp, err := client.Get("https://" + mgmtAddr + "/roots/0")
	if err != nil {
		t.Fatalf("fetching pebble root: %v", err)
	}
	rootPEM, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	p.roots = x509.NewCertPool()
	if !p.roots.AppendCertsFromPEM(rootPEM) {
		t.Fatalf("pebble root: got %q, want PEM", rootPEM)
	}
	return p
}

// acmeConfig is a Config for p with the challenge ports of the test.
func (p *pebbleCA) config(storage string, httpPort, tlsPort int) Config {
	return Config{
		Mode:         ModeACME,
		CA:           p.dirURL,
		TrustedRoots: []string{p.tlsRoot},
		AgreeTerms:   true,
		Email:        "ops@edgeshield.test",
		Storage:      storage,
		HTTPPort:     httpPort,
		TLSPort:      tlsPort,
	}
}

func TestACMEIssuance(t *testing.T) {
	tests := []struct {
		name                     string
		host                     string
		disableHTTP, disableALPN bool
		wantLog                  string
	}{
		{"http-01", uniqueHost("www"), false, true, "challenge=http-01"},
		{"tls-alpn-01", uniqueHost("www"), true, false, "challenge=tls-alpn-01"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tlsLn, httpLn := listen(t), listen(t)
			p := startPebble(t, pebbleOpts{httpPort: portOf(httpLn), tlsPort: portOf(tlsLn)})
			cfg := p.config(t.TempDir(), portOf(httpLn), portOf(tlsLn))
			cfg.Names = []string{tt.host}
			cfg.DisableHTTPChallenge, cfg.DisableTLSALPNChallenge = tt.disableHTTP, tt.disableALPN
			logs := &lockedBuffer{}
			cfg.Logger = bufferLogger(t, logs)
			m := newManager(t, cfg)
			challenges := serveNode(t, m, tlsLn, httpLn, "edge")

			var status int
			var body, alpn string
			eventually(t, 60*time.Second, "HTTPS with a Pebble certificate", func() (err error) {
				status, body, alpn, err = httpsGet(tlsLn.Addr().String(), tt.host, p.roots)
				return err
			})
			if status != 200 || body != "hello from edge" {
				t.Errorf("GET: got %d %q, want 200 %q", status, body, "hello from edge")
			}
			if alpn != "http/1.1" {
				t.Errorf("ALPN: got %q, want http/1.1", alpn)
			}
			if got := p.orders(); got != 1 {
				t.Errorf("Pebble orders: got %d, want 1", got)
			}
			if got := challenges.Load(); (got > 0) != !tt.disableHTTP {
				t.Errorf("challenge requests on the plain listener: got %d, want >0 only for http-01", got)
			}
			if l := logs.String(); !strings.Contains(l, "served key authentication") || !strings.Contains(l, tt.wantLog) {
				t.Errorf("manager log: want %q served by this node's listener; log:\n%s", tt.wantLog, tail(l, 40))
			}
			st, err := statusOf(m, tt.host)
			if err != nil || st.Source != ModeACME || !st.Managed || st.LastError != "" || !strings.Contains(st.Issuer, "Pebble") {
				t.Errorf("Status: got %+v (%v), want a managed acme certificate from Pebble", st, err)
			}
		})
	}
}

func TestOnDemandACME(t *testing.T) {
	tlsLn, httpLn := listen(t), listen(t)
	p := startPebble(t, pebbleOpts{httpPort: portOf(httpLn), tlsPort: portOf(tlsLn)})
	cfg := p.config(t.TempDir(), portOf(httpLn), portOf(tlsLn))
	zone := uniqueHost("ondemand")
	cfg.OnDemand = &OnDemand{Allow: []string{"*." + zone}, RateLimit: 5, Interval: time.Hour}
	cfg.Logger = testLogger(t)
	m := newManager(t, cfg)
	serveNode(t, m, tlsLn, httpLn, "edge")
	addr := tlsLn.Addr().String()

	// The very first handshake for an allowed name waits for the order.
	status, _, _, err := httpsGet(addr, "shop."+zone, p.roots)
	if err != nil || status != 200 {
		t.Fatalf("first handshake for an allowed name: got %d, %v; want 200", status, err)
	}
	if got := p.orders(); got != 1 {
		t.Fatalf("Pebble orders after the allowed name: got %d, want 1", got)
	}
	for _, sni := range []string{"random-4711.attacker.test", "a.b." + zone, zone} {
		t.Run(sni, func(t *testing.T) {
			if _, err := handshake(addr, sni, p.roots); err == nil {
				t.Fatalf("handshake for %s: got success, want failure", sni)
			}
			if got := p.orders(); got != 1 {
				t.Errorf("Pebble orders after %s: got %d, want still 1", sni, got)
			}
		})
	}
	st, err := statusOf(m, "shop."+zone)
	if err != nil || st.Source != "on-demand" || !st.Managed {
		t.Errorf("Status: got %+v (%v), want a managed on-demand entry", st, err)
	}
}

func TestRenewalWithoutFailedRequests(t *testing.T) {
	host := uniqueHost("renew")
	tlsLn, httpLn := listen(t), listen(t)
	p := startPebble(t, pebbleOpts{httpPort: portOf(httpLn), tlsPort: portOf(tlsLn), validity: 20 * time.Second})
	cfg := p.config(t.TempDir(), portOf(httpLn), portOf(tlsLn))
	cfg.Names = []string{host}
	cfg.RenewalWindowRatio = 0.5 // renew 10 s into a 20 s lifetime
	cfg.RenewCheckInterval = 500 * time.Millisecond
	cfg.Logger = testLogger(t)
	m := newManager(t, cfg)
	serveNode(t, m, tlsLn, httpLn, "edge")
	addr := tlsLn.Addr().String()

	var first *x509.Certificate
	eventually(t, 60*time.Second, "first certificate", func() error {
		cs, err := handshake(addr, host, p.roots)
		if err == nil {
			first = cs.PeerCertificates[0]
		}
		return err
	})

	// A client loop with full verification (including validity at the
	// current time) runs until the first certificate has expired: every
	// request must succeed, and a renewed certificate must show up.
	var requests, failures int
	var renewed *x509.Certificate
	var lastErr error
	deadline := first.NotAfter.Add(3 * time.Second)
	for time.Now().Before(deadline) {
		requests++
		status, _, _, err := httpsGet(addr, host, p.roots)
		if err != nil || status != 200 {
			failures++
			lastErr = fmt.Errorf("status %d: %v", status, err)
		}
		if cs, err := handshake(addr, host, p.roots); err == nil && !cs.PeerCertificates[0].Equal(first) {
			renewed = cs.PeerCertificates[0]
		}
		time.Sleep(100 * time.Millisecond) // request pacing of the client loop
	}
	if failures != 0 {
		t.Errorf("client loop: got %d failed of %d requests (last: %v), want 0", failures, requests, lastErr)
	}
	if renewed == nil {
		t.Fatalf("no renewed certificate seen before the first one expired at %v", first.NotAfter)
	}
	if !renewed.NotAfter.After(first.NotAfter) {
		t.Errorf("renewed NotAfter %v, want after the first %v", renewed.NotAfter, first.NotAfter)
	}
	// Status shows the renewed certificate, or a later one: these
	// certificates live seconds, so under load another renewal can land
	// between the loop's last handshake and this call (seen in CI).
	if st, err := statusOf(m, host); err != nil || st.LastError != "" || st.NotAfter.Before(renewed.NotAfter) {
		t.Errorf("Status after renewal: got %+v (%v), want no error and NotAfter %v or later", st, err, renewed.NotAfter)
	}

	// The CA disappears: the next renewal fails, Status reports it, and the
	// current certificate keeps serving while it is valid.
	p.stop()
	eventually(t, 30*time.Second, "renewal failure in Status", func() error {
		st, err := statusOf(m, host)
		if err != nil {
			return err
		}
		if st.LastError == "" {
			return fmt.Errorf("LastError empty (NotAfter %v)", st.NotAfter)
		}
		return nil
	})
	// Verification at the current time passes: the valid certificate is
	// still served although its renewal failed.
	if _, err := handshake(addr, host, p.roots); err != nil {
		t.Errorf("handshake after failed renewal: got %v, want the current certificate", err)
	}
}

// waitLock waits until storage holds the issuance lock for name, i.e. some
// node has started its order.
func waitLock(t *testing.T, storage, name string) {
	t.Helper()
	lock := filepath.Join(storage, "locks", "issue_cert_"+name+".lock")
	eventually(t, 30*time.Second, "issuance lock for "+name, func() error {
		_, err := os.Stat(lock)
		return err
	})
}

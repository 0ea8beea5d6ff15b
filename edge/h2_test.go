package edge

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// h2cClient speaks cleartext HTTP/2 with prior knowledge to addr, as a
// load balancer in front of the node would.
func h2cClient(t *testing.T, addr string) *http.Client {
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &protos, DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// TestH2CPriorKnowledge: with server.h2c the plain listener serves HTTP/2
// to a client that opens with the preface, through the same pipeline
// (miss, hit, Cache-Status, X-Forwarded-Proto http), and HTTP/1.1 beside it;
// with TLS off and with TLS on (tls.http: serve).
func TestH2CPriorKnowledge(t *testing.T) {
	o := newTestOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Vary", "X-Forwarded-Proto") // one entry per scheme
		io.WriteString(w, "proto="+r.Header.Get("X-Forwarded-Proto"))
	})
	nodes := map[string]func() string{
		"tls off": func() string {
			return newTestNode(t, o.srv.URL, nil, func(c *Config) { c.Server.H2C = true }).Addr()
		},
		"tls on": func() string {
			return newTLSTestNode(t, o.srv.URL, nil, func(c *Config) { c.Server.H2C = true }).Addr()
		},
	}
	for name, start := range nodes {
		t.Run(name, func(t *testing.T) {
			addr := start()
			path := "/h2c/" + strings.ReplaceAll(name, " ", "-")
			h2c := h2cClient(t, addr)
			for i, wantHit := range []bool{false, true} {
				resp, err := h2c.Get("http://" + addr + path)
				if err != nil {
					t.Fatalf("h2c GET: %v", err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.Proto != "HTTP/2.0" || resp.StatusCode != 200 || string(b) != "proto=http" {
					t.Fatalf("h2c GET %d: %s %d %q, want HTTP/2.0 200 %q", i, resp.Proto, resp.StatusCode, b, "proto=http")
				}
				if isHit(resp) != wantHit || !strings.Contains(csOf(resp), "edgeshield-proto=h2") {
					t.Errorf("h2c GET %d: Cache-Status %q, want hit %v over h2", i, csOf(resp), wantHit)
				}
				if resp.Header.Get("Alt-Svc") != "" {
					t.Errorf("h2c answer advertises %q: HTTP/3 is for https only", resp.Header.Get("Alt-Svc"))
				}
				waitFor(t, "the fill", 5*time.Second, func() bool { return o.count(path) == 1 })
			}
			r, b := get(t, "http://"+addr+path)
			if r.Proto != "HTTP/1.1" || b != "proto=http" || !isHit(r) {
				t.Errorf("HTTP/1.1 beside h2c: %s %q %q, want an HTTP/1.1 hit", r.Proto, b, csOf(r))
			}
		})
	}
}

// TestH2CWithH2load: h2load (nghttp2-client) speaks h2c to http:// URLs.
func TestH2CWithH2load(t *testing.T) {
	h2load, err := exec.LookPath("h2load")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("h2load is required under CI (apt-get install nghttp2-client)")
		}
		t.Skip("h2load not installed (apt-get install nghttp2-client)")
	}
	o := newTestOrigin(t, nil, static("x", "Cache-Control: max-age=60"))
	n := newTestNode(t, o.srv.URL, nil, func(c *Config) { c.Server.H2C = true })
	out, err := exec.Command(h2load, "-n", "200", "-c", "4", "-m", "10", "http://"+n.Addr()+"/x").CombinedOutput()
	if err != nil {
		t.Fatalf("h2load: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "200 succeeded, 0 failed, 0 errored") || !strings.Contains(string(out), "Application protocol: h2c") {
		t.Errorf("h2load over h2c:\n%s", out)
	}
	if got := n.Stats().RequestsH2; got != 200 {
		t.Errorf("Stats.RequestsH2 = %d, want 200", got)
	}
}

// TestSilentConnectionsBounded: connections that never finish a TLS
// handshake (or, with server.h2c, never send a byte) hold at most
// min(server.concurrency, maxSniffing) goroutines, are closed after
// server.read_timeout, and leave the listener serving.
func TestSilentConnectionsBounded(t *testing.T) {
	o := newTestOrigin(t, nil, static("ok", "Cache-Control: max-age=60"))
	const slots, flood = 4, 60
	tn := newTLSTestNode(t, o.srv.URL, nil, func(c *Config) {
		c.Server.H2C = true
		c.TLS.HTTP = "serve"
		c.Server.Concurrency = slots
		c.Server.ReadTimeout = Duration(300 * time.Millisecond)
	})
	for _, addr := range []string{tn.TLSAddr(), tn.Addr()} {
		before := runtime.NumGoroutine()
		conns := make([]net.Conn, 0, flood)
		for range flood {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
		}
		grew := 0
		for range 20 { // the splitter takes them in as slots free
			grew = max(grew, runtime.NumGoroutine()-before)
			time.Sleep(10 * time.Millisecond)
		}
		// A goroutine per slot, plus a few of the runtime's and the
		// servers' own (timers, the HTTP/1.1 server's workers).
		if grew > slots+16 {
			t.Errorf("%s: %d silent connections grew goroutines by %d, want at most %d", addr, flood, grew, slots+16)
		}
		var wg sync.WaitGroup
		for _, c := range conns {
			wg.Go(func() {
				defer c.Close()
				c.SetReadDeadline(time.Now().Add(30 * time.Second))
				if _, err := io.Copy(io.Discard, c); err != nil {
					t.Errorf("%s: a silent connection was not closed by the node: %v", addr, err)
				}
			})
		}
		wg.Wait()
	}
	if r, _ := tn.fetch(t, protoH2, "GET", "/ok"); r.StatusCode != 200 {
		t.Errorf("h2 after the flood: %d, want 200", r.StatusCode)
	}
	if r, _ := get(t, "http://"+tn.Addr()+"/ok"); r.StatusCode != 200 {
		t.Errorf("HTTP/1.1 after the flood: %d, want 200", r.StatusCode)
	}
}

// TestConnLimitCountsEveryProtocol: server.max_conns_per_ip counts HTTP/2
// and HTTP/3 connections and failed handshakes too, and gives their slots
// back when they end, so a client that reconnected max times is not
// locked out.
func TestConnLimitCountsEveryProtocol(t *testing.T) {
	o := newTestOrigin(t, nil, static("ok", "Cache-Control: max-age=60"))
	const limit = 2
	tn := newTLSTestNode(t, o.srv.URL, nil, func(c *Config) {
		c.Server.MaxConnsPerIP = limit
		c.Server.ReadTimeout = Duration(300 * time.Millisecond)
	})
	for round := range 3 { // slots come back: every round gets the same
		var open []io.Closer
		for i := range limit + 1 {
			c, err := h3Dial(tn)
			if i < limit && err != nil {
				t.Fatalf("round %d: QUIC connection %d of %d refused: %v", round, i+1, limit, err)
			}
			if i == limit && err == nil {
				t.Errorf("round %d: QUIC connection %d accepted over max_conns_per_ip %d", round, i+1, limit)
			}
			if err == nil {
				open = append(open, c)
			}
		}
		for _, c := range open {
			c.Close()
		}
		open = open[:0]
		waitFor(t, "QUIC slots back", 5*time.Second, func() bool { return tn.conns.clients() == 0 })
		for i := range limit + 1 { // h2 connections, closed by the client
			c := h2Conn(t, tn)
			if i < limit && c == nil {
				t.Fatalf("round %d: h2 connection %d of %d refused", round, i+1, limit)
			}
			if i == limit && c != nil {
				t.Errorf("round %d: h2 connection %d accepted over max_conns_per_ip %d", round, i+1, limit)
			}
			if c != nil {
				open = append(open, c)
			}
		}
		for _, c := range open {
			c.Close()
		}
		waitFor(t, "h2 slots back", 5*time.Second, func() bool { return tn.conns.clients() == 0 })
	}
	// Handshakes that time out give their slots back too.
	for range limit {
		c, err := net.Dial("tcp", tn.TLSAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	waitFor(t, "timed-out handshakes' slots back", 5*time.Second, func() bool { return tn.conns.clients() == 0 })
	if r, _ := tn.fetch(t, protoH2, "GET", "/ok"); r.StatusCode != 200 {
		t.Errorf("h2 after all that: %d, want 200", r.StatusCode)
	}
}

// h3Dial opens a QUIC connection to tn with the h3 ALPN, or fails.
func h3Dial(tn *tlsNode) (io.Closer, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	tr := tn.clients[protoH3].Transport.(*http3.Transport)
	conf := tr.TLSClientConfig.Clone()
	conf.NextProtos = []string{http3.NextProtoH3}
	c, err := quic.DialAddr(ctx, tn.TLSAddr(), conf, &quic.Config{HandshakeIdleTimeout: time.Second})
	if err != nil {
		return nil, err
	}
	return closerFunc(func() error { return c.CloseWithError(0, "") }), nil
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// h2Conn opens one HTTP/2 connection to tn and sends a request on it; nil
// if the node refused or closed it. Close closes the connection.
func h2Conn(t *testing.T, tn *tlsNode) io.Closer {
	t.Helper()
	base := tn.clients[protoH2].Transport.(*http.Transport)
	tr := base.Clone()
	tr.DisableKeepAlives = false
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get(tn.base + "/ok")
	if err != nil {
		tr.CloseIdleConnections()
		return nil
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("h2Conn: got %s", resp.Proto)
	}
	return closerFunc(func() error { tr.CloseIdleConnections(); return nil })
}

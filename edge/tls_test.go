package edge

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgeshield/edgeshield/edge/certs"
)

// TestHTTPSInternalCA terminates TLS with the internal CA (offline): a
// client trusting the exported root gets the cached content over HTTPS with
// ALPN http/1.1, the plain listener redirects, and /tls reports the name.
// The ACME flows (HTTP-01, TLS-ALPN-01, on-demand, shared storage) are
// proven against a real Pebble in edge/certs.
func TestHTTPSInternalCA(t *testing.T) {
	var proto string
	big := strings.Repeat("0123456789abcdef", 20<<10) // 320 KiB: kept off-heap
	o := newTestOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		if r.URL.Path == "/big" {
			// Not a text type: the Go client asks for gzip, and the
			// edge would store a text body compressed (cache.compress),
			// far below the off-heap size this test needs.
			w.Header().Set("Content-Type", "application/octet-stream")
			io.WriteString(w, big)
			return
		}
		proto = r.Header.Get("X-Forwarded-Proto")
		io.WriteString(w, "secure")
	})
	n := newTestNode(t, o.srv.URL, nil, func(c *Config) {
		c.Cache.OffheapMinSize = 128 << 10
		c.TLS = TLSConfig{Config: certs.Config{Mode: "internal", Names: []string{"edge.test"}, Storage: t.TempDir()}, Listen: "127.0.0.1:0", HTTP: "redirect"}
	})
	// Certificates are obtained in the background: wait until one is served.
	waitFor(t, "certificate for edge.test", 15*time.Second, func() bool {
		_, b := get(t, "http://"+n.AdminAddr()+"/tls")
		return strings.Contains(b, `"not_after"`) && !strings.Contains(b, `"not_after": "0001`)
	})
	_, rootPEM := get(t, "http://"+n.AdminAddr()+"/tls/root.pem")
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(rootPEM)) {
		t.Fatalf("no root PEM from /tls/root.pem: %q", rootPEM)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: "edge.test", NextProtos: []string{"h2", "http/1.1"}},
		ForceAttemptHTTP2: true,
	}}
	t.Cleanup(client.CloseIdleConnections)
	var last *http.Response
	for i := 0; i < 2; i++ {
		resp, err := client.Get("https://" + n.TLSAddr() + "/s")
		if err != nil {
			t.Fatalf("HTTPS GET: %v", err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "secure" {
			t.Fatalf("HTTPS: %d %q", resp.StatusCode, b)
		}
		if resp.TLS == nil || resp.TLS.NegotiatedProtocol != "http/1.1" || resp.ProtoMajor != 1 {
			t.Fatalf("negotiated %q / HTTP/%d, want http/1.1 (never h2)", resp.TLS.NegotiatedProtocol, resp.ProtoMajor)
		}
		// The fill is stored just after the response: until then a second
		// request joins the finished flight ("collapsed"), not a hit.
		waitFor(t, "/s stored", 5*time.Second, func() bool { return n.pipe.flights.Len() == 0 })
		last = resp
	}
	if !isHit(last) {
		t.Errorf("second HTTPS request: Cache-Status %q, want hit", csOf(last))
	}
	if proto != "https" {
		t.Errorf("origin saw X-Forwarded-Proto %q, want https", proto)
	}

	// A memory-file body over TLS: copied through the TLS record layer
	// (sendfile cannot encrypt), same bytes.
	for i := 0; i < 2; i++ {
		resp, err := client.Get("https://" + n.TLSAddr() + "/big")
		if err != nil {
			t.Fatalf("HTTPS GET /big: %v", err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != big {
			t.Fatalf("HTTPS /big #%d: %d, %d bytes, want the %d-byte body", i, resp.StatusCode, len(b), len(big))
		}
		if i == 0 {
			waitFor(t, "/big stored", 5*time.Second, func() bool { return n.pipe.flights.Len() == 0 })
		} else if !isHit(resp) {
			t.Errorf("HTTPS /big again: Cache-Status %q, want hit", csOf(resp))
		}
	}
	if st := n.Stats(); st.OffheapObjects != 1 || st.SendfileBytes != 0 {
		t.Errorf("after HTTPS hits of /big: offheap objects %d, sendfile bytes %d; want 1 and 0", st.OffheapObjects, st.SendfileBytes)
	}

	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Get("http://" + n.Addr() + "/s?q=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusPermanentRedirect || !strings.HasPrefix(resp.Header.Get("Location"), "https://") || !strings.HasSuffix(resp.Header.Get("Location"), "/s?q=1") {
		t.Errorf("plain listener: %d Location %q, want 308 to https with path and query", resp.StatusCode, resp.Header.Get("Location"))
	}

	_, body := get(t, "http://"+n.AdminAddr()+"/tls")
	var st struct {
		Mode         string `json:"mode"`
		Certificates []struct {
			Name     string    `json:"name"`
			NotAfter time.Time `json:"not_after"`
		} `json:"certificates"`
	}
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("/tls: %v: %s", err, body)
	}
	found := false
	for _, c := range st.Certificates {
		found = found || (c.Name == "edge.test" && c.NotAfter.After(time.Now()))
	}
	if st.Mode != "internal" || !found {
		t.Errorf("/tls = %s, want mode internal with edge.test valid", body)
	}
}

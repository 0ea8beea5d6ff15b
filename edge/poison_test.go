package edge

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeshield/edgeshield/edge/certs"
	"github.com/valyala/fasthttp"
)

// Issue 10 parts 2-4: no cache poisoning through hop-by-hop or unkeyed
// request fields, and request-targets forwarded as received. Every request
// here is written to the node's socket byte for byte, so neither Go's client
// nor fasthttp's cleans anything up before the node sees it.

// echoedFields are the request fields the reflecting origin writes into its
// (cacheable) body: what a careless application would reflect.
var echoedFields = []string{
	"X-Tenant", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Forwarded-For", "Forwarded",
	"X-Forwarded-Scheme", "X-Forwarded-Port", "X-Forwarded-Prefix", "X-Host",
	"X-Original-Url", "X-Rewrite-Url", "X-Http-Method-Override", "X-Http-Method", "X-Method-Override",
}

// originRecorder keeps what the origin received, in order.
type originRecorder struct {
	mu   sync.Mutex // guards reqs
	reqs []recorded
}

type recorded struct {
	uri    string // the raw request-target
	header http.Header
}

func (o *originRecorder) add(r *http.Request) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.reqs = append(o.reqs, recorded{uri: r.RequestURI, header: r.Header.Clone()})
}

func (o *originRecorder) since(i int) []recorded {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]recorded(nil), o.reqs[i:]...)
}

func (o *originRecorder) len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.reqs)
}

// newReflectingOrigin answers every GET with `Cache-Control: public,
// max-age=60` and a body made of the raw target it received and the
// echoedFields; paths under /vary/ also answer `Vary: X-Tenant`.
func newReflectingOrigin(t *testing.T) (*testOrigin, *originRecorder) {
	rec := &originRecorder{}
	o := newTestOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		rec.add(r)
		if strings.HasPrefix(r.URL.Path, "/vary/") {
			w.Header().Set("Vary", "X-Tenant")
		}
		w.Header().Set("Cache-Control", "public, max-age=60")
		fmt.Fprintf(w, "uri=%s\n", r.RequestURI)
		for _, f := range echoedFields {
			if v := r.Header.Values(f); len(v) > 0 {
				fmt.Fprintf(w, "%s=%s\n", f, strings.Join(v, "|"))
			}
		}
	})
	return o, rec
}

// rawRequest writes req to addr as is and reads one response.
func rawExchange(t *testing.T, addr, req string) (*http.Response, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatalf("write: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read response to %q: %v", req, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp, string(b)
}

// getReq is a GET for target with Host shop.example and extra field lines.
func getReq(target string, fields ...string) string {
	var b strings.Builder
	b.WriteString("GET " + target + " HTTP/1.1\r\nHost: shop.example\r\n")
	for _, f := range fields {
		b.WriteString(f + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

func TestPoisoning(t *testing.T) {
	o, rec := newReflectingOrigin(t)
	n := newTestNode(t, o.srv.URL, nil, nil)
	// What the edge itself sends for a plain-HTTP client on 127.0.0.1
	// asking for Host shop.example.
	own := map[string]string{
		"X-Forwarded-Host":  "shop.example",
		"X-Forwarded-Proto": "http",
		"X-Forwarded-For":   "127.0.0.1",
		"Forwarded":         "for=127.0.0.1;host=shop.example;proto=http",
	}
	absent := func(names ...string) map[string]string {
		m := map[string]string{}
		for k, v := range own {
			m[k] = v
		}
		for _, name := range names {
			m[name] = ""
		}
		return m
	}
	tests := []struct {
		name string
		// attacker's request
		target string
		fields []string
		// what the origin must receive for it: raw target, and each
		// field's value ("" = absent)
		wantURI    string
		wantFields map[string]string
		// the victim's clean request and what its answer must (not) hold
		victim        string
		victimFields  []string
		victimMust    string
		victimMustNot string
	}{
		{
			name:   "Vary variant through a Connection-listed field",
			target: "/vary/t", fields: []string{"X-Tenant: acme", "Connection: X-Tenant"},
			wantURI: "/vary/t", wantFields: absent("X-Tenant"),
			victim: "/vary/t", victimFields: []string{"X-Tenant: acme"},
			victimMust: "X-Tenant=acme",
		},
		{
			name:   "X-Forwarded-Host",
			target: "/xfh", fields: []string{"X-Forwarded-Host: evil.example"},
			wantURI: "/xfh", wantFields: own,
			victim: "/xfh", victimMustNot: "evil.example",
		},
		{
			name:   "X-Forwarded-Host listed in Connection is still ours",
			target: "/xfh-conn", fields: []string{"X-Forwarded-Host: evil.example", "Connection: X-Forwarded-Host"},
			wantURI: "/xfh-conn", wantFields: own,
			victim: "/xfh-conn", victimMustNot: "evil.example",
		},
		{
			name:   "X-Forwarded-Scheme",
			target: "/xfs", fields: []string{"X-Forwarded-Scheme: nothttps"},
			wantURI: "/xfs", wantFields: absent("X-Forwarded-Scheme"),
			victim: "/xfs", victimMustNot: "nothttps",
		},
		{
			name:   "X-Forwarded-Proto",
			target: "/xfp", fields: []string{"X-Forwarded-Proto: gopher"},
			wantURI: "/xfp", wantFields: own,
			victim: "/xfp", victimMustNot: "gopher",
		},
		{
			name:   "X-Forwarded-For",
			target: "/xff", fields: []string{"X-Forwarded-For: 198.51.100.66"},
			wantURI: "/xff", wantFields: own,
			victim: "/xff", victimMustNot: "198.51.100.66",
		},
		{
			name:   "Forwarded",
			target: "/fwd", fields: []string{"Forwarded: for=198.51.100.66;host=evil.example;proto=https"},
			wantURI: "/fwd", wantFields: own,
			victim: "/fwd", victimMustNot: "evil.example",
		},
		{
			name:   "X-Original-URL",
			target: "/xou", fields: []string{"X-Original-URL: /admin-evil"},
			wantURI: "/xou", wantFields: absent("X-Original-Url"),
			victim: "/xou", victimMustNot: "admin-evil",
		},
		{
			name:   "X-Rewrite-URL",
			target: "/xru", fields: []string{"X-Rewrite-URL: /admin-evil"},
			wantURI: "/xru", wantFields: absent("X-Rewrite-Url"),
			victim: "/xru", victimMustNot: "admin-evil",
		},
		{
			name:   "X-HTTP-Method-Override",
			target: "/xhmo", fields: []string{"X-HTTP-Method-Override: PURGEEVIL"},
			wantURI: "/xhmo", wantFields: absent("X-Http-Method-Override"),
			victim: "/xhmo", victimMustNot: "PURGEEVIL",
		},
		{
			name:   "X-HTTP-Method",
			target: "/xhm", fields: []string{"X-HTTP-Method: PURGEEVIL"},
			wantURI: "/xhm", wantFields: absent("X-Http-Method"),
			victim: "/xhm", victimMustNot: "PURGEEVIL",
		},
		{
			name:   "X-Method-Override",
			target: "/xmo", fields: []string{"X-Method-Override: PURGEEVIL"},
			wantURI: "/xmo", wantFields: absent("X-Method-Override"),
			victim: "/xmo", victimMustNot: "PURGEEVIL",
		},
		{
			name:   "X-Forwarded-Port",
			target: "/xfport", fields: []string{"X-Forwarded-Port: 6666"},
			wantURI: "/xfport", wantFields: absent("X-Forwarded-Port"),
			victim: "/xfport", victimMustNot: "6666",
		},
		{
			name:   "X-Forwarded-Prefix",
			target: "/xfprefix", fields: []string{"X-Forwarded-Prefix: /evil-prefix"},
			wantURI: "/xfprefix", wantFields: absent("X-Forwarded-Prefix"),
			victim: "/xfprefix", victimMustNot: "evil-prefix",
		},
		{
			name:   "X-Host",
			target: "/xhost", fields: []string{"X-Host: evil.example"},
			wantURI: "/xhost", wantFields: absent("X-Host"),
			victim: "/xhost", victimMustNot: "evil.example",
		},
		// Paths: forwarded byte for byte; the attacker's spelling keys
		// apart from the victim's /…/b, so the victim gets its own fetch.
		{
			name: "encoded slash", target: "/p1/a%2Fb",
			wantURI: "/p1/a%2Fb", wantFields: own,
			victim: "/p1/a/b", victimMust: "uri=/p1/a/b\n",
		},
		{
			name: "dot-dot segment", target: "/p2/a/../b",
			wantURI: "/p2/a/../b", wantFields: own,
			victim: "/p2/b", victimMust: "uri=/p2/b\n",
		},
		{
			name: "double slash", target: "/p3//b",
			wantURI: "/p3//b", wantFields: own,
			victim: "/p3/b", victimMust: "uri=/p3/b\n",
		},
		{
			name: "encoded dot-dot-slash", target: "/p4/a/%2E%2E%2Fb",
			wantURI: "/p4/a/%2E%2E%2Fb", wantFields: own,
			victim: "/p4/b", victimMust: "uri=/p4/b\n",
		},
		{
			name: "lower-case hex is forwarded as sent", target: "/p5/a%2fb",
			wantURI: "/p5/a%2fb", wantFields: own,
			victim: "/p5/a/b", victimMust: "uri=/p5/a/b\n",
		},
		// An encoded unreserved character names the same resource (RFC
		// 9110 §4.2.3): forwarded as sent, keyed as the decoded form.
		{
			name: "encoded unreserved character", target: "/p6/%62",
			wantURI: "/p6/%62", wantFields: own,
			victim: "/p6/b", victimMust: "uri=/p6/%62\n",
		},
		// Absolute-form (RFC 9112 §3.2.2) goes out in origin-form.
		{
			name: "absolute-form target", target: "http://shop.example/p7/a%2Fb?q=%2e",
			wantURI: "/p7/a%2Fb?q=%2e", wantFields: own,
			victim: "/p7/a%2Fb?q=%2E", victimMust: "uri=/p7/a%2Fb?q=%2e\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := rec.len()
			resp, _ := rawExchange(t, n.Addr(), getReq(tt.target, tt.fields...))
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("attacker's request: got status %d, want 200", resp.StatusCode)
			}
			waitFor(t, "fills to be stored", 5*time.Second, func() bool { return n.pipe.flights.Len() == 0 })
			got := rec.since(start)
			if len(got) != 1 {
				t.Fatalf("origin got %d requests for the attacker's, want 1", len(got))
			}
			if got[0].uri != tt.wantURI {
				t.Errorf("origin request-target: got %q, want %q", got[0].uri, tt.wantURI)
			}
			for _, f := range echoedFields {
				want := tt.wantFields[f]
				if g := strings.Join(got[0].header.Values(f), "|"); g != want {
					t.Errorf("origin field %s: got %q, want %q", f, g, want)
				}
			}
			_, body := rawExchange(t, n.Addr(), getReq(tt.victim, tt.victimFields...))
			if tt.victimMust != "" && !strings.Contains(body, tt.victimMust) {
				t.Errorf("victim's body: got %q, want it to contain %q", body, tt.victimMust)
			}
			if tt.victimMustNot != "" && strings.Contains(body, tt.victimMustNot) {
				t.Errorf("victim's body: got %q, the attacker's %q", body, tt.victimMustNot)
			}
		})
	}
}

// TestTrustedProxies: a client inside server.trusted_proxies has its
// X-Forwarded-For / Forwarded extended and X-Forwarded-Host / -Proto kept; any
// other client's copies are replaced. The override fields go either way.
func TestTrustedProxies(t *testing.T) {
	proxyFields := []string{
		"X-Forwarded-For: 203.0.113.9",
		"Forwarded: for=203.0.113.9;proto=https",
		"X-Forwarded-Host: cdn.example",
		"X-Forwarded-Proto: https",
		"X-Original-URL: /admin-evil",
	}
	tests := []struct {
		name    string
		listen  string
		trusted []string
		want    map[string]string // origin field → value ("" = absent)
	}{
		{
			name: "trusted", listen: "127.0.0.1:0", trusted: []string{"127.0.0.1/32"},
			want: map[string]string{
				"X-Forwarded-For":   "203.0.113.9, 127.0.0.1",
				"Forwarded":         "for=203.0.113.9;proto=https, for=127.0.0.1;host=shop.example;proto=http",
				"X-Forwarded-Host":  "cdn.example",
				"X-Forwarded-Proto": "https",
				"X-Original-Url":    "",
			},
		},
		{
			name: "trusted as a single IP", listen: "127.0.0.1:0", trusted: []string{"10.1.2.3", "127.0.0.1"},
			want: map[string]string{
				"X-Forwarded-For":   "203.0.113.9, 127.0.0.1",
				"Forwarded":         "for=203.0.113.9;proto=https, for=127.0.0.1;host=shop.example;proto=http",
				"X-Forwarded-Host":  "cdn.example",
				"X-Forwarded-Proto": "https",
				"X-Original-Url":    "",
			},
		},
		{
			name: "untrusted", listen: "127.0.0.1:0", trusted: []string{"10.0.0.0/8"},
			want: map[string]string{
				"X-Forwarded-For":   "127.0.0.1",
				"Forwarded":         "for=127.0.0.1;host=shop.example;proto=http",
				"X-Forwarded-Host":  "shop.example",
				"X-Forwarded-Proto": "http",
				"X-Original-Url":    "",
			},
		},
		{
			name: "untrusted IPv6 client", listen: "[::1]:0", trusted: []string{"10.0.0.0/8"},
			want: map[string]string{
				"X-Forwarded-For":   "::1",
				"Forwarded":         `for="[::1]";host=shop.example;proto=http`,
				"X-Forwarded-Host":  "shop.example",
				"X-Forwarded-Proto": "http",
				"X-Original-Url":    "",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if strings.HasPrefix(tt.listen, "[") {
				ln, err := net.Listen("tcp", tt.listen)
				if err != nil {
					t.Skipf("no IPv6 loopback: %v", err)
				}
				ln.Close()
			}
			o, rec := newReflectingOrigin(t)
			n := newTestNode(t, o.srv.URL, nil, func(c *Config) {
				c.Listen = tt.listen
				c.Server.TrustedProxies = tt.trusted
			})
			resp, _ := rawExchange(t, n.Addr(), getReq("/t", proxyFields...))
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("got status %d, want 200", resp.StatusCode)
			}
			got := rec.since(0)
			if len(got) != 1 {
				t.Fatalf("origin got %d requests, want 1", len(got))
			}
			for f, want := range tt.want {
				if g := strings.Join(got[0].header.Values(f), "|"); g != want {
					t.Errorf("origin field %s: got %q, want %q", f, g, want)
				}
			}
		})
	}
}

// TestVaryOnForwardedProto: a response that varies on X-Forwarded-Proto is
// keyed by the value the origin got, not by the client's field (which the
// front dropped): the plain and the HTTPS listener share one cache, and an
// answer made for http (an origin's redirect to https, say) must never be
// served to an HTTPS client, nor a client's forged claim select a variant.
func TestVaryOnForwardedProto(t *testing.T) {
	o := newTestOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Vary", "X-Forwarded-Proto")
		w.Header().Set("Cache-Control", "public, max-age=60")
		fmt.Fprintf(w, "proto=%s", r.Header.Get("X-Forwarded-Proto"))
	})
	n := newTestNode(t, o.srv.URL, nil, func(c *Config) {
		c.TLS = TLSConfig{Config: certs.Config{Mode: "internal", Names: []string{"edge.test"}, Storage: t.TempDir()}, Listen: "127.0.0.1:0", HTTP: "serve"}
	})
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
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "edge.test"},
	}}
	t.Cleanup(client.CloseIdleConnections)
	https := func() string {
		req, _ := http.NewRequest("GET", "https://"+n.TLSAddr()+"/v", nil)
		req.Host = "edge.test"
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("HTTPS GET: %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	plain := func(fields ...string) string {
		_, b := rawExchange(t, n.Addr(), strings.Replace(getReq("/v", fields...), "shop.example", "edge.test", 1))
		return b
	}
	stored := func() {
		waitFor(t, "fills to be stored", 5*time.Second, func() bool { return n.pipe.flights.Len() == 0 })
	}

	if got := plain("X-Forwarded-Proto: https"); got != "proto=http" {
		t.Fatalf("plain client claiming https: got %q, want proto=http", got)
	}
	stored()
	if got := https(); got != "proto=https" {
		t.Errorf("HTTPS client after a plain one: got %q, want proto=https (its own variant)", got)
	}
	stored()
	if got := plain(); got != "proto=http" {
		t.Errorf("plain client after an HTTPS one: got %q, want proto=http", got)
	}
}

// TestShieldHopKeepsClientForwarding: a miss forwarded to the owner over the
// peer listener reaches the origin with the forwarding fields the first
// node set for the real client, unchanged (no second X-Forwarded-For hop, no
// second Forwarded element), and the client's forged copies stay dropped.
func TestShieldHopKeepsClientForwarding(t *testing.T) {
	o, rec := newReflectingOrigin(t)
	nodes := newCluster(t, 2, o.srv.URL, nil)
	var path string
	for i := 0; i < 1000 && path == ""; i++ {
		p := fmt.Sprintf("/hop/%d", i)
		if m, _ := nodes[0].Cluster().Owner([]byte("shop.example" + p)); m.Name == "node-1" {
			path = p
		}
	}
	if path == "" {
		t.Fatal("no key owned by node-1")
	}
	resp, _ := rawExchange(t, nodes[0].Addr(), getReq(path,
		"X-Forwarded-For: 198.51.100.66", "X-Forwarded-Host: evil.example", "Forwarded: for=198.51.100.66"))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("got status %d, want 200", resp.StatusCode)
	}
	got := rec.since(0)
	if len(got) != 1 {
		t.Fatalf("origin got %d requests, want 1", len(got))
	}
	if via := strings.Join(got[0].header.Values("Via"), ", "); !strings.Contains(via, "node-0") || !strings.Contains(via, "node-1") {
		t.Fatalf("origin Via %q: want the hop through node-0 then node-1", via)
	}
	for f, want := range map[string]string{
		"X-Forwarded-For":   "127.0.0.1",
		"Forwarded":         "for=127.0.0.1;host=shop.example;proto=http",
		"X-Forwarded-Host":  "shop.example",
		"X-Forwarded-Proto": "http",
	} {
		if g := strings.Join(got[0].header.Values(f), "|"); g != want {
			t.Errorf("origin field %s: got %q, want %q", f, g, want)
		}
	}
}

func TestAppendKeyTarget(t *testing.T) {
	tests := []struct {
		raw, want string
	}{
		{"/", "/"},
		{"/b", "/b"},
		{"/%62", "/b"},                         // unreserved: decoded
		{"/%7e%2D%2e%5F%41%7A%30", "/~-._Az0"}, // every unreserved class
		{"/a%2fb", "/a%2Fb"},                   // reserved: kept, hex upper-cased
		{"/a%2Fb", "/a%2Fb"},                   // never "/a/b"
		{"/a/../b", "/a/../b"},                 // dot-segments kept
		{"/a/%2E%2E%2Fb", "/a/..%2Fb"},         // %2E is '.', %2F stays
		{"//b", "//b"},                         // slashes not merged
		{"/a%3Fb?c=%3d&d=%c3%a9", "/a%3Fb?c=%3D&d=%C3%A9"}, // query too; non-ASCII stays encoded
		{"/%zz%4", "/%zz%4"},                // malformed escapes left alone
		{"/%00", "/%00"},                    // never a NUL in a key
		{"/a\x00b\x7f c", "/a%00b%7F%20c"},  // raw controls encoded
		{"http://Shop.Example/p?q", "/p?q"}, // absolute-form → origin-form
		{"http://shop.example", "/"},
		{"http://shop.example?q", "/?q"},
		{"HTTPS://shop.example:8443/%62", "/b"},
		{"*", "*"},
		{"", "/"},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			if got := string(appendKeyTarget(nil, []byte(tt.raw), false)); got != tt.want {
				t.Errorf("appendKeyTarget(%q): got %q, want %q", tt.raw, got, tt.want)
			}
		})
	}
	if got := string(appendKeyTarget(nil, []byte("/a%62?x=1"), true)); got != "/ab" {
		t.Errorf("ignoring the query: got %q, want %q", got, "/ab")
	}
}

func TestAppendOriginForm(t *testing.T) {
	for _, tt := range []struct{ raw, want string }{
		{"/a%2Fb/../c?x=%2e", "/a%2Fb/../c?x=%2e"},
		{"http://h/p?q", "/p?q"},
		{"http://h", "/"},
		{"http://h?q", "/?q"},
		{"*", "*"},
	} {
		if got := string(appendOriginForm(nil, []byte(tt.raw))); got != tt.want {
			t.Errorf("appendOriginForm(%q): got %q, want %q", tt.raw, got, tt.want)
		}
	}
}

// TestPurgeByURLFindsRawTargets: a purge names the URL as a client would;
// spellings the key treats as one resource are purged together, others not.
func TestPurgeByURLFindsRawTargets(t *testing.T) {
	tests := []struct {
		stored, purge string
		found         bool
	}{
		{"/a%2Fb", "http://shop.example/a%2Fb", true},
		{"/a%2Fb", "http://shop.example/a%2fb", true},
		{"/a%2Fb", "http://shop.example/a/b", false},
		{"/%62", "http://shop.example/b", true},
		{"/c", "shop.example/%63", true},
		{"/d/../e", "http://shop.example/e", false},
		{"/f?x=%2e", "http://shop.example/f?x=.", true},
	}
	o, _ := newReflectingOrigin(t)
	n := newTestNode(t, o.srv.URL, nil, nil)
	for _, tt := range tests {
		t.Run(tt.stored+" "+tt.purge, func(t *testing.T) {
			rawExchange(t, n.Addr(), getReq(tt.stored))
			waitFor(t, "fills to be stored", 5*time.Second, func() bool { return n.pipe.flights.Len() == 0 })
			res, err := n.Purge("url", tt.purge, true, 0)
			if err != nil {
				t.Fatalf("Purge: %v", err)
			}
			if got := res.Found == 1; got != tt.found {
				t.Errorf("purge %s after storing %s: found %v, want %v", tt.purge, tt.stored, got, tt.found)
			}
		})
	}
}

// TestSanitizeRequest covers both ways the front reads a request: the raw
// header block of one parsed from the wire, and the fields of one built in
// memory (or chunked, whose trailer fields are not in the raw block).
func TestSanitizeRequest(t *testing.T) {
	n := newTestNode(t, "http://127.0.0.1:1", nil, nil)
	fields := []string{
		"Connection: X-Tenant, keep-alive", "X-Tenant: acme", "Keep-Alive: timeout=5", "Te: trailers",
		"Upgrade: h2c", "Proxy-Authorization: secret", "X-Forwarded-Host: evil.example",
		"X-Original-URL: /admin", "x-http-method-override: DELETE", "X-Kept: 1",
	}
	gone := []string{"X-Tenant", "Keep-Alive", "Te", "Upgrade", "Proxy-Authorization", "X-Forwarded-Host", "X-Original-Url", "X-Http-Method-Override"}
	build := map[string]func(t *testing.T) *fasthttp.Request{
		"parsed": func(t *testing.T) *fasthttp.Request {
			var req fasthttp.Request
			if err := req.Read(bufio.NewReader(strings.NewReader(getReq("/s", fields...)))); err != nil {
				t.Fatal(err)
			}
			return &req
		},
		"in memory": func(t *testing.T) *fasthttp.Request {
			var req fasthttp.Request
			req.SetRequestURI("/s")
			req.Header.SetHost("shop.example")
			for _, f := range fields {
				k, v, _ := strings.Cut(f, ":")
				req.Header.Add(k, strings.TrimSpace(v))
			}
			return &req
		},
		"chunked with trailer": func(t *testing.T) *fasthttp.Request {
			var req fasthttp.Request
			var head []string
			for _, f := range fields {
				if !strings.HasPrefix(f, "X-Original-URL:") {
					head = append(head, f)
				}
			}
			wire := "POST /s HTTP/1.1\r\nHost: shop.example\r\nTransfer-Encoding: chunked\r\nTrailer: X-Original-URL\r\n" +
				strings.Join(head, "\r\n") + "\r\n\r\n1\r\na\r\n0\r\nX-Original-URL: /admin\r\n\r\n"
			if err := req.Read(bufio.NewReader(strings.NewReader(wire))); err != nil {
				t.Fatal(err)
			}
			if v := req.Header.Peek("X-Original-URL"); string(v) != "/admin" {
				t.Fatalf("trailer field not merged into the header (got %q): this row tests nothing", v)
			}
			return &req
		},
	}
	for name, mk := range build {
		t.Run(name, func(t *testing.T) {
			var ctx fasthttp.RequestCtx
			ctx.Init(mk(t), &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 1}, nil)
			n.pipe.sanitizeRequest(&ctx)
			for _, f := range gone {
				if v := ctx.Request.Header.Peek(f); v != nil {
					t.Errorf("%s: got %q, want it removed", f, v)
				}
			}
			if v := string(ctx.Request.Header.Peek("X-Kept")); v != "1" {
				t.Errorf("X-Kept: got %q, want 1 (end-to-end fields stay)", v)
			}
		})
	}
}

package edge

import (
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestProtocolCounters sends a different number of requests over HTTP/1.1
// (TLS and plain), HTTP/2 and HTTP/3 and reads each protocol's series of
// edgeshield_requests_total on /metrics, the split in /stats, and the
// protocol of each request in the access log (issue 12).
func TestProtocolCounters(t *testing.T) {
	o := newTestOrigin(t, nil, static("proto", "Cache-Control: max-age=600"))
	path := filepath.Join(t.TempDir(), "access.log")
	tn := newTLSTestNode(t, o.srv.URL, nil, func(c *Config) {
		c.Log.Access = path
		c.Log.AccessFormat = "json"
	})
	// Distinct counts per protocol, so a series reading another's counter
	// shows. The plain listener (tls.http: serve) is HTTP/1.1 too.
	sent := map[string]int{protoH1: 2, protoH2: 3, protoH3: 4}
	for _, proto := range allProtos {
		for range sent[proto] {
			if r, _ := tn.fetch(t, proto, "GET", "/p/"+proto); r.StatusCode != 200 {
				t.Fatalf("GET over %s: got %d, want 200", proto, r.StatusCode)
			}
		}
	}
	if r, _ := get(t, "http://"+tn.Addr()+"/p/plain"); r.StatusCode != 200 {
		t.Fatalf("GET over plain HTTP: got %d, want 200", r.StatusCode)
	}
	sent[protoH1]++
	total := sent[protoH1] + sent[protoH2] + sent[protoH3]

	m := scrape(t, "http://"+tn.AdminAddr()+"/metrics")
	var sum float64
	for _, proto := range allProtos {
		key := `edgeshield_requests_total{proto="` + proto + `"}`
		got, ok := m[key]
		if !ok || got != float64(sent[proto]) {
			t.Errorf("%s = %v (present %v), want %d", key, got, ok, sent[proto])
		}
		sum += got
	}
	if s := tn.Stats(); sum != float64(s.Requests) || s.Requests != uint64(total) {
		t.Errorf("sum of edgeshield_requests_total %v, Stats.Requests %d; want both %d", sum, s.Requests, total)
	}
	if _, ok := m["edgeshield_requests_total"]; ok {
		t.Errorf("an unlabelled edgeshield_requests_total beside the per-protocol series: sum() would count requests twice")
	}

	lines := readLog(t, path, total)
	wantProto := map[string]string{"/p/h1": "HTTP/1.1", "/p/plain": "HTTP/1.1", "/p/h2": "HTTP/2.0", "/p/h3": "HTTP/3.0"}
	seen := map[string]int{}
	for _, l := range lines {
		var e struct{ URI, Proto string }
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("access log line %q: %v", l, err)
		}
		if want := wantProto[e.URI]; e.Proto != want {
			t.Errorf("access log: %s logged with proto %q, want %q", e.URI, e.Proto, want)
		}
		seen[strings.TrimPrefix(e.URI, "/p/")]++
	}
	for _, proto := range allProtos {
		if got, want := seen[proto], sent[proto]; proto == protoH1 {
			want-- // the plain request is logged under /p/plain
			if got != want || seen["plain"] != 1 {
				t.Errorf("access log: %d lines for /p/h1 and %d for /p/plain, want %d and 1", got, seen["plain"], want)
			}
		} else if got != want {
			t.Errorf("access log: %d lines for /p/%s, want %d", got, proto, want)
		}
	}
}

// TestCacheStatusSaysProtocol: this node's Cache-Status member names the
// protocol its client spoke, once, in an extension parameter (RFC 9211 §2,
// §4), on a miss, a hit, an answer forwarded uncached and an error,
// over every front and the plain listener (issue 12).
func TestCacheStatusSaysProtocol(t *testing.T) {
	o := newTestOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/private":
			w.Header().Set("Cache-Control", "private")
		case "/broken":
			// Close without an answer: the edge answers 502 itself.
			c, _, _ := w.(http.Hijacker).Hijack()
			c.Close()
			return
		default:
			w.Header().Set("Cache-Control", "max-age=600")
		}
		io.WriteString(w, "ok")
	})
	tn := newTLSTestNode(t, o.srv.URL, nil, func(c *Config) { c.Origin.HealthCheck.Interval = 0 })
	plain := func(path string) *http.Response { r, _ := get(t, "http://"+tn.Addr()+path); return r }
	cases := []struct {
		name, path string
		want       string // a parameter the member must also carry
	}{
		{"miss", "/a", "fwd=uri-miss"},
		{"hit", "/a", "hit"},
		{"not stored", "/private", "fwd-status=200"},
		{"error", "/broken", `detail="`},
	}
	for _, proto := range append(allProtos, "plain") {
		t.Run(proto, func(t *testing.T) {
			wantProto := proto
			if proto == "plain" {
				wantProto = protoH1
			}
			for _, c := range cases {
				path := c.path + "?" + proto // a key of its own per protocol
				var r *http.Response
				if proto == "plain" {
					r = plain(path)
				} else {
					r, _ = tn.fetch(t, proto, "GET", path)
				}
				waitFor(t, "fills stored", 5*time.Second, func() bool { return tn.pipe.flights.Len() == 0 })
				params := cacheStatusParams(t, csOf(r))
				if got := params["edgeshield-proto"]; len(got) != 1 || got[0] != wantProto {
					t.Errorf("%s: Cache-Status %q has edgeshield-proto %q, want exactly one, %q", c.name, csOf(r), got, wantProto)
				}
				if name, _, _ := strings.Cut(c.want, "="); len(params[name]) == 0 || !strings.Contains(csOf(r), c.want) {
					t.Errorf("%s: Cache-Status %q, want %s", c.name, csOf(r), c.want)
				}
			}
		})
	}
}

// cacheStatusParams parses the last member of a Cache-Status value (this
// node's, RFC 9211 §2) into its parameters' values by key; a boolean
// parameter has the value "?1". Keys must be RFC 9651 keys.
func cacheStatusParams(t *testing.T, v string) map[string][]string {
	t.Helper()
	if i := strings.LastIndexByte(v, ','); i >= 0 && !strings.Contains(v[i:], `"`) {
		v = v[i+1:]
	}
	parts := strings.Split(v, ";")
	params := map[string][]string{}
	for _, p := range parts[1:] {
		k, val, ok := strings.Cut(strings.TrimSpace(p), "=")
		if !ok {
			val = "?1"
		}
		for i, c := range k {
			if !(c >= 'a' && c <= 'z' || c == '*' && i == 0 || i > 0 && (c >= '0' && c <= '9' || strings.ContainsRune("_-.*", c))) {
				t.Fatalf("Cache-Status %q: parameter key %q is not a structured-field key", v, k)
			}
		}
		params[k] = append(params[k], val)
		if strings.HasPrefix(val, `"`) { // a quoted detail may hold ';': the last parameter here
			break
		}
	}
	return params
}

package edge

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// aeOrigin answers "Vary: Accept-Encoding" and echoes the Accept-Encoding
// field lines it received ("enc=-" when there were none), and records them.
type aeOrigin struct {
	*testOrigin
	mu   sync.Mutex // guards seen
	seen []string
}

func newAEOrigin(t *testing.T, cacheControl string) *aeOrigin {
	t.Helper()
	a := &aeOrigin{}
	a.testOrigin = newTestOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		v := "-"
		if lines, ok := r.Header["Accept-Encoding"]; ok {
			v = strings.Join(lines, "|")
		}
		a.mu.Lock()
		a.seen = append(a.seen, v)
		a.mu.Unlock()
		w.Header().Set("Cache-Control", cacheControl)
		w.Header().Set("Vary", "Accept-Encoding")
		io.WriteString(w, "enc="+v)
	})
	return a
}

func (a *aeOrigin) received() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.seen...)
}

// aeHeaders turns one test value into request fields: "" is no field at
// all, "\n" separates field lines.
func aeHeaders(v string) []string {
	if v == "" {
		return nil
	}
	var hdr []string
	for _, line := range strings.Split(v, "\n") {
		hdr = append(hdr, "Accept-Encoding: "+line)
	}
	return hdr
}

// TestAcceptEncodingNormalised: browsers' many spellings of Accept-Encoding
// cost the origin one request per set of accepted codings, not one per
// spelling, and the origin chooses from the value the variant is stored
// under, which keeps every coding of the set the client takes.
func TestAcceptEncodingNormalised(t *testing.T) {
	o := newAEOrigin(t, "max-age=60")
	n := newTestNode(t, o.srv.URL, nil, nil) // default cache.accept_encodings: [br, gzip]
	url := "http://" + n.Addr() + "/ae"

	bothClients := []string{
		"gzip, deflate, br",
		"gzip, deflate, br, zstd",
		"br;q=1.0, gzip;q=0.8, *;q=0.1",
		"gzip,deflate,br,zstd",
		"BR, GZIP",
		"br, gzip",
		"deflate, gzip;q=1.0, br;q=0.5, identity;q=0.1",
		"x-gzip, br",
		"gzip, deflate\nbr", // two field lines
		"*",
	}
	for i, ae := range bothClients {
		var r *http.Response
		var body string
		if i == 0 {
			r, body = warm(t, n, url, aeHeaders(ae)...)
			if !strings.Contains(csOf(r), "fwd=uri-miss") {
				t.Errorf("%q: Cache-Status %q, want the first fetch (uri-miss)", ae, csOf(r))
			}
		} else {
			r, body = get(t, url, aeHeaders(ae)...)
			if !isHit(r) {
				t.Errorf("%q: Cache-Status %q, want a hit on the br, gzip variant", ae, csOf(r))
			}
		}
		if body != "enc=br, gzip" {
			t.Errorf("%q: body %q, want the variant enc=br, gzip", ae, body)
		}
	}
	if got := o.count("/ae"); got != 1 {
		t.Fatalf("origin saw %d requests for %d browser spellings that all take br and gzip, want 1", got, len(bothClients))
	}

	r, body := warm(t, n, url, aeHeaders("br")...)
	if body != "enc=br" || !strings.Contains(csOf(r), "fwd=vary-miss") {
		t.Errorf("br: %q %q, want enc=br from a vary-miss", body, csOf(r))
	}
	for _, ae := range []string{"zstd;q=1, br;q=0.9", "br;q=1, gzip;q=0", "*, gzip;q=0"} {
		if r, body := get(t, url, aeHeaders(ae)...); !isHit(r) || body != "enc=br" {
			t.Errorf("%q: %q %q, want a hit on the br variant", ae, csOf(r), body)
		}
	}
	if got := o.count("/ae"); got != 2 {
		t.Fatalf("origin saw %d requests after the br-only clients, want 2", got)
	}

	r, body = warm(t, n, url, aeHeaders("gzip, deflate")...)
	if body != "enc=gzip" || !strings.Contains(csOf(r), "fwd=vary-miss") {
		t.Errorf("gzip, deflate: %q %q, want enc=gzip from a vary-miss", body, csOf(r))
	}
	for _, ae := range []string{"gzip", "x-gzip;q=0.5, deflate", "br;q=0, gzip", "*;q=0.5, br;q=0"} {
		if r, body := get(t, url, aeHeaders(ae)...); !isHit(r) || body != "enc=gzip" {
			t.Errorf("%q: %q %q, want a hit on the gzip variant", ae, csOf(r), body)
		}
	}
	if got := o.count("/ae"); got != 3 {
		t.Fatalf("origin saw %d requests after the gzip clients, want 3", got)
	}

	r, body = warm(t, n, url) // no Accept-Encoding
	if body != "enc=-" || !strings.Contains(csOf(r), "fwd=vary-miss") {
		t.Errorf("no Accept-Encoding: %q %q, want enc=- (identity) from a vary-miss", body, csOf(r))
	}
	for _, ae := range []string{"identity", "br;q=0, gzip;q=0", "deflate", "*;q=0", "br;q=2, gzip;q=abc"} {
		if r, body := get(t, url, aeHeaders(ae)...); !isHit(r) || body != "enc=-" {
			t.Errorf("%q: %q %q, want a hit on the identity variant", ae, csOf(r), body)
		}
	}
	if got := o.count("/ae"); got != 4 {
		t.Errorf("origin saw %d requests, want 4 (br+gzip, br, gzip, identity)", got)
	}
	if got, want := strings.Join(o.received(), " | "), "br, gzip | br | gzip | -"; got != want {
		t.Errorf("origin received Accept-Encoding %s, want %s (the normalised values)", got, want)
	}
}

// TestAcceptEncodingOff: `cache.accept_encodings: []` keeps the field as the
// client sent it, so every spelling is its own variant (the old behaviour).
func TestAcceptEncodingOff(t *testing.T) {
	o := newAEOrigin(t, "max-age=60")
	n := newTestNode(t, o.srv.URL, nil, func(c *Config) { c.Cache.AcceptEncodings = []string{} })
	url := "http://" + n.Addr() + "/ae"
	spellings := []string{"gzip, deflate, br", "gzip, deflate, br, zstd", "br, gzip"}
	for _, ae := range spellings {
		if _, body := warm(t, n, url, aeHeaders(ae)...); body != "enc="+ae {
			t.Errorf("%q: body %q, want the raw value echoed", ae, body)
		}
	}
	if got := o.count("/ae"); got != len(spellings) {
		t.Errorf("origin saw %d requests, want %d (one per distinct string)", got, len(spellings))
	}
	if r, body := get(t, url, aeHeaders(spellings[1])...); !isHit(r) || body != "enc="+spellings[1] {
		t.Errorf("repeat: %q %q, want a hit on its own variant", csOf(r), body)
	}
}

// TestAcceptEncodingPassAndUnsafe: GET and HEAD are normalised even when the
// response turns out uncacheable (that is known only after the forward);
// other methods, never stored, reach the origin untouched.
func TestAcceptEncodingPassAndUnsafe(t *testing.T) {
	o := newAEOrigin(t, "no-store")
	n := newTestNode(t, o.srv.URL, nil, nil)
	url := "http://" + n.Addr() + "/ae"
	const browser = "gzip, deflate, br, zstd"
	for i := 0; i < 2; i++ { // the second is a hit-for-pass bypass
		if _, body := get(t, url, aeHeaders(browser)...); body != "enc=br, gzip" {
			t.Errorf("uncacheable GET %d: body %q, want enc=br, gzip", i, body)
		}
	}
	if _, body := do(t, http.MethodPost, url, aeHeaders(browser)...); body != "enc="+browser {
		t.Errorf("POST: body %q, want the client's field untouched", body)
	}
	if got := o.count("/ae"); got != 3 {
		t.Errorf("origin saw %d requests, want 3 (nothing stored)", got)
	}
}

// TestClusterAcceptEncodingOneOriginRequest: each member normalises its own
// clients' field; shield hops carry the normalised value, which the owner
// keeps as is, so browsers' different spellings across the cluster still
// cost the origin ONE request.
func TestClusterAcceptEncodingOneOriginRequest(t *testing.T) {
	o := newAEOrigin(t, "public, max-age=300")
	nodes := newCluster(t, 3, o.srv.URL, nil)
	spellings := []string{"gzip, deflate, br", "br;q=1.0, gzip;q=0.8, *;q=0.1", "gzip, deflate, br, zstd"}
	for round := 0; round < 2; round++ {
		for i, n := range nodes {
			ae := spellings[(i+round)%len(spellings)]
			r, body := warm(t, n, "http://"+n.Addr()+"/cluster-ae", append(aeHeaders(ae), "Host: cdn.example")...)
			if r.StatusCode != 200 || body != "enc=br, gzip" {
				t.Errorf("%s %q: %d %q, want 200 enc=br, gzip", n.Name(), ae, r.StatusCode, body)
			}
		}
	}
	if got := o.count("/cluster-ae"); got != 1 {
		t.Errorf("origin saw %d requests, want 1 for the cluster", got)
	}
	if got := strings.Join(o.received(), " | "); got != "br, gzip" {
		t.Errorf("origin received Accept-Encoding %s, want br, gzip", got)
	}
}

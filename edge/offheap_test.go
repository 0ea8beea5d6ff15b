//go:build linux

package edge

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func patternBody(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*13 + i>>10)
	}
	return b
}

// bigOrigin serves a patterned body of size bytes at every path, cacheable
// for an hour, with validators.
func bigOrigin(t *testing.T, size int) (*testOrigin, []byte) {
	body := patternBody(size)
	o := newTestOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=3600")
		w.Header().Set("ETag", `"big"`)
		w.Header().Set("Content-Type", "application/octet-stream")
		if r.Header.Get("If-None-Match") == `"big"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Write(body)
	})
	return o, body
}

// TestOffheapHitsUseSendfile: a body over cache.offheap_min_size is kept in
// a memory file; full and single-range hits on the plain listener go out
// with sendfile, and every other way of answering from it (HEAD, 304,
// multipart ranges) still gives the right bytes.
func TestOffheapHitsUseSendfile(t *testing.T) {
	const size = 1 << 20
	o, body := bigOrigin(t, size)
	n := newTestNode(t, o.srv.URL, nil, func(c *Config) { c.Cache.OffheapMinSize = 128 << 10 })
	url := "http://" + n.Addr() + "/big"
	warm(t, n, url)
	st := n.Stats()
	if st.OffheapObjects != 1 || st.OffheapBytes != size {
		t.Fatalf("after the fill: offheap %d objects / %d bytes, want 1 / %d", st.OffheapObjects, st.OffheapBytes, size)
	}

	r, b := get(t, url)
	if !isHit(r) || !bytes.Equal([]byte(b), body) || r.ContentLength != size {
		t.Fatalf("hit: Cache-Status %q, %d bytes (Content-Length %d), equal %v", csOf(r), len(b), r.ContentLength, b == string(body))
	}
	// The counter moves when sendfile returns on the server, which can be
	// just after the client has read the last byte.
	sentBy := func(base uint64, want uint64) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for n.Stats().SendfileBytes-base < want && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if got := n.Stats().SendfileBytes - base; got != want {
			t.Errorf("sendfile carried %d bytes, want %d", got, want)
		}
	}
	sentBy(st.SendfileBytes, size)

	sent := n.Stats().SendfileBytes
	r, b = get(t, url, "Range: bytes=1000-200999")
	if r.StatusCode != 206 || b != string(body[1000:201000]) || r.Header.Get("Content-Range") != fmt.Sprintf("bytes 1000-200999/%d", size) {
		t.Fatalf("range: %d, %d bytes, Content-Range %q", r.StatusCode, len(b), r.Header.Get("Content-Range"))
	}
	sentBy(sent, 200000)

	r, b = get(t, url, "Range: bytes=0-9, 500000-500009")
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if r.StatusCode != 206 || err != nil || mt != "multipart/byteranges" {
		t.Fatalf("multipart: %d %q", r.StatusCode, r.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(strings.NewReader(b), params["boundary"])
	for _, want := range [][]byte{body[:10], body[500000:500010]} {
		p, err := mr.NextPart()
		if err != nil {
			t.Fatal(err)
		}
		pb, _ := io.ReadAll(p)
		if !bytes.Equal(pb, want) {
			t.Errorf("part %q: %x, want %x", p.Header.Get("Content-Range"), pb, want)
		}
	}

	r, b = do(t, http.MethodHead, url)
	if r.StatusCode != 200 || b != "" || r.ContentLength != size || !isHit(r) {
		t.Errorf("HEAD: %d, %d body bytes, Content-Length %d, Cache-Status %q", r.StatusCode, len(b), r.ContentLength, csOf(r))
	}
	r, b = get(t, url, `If-None-Match: "big"`)
	if r.StatusCode != 304 || b != "" {
		t.Errorf("conditional hit: %d with %d bytes, want an empty 304", r.StatusCode, len(b))
	}
	if got := o.count("/big"); got != 1 {
		t.Errorf("origin saw %d requests, want 1", got)
	}
	// Every way of answering above released its reference: once the store
	// lets go too (hard purge), the file is closed.
	pr, _ := do(t, http.MethodPost, "http://"+n.AdminAddr()+"/purge?url="+url+"&hard=1")
	if pr.StatusCode != 200 {
		t.Fatalf("purge: %d", pr.StatusCode)
	}
	waitFor(t, "the memory file to close after the purge", 5*time.Second, func() bool { return n.Stats().OffheapObjects == 0 })
	if st := n.Stats(); st.OffheapBytes != 0 || st.OffheapLeaked != 0 {
		t.Errorf("after the purge: offheap bytes %d, leaked %d; want 0 and 0", st.OffheapBytes, st.OffheapLeaked)
	}
}

// TestOffheapBodyOutlivesPurge: a client still downloading an object that
// is purged (and replaced) meanwhile gets the whole old body, byte for byte;
// the memory file is closed once that client is done.
func TestOffheapBodyOutlivesPurge(t *testing.T) {
	const size = 24 << 20 // far more than the loopback socket buffers hold
	o, body := bigOrigin(t, size)
	n := newTestNode(t, o.srv.URL, nil, func(c *Config) {
		c.Cache.OffheapMinSize = 128 << 10
		c.Cache.MaxObjectSize = 32 << 20
	})
	url := "http://" + n.Addr() + "/video"
	warm(t, n, url)

	conn, err := net.Dial("tcp", n.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.(*net.TCPConn).SetReadBuffer(16 << 10)
	fmt.Fprintf(conn, "GET /video HTTP/1.1\r\nHost: %s\r\n\r\n", n.Addr())
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !isHit(resp) {
		t.Fatalf("slow client: Cache-Status %q, want a hit", csOf(resp))
	}
	first := make([]byte, 64<<10)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatal(err)
	}

	// Hard purge: the entry is deleted; the next request fetches again.
	pr, _ := do(t, http.MethodPost, "http://"+n.AdminAddr()+"/purge?url="+url+"&hard=1")
	if pr.StatusCode != 200 {
		t.Fatalf("purge: %d", pr.StatusCode)
	}
	r2, b2 := get(t, url)
	if isHit(r2) || b2 != string(body) {
		t.Fatalf("after the purge: Cache-Status %q, %d bytes; want a miss with the body", csOf(r2), len(b2))
	}
	warm(t, n, url)
	if got := n.Stats().OffheapObjects; got != 2 {
		t.Fatalf("offheap objects while the old body is still being read: %d, want 2 (old, held by the slow client; new)", got)
	}

	rest, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if got := append(first, rest...); !bytes.Equal(got, body) {
		t.Fatalf("slow client got %d bytes, equal %v; want the whole %d-byte body", len(got), bytes.Equal(got, body), size)
	}
	waitFor(t, "the old memory file to close", 5*time.Second, func() bool { return n.Stats().OffheapObjects == 1 })
	if st := n.Stats(); st.OffheapBytes != size {
		t.Errorf("offheap bytes %d, want %d (just the new copy)", st.OffheapBytes, size)
	}
}

// TestOffheapDisabledAndSmallBodies: 0 keeps every body on the heap, and
// bodies under the threshold stay there too.
func TestOffheapDisabledAndSmallBodies(t *testing.T) {
	o, body := bigOrigin(t, 200<<10)
	for _, tc := range []struct {
		name    string
		min     Size
		offheap int64
	}{
		{"off", 0, 0},
		{"under the threshold", 256 << 10, 0},
		{"over the threshold", 128 << 10, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newTestNode(t, o.srv.URL, nil, func(c *Config) { c.Cache.OffheapMinSize = tc.min })
			url := "http://" + n.Addr() + "/o"
			warm(t, n, url)
			r, b := get(t, url)
			if !isHit(r) || b != string(body) {
				t.Fatalf("hit: Cache-Status %q, %d bytes", csOf(r), len(b))
			}
			if got := n.Stats().OffheapObjects; got != tc.offheap {
				t.Errorf("offheap objects %d, want %d", got, tc.offheap)
			}
		})
	}
}

// TestOffheapRevalidation: a 304 refreshes a memory-file entry without
// copying its body; the refreshed entry serves the same bytes and, once the
// old entry is replaced, only one file remains.
func TestOffheapRevalidation(t *testing.T) {
	clk := newTestClock()
	body := patternBody(300 << 10)
	o := newTestOrigin(t, clk, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=10")
		w.Header().Set("ETag", `"v"`)
		if r.Header.Get("If-None-Match") == `"v"` {
			w.Header().Set("X-Refreshed", "yes")
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Write(body)
	})
	n := newTestNode(t, o.srv.URL, clk, func(c *Config) { c.Cache.OffheapMinSize = 128 << 10 })
	url := "http://" + n.Addr() + "/r"
	warm(t, n, url)
	clk.advance(11 * time.Second)
	r, b := warm(t, n, url)
	if b != string(body) || !strings.Contains(csOf(r), "fwd-status=304") {
		t.Fatalf("revalidated: Cache-Status %q, %d bytes", csOf(r), len(b))
	}
	r, b = get(t, url)
	if !isHit(r) || b != string(body) || r.Header.Get("X-Refreshed") != "yes" {
		t.Fatalf("after the 304: Cache-Status %q X-Refreshed %q, %d bytes", csOf(r), r.Header.Get("X-Refreshed"), len(b))
	}
	waitFor(t, "one memory file", 5*time.Second, func() bool { return n.Stats().OffheapObjects == 1 })
	if got := o.count("/r"); got != 2 {
		t.Errorf("origin saw %d requests, want 2", got)
	}
}

// TestRefusedFetchReleasesStaleBody: once Shutdown has begun, the flight
// that would revalidate a stale entry is refused; the reference its job
// took on the entry's memory file must still be released (in the
// foreground and in the background), or the file outlives the entry.
func TestRefusedFetchReleasesStaleBody(t *testing.T) {
	for _, tc := range []struct{ name, cc string }{
		{"foreground", "max-age=1"},
		{"stale-while-revalidate", "max-age=1, stale-while-revalidate=60"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newTestClock()
			body := patternBody(256 << 10)
			o := newTestOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Cache-Control", tc.cc)
				w.Header().Set("ETag", `"big"`)
				w.Write(body)
			})
			n := newTestNode(t, o.srv.URL, clock, func(c *Config) { c.Cache.OffheapMinSize = 128 << 10 })
			url := "http://" + n.Addr() + "/big"
			warm(t, n, url)
			if got := n.Stats().OffheapObjects; got != 1 {
				t.Fatalf("after the fill: got %d memory files, want 1", got)
			}
			clock.advance(10 * time.Second)
			n.bg.mu.Lock()
			n.bg.closed = true // what Shutdown does first: no new fetches
			n.bg.mu.Unlock()
			get(t, url)
			if got := o.count("/big"); got != 1 {
				t.Fatalf("origin saw %d requests, want 1 (the refused fetch never runs)", got)
			}
			pr, _ := do(t, http.MethodPost, "http://"+n.AdminAddr()+"/purge?url="+url+"&hard=1")
			if pr.StatusCode != 200 {
				t.Fatalf("purge: %d", pr.StatusCode)
			}
			waitFor(t, "the memory file to close after the purge", 5*time.Second, func() bool { return n.Stats().OffheapObjects == 0 })
			if got := n.Stats().OffheapLeaked; got != 0 {
				t.Errorf("got %d leaked memory files, want 0", got)
			}
		})
	}
}

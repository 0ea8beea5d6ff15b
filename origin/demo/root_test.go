package demo

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func writeFile(t *testing.T, dir, name, content string, mtime time.Time) {
	t.Helper()
	p := filepath.Join(dir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

func TestRootDirectory(t *testing.T) {
	dir := t.TempDir()
	mtime := time.Date(2024, 3, 4, 5, 6, 7, 0, time.UTC)
	files := map[string]string{
		"index.html":      "<!doctype html><title>root</title>",
		"app.css":         "body{}",
		"lib/app.js":      "console.log(1)",
		"img/a.png":       "\x89PNG\r\n\x1a\nfake",
		"movie.mp4":       "\x00\x00\x00\x20ftypisom",
		"data.bin":        "0123456789",
		"notes.unknown":   "??",
		"docs/index.html": "<p>docs</p>",
		".env":            "SECRET=1",
		".git/config":     "[core]",
	}
	for name, content := range files {
		writeFile(t, dir, name, content, mtime)
	}
	outside := filepath.Join(t.TempDir(), "outside.txt")
	if err := os.WriteFile(outside, []byte("outside"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "escape.txt")); err != nil {
		t.Fatal(err)
	}

	s := startServer(t, Config{Root: dir})
	c := newClient(t)
	tests := []struct {
		path, wantBody, contentType, cacheControl string
		wantStatus                                int
	}{
		{"/", files["index.html"], "text/html; charset=utf-8", ccHTML, 200},
		{"/index.html", files["index.html"], "text/html; charset=utf-8", ccHTML, 200},
		{"/app.css", files["app.css"], "text/css; charset=utf-8", ccImmutable, 200},
		{"/lib/app.js", files["lib/app.js"], "text/javascript; charset=utf-8", ccImmutable, 200},
		{"/img/a.png", files["img/a.png"], "image/png", ccDay, 200},
		{"/movie.mp4", files["movie.mp4"], "video/mp4", ccDay, 200},
		{"/data.bin", files["data.bin"], "application/octet-stream", ccHour, 200},
		{"/notes.unknown", files["notes.unknown"], "application/octet-stream", ccHour, 200},
		{"/docs/", files["docs/index.html"], "text/html; charset=utf-8", ccHTML, 200},
		{"/docs", files["docs/index.html"], "text/html; charset=utf-8", ccHTML, 200},
		{"/missing.html", "", "", "", 404},
		{"/.env", "", "", "", 404},
		{"/.git/config", "", "", "", 404},
		{"/escape.txt", "", "", "", 404},
		{"/../outside.txt", "", "", "", 404},
		{"/lib/", "", "", "", 404},
		{"/bench/1k.bin", "", "", "", 404}, // the embedded site is not served
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			r := do(t, c, "GET", s.URL()+tt.path, nil)
			if r.status != tt.wantStatus {
				t.Fatalf("status: got %d, want %d", r.status, tt.wantStatus)
			}
			if tt.wantStatus != 200 {
				return
			}
			if string(r.body) != tt.wantBody {
				t.Errorf("body: got %q, want %q", r.body, tt.wantBody)
			}
			want := map[string]string{
				"Content-Type":  tt.contentType,
				"Cache-Control": tt.cacheControl,
				"ETag":          sha([]byte(tt.wantBody)),
				"Last-Modified": mtime.Format(http.TimeFormat),
				"Accept-Ranges": "bytes",
			}
			for k, v := range want {
				if got := r.header.Get(k); got != v {
					t.Errorf("%s: got %q, want %q", k, got, v)
				}
			}
		})
	}

	t.Run("dyn still served", func(t *testing.T) {
		if r := do(t, c, "GET", s.URL()+"/dyn/x?size=3", nil); r.status != 200 || len(r.body) != 3 {
			t.Errorf("got %d with %d bytes, want 200 with 3", r.status, len(r.body))
		}
	})
	t.Run("range, HEAD and 304", func(t *testing.T) {
		r := do(t, c, "GET", s.URL()+"/data.bin", map[string]string{"Range": "bytes=2-4"})
		if r.status != 206 || string(r.body) != "234" {
			t.Errorf("range: got %d %q, want 206 \"234\"", r.status, r.body)
		}
		r = do(t, c, "HEAD", s.URL()+"/data.bin", nil)
		if r.status != 200 || r.length != 10 || len(r.body) != 0 {
			t.Errorf("HEAD: got %d, length %d, %d body bytes, want 200, 10, 0", r.status, r.length, len(r.body))
		}
		r = do(t, c, "GET", s.URL()+"/data.bin", map[string]string{"If-Modified-Since": mtime.Format(http.TimeFormat)})
		if r.status != 304 {
			t.Errorf("If-Modified-Since: got %d, want 304", r.status)
		}
	})
	t.Run("ETag follows content changes", func(t *testing.T) {
		before := do(t, c, "GET", s.URL()+"/app.css", nil).header.Get("ETag")
		writeFile(t, dir, "app.css", "body{color:red}", mtime.Add(time.Minute))
		r := do(t, c, "GET", s.URL()+"/app.css", nil)
		if got, want := r.header.Get("ETag"), sha([]byte("body{color:red}")); got != want || got == before {
			t.Errorf("ETag after change: got %s (before %s), want %s", got, before, want)
		}
	})
}

// A large file is streamed from disk with the right length and bytes.
func TestRootLargeFile(t *testing.T) {
	dir := t.TempDir()
	content := bytes.Repeat([]byte("0123456789abcdef"), 200<<10/16) // 200 KiB
	if err := os.WriteFile(filepath.Join(dir, "big.bin"), content, 0o644); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, Config{Root: dir})
	c := newClient(t)
	r := do(t, c, "GET", s.URL()+"/big.bin", nil)
	if r.status != 200 || !bytes.Equal(r.body, content) {
		t.Errorf("got %d with %d bytes, want 200 with the %d-byte file", r.status, len(r.body), len(content))
	}
	r = do(t, c, "GET", s.URL()+"/big.bin", map[string]string{"Range": "bytes=100000-100015"})
	if r.status != 206 || !bytes.Equal(r.body, content[100000:100016]) {
		t.Errorf("range: got %d %q, want 206 %q", r.status, r.body, content[100000:100016])
	}
}

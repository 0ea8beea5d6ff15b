package demo

import "testing"

func TestTypeOf(t *testing.T) {
	tests := []struct{ path, contentType, cacheControl string }{
		{"/a.html", "text/html; charset=utf-8", ccHTML},
		{"/A.HTM", "text/html; charset=utf-8", ccHTML},
		{"/s.css", "text/css; charset=utf-8", ccImmutable},
		{"/m.mjs", "text/javascript; charset=utf-8", ccImmutable},
		{"/f.woff2", "font/woff2", ccImmutable},
		{"/f.woff", "font/woff", ccImmutable},
		{"/i.svg", "image/svg+xml", ccDay},
		{"/i.jpeg", "image/jpeg", ccDay},
		{"/i.gif", "image/gif", ccDay},
		{"/i.webp", "image/webp", ccDay},
		{"/i.avif", "image/avif", ccDay},
		{"/favicon.ico", "image/x-icon", ccDay},
		{"/v.m4v", "video/mp4", ccDay},
		{"/v.webm", "video/webm", ccDay},
		{"/d.json", "application/json", ccHour},
		{"/r.txt", "text/plain; charset=utf-8", ccHour},
		{"/s.xml", "application/xml", ccHour},
		{"/w.wasm", "application/wasm", ccHour},
		{"/b.bin", "application/octet-stream", ccHour},
		{"/no-extension", "application/octet-stream", ccHour},
		{"/dir.html/file", "application/octet-stream", ccHour},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			ct, cc := typeOf(tt.path)
			if ct != tt.contentType || cc != tt.cacheControl {
				t.Errorf("got %q, %q, want %q, %q", ct, cc, tt.contentType, tt.cacheControl)
			}
		})
	}
}

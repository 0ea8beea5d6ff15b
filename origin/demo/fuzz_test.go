package demo

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"testing"

	"github.com/valyala/fasthttp"
)

func FuzzParseRange(f *testing.F) {
	f.Add("bytes=0-9", int64(1024))
	f.Add("bytes=-5", int64(3))
	f.Add("bytes=5-", int64(0))
	f.Add("bytes=0-1,2-3", int64(10))
	f.Add("bytes=99999999999999999999-", int64(10))
	f.Fuzz(func(t *testing.T, v string, size int64) {
		if size < 0 {
			size = -(size + 1)
		}
		first, last, res := parseRange([]byte(v), size)
		if res == rangeOK && (first < 0 || first > last || last >= size) {
			t.Fatalf("parseRange(%q, %d) = %d-%d, want 0 <= first <= last < size", v, size, first, last)
		}
	})
}

func FuzzETagListMatch(f *testing.F) {
	f.Add(`"a", W/"b"`, `"b"`, false)
	f.Add(`*`, `"x"`, true)
	f.Add(`W/"`, `W/"a"`, true)
	f.Fuzz(func(t *testing.T, list, tag string, strong bool) {
		got := etagListMatch([]byte(list), tag, strong)
		if _, opaque := splitETag([]byte(tag)); opaque != nil && !strong && !got && list == tag {
			t.Fatalf("etagListMatch(%q, %q) = false, want a tag to match itself", list, tag)
		}
	})
}

func FuzzDynQuery(f *testing.F) {
	f.Add("size=10&status=404&h.Vary=A&etag=x&lm=1&chunked=1&chunkdelay=1ms&echo=0")
	f.Add("h.=1&size=-1")
	f.Add("h.X=%0d%0a&etag=%22")
	f.Fuzz(func(t *testing.T, query string) {
		var args fasthttp.Args
		args.Parse(query)
		q, err := parseDynQuery(&args)
		if err != nil {
			return
		}
		if q.size < 0 || q.size > dynMaxSize || q.status < 200 || q.status > 599 || q.chunkSize < 1 {
			t.Fatalf("parseDynQuery(%q) accepted out-of-range values: %+v", query, q)
		}
		for _, kv := range q.headers {
			if !validToken(kv[0]) || bytes.ContainsAny([]byte(kv[1]), "\r\n\x00") {
				t.Fatalf("parseDynQuery(%q) accepted header %q", query, kv)
			}
		}
	})
}

// FuzzRequest feeds arbitrary request bytes through the fasthttp parser
// and the handler of a closed server (so every injected wait returns at
// once) and writes the response. A handler panic shows up as the 500 of
// recoverPanic and fails the target.
func FuzzRequest(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	f.Add([]byte("GET /bench/1k.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=-0\r\nIf-Range: W/\"x\"\r\n\r\n"))
	f.Add([]byte("HEAD /dyn/a?chunked=1&size=10 HTTP/1.1\r\nHost: x\r\nX-Origin-Stall: 1s\r\n\r\n"))
	f.Add([]byte("POST /dyn/a?echo=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"))
	s, err := New(Config{})
	if err != nil {
		f.Fatal(err)
	}
	if err := s.Close(); err != nil {
		f.Fatal(err)
	}
	remote := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1234}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var req fasthttp.Request
		if err := req.Read(bufio.NewReader(bytes.NewReader(raw))); err != nil {
			return
		}
		// Keep generated bodies small so the fuzzer explores paths, not memcpy.
		if args := req.URI().QueryArgs(); len(args.Peek("size")) > 6 {
			args.Set("size", "100000")
		}
		var ctx fasthttp.RequestCtx
		ctx.Init(&req, remote, nil)
		s.handle(&ctx)
		if ctx.Response.StatusCode() == fasthttp.StatusInternalServerError && string(ctx.Response.Body()) == "internal error\n" {
			t.Fatalf("handler panicked on %q", raw)
		}
		if err := ctx.Response.Write(bufio.NewWriter(io.Discard)); err != nil {
			t.Fatalf("write response to %q: %v", raw, err)
		}
	})
}

// Command ceiling is the bench's upper bound for a 1 KiB cache hit: a bare
// fasthttp server that answers every request with the headers and 1 KiB
// body an Edgeshield hit sends, from memory, with no cache lookup, no
// request checks and no bookkeeping. hits-vs-nginx.sh runs it on the same
// core and settings as the edge (GOMAXPROCS=1, same fasthttp version), so
// edge / ceiling is the share of the achievable rate the hit path keeps.
//
//	go run ./bench/wrk/ceiling --listen 127.0.0.1:28070
package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:28070", "address to serve on")
	size := flag.Int("size", 1024, "body size in bytes")
	flag.Parse()
	body := make([]byte, *size)
	for i := range body {
		body[i] = 'x'
	}
	date := []byte(time.Date(2026, 12, 6, 3, 58, 51, 0, time.UTC).Format(time.RFC1123))
	fields := [][2][]byte{
		{[]byte("Server"), []byte("edgeshield-demo-origin")},
		{[]byte("Content-Type"), []byte("application/octet-stream")},
		{[]byte("Date"), date},
		{[]byte("Etag"), []byte(`"a2aaca58cfe7b31eb338156b16a3c602"`)},
		{[]byte("Last-Modified"), []byte("Sun, 01 Jun 2025 12:00:00 GMT")},
		{[]byte("Cache-Control"), []byte("public, max-age=3600")},
		{[]byte("Accept-Ranges"), []byte("bytes")},
		{[]byte("Via"), []byte("1.1 bench (edgeshield)")},
		{[]byte("Age"), []byte("0")},
	}
	start := time.Now()
	srv := &fasthttp.Server{
		Name:                  "ceiling",
		NoDefaultServerHeader: true,
		NoDefaultContentType:  true,
		NoDefaultDate:         true,
		Handler: func(ctx *fasthttp.RequestCtx) {
			h := &ctx.Response.Header
			for _, f := range fields {
				h.AddBytesKV(f[0], f[1])
			}
			// A hit's Age and ttl are computed per request: so are these.
			var buf [48]byte
			v := append(buf[:0], "bench; hit; ttl="...)
			v = strconv.AppendInt(v, int64(3600-time.Since(start)/time.Second), 10)
			h.SetBytesV("Cache-Status", v)
			ctx.Response.SetBodyRaw(body)
		},
	}
	fmt.Fprintf(os.Stderr, "ceiling: %d-byte answers on %s\n", *size, *listen)
	if err := srv.ListenAndServe(*listen); err != nil {
		fmt.Fprintln(os.Stderr, "ceiling:", err)
		os.Exit(1)
	}
}

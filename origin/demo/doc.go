// Package demo is Edgeshield's built-in demo origin: a small HTTP/1.1 origin
// server with a realistic static site, dynamic test objects, request
// counters and fault injection. `edgeshield origin`, `make run`, the
// integration tests and the bench harness all stand it behind an edge node,
// so its behaviour is specified exactly here.
//
// # Concurrency
//
// A Server is safe for concurrent use. New starts nothing; Start listens and
// serves on a background goroutine; Close is idempotent, ends every injected
// wait at once and returns after the serve goroutine and every hijacked
// connection (reset, stall) are finished. Handler exposes the request handler
// for embedding in another fasthttp server; Close still governs its waits.
//
// # Sample site
//
// With Config.Root == "" the server serves an embedded site whose bytes are
// identical in every build and process:
//
//	/  and /index.html    text/html                 public, max-age=60, stale-while-revalidate=30
//	/css/site.css         text/css                  public, max-age=31536000, immutable
//	/js/app.js            text/javascript           public, max-age=31536000, immutable
//	/img/logo.svg         image/svg+xml (small)     public, max-age=86400
//	/img/photo-64k.jpg    image/jpeg, 65536 B       public, max-age=86400
//	/img/hero-1m.jpg      image/jpeg, 1048576 B     public, max-age=86400
//	/media/intro.mp4      video/mp4, 6291456 B      public, max-age=86400
//	/bench/1k.bin         application/octet-stream, 1024 B     public, max-age=3600
//	/bench/64k.bin        application/octet-stream, 65536 B    public, max-age=3600
//	/bench/1m.bin         application/octet-stream, 1048576 B  public, max-age=3600
//
// The text files are embedded; the binary ones are generated on first use
// from a seeded counter-mode PRNG (with JPEG and MP4 signatures), so nothing
// large is committed. Every object has Content-Type, a strong ETag (the first
// 128 bits of the SHA-256 of the content, quoted), Last-Modified
// (Sun, 01 Jun 2025 12:00:00 GMT), Cache-Control as above and
// Accept-Ranges: bytes. With Config.Root set, files under that directory are
// served with the same rules chosen by extension (unknown extensions:
// application/octet-stream, public, max-age=3600), Last-Modified from the
// file's mtime, and a directory serves its index.html; dot-files are never
// served. Other paths get 404 with a text body and no Cache-Control.
//
// Content paths accept GET and HEAD; other methods get 405 with Allow.
// HEAD answers exactly like GET (same Content-Length) without a body.
//
// Preconditions (RFC 9110 §13), for GET and HEAD of a 200 response:
// If-None-Match (weak comparison, "*" matches) and, only when If-None-Match
// is absent, If-Modified-Since give 304 Not Modified carrying ETag,
// Last-Modified, Cache-Control and Date but no Content-Type and no body.
// If-Match and If-Unmodified-Since are not implemented, nor is content
// coding: responses are never compressed (use /dyn with h.Vary and
// h.Content-Encoding to test Vary handling).
//
// Ranges (RFC 9110 §14), for GET of a 200 response: one range
// ("bytes=0-99", "bytes=100-", "bytes=-100") gives 206 with Content-Range;
// a range starting at or beyond the end, or "bytes=-0", gives 416 with
// "Content-Range: bytes */<size>". Malformed ranges, other units and
// multiple ranges are ignored (200 with the full body), as §14.2 allows.
// If-Range is honoured: a strong ETag match or an exact Last-Modified match
// keeps the range, anything else sends the full 200.
//
// # Dynamic objects: /dyn/<anything>
//
// Always present, also with Config.Root. Methods GET, HEAD, POST, PUT and
// DELETE all answer the same way (so an edge's invalidation on unsafe
// methods can be tested); others get 405. Unknown query parameters are
// ignored (cache busters work); a malformed known one gives 400 naming it.
// Query parameters:
//
//	size=N         body length, default 1024, 0..64 MiB. The body is printable
//	               text that depends only on the path (not the query), and a
//	               shorter body is a prefix of a longer one.
//	status=N       status code, 200..599, default 200. 204 and 304 have no
//	               body. Preconditions and ranges only apply to 200.
//	h.<Name>=V     add response header Name: V (repeat to add several values),
//	               e.g. h.Cache-Control=max-age%3D60&h.Vary=Accept-Encoding.
//	               h.Content-Type replaces the default text/plain; charset=utf-8.
//	               Content-Length and Transfer-Encoding cannot be set.
//	etag=T         ETag: T (quoted unless given as "T" or W/"T"); If-None-Match
//	               then gives 304.
//	lm=S           Last-Modified from Unix seconds S; If-Modified-Since then
//	               gives 304.
//	chunked=1      stream the body with chunked transfer coding and no
//	               Content-Length, one flushed chunk per chunksize bytes
//	               (chunksize=N, default 1024, at most 1 MiB) with
//	               chunkdelay=D (Go duration, default 0) between chunks.
//	               Without a delay, adjacent chunks may be merged on the wire.
//	echo=1         the body is a JSON document describing the request as
//	               received (application/json): method, uri, path, proto, host,
//	               remote_addr, headers (name → values, as they arrived, so
//	               hop-by-hop headers an edge failed to strip show up) and
//	               body_size. size is then ignored; all other parameters apply.
//
// Responses without h.Cache-Control carry no Cache-Control at all.
//
// # Test endpoints
//
//	GET|HEAD /__origin/counts  → 200 {"total":N,"paths":{"/a":n,…},"methods":{"GET":{"/a":n,…},…}}
//	DELETE   /__origin/counts  → same document, then every counter is zeroed (atomically)
//	POST     /__origin/reset   → same as DELETE /__origin/counts
//	GET|HEAD /__origin/health  → 200 "ok"
//
// All are application/json or text/plain with Cache-Control: no-store, so
// an edge in front never caches them. Other /__origin/ paths get 404.
//
// # Counting
//
// Every request whose path is not under /__origin/ is counted once, keyed by
// its decoded, normalised path without the query, before faults and
// latency are applied: whatever the method and the outcome (200, 206, 304,
// 404, 405, injected fault, reset). Requests refused by SetDown are not
// counted: a down origin receives nothing. Count sums all methods,
// CountMethod splits them, Counts and Snapshot return copies, ResetCounts
// zeroes them.
//
// # Latency and faults
//
// Processing order for one request:
//
//  1. SetDown(true): reset the connection; nothing else happens.
//  2. /__origin/counts and /__origin/reset are answered at once: no latency,
//     no faults, so tests can always read counters.
//  3. Count the request (not for /__origin/ paths).
//  4. Decide faults: the first Config.Faults rule that matches and fires
//     (see Fault), combined with the request headers below. A malformed
//     fault header gives 400.
//  5. Wait Config.Latency + the rule's Delay + X-Origin-Delay.
//  6. Reset (rule or X-Origin-Reset: 1): close the connection with TCP RST,
//     no response.
//  7. Status (X-Origin-Status, else the rule's): answer that status with a
//     short text/plain body and no Cache-Control instead of the content.
//  8. Otherwise build the normal response.
//  9. X-Origin-Stall: D: send the status line, headers (with Content-Length
//     and Connection: close) and the first half of the body, wait D, send
//     the rest and close the connection. A client with a read timeout
//     shorter than D sees a truncated body.
//
// Fault headers: X-Origin-Delay and X-Origin-Stall take Go durations
// ("200ms", "2s", at most 10m); X-Origin-Status takes 200..599;
// X-Origin-Reset takes a boolean ("1", "true"). They apply to content paths,
// /dyn/ and /__origin/health. Through an edge they only work if the edge
// forwards X-Origin-* request headers; Config.Faults and SetDown do not
// depend on that. ParseFault reads a Fault from its command-line form
// ("prefix=/img/,status=503,rate=0.1").
//
// All waits end at once when Close starts: delays and stalls are cut short
// and chunked bodies are finished without their delays. Close waits at most
// 5 s for connections still writing (a client that stopped reading) and
// then returns an error.
//
// # Protocol
//
// HTTP/1.1 only (fasthttp), keep-alive, idle connections closed after 90 s,
// request heads up to 16 KiB, request bodies up to 4 MiB. Responses carry
// "Server: edgeshield-demo-origin" and Date. A 416 carries no ETag,
// Last-Modified or Cache-Control, so that no cache stores it.
package demo

// Package origin talks to an upstream HTTP/1.1 server (the origin, or a
// cluster peer acting as a shield) on behalf of the edge.
//
// It has two independent parts:
//
//   - Client: one keep-alive connection pool to one upstream, with separate
//     connect, header, idle-read and write timeouts, a connection cap with a
//     bounded wait, at most one retry of an idempotent request that failed on
//     a reused keep-alive connection, and response bodies that stream (a body
//     is never buffered whole). Every error Do returns wraps exactly one of
//     the sentinel errors in errors.go, so that the edge maps errors to status
//     codes in one place.
//   - Group and Flight: request coalescing. One in-flight fetch per key; the
//     leader publishes headers and writes body bytes; every joined requester,
//     the leader's own client included, reads the body as it arrives.
//
// Concurrency: a Client is safe for concurrent use by any number of
// goroutines; a Response.Body is read by one goroutine at a time but may be
// closed from another. A Group is safe for concurrent use; a Flight's leader
// side (Publish, Write, Discard, Finish, Release) is driven by one goroutine,
// while any number of goroutines call Wait, NewReader and Waiters, each
// reader being read by one goroutine at a time.
//
// The package imports only the standard library and fasthttp, and no
// fasthttp type appears in its API.
package origin

// Package certs provides the TLS termination material of an Edgeshield node:
// certificates from an ACME CA (HTTP-01 and TLS-ALPN-01 challenges, RFC 8555
// and RFC 8737), on-demand issuance behind an allow-list and a rate limit,
// manual certificate files that are reloaded when they change, and an
// internal CA for local development. It adapts certmagic so that the rest of
// the node sees only a *tls.Config and two fasthttp handlers.
//
// Cluster operation: nodes that share one Storage directory share
// certmagic's file locks, so the whole cluster places one order per name,
// every node serves the result, and a challenge presented by one node is
// answered by any other (its token is in the shared storage).
//
// Concurrency: a *Manager is safe for concurrent use by any number of
// goroutines once New has returned. TLSConfig's GetCertificate runs on
// handshake goroutines; HTTPHandler and RedirectHandler run on fasthttp
// worker goroutines. New starts background goroutines (certmagic's
// maintenance, the manual-file poller, initial orders); Close stops them and
// waits for the ones it owns (orders already in certmagic's process-wide job
// queue are canceled through their context and end shortly after), and is
// idempotent.
//
// Two Managers in one process are independent (each has its own certmagic
// cache and configs), except for state certmagic keeps process-wide and
// per name: the challenges a process presents (so in one process every
// Manager can answer every other Manager's challenge without touching
// storage; only separate processes prove the storage path, which the
// package tests do with child processes), renewal back-off after a failure,
// and de-duplication of queued jobs. A Manager replaced by a new one for
// the same names (config reload) therefore inherits any back-off.
package certs

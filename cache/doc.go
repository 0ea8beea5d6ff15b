// Package cache implements the HTTP caching semantics of a shared cache
// (RFC 9111, with RFC 9213 targeted fields, RFC 5861 stale extensions and
// RFC 9110 validators and ranges) and the in-memory object store used by an
// Edgeshield node.
//
// The package is transport-neutral: it never sees a fasthttp or net/http
// type. The edge package parses request and response header fields into
// RequestMeta, ResponseMeta and Entry, and asks this package what to do:
//
//   - ParseCacheControl parses Cache-Control / CDN-Cache-Control field lines
//     into Directives without allocating.
//   - Policy.Storable, Policy.FreshnessLifetime and InitialAge decide whether
//     a response may be stored and for how long it is fresh (RFC 9111 §3, §4.2).
//   - Use and UsableOnError decide how a stored Entry may answer a request
//     (RFC 9111 §4.2–§4.3, RFC 5861).
//   - Entry.WithUpdatedHeaders freshens an entry after a 304 (RFC 9111 §4.3.4).
//   - VariantKey builds the secondary cache key from Vary (RFC 9111 §4.1).
//   - AcceptedEncodings finds the set of known content codings a request's
//     Accept-Encoding accepts, and AppendEncodingField writes that set as the
//     value the field is normalised to before lookup, so Vary: Accept-Encoding
//     keeps one variant per set of capabilities (RFC 9110 §12.5.3);
//     CheckEncodingPrefs validates the preference list.
//   - ETagMatch, NotModifiedSince, IfRangeMatches and ParseRange evaluate
//     conditional and range requests (RFC 9110 §13, §14).
//   - Store keeps entries in a ristretto cache bounded by bytes.
//   - Purges keeps purge tombstones (URL, prefix, surrogate key) so that a
//     purge also covers entries looked up later and purges that reach a node
//     late; Store.Sweep applies them to every resident entry.
//
// Concurrency contract: the parsing and decision functions are pure and safe
// for concurrent use. An Entry is immutable once it has been passed to
// Store.Set (the only mutable state, the invalidated flag, is atomic);
// WithUpdatedHeaders returns a new Entry instead of changing a shared one.
// Store and Purges are safe for concurrent use by any number of goroutines.
// Nothing in this package retains the byte slices passed to it, except the
// Entry values given to Store.Set and the values given to Purges.Add (which
// are copied).
package cache

package edge

import "bytes"

// The request-target is forwarded to the origin byte for byte (RFC 9110
// §7.7: a proxy MUST NOT rewrite the path, except to replace an empty path
// with "/"); only the cache key is normalised, and conservatively.
//
// Why conservatively: two requests that share a cache key share a response,
// so the key may only merge targets that every origin treats as the same
// resource. RFC 9110 §4.2.3 and RFC 3986 §6.2.2.1-2 make two rewrites safe:
// percent-encoded unreserved characters (ALPHA DIGIT - . _ ~) are equivalent
// to the characters themselves ("/%62" is "/b"), and the hex digits of a
// percent-encoding are case-insensitive ("%2f" is "%2F"). Nothing else is
// done: decoding a reserved character changes meaning ("/a%2Fb" is one
// segment, "/a/b" two; "%3F" is not a query), and resolving dot-segments or
// merging slashes would map origin paths that servers do tell apart
// ("/a/../b", "//b", "/a/%2E%2E%2Fb") onto "/b", so a request for one could
// fill the cache entry of another. Malformed escapes ("%zz", "%4") stay as
// they are. Bytes that are not allowed in a URI (controls, space, DEL, NUL)
// are percent-encoded in the key: the key never holds a 0x00 (cache variant
// keys use it as a separator) and never a raw control.

// originForm returns the origin-form of a raw request-target (RFC 9112 §3.2):
// an absolute-form target ("http://host/p?q") loses its scheme and authority,
// and an empty path becomes "/" (RFC 9112 §3.2.1), reported by slash. Other
// targets ("/p", "*") are returned as they are.
func originForm(raw []byte) (slash bool, rest []byte) {
	if len(raw) == 0 {
		return true, nil
	}
	if raw[0] == '/' || raw[0] == '*' {
		return false, raw
	}
	if i := bytes.Index(raw, []byte("://")); i > 0 && isScheme(raw[:i]) {
		auth := raw[i+3:]
		end := bytes.IndexAny(auth, "/?#")
		if end < 0 {
			return true, nil
		}
		rest = auth[end:]
		return rest[0] != '/', rest
	}
	if raw[0] == '?' {
		return true, raw
	}
	return false, raw
}

func isScheme(s []byte) bool {
	for i, c := range s {
		alpha := 'a' <= c|0x20 && c|0x20 <= 'z'
		if !alpha && (i == 0 || !('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.')) {
			return false
		}
	}
	return len(s) > 0
}

// appendOriginForm appends the origin-form of raw (see originForm).
func appendOriginForm(dst, raw []byte) []byte {
	slash, rest := originForm(raw)
	if slash {
		dst = append(dst, '/')
	}
	return append(dst, rest...)
}

// appendKeyTarget appends the cache-key form of a raw request-target: its
// origin-form, normalised by the rule above; ignoreQuery drops the query.
// It does not allocate when dst has room.
func appendKeyTarget(dst, raw []byte, ignoreQuery bool) []byte {
	slash, t := originForm(raw)
	if slash {
		dst = append(dst, '/')
	}
	if ignoreQuery {
		if i := bytes.IndexByte(t, '?'); i >= 0 {
			t = t[:i]
		}
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if c == '%' && i+2 < len(t) && isHex(t[i+1]) && isHex(t[i+2]) {
			d := unhex(t[i+1])<<4 | unhex(t[i+2])
			if isUnreserved(d) {
				dst = append(dst, d)
			} else {
				dst = append(dst, '%', upperHex[d>>4], upperHex[d&15])
			}
			i += 2
			continue
		}
		if c <= ' ' || c == 0x7f {
			dst = append(dst, '%', upperHex[c>>4], upperHex[c&15])
			continue
		}
		dst = append(dst, c)
	}
	return dst
}

const upperHex = "0123456789ABCDEF"

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c|0x20 && c|0x20 <= 'f'
}

func unhex(c byte) byte {
	if c <= '9' {
		return c - '0'
	}
	return c | 0x20 - 'a' + 10
}

// isUnreserved: RFC 3986 §2.3.
func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

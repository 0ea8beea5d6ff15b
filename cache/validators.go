package cache

import (
	"bytes"
	"time"
)

// HTTP-date layouts (RFC 9110 §5.6.7): IMF-fixdate, which senders must use,
// and the two obsolete forms recipients must accept.
const (
	imfFixdate = "Mon, 02 Jan 2006 15:04:05 GMT"
	rfc850Date = "Monday, 02-Jan-06 15:04:05 GMT"
	asctime    = "Mon Jan _2 15:04:05 2006"
)

// ParseHTTPDate parses an HTTP-date (RFC 9110 §5.6.7). ok is false for
// anything else, including "0" and "-1", which callers of Expires must treat
// as already expired (RFC 9111 §5.3).
func ParseHTTPDate(b []byte) (t time.Time, ok bool) {
	b = trimOWS(b)
	if len(b) == 0 || len(b) > 64 {
		return time.Time{}, false
	}
	s := string(b)
	for _, layout := range [...]string{imfFixdate, rfc850Date, asctime} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), true
		}
	}
	return time.Time{}, false
}

// ETagMatch evaluates If-None-Match against the entry's ETag using the weak
// comparison of RFC 9110 §13.1.2 / §8.8.3.2: the field is a list of entity
// tags, "W/" prefixes are ignored, and "*" matches any current
// representation. It is false when etag is empty, except for "*".
func ETagMatch(ifNoneMatch, etag []byte) bool {
	v := trimOWS(ifNoneMatch)
	if len(v) == 1 && v[0] == '*' {
		return true
	}
	_, opaque := splitWeak(trimOWS(etag))
	if len(opaque) == 0 {
		return false
	}
	for len(v) > 0 {
		var tag []byte
		tag, v = nextETag(v)
		if _, o := splitWeak(tag); len(o) > 0 && bytes.Equal(o, opaque) {
			return true
		}
	}
	return false
}

// nextETag returns the first entity-tag of a comma-separated list and the
// rest. Quoted tags may contain commas (etagc allows them).
func nextETag(v []byte) (tag, rest []byte) {
	for len(v) > 0 && (v[0] == ',' || isOWS(v[0])) {
		v = v[1:]
	}
	i := 0
	if bytes.HasPrefix(v, []byte("W/")) {
		i = 2
	}
	if i < len(v) && v[i] == '"' {
		end := bytes.IndexByte(v[i+1:], '"')
		if end >= 0 {
			n := i + 1 + end + 1
			return v[:n], v[n:]
		}
	}
	// Unquoted (invalid but common) or unterminated: up to the next comma.
	end := bytes.IndexByte(v, ',')
	if end < 0 {
		return trimOWS(v), nil
	}
	return trimOWS(v[:end]), v[end:]
}

// splitWeak separates the "W/" weakness indicator from the opaque tag.
func splitWeak(tag []byte) (weak bool, opaque []byte) {
	if bytes.HasPrefix(tag, []byte("W/")) {
		return true, tag[2:]
	}
	return false, tag
}

// NotModifiedSince reports whether a representation last modified at
// lastModified satisfies If-Modified-Since (RFC 9110 §13.1.3), i.e. whether
// a 304 may be sent: both dates must be valid and lastModified must not be
// later than ifModifiedSince. The caller must ignore If-Modified-Since when
// If-None-Match is present (§13.2.2).
func NotModifiedSince(ifModifiedSince, lastModified []byte) bool {
	if len(lastModified) == 0 || len(ifModifiedSince) == 0 {
		return false
	}
	if bytes.Equal(trimOWS(ifModifiedSince), trimOWS(lastModified)) {
		return true // the common case: the client echoes our Last-Modified
	}
	ims, ok := ParseHTTPDate(ifModifiedSince)
	if !ok {
		return false
	}
	lm, ok := ParseHTTPDate(lastModified)
	if !ok {
		return false
	}
	return !lm.After(ims)
}

// IfRangeMatches evaluates If-Range (RFC 9110 §13.1.5): an entity-tag must
// match etag by strong comparison (neither may be weak); an HTTP-date must be
// an exact match of lastModified. When it does not match, the whole
// representation is sent instead of the ranges. (§13.1.5 also asks that a
// date validator be strong, Date at least one second after Last-Modified;
// the caller may check that, this function cannot.)
func IfRangeMatches(ifRange, etag, lastModified []byte) bool {
	v := trimOWS(ifRange)
	if len(v) == 0 {
		return false
	}
	if v[0] == '"' || bytes.HasPrefix(v, []byte("W/")) {
		weak, opaque := splitWeak(v)
		eweak, eopaque := splitWeak(trimOWS(etag))
		return !weak && !eweak && len(opaque) >= 2 && opaque[len(opaque)-1] == '"' &&
			bytes.Equal(opaque, eopaque)
	}
	lm := trimOWS(lastModified)
	if len(lm) == 0 {
		return false
	}
	if bytes.Equal(v, lm) {
		_, ok := ParseHTTPDate(v)
		return ok
	}
	a, ok := ParseHTTPDate(v)
	if !ok {
		return false
	}
	b, ok := ParseHTTPDate(lm)
	return ok && a.Equal(b)
}

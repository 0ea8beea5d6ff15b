package cache

import (
	"bytes"
	"time"

	"github.com/edgeshield/edgeshield/internal/ascii"
)

// ParseHTTPDate parses an HTTP-date (RFC 9110 §5.6.7) strictly: the
// IMF-fixdate senders must use ("Sun, 06 Nov 1994 08:49:37 GMT") and the two
// obsolete forms recipients must accept, rfc850-date ("Sunday, 06-Nov-94
// 08:49:37 GMT") and asctime-date ("Sun Nov  6 08:49:37 1994"), each with
// exactly the grammar's spaces and digit counts. Anything else, including
// "0", "-1", extra spaces, a one-digit hour or several dates, is not a date
// (ok false); for Expires that means already expired (RFC 9111 §5.3). The
// one leniency is the case of the zone ("gmt"), which browsers accept and
// which cannot be misread. The day name is checked for syntax, not against
// the date. Surrounding whitespace is ignored (it is not part of a field
// value). It does not allocate.
func ParseHTTPDate(b []byte) (t time.Time, ok bool) {
	b = trimOWS(b)
	switch {
	case len(b) == 29 && b[3] == ',':
		return parseIMFFixdate(b)
	case len(b) == 24 && b[3] == ' ':
		return parseAsctime(b)
	}
	return parseRFC850(b)
}

// parseIMFFixdate: day-name "," SP 2DIGIT SP month SP 4DIGIT SP time-of-day SP "GMT".
func parseIMFFixdate(b []byte) (time.Time, bool) {
	if dayName(b[:3]) < 0 || b[4] != ' ' || b[7] != ' ' || b[11] != ' ' || b[16] != ' ' || b[25] != ' ' || !isGMT(b[26:]) {
		return time.Time{}, false
	}
	day, ok1 := digits(b[5:7])
	year, ok2 := digits(b[12:16])
	return makeDate(year, month(b[8:11]), day, b[17:25], ok1 && ok2)
}

// parseRFC850: day-name-l "," SP 2DIGIT "-" month "-" 2DIGIT SP time-of-day SP "GMT".
func parseRFC850(b []byte) (time.Time, bool) {
	comma := indexByte(b, ',')
	if comma < 6 || len(b) != comma+24 || !longDayName(b[:comma]) {
		return time.Time{}, false
	}
	d := b[comma+1:] // " 06-Nov-94 08:49:37 GMT"
	if d[0] != ' ' || d[3] != '-' || d[7] != '-' || d[10] != ' ' || d[19] != ' ' || !isGMT(d[20:]) {
		return time.Time{}, false
	}
	day, ok1 := digits(d[1:3])
	yy, ok2 := digits(d[8:10])
	// RFC 9110 §5.6.7: a two-digit year more than 50 years in the future
	// is in the past century. Against the current year (not a fixed pivot).
	year := time.Now().Year()/100*100 + yy
	if year > time.Now().Year()+50 {
		year -= 100
	}
	return makeDate(year, month(d[4:7]), day, d[11:19], ok1 && ok2)
}

// parseAsctime: day-name SP month SP ( 2DIGIT / ( SP DIGIT )) SP time-of-day SP 4DIGIT.
func parseAsctime(b []byte) (time.Time, bool) {
	if dayName(b[:3]) < 0 || b[7] != ' ' || b[10] != ' ' || b[19] != ' ' {
		return time.Time{}, false
	}
	dd := b[8:10]
	if dd[0] == ' ' {
		dd = dd[1:]
	}
	day, ok1 := digits(dd)
	year, ok2 := digits(b[20:24])
	return makeDate(year, month(b[4:7]), day, b[11:19], ok1 && ok2)
}

// makeDate checks the time-of-day "HH:MM:SS" and the ranges, and builds the
// time; a day the month does not have (31 Feb) is invalid.
func makeDate(year, mon, day int, tod []byte, ok bool) (time.Time, bool) {
	if !ok || mon < 1 || tod[2] != ':' || tod[5] != ':' {
		return time.Time{}, false
	}
	h, ok1 := digits(tod[0:2])
	m, ok2 := digits(tod[3:5])
	s, ok3 := digits(tod[6:8])
	if !ok1 || !ok2 || !ok3 || h > 23 || m > 59 || s > 60 || day < 1 || day > 31 {
		return time.Time{}, false
	}
	t := time.Date(year, time.Month(mon), day, h, m, min(s, 59), 0, time.UTC)
	if t.Day() != day {
		return time.Time{}, false
	}
	if s == 60 { // a leap second: §5.6.7 allows it; Go has none
		t = t.Add(time.Second)
	}
	return t, true
}

// digits parses a fixed number of ASCII digits.
func digits(b []byte) (int, bool) {
	if len(b) == 0 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

func isGMT(b []byte) bool { return ascii.EqualFoldLower(b, "gmt") }

const monthNames = "JanFebMarAprMayJunJulAugSepOctNovDec"

// month returns 1..12 for a case-sensitive month name (§5.6.7), else -1.
func month(b []byte) int {
	for i := 0; i < 12; i++ {
		if string(b) == monthNames[i*3:i*3+3] {
			return i + 1
		}
	}
	return -1
}

const dayNames = "MonTueWedThuFriSatSun"

func dayName(b []byte) int {
	for i := 0; i < 7; i++ {
		if string(b) == dayNames[i*3:i*3+3] {
			return i
		}
	}
	return -1
}

func longDayName(b []byte) bool {
	switch string(b) {
	case "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday":
		return true
	}
	return false
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

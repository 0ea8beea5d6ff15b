package cache

import "github.com/edgeshield/edgeshield/internal/ascii"

// maxDeltaSeconds is the value a delta-seconds larger than 2^31 is clamped to
// (RFC 9111 §1.2.2: "a cache MUST consider it to have the value 2147483648").
const maxDeltaSeconds = 2147483648

// Directives is a parsed Cache-Control (or CDN-Cache-Control, RFC 9213) field.
// Delta-seconds fields are -1 when absent.
//
// Directives that take no argument are recognised with or without one
// (e.g. "no-store=x" sets NoStore). The qualified form no-cache="field" is
// treated as unqualified (RFC 9111 §5.2.2.4 allows it, and it is the
// conservative choice). A qualified private="field" is kept apart, in
// PrivateFields: §5.2.2.7 lets a shared cache store such a response without
// the named fields.
type Directives struct {
	MaxAge, SMaxAge, MaxStale, MinFresh, StaleWhileRevalidate, StaleIfError int64
	// MaxStaleAny is set by "max-stale" without a value: any staleness is
	// acceptable (RFC 9111 §5.2.1.2). When MaxStale is also set (>= 0) the
	// bounded value is the more restrictive one and wins.
	MaxStaleAny bool
	// Private is set by an unqualified private (or one whose field list is
	// empty): a shared cache never stores the response (§5.2.2.7).
	NoStore, NoCache, Private, Public, MustRevalidate, ProxyRevalidate,
	NoTransform, OnlyIfCached, Immutable, MustUnderstand bool
	// PrivateFields is the field-name list of a qualified private="a, b"
	// (§5.2.2.7), nil when there is none. It points into the parsed input.
	// Two qualified private directives set Private instead: rather than
	// merge lists, treat the response as private, the conservative reading.
	PrivateFields []byte
}

// Reset sets every delta-seconds field to -1 (absent) and every flag to false.
func (d *Directives) Reset() {
	*d = Directives{
		MaxAge: -1, SMaxAge: -1, MaxStale: -1, MinFresh: -1,
		StaleWhileRevalidate: -1, StaleIfError: -1,
	}
}

// ParseCacheControl adds the directives of one field line to d. Call d.Reset()
// first and then ParseCacheControl once per field line: RFC 9110 §5.3 makes
// several lines equivalent to one comma-joined line.
//
// Tokens are matched case-insensitively (RFC 9111 §5.2) and arguments may be
// tokens or quoted strings. An invalid max-age or s-maxage argument
// ("max-age=abc", "max-age=-1", "max-age") counts as 0, so the response is
// stale (RFC 9111 §4.2.1); other invalid arguments are ignored. A directive
// repeated with different values keeps the most restrictive (smallest) one
// (RFC 9111 §4.2.1). Values above 2^31 are clamped to 2147483648 (§1.2.2).
// Unknown directives are ignored (§5.2.3). It never allocates and never
// panics, whatever the input.
func ParseCacheControl(d *Directives, value []byte) {
	i := 0
	for i < len(value) {
		// Skip separators and optional whitespace before a directive name.
		for i < len(value) && (value[i] == ',' || isOWS(value[i])) {
			i++
		}
		start := i
		for i < len(value) && value[i] != '=' && value[i] != ',' && !isOWS(value[i]) {
			i++
		}
		name := value[start:i]
		for i < len(value) && isOWS(value[i]) {
			i++
		}
		var arg []byte
		hasArg := false
		if i < len(value) && value[i] == '=' {
			hasArg = true
			i++
			for i < len(value) && isOWS(value[i]) {
				i++
			}
			arg, i = scanArgument(value, i)
		}
		// Anything after the argument up to the next comma is garbage; skip it
		// so that it cannot be read as a directive of its own.
		for i < len(value) && value[i] != ',' {
			i++
		}
		if len(name) > 0 {
			d.apply(name, arg, hasArg)
		}
	}
}

// scanArgument reads a token or quoted-string argument starting at i and
// returns its content (quotes removed; backslash escapes are left in place,
// which only matters for arguments we compare as digits) and the index after
// it. An unterminated quoted string yields an empty (invalid) argument: what
// it meant cannot be known, so max-age becomes 0 and private unqualified.
func scanArgument(v []byte, i int) ([]byte, int) {
	if i < len(v) && v[i] == '"' {
		i++
		start := i
		for i < len(v) && v[i] != '"' {
			if v[i] == '\\' && i+1 < len(v) {
				i++
			}
			i++
		}
		if i >= len(v) {
			return nil, i // unterminated
		}
		return v[start:i], i + 1
	}
	start := i
	for i < len(v) && v[i] != ',' && !isOWS(v[i]) {
		i++
	}
	return v[start:i], i
}

// apply records one directive. It dispatches on the name's length first so
// that each directive costs at most three short comparisons.
func (d *Directives) apply(name, arg []byte, hasArg bool) {
	switch len(name) {
	case 6:
		if ascii.EqualFoldLower(name, "public") {
			d.Public = true
		}
	case 7:
		switch {
		case ascii.EqualFoldLower(name, "max-age"):
			d.MaxAge = minDelta(d.MaxAge, freshnessDelta(arg, hasArg))
		case ascii.EqualFoldLower(name, "private"):
			d.setPrivate(arg, hasArg)
		}
	case 8:
		switch {
		case ascii.EqualFoldLower(name, "s-maxage"):
			d.SMaxAge = minDelta(d.SMaxAge, freshnessDelta(arg, hasArg))
		case ascii.EqualFoldLower(name, "no-store"):
			d.NoStore = true
		case ascii.EqualFoldLower(name, "no-cache"):
			d.NoCache = true
		}
	case 9:
		switch {
		case ascii.EqualFoldLower(name, "max-stale"):
			d.setMaxStale(arg, hasArg)
		case ascii.EqualFoldLower(name, "min-fresh"):
			d.MinFresh = optionalDelta(d.MinFresh, arg, hasArg)
		case ascii.EqualFoldLower(name, "immutable"):
			d.Immutable = true
		}
	case 12:
		if ascii.EqualFoldLower(name, "no-transform") {
			d.NoTransform = true
		}
	case 14:
		switch {
		case ascii.EqualFoldLower(name, "stale-if-error"):
			d.StaleIfError = optionalDelta(d.StaleIfError, arg, hasArg)
		case ascii.EqualFoldLower(name, "only-if-cached"):
			d.OnlyIfCached = true
		}
	case 15:
		switch {
		case ascii.EqualFoldLower(name, "must-revalidate"):
			d.MustRevalidate = true
		case ascii.EqualFoldLower(name, "must-understand"):
			d.MustUnderstand = true
		}
	case 16:
		if ascii.EqualFoldLower(name, "proxy-revalidate") {
			d.ProxyRevalidate = true
		}
	case 22:
		if ascii.EqualFoldLower(name, "stale-while-revalidate") {
			d.StaleWhileRevalidate = optionalDelta(d.StaleWhileRevalidate, arg, hasArg)
		}
	}
}

// setMaxStale records max-stale: without a value any staleness is accepted
// (RFC 9111 §5.2.1.2).
func (d *Directives) setMaxStale(arg []byte, hasArg bool) {
	if !hasArg {
		d.MaxStaleAny = true
	} else if n, ok := parseDelta(arg); ok {
		d.MaxStale = minDelta(d.MaxStale, n)
	}
}

// setPrivate records private or private="fields" (RFC 9111 §5.2.2.7).
func (d *Directives) setPrivate(arg []byte, hasArg bool) {
	if d.PrivateFields != nil && bytesEqual(d.PrivateFields, arg) {
		return // the same list again (a reparse): nothing new
	}
	if !hasArg || len(trimOWS(arg)) == 0 || d.PrivateFields != nil {
		d.Private = true
		return
	}
	d.PrivateFields = arg
}

// PrivateField reports whether name is listed in a qualified private
// directive (case-insensitively, RFC 9110 §5.1).
func (d *Directives) PrivateField(name []byte) bool {
	v := d.PrivateFields
	for len(v) > 0 {
		var tok []byte
		if i := indexByte(v, ','); i >= 0 {
			tok, v = v[:i], v[i+1:]
		} else {
			tok, v = v, nil
		}
		if ascii.EqualFold(trimOWS(tok), name) {
			return true
		}
	}
	return false
}

func bytesEqual(a, b []byte) bool { return string(a) == string(b) }

func indexByte(b []byte, c byte) int {
	for i := range b {
		if b[i] == c {
			return i
		}
	}
	return -1
}

// freshnessDelta parses a max-age / s-maxage argument; an invalid one means 0
// (RFC 9111 §4.2.1: treat the response as stale).
func freshnessDelta(arg []byte, hasArg bool) int64 {
	if !hasArg {
		return 0
	}
	n, ok := parseDelta(arg)
	if !ok {
		return 0
	}
	return n
}

// optionalDelta merges a directive whose invalid argument is ignored.
func optionalDelta(cur int64, arg []byte, hasArg bool) int64 {
	if !hasArg {
		return cur
	}
	n, ok := parseDelta(arg)
	if !ok {
		return cur
	}
	return minDelta(cur, n)
}

// minDelta returns the more restrictive of an existing value (-1 = absent)
// and a new one.
func minDelta(cur, n int64) int64 {
	if cur < 0 || n < cur {
		return n
	}
	return cur
}

// parseDelta parses delta-seconds = 1*DIGIT (RFC 9111 §1.2.2), clamping at
// 2^31. Signs, fractions and empty strings are invalid.
func parseDelta(b []byte) (int64, bool) {
	n, ok := parseDigits(b)
	if !ok {
		return 0, false
	}
	return min(n, maxDeltaSeconds), true
}

func isOWS(c byte) bool { return c == ' ' || c == '\t' }

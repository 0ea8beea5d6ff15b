// Package ascii holds the case-insensitive comparisons of HTTP tokens that
// cache and edge share. Field names, directives and codings are ASCII
// (RFC 9110 §5.1, §5.6.2), so these skip bytes.EqualFold's Unicode folding:
// they are a few instructions a byte, never allocate, and a non-ASCII byte
// only ever equals itself.
//
// The functions are pure and safe for concurrent use.
package ascii

// Lower returns c lower-cased when it is an ASCII upper-case letter.
func Lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// EqualFold reports whether a and b are equal ignoring ASCII case.
func EqualFold(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if Lower(a[i]) != Lower(b[i]) {
			return false
		}
	}
	return true
}

// EqualFoldLower reports whether b equals lower, ignoring ASCII case in b
// only: lower must already be lower-case (a constant such as "max-age"),
// which halves the work of EqualFold.
func EqualFoldLower(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := 0; i < len(b); i++ {
		if Lower(b[i]) != lower[i] {
			return false
		}
	}
	return true
}

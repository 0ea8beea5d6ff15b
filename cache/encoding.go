package cache

import (
	"errors"
	"fmt"

	"github.com/edgeshield/edgeshield/internal/ascii"
)

// MaxEncodingPrefs bounds a preference list: the edge precomputes the
// normalised field for every subset of it (2^n values) so that rewriting a
// request's Accept-Encoding never allocates.
const MaxEncodingPrefs = 8

// AcceptedEncodings returns the set of codings of prefs that a request's
// Accept-Encoding accepts, as a bit set: bit i stands for prefs[i]. A shared
// cache rewrites the field to exactly this set (AppendEncodingField), so that
// a response with "Vary: Accept-Encoding" is stored once per set of
// capabilities instead of once per distinct spelling of the field (the
// normalisation Varnish and Fastly apply before lookup), while the origin
// still chooses among every coding the client takes: an origin without
// brotli answers "br, gzip" with gzip, where a rewrite to "br" alone would
// make it answer identity. lines are the request's Accept-Encoding field
// lines; prefs are the codings the cache knows, best first, as
// CheckEncodingPrefs accepts them (at most MaxEncodingPrefs). The result is
// 0 when the client accepts none of them or sent no Accept-Encoding at all:
// the request is then to carry no Accept-Encoding, which asks for identity.
//
// Acceptance follows RFC 9110 §12.5.3 and §12.4.2:
//   - several field lines are one comma-separated list (§5.3), and empty
//     list elements are ignored (§5.6.1);
//   - codings are case-insensitive (§8.4.1), and "x-gzip" / "x-compress" are
//     "gzip" / "compress" (§8.4.1.1, §8.4.1.3);
//   - a coding listed with a weight above zero is acceptable; one listed
//     with q=0 ("0", "0.0", "0.000") is not, and neither is one whose weight
//     is malformed ("q=2", "q=0.5.1", "q=abc", "q=.5") or whose element does
//     not parse ("gzip junk"): when in doubt, a coding the client might not
//     decode is never offered. A coding listed more than once is acceptable
//     only if no listing refuses it;
//   - a coding not listed is acceptable when "*" is listed with a weight above
//     zero (and never refused);
//   - an empty field value accepts no coding (§12.5.3).
//
// The client's weights other than zero are not kept: the set is what the
// origin may choose from, and RFC 9110 §12.5.3 lets the server choose among
// acceptable codings; one value per set of capabilities is what keeps the
// variants few. Parameters other than q are ignored. AcceptedEncodings never
// allocates and never panics. Its result is stable under its own output: fed
// the single line AppendEncodingField writes for a set (or no line for the
// empty set), it returns that set again (prefs being distinct), so a request
// normalised twice (by two cluster members, say) keeps its value.
func AcceptedEncodings(lines [][]byte, prefs [][]byte) uint {
	var set uint
	if len(lines) == 0 {
		return 0
	}
	for i, p := range prefs {
		if i < MaxEncodingPrefs && acceptsCoding(lines, p) {
			set |= 1 << i
		}
	}
	return set
}

// AppendEncodingField appends the normalised Accept-Encoding value for set:
// the codings of prefs in it, in prefs' order, separated by ", ". It appends
// nothing for the empty set (the field is then to be removed).
func AppendEncodingField(dst []byte, set uint, prefs [][]byte) []byte {
	first := true
	for i, p := range prefs {
		if i >= MaxEncodingPrefs || set&(1<<i) == 0 {
			continue
		}
		if !first {
			dst = append(dst, ", "...)
		}
		dst = append(dst, p...)
		first = false
	}
	return dst
}

// acceptsCoding reports whether the Accept-Encoding lines accept coding.
// One pass per preferred coding keeps it allocation-free for any number of
// preferences; lists are short (two or three codings) and so are the fields.
func acceptsCoding(lines [][]byte, coding []byte) bool {
	listed, refused := false, false
	star, starRefused := false, false
	for _, rest := range lines {
		for len(rest) > 0 {
			var name []byte
			var ok bool
			name, ok, rest = nextCoding(rest)
			switch {
			case len(name) == 0:
			case sameCoding(name, coding):
				listed = true
				refused = refused || !ok
			case len(name) == 1 && name[0] == '*':
				star = true
				starRefused = starRefused || !ok
			}
		}
	}
	if listed {
		return !refused
	}
	return star && !starRefused
}

// nextCoding parses one element of an Accept-Encoding list:
//
//	codings [ OWS ";" OWS "q=" qvalue ] *( OWS ";" OWS token "=" ( token / quoted-string ) )
//
// and returns its coding, whether it is acceptable (weight above zero, and
// the element well-formed), and the rest of the list after the element's
// comma. name is nil for an empty or nameless element.
func nextCoding(v []byte) (name []byte, ok bool, rest []byte) {
	i := 0
	for i < len(v) && (v[i] == ',' || isOWS(v[i])) {
		i++
	}
	start := i
	for i < len(v) && isTchar(v[i]) {
		i++
	}
	name = v[start:i]
	ok = len(name) > 0
	for {
		for i < len(v) && isOWS(v[i]) {
			i++
		}
		if i == len(v) {
			return name, ok, nil
		}
		switch v[i] {
		case ',':
			return name, ok, v[i+1:]
		case ';':
			var wellFormed, positive bool
			wellFormed, positive, i = parseParam(v, i+1)
			if wellFormed {
				ok = ok && positive
				continue
			}
		}
		// Malformed: refuse this element's coding and resume at the next
		// comma, so garbage never turns into an acceptance.
		for i < len(v) && v[i] != ',' {
			i++
		}
		if i == len(v) {
			return name, false, nil
		}
		return name, false, v[i+1:]
	}
}

// parseParam parses one parameter starting after its ';'. It reports
// whether the parameter is well-formed, and whether it leaves the coding
// acceptable: false for a weight of zero or a malformed weight (RFC 9110
// §12.4.2), true for any other parameter. Parameter names are
// case-insensitive (§5.6.6); OWS around "=" is tolerated since it cannot
// change the meaning.
func parseParam(v []byte, i int) (wellFormed, positive bool, next int) {
	for i < len(v) && isOWS(v[i]) {
		i++
	}
	start := i
	for i < len(v) && isTchar(v[i]) {
		i++
	}
	pname := v[start:i]
	for i < len(v) && isOWS(v[i]) {
		i++
	}
	if len(pname) == 0 || i == len(v) || v[i] != '=' {
		return false, false, i
	}
	i++
	for i < len(v) && isOWS(v[i]) {
		i++
	}
	var arg []byte
	quoted := i < len(v) && v[i] == '"'
	if quoted {
		arg, i = scanArgument(v, i)
	} else {
		start = i
		for i < len(v) && isTchar(v[i]) {
			i++
		}
		arg = v[start:i]
	}
	if !ascii.EqualFoldLower(pname, "q") {
		return true, true, i
	}
	// A quoted weight is not a qvalue: refuse rather than guess.
	return true, !quoted && positiveQ(arg), i
}

// positiveQ reports whether a weight is a valid qvalue above zero:
//
//	qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
func positiveQ(q []byte) bool {
	if len(q) == 0 || len(q) > 5 || (q[0] != '0' && q[0] != '1') {
		return false
	}
	if len(q) == 1 {
		return q[0] == '1'
	}
	if q[1] != '.' {
		return false
	}
	nonzero := false
	for _, c := range q[2:] {
		if c < '0' || c > '9' {
			return false
		}
		nonzero = nonzero || c != '0'
	}
	if q[0] == '1' {
		return !nonzero // "1.5" is not a qvalue
	}
	return nonzero
}

// sameCoding compares content codings case-insensitively, with the "x-"
// aliases of §8.4.1.1 and §8.4.1.3.
func sameCoding(a, b []byte) bool {
	return ascii.EqualFold(canonicalCoding(a), canonicalCoding(b))
}

func canonicalCoding(c []byte) []byte {
	if len(c) > 2 && ascii.Lower(c[0]) == 'x' && c[1] == '-' && (ascii.EqualFoldLower(c[2:], "gzip") || ascii.EqualFoldLower(c[2:], "compress")) {
		return c[2:]
	}
	return c
}

// isTchar reports whether c may appear in a token (RFC 9110 §5.6.2).
func isTchar(c byte) bool { return c < 0x80 && tchars[c] }

// tchars is the token character table; a lookup keeps the scan of a field
// to one load and compare per byte.
var tchars = [0x80]bool{
	'!': true, '#': true, '$': true, '%': true, '&': true, '\'': true, '*': true, '+': true,
	'-': true, '.': true, '^': true, '_': true, '`': true, '|': true, '~': true,
	'0': true, '1': true, '2': true, '3': true, '4': true, '5': true, '6': true, '7': true, '8': true, '9': true,
	'a': true, 'b': true, 'c': true, 'd': true, 'e': true, 'f': true, 'g': true, 'h': true, 'i': true,
	'j': true, 'k': true, 'l': true, 'm': true, 'n': true, 'o': true, 'p': true, 'q': true, 'r': true,
	's': true, 't': true, 'u': true, 'v': true, 'w': true, 'x': true, 'y': true, 'z': true,
	'A': true, 'B': true, 'C': true, 'D': true, 'E': true, 'F': true, 'G': true, 'H': true, 'I': true,
	'J': true, 'K': true, 'L': true, 'M': true, 'N': true, 'O': true, 'P': true, 'Q': true, 'R': true,
	'S': true, 'T': true, 'U': true, 'V': true, 'W': true, 'X': true, 'Y': true, 'Z': true,
}

// ErrBadEncodingPref is wrapped by CheckEncodingPrefs' errors.
var ErrBadEncodingPref = errors.New("bad content coding preference")

// CheckEncodingPrefs validates a preference list for AcceptedEncodings: at
// most MaxEncodingPrefs entries, each a content coding token (RFC 9110 §5.6.2, §8.4.1), none of them
// "identity" or "*" (the absence of a coding is what no Accept-Encoding asks
// for; "*" is not a coding an origin can send), and no coding twice
// (case-insensitively, "x-gzip" being "gzip"). It returns the index of the
// first bad entry and why, or -1 and nil.
func CheckEncodingPrefs(prefs []string) (int, error) {
	for i, p := range prefs {
		if i >= MaxEncodingPrefs {
			return i, fmt.Errorf("%w: at most %d codings", ErrBadEncodingPref, MaxEncodingPrefs)
		}
		b := []byte(p)
		if len(b) == 0 {
			return i, fmt.Errorf("%w: empty coding", ErrBadEncodingPref)
		}
		for _, c := range b {
			if !isTchar(c) {
				return i, fmt.Errorf("%w: %q is not a token (RFC 9110 §5.6.2)", ErrBadEncodingPref, p)
			}
		}
		if ascii.EqualFoldLower(b, "identity") || p == "*" {
			return i, fmt.Errorf("%w: %q is not a content coding; leave it out (no Accept-Encoding asks for identity)", ErrBadEncodingPref, p)
		}
		for j := range i {
			if sameCoding([]byte(prefs[j]), b) {
				return i, fmt.Errorf("%w: %q repeats %q", ErrBadEncodingPref, p, prefs[j])
			}
		}
	}
	return -1, nil
}

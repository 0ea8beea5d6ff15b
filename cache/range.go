package cache

import (
	"errors"
	"math"

	"github.com/edgeshield/edgeshield/internal/ascii"
)

// Range errors returned by ParseRange.
var (
	// ErrRangeNotSatisfiable: no range overlaps the representation; answer
	// 416 with "Content-Range: bytes */size" (RFC 9110 §15.5.17).
	ErrRangeNotSatisfiable = errors.New("cache: range not satisfiable")
	// ErrRangeInvalid: the header is malformed, uses another unit, or asks for
	// too many pieces; ignore it and answer 200 with the whole representation
	// (RFC 9110 §14.2).
	ErrRangeInvalid = errors.New("cache: invalid range")
)

const (
	// MaxRanges is the most ranges ParseRange returns after coalescing; more
	// pieces than this are served as the whole representation, the defence
	// nginx and Apache adopted against CVE-2011-3192 style requests.
	MaxRanges = 16
	// maxRangeSpecs bounds the work done on one header before coalescing.
	maxRangeSpecs = 64
)

// ByteRange is an inclusive byte range resolved against a representation size.
type ByteRange struct{ Start, End int64 }

// Len returns the number of bytes in r.
func (r ByteRange) Len() int64 { return r.End - r.Start + 1 }

// ParseRange parses a Range header value (RFC 9110 §14.2) against a
// representation of size bytes and appends the satisfiable ranges to dst.
//
// Forms: "bytes=0-499", open "500-", suffix "-500", and lists of those. The
// unit is matched case-insensitively. Unsatisfiable specs (first-pos >= size,
// "-0") are dropped; when none remains the result is ErrRangeNotSatisfiable.
// Syntax errors, other units, last-pos < first-pos, or more than 64 specs give
// ErrRangeInvalid. Overlapping or adjacent ranges are merged and sorted
// (§14.2 allows coalescing; overlap abuse then costs nothing), and if more
// than MaxRanges ranges remain the header is ErrRangeInvalid. Numbers too
// large for int64 saturate instead of wrapping. A zero-length representation
// has no satisfiable byte, so every range on it is ErrRangeNotSatisfiable
// except a non-zero suffix, which is ErrRangeInvalid (serve the empty 200).
// A negative (unknown) size is ErrRangeInvalid.
func ParseRange(dst []ByteRange, header []byte, size int64) ([]ByteRange, error) {
	h := trimOWS(header)
	if size < 0 || len(h) < 6 || !ascii.EqualFoldLower(h[:6], "bytes=") {
		return dst, ErrRangeInvalid
	}
	h = h[6:]
	base := len(dst)
	specs := 0
	suffixOnEmpty := false
	for len(h) > 0 {
		var spec []byte
		spec, h = nextListElement(h)
		if len(spec) == 0 {
			continue // RFC 9110 §5.6.1: recipients accept empty list elements
		}
		specs++
		if specs > maxRangeSpecs {
			return dst[:base], ErrRangeInvalid
		}
		r, ok, valid := parseRangeSpec(spec, size)
		if !valid {
			return dst[:base], ErrRangeInvalid
		}
		if size == 0 && spec[0] == '-' && r.End != 0 {
			suffixOnEmpty = true
		}
		if ok {
			dst = append(dst, r)
		}
	}
	if specs == 0 {
		return dst[:base], ErrRangeInvalid
	}
	if len(dst) == base {
		if suffixOnEmpty {
			return dst, ErrRangeInvalid
		}
		return dst, ErrRangeNotSatisfiable
	}
	out := coalesce(dst[base:])
	dst = dst[:base+len(out)]
	if len(out) > MaxRanges {
		return dst[:base], ErrRangeInvalid
	}
	return dst, nil
}

// nextListElement splits off the first comma-separated element, trimmed.
func nextListElement(h []byte) (elem, rest []byte) {
	for i, c := range h {
		if c == ',' {
			return trimOWS(h[:i]), h[i+1:]
		}
	}
	return trimOWS(h), nil
}

// parseRangeSpec parses one int-range or suffix-range. valid is false on a
// syntax error; ok is false when the spec is valid but unsatisfiable. For a
// suffix range on an empty representation r.End carries the suffix length
// (non-zero or not) so the caller can tell the cases apart.
func parseRangeSpec(spec []byte, size int64) (r ByteRange, ok, valid bool) {
	dash := -1
	for i, c := range spec {
		if c == '-' {
			dash = i
			break
		}
	}
	if dash < 0 {
		return r, false, false
	}
	first, last := trimOWS(spec[:dash]), trimOWS(spec[dash+1:])
	if len(first) == 0 { // suffix-range: "-" suffix-length
		n, good := parseDigits(last)
		if !good {
			return r, false, false
		}
		if size == 0 {
			return ByteRange{End: min(n, 1)}, false, true
		}
		if n == 0 {
			return r, false, true
		}
		return ByteRange{Start: size - min(n, size), End: size - 1}, true, true
	}
	start, good := parseDigits(first)
	if !good {
		return r, false, false
	}
	end := int64(math.MaxInt64)
	if len(last) > 0 {
		if end, good = parseDigits(last); !good || end < start {
			return r, false, false // §14.1.1: last-pos < first-pos is invalid
		}
	}
	if start >= size {
		return r, false, true
	}
	return ByteRange{Start: start, End: min(end, size-1)}, true, true
}

// parseDigits parses 1*DIGIT, saturating at math.MaxInt64.
func parseDigits(b []byte) (int64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := int64(c - '0')
		if n > (math.MaxInt64-d)/10 {
			n = math.MaxInt64
			continue
		}
		n = n*10 + d
	}
	return n, true
}

// coalesce sorts rs by start (when needed) and merges overlapping or adjacent
// ranges in place, returning the shortened slice. Requests that are already
// ascending and disjoint keep their order, as §14.2 prefers.
func coalesce(rs []ByteRange) []ByteRange {
	sorted := true
	for i := 1; i < len(rs); i++ {
		if rs[i].Start <= rs[i-1].End+1 {
			sorted = false
			break
		}
	}
	if sorted {
		return rs
	}
	// Insertion sort: at most maxRangeSpecs elements, no allocation.
	for i := 1; i < len(rs); i++ {
		for j := i; j > 0 && rs[j].Start < rs[j-1].Start; j-- {
			rs[j], rs[j-1] = rs[j-1], rs[j]
		}
	}
	out := rs[:1]
	for _, r := range rs[1:] {
		last := &out[len(out)-1]
		if r.Start <= last.End+1 {
			last.End = max(last.End, r.End)
			continue
		}
		out = append(out, r)
	}
	return out
}

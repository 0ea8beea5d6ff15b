package cache

import "encoding/binary"

// VariantKey appends to dst the secondary cache key of a request (RFC 9111
// §4.1): primary, a 0x00 separator, then for each name in vary the name and
// the request's normalized value of that field. get returns the request's
// value of a field (repeated lines already combined with ", " by the caller)
// or nil when the field is absent; an absent field and an empty one produce
// different keys, as §4.1 requires.
//
// Normalization removes leading and trailing whitespace and collapses runs of
// internal whitespace into one space (§4.1 allows normalizing whitespace).
// Names and values are length-prefixed, so no value can forge the boundary
// with the next one. Every variant key of a primary starts with
// primary+"\x00", which is how URL purges find the variants; primary keys
// must therefore not contain 0x00.
//
// VariantKey does not allocate when dst has enough capacity.
func VariantKey(dst, primary []byte, vary [][]byte, get func(name []byte) []byte) []byte {
	dst = append(dst, primary...)
	dst = append(dst, 0)
	for _, name := range vary {
		dst = binary.AppendUvarint(dst, uint64(len(name)))
		dst = append(dst, name...)
		v := get(name)
		if v == nil {
			dst = append(dst, 0) // absent
			continue
		}
		dst = append(dst, 1) // present
		dst = binary.AppendUvarint(dst, uint64(normalizedLen(v)))
		dst = appendNormalized(dst, v)
	}
	return dst
}

// normalizedLen returns len(appendNormalized(nil, v)) without building it.
func normalizedLen(v []byte) int {
	n, space := 0, false
	for _, c := range trimOWS(v) {
		if isOWS(c) {
			space = true
			continue
		}
		if space {
			n++
			space = false
		}
		n++
	}
	return n
}

func appendNormalized(dst, v []byte) []byte {
	space := false
	for _, c := range trimOWS(v) {
		if isOWS(c) {
			space = true
			continue
		}
		if space {
			dst = append(dst, ' ')
			space = false
		}
		dst = append(dst, c)
	}
	return dst
}

func trimOWS(v []byte) []byte {
	for len(v) > 0 && isOWS(v[0]) {
		v = v[1:]
	}
	for len(v) > 0 && isOWS(v[len(v)-1]) {
		v = v[:len(v)-1]
	}
	return v
}

package demo

import "encoding/binary"

// pattern is a deterministic, random-access byte source: the byte at offset
// i depends only on the seed and i. That makes generated objects identical in
// every process (so their content-hash ETags are stable) and lets Range
// requests and streamed bodies start anywhere without generating a prefix.
//
// It is splitmix64 in counter mode: word k is mix(seed + (k+1)*golden).
// The algorithm is fixed here rather than taken from math/rand so that the
// bytes can never change with a Go release.
type pattern struct {
	seed uint64
	// text selects printable output: lines of 64 URL-safe base64 characters
	// ended by '\n', so /dyn bodies read well in curl.
	text bool
}

const (
	golden     = 0x9E3779B97F4A7C15
	textLine   = 65 // 64 characters + '\n'
	textLetter = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
)

func mix(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	return z ^ (z >> 31)
}

// seedOf hashes s with FNV-1a 64 (inline to avoid the hash.Hash allocation).
func seedOf(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

func (p pattern) word(k int64) uint64 {
	return mix(p.seed + uint64(k+1)*golden)
}

// ReadAt implements io.ReaderAt over an unbounded stream; callers bound it
// with io.NewSectionReader. It never fails for off >= 0.
func (p pattern) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errNegativeOffset
	}
	if p.text {
		p.readText(b, off)
		return len(b), nil
	}
	i := 0
	// Unaligned head, byte by byte.
	for ; i < len(b) && (off+int64(i))%8 != 0; i++ {
		pos := off + int64(i)
		b[i] = byte(p.word(pos/8) >> (8 * (pos % 8)))
	}
	// Aligned body, eight bytes at a time.
	for ; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], p.word((off+int64(i))/8))
	}
	// Tail.
	for ; i < len(b); i++ {
		pos := off + int64(i)
		b[i] = byte(p.word(pos/8) >> (8 * (pos % 8)))
	}
	return len(b), nil
}

// readText fills b with the text form: line L holds 64 letters taken from
// words 8L..8L+7, one letter per byte (its low six bits), then '\n'.
func (p pattern) readText(b []byte, off int64) {
	for i := 0; i < len(b); {
		pos := off + int64(i)
		line, j := pos/textLine, pos%textLine
		if j == textLine-1 {
			b[i] = '\n'
			i++
			continue
		}
		// The rest of the word holding letter j.
		w := p.word(line*8+j/8) >> (8 * (j % 8))
		for k := j % 8; k < 8 && i < len(b); k++ {
			b[i] = textLetter[w&63]
			w >>= 8
			i++
		}
	}
}

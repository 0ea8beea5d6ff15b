package demo

import (
	"bytes"
	"fmt"
	"testing"
)

// Any window read at any offset equals the same window of one long read:
// ranges and streamed sections rely on it.
func TestPatternRandomAccess(t *testing.T) {
	for _, text := range []bool{false, true} {
		p := pattern{seed: seedOf("/x"), text: text}
		full := make([]byte, 1000)
		p.ReadAt(full, 0)
		for _, w := range []struct{ off, n int }{{0, 1}, {1, 7}, {3, 8}, {7, 17}, {8, 8}, {63, 3}, {64, 130}, {999, 1}, {5, 995}} {
			t.Run(fmt.Sprintf("text=%v/%d+%d", text, w.off, w.n), func(t *testing.T) {
				got := make([]byte, w.n)
				if n, err := p.ReadAt(got, int64(w.off)); n != w.n || err != nil {
					t.Fatalf("ReadAt: got %d, %v, want %d, nil", n, err, w.n)
				}
				if want := full[w.off : w.off+w.n]; !bytes.Equal(got, want) {
					t.Errorf("got %x, want %x", got, want)
				}
			})
		}
	}
	if _, err := (pattern{}).ReadAt(make([]byte, 1), -1); err == nil {
		t.Errorf("ReadAt(-1): got no error, want one")
	}
}

func TestPatternTextLines(t *testing.T) {
	b := make([]byte, 3*textLine)
	pattern{seed: 1, text: true}.ReadAt(b, 0)
	for i, c := range b {
		if wantNL := i%textLine == textLine-1; (c == '\n') != wantNL {
			t.Fatalf("byte %d is %q, want newline only at the end of each %d-byte line", i, c, textLine)
		}
	}
}

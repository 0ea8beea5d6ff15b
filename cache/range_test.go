package cache

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func TestParseRange(t *testing.T) {
	manyDisjoint := make([]string, 20)
	for i := range manyDisjoint {
		manyDisjoint[i] = fmt.Sprintf("%d-%d", i*10, i*10)
	}
	manyOverlapping := make([]string, 60)
	for i := range manyOverlapping {
		manyOverlapping[i] = fmt.Sprintf("%d-%d", i, i+100)
	}
	tooMany := strings.Repeat("0-0,", 65)
	tests := []struct {
		name   string
		header string
		size   int64
		want   []ByteRange
		err    error
	}{
		{"RFC 9110 §14.1.2 single range", "bytes=0-499", 1000, []ByteRange{{0, 499}}, nil},
		{"RFC 9110 §14.1.2 unit is case-insensitive", "Bytes=0-0", 1000, []ByteRange{{0, 0}}, nil},
		{"RFC 9110 §14.1.2 last-pos past end is clamped", "bytes=900-2000", 1000, []ByteRange{{900, 999}}, nil},
		{"RFC 9110 §14.1.2 open range", "bytes=500-", 1000, []ByteRange{{500, 999}}, nil},
		{"RFC 9110 §14.1.2 suffix range", "bytes=-500", 1000, []ByteRange{{500, 999}}, nil},
		{"RFC 9110 §14.1.2 suffix longer than representation", "bytes=-5000", 1000, []ByteRange{{0, 999}}, nil},
		{"RFC 9110 §14.1.2 multiple ranges keep order", "bytes=0-9, 20-29,-10", 1000, []ByteRange{{0, 9}, {20, 29}, {990, 999}}, nil},
		{"RFC 9110 §14.2 overlapping ranges coalesced", "bytes=0-99,50-149,10-20", 1000, []ByteRange{{0, 149}}, nil},
		{"RFC 9110 §14.2 adjacent ranges coalesced", "bytes=0-9,10-19", 1000, []ByteRange{{0, 19}}, nil},
		{"RFC 9110 §14.2 unordered disjoint ranges sorted when coalescing", "bytes=20-29,0-9,5-6", 1000, []ByteRange{{0, 9}, {20, 29}}, nil},
		{"RFC 9110 §14.2 many overlapping ranges collapse", "bytes=" + strings.Join(manyOverlapping, ","), 1000, []ByteRange{{0, 159}}, nil},
		{"RFC 9110 §14.2 more than 16 disjoint ranges served whole", "bytes=" + strings.Join(manyDisjoint, ","), 1000, nil, ErrRangeInvalid},
		{"RFC 9110 §14.2 more than 64 specs rejected", "bytes=" + tooMany + "0-0", 1000, nil, ErrRangeInvalid},
		{"RFC 9110 §5.6.1 empty list elements accepted", "bytes=,0-1,,", 1000, []ByteRange{{0, 1}}, nil},
		{"RFC 9110 §14.1.2 unsatisfiable first-pos", "bytes=1000-", 1000, nil, ErrRangeNotSatisfiable},
		{"RFC 9110 §14.1.2 zero suffix unsatisfiable", "bytes=-0", 1000, nil, ErrRangeNotSatisfiable},
		{"RFC 9110 §14.1.2 unsatisfiable spec dropped", "bytes=2000-3000,0-0", 1000, []ByteRange{{0, 0}}, nil},
		{"RFC 9110 §14.1.2 empty representation", "bytes=0-", 0, nil, ErrRangeNotSatisfiable},
		{"RFC 9110 §14.1.2 suffix on empty representation served whole", "bytes=-5", 0, nil, ErrRangeInvalid},
		{"RFC 9110 §14.2 unknown length served whole", "bytes=0-1", -1, nil, ErrRangeInvalid},
		{"RFC 9110 §14.1.1 last before first invalid", "bytes=500-100", 1000, nil, ErrRangeInvalid},
		{"RFC 9110 §14.1 other unit ignored", "items=0-1", 1000, nil, ErrRangeInvalid},
		{"RFC 9110 §14.1 missing unit", "0-1", 1000, nil, ErrRangeInvalid},
		{"RFC 9110 §14.1 garbage", "bytes=abc", 1000, nil, ErrRangeInvalid},
		{"RFC 9110 §14.1 no specs", "bytes=", 1000, nil, ErrRangeInvalid},
		{"RFC 9110 §14.1 lone dash", "bytes=-", 1000, nil, ErrRangeInvalid},
		{"RFC 9110 §14.1 negative numbers", "bytes=--5", 1000, nil, ErrRangeInvalid},
		{"RFC 9110 §14.1 one bad spec invalidates all", "bytes=0-1,x-2", 1000, nil, ErrRangeInvalid},
		{"RFC 9110 §14.1.2 overflowing first-pos unsatisfiable", "bytes=99999999999999999999999-", 1000, nil, ErrRangeNotSatisfiable},
		{"RFC 9110 §14.1.2 overflowing last-pos clamped", "bytes=5-99999999999999999999999", 1000, []ByteRange{{5, 999}}, nil},
		{"RFC 9110 §14.1.2 overflowing suffix is whole", "bytes=-99999999999999999999999", 1000, []ByteRange{{0, 999}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRange(nil, []byte(tt.header), tt.size)
			if !errors.Is(err, tt.err) {
				t.Fatalf("ParseRange(%q, %d) error: got %v want %v", tt.header, tt.size, err, tt.err)
			}
			if len(got) == 0 && len(tt.want) == 0 {
				return
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseRange(%q, %d): got %v want %v", tt.header, tt.size, got, tt.want)
			}
		})
	}
}

func TestParseRangeKeepsDst(t *testing.T) {
	dst := []ByteRange{{1, 2}}
	got, err := ParseRange(dst, []byte("bytes=5-6,0-1"), 10)
	want := []ByteRange{{1, 2}, {0, 1}, {5, 6}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("ParseRange appends after dst: got %v, %v want %v, nil", got, err, want)
	}
	got, err = ParseRange(dst, []byte("bytes=x"), 10)
	if !errors.Is(err, ErrRangeInvalid) || !reflect.DeepEqual(got, dst) {
		t.Errorf("ParseRange on error keeps dst: got %v, %v want %v, %v", got, err, dst, ErrRangeInvalid)
	}
}

func TestParseRangeZeroAlloc(t *testing.T) {
	h := []byte("bytes=0-99,200-299,-100")
	dst := make([]ByteRange, 0, MaxRanges)
	allocs := testing.AllocsPerRun(1000, func() {
		dst, _ = ParseRange(dst[:0], h, 10000)
	})
	if allocs != 0 {
		t.Errorf("ParseRange allocs: got %v want 0", allocs)
	}
}

func FuzzParseRange(f *testing.F) {
	for _, s := range []string{
		"bytes=0-499", "bytes=-500", "bytes=500-", "bytes=0-0,-1", "bytes=500-100", "items=1-2",
		"bytes=99999999999999999999-", "bytes=,,,", "bytes=0-1,1-2,2-3", "bytes= 1 - 2 ", "bytes=-",
	} {
		f.Add([]byte(s), int64(1000))
	}
	f.Add([]byte("bytes=-5"), int64(0))
	f.Fuzz(func(t *testing.T, h []byte, size int64) {
		if size < 0 {
			size = -size
		}
		if size < 0 { // math.MinInt64
			size = 0
		}
		rs, err := ParseRange(nil, h, size)
		if err != nil {
			if len(rs) != 0 {
				t.Fatalf("ParseRange(%q, %d): got %v with error %v want no ranges", h, size, rs, err)
			}
			return
		}
		if len(rs) == 0 || len(rs) > MaxRanges {
			t.Fatalf("ParseRange(%q, %d): got %d ranges want 1..%d", h, size, len(rs), MaxRanges)
		}
		for i, r := range rs {
			if r.Start < 0 || r.End >= size || r.Start > r.End {
				t.Fatalf("ParseRange(%q, %d): range %d = %v outside [0,%d)", h, size, i, r, size)
			}
			for j := range i {
				if o := rs[j]; r.Start <= o.End && o.Start <= r.End {
					t.Fatalf("ParseRange(%q, %d): ranges %v and %v overlap", h, size, o, r)
				}
			}
		}
	})
}

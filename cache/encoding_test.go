package cache

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func byteLines(lines ...string) [][]byte {
	out := make([][]byte, len(lines))
	for i, l := range lines {
		out[i] = []byte(l)
	}
	return out
}

var defaultPrefs = byteLines("br", "gzip")

func TestAcceptedEncodings(t *testing.T) {
	tests := []struct {
		name  string
		lines []string // nil: no Accept-Encoding field at all
		prefs []string // nil: br, gzip
		want  string   // the normalised field; "" = none (identity)
	}{
		{"absent", nil, nil, ""},
		{"empty value accepts nothing (§12.5.3)", []string{""}, nil, ""},
		{"only OWS and commas", []string{" , ,\t"}, nil, ""},
		{"chrome", []string{"gzip, deflate, br, zstd"}, nil, "br, gzip"},
		{"firefox", []string{"gzip, deflate, br"}, nil, "br, gzip"},
		{"old browser", []string{"gzip, deflate"}, nil, "gzip"},
		{"client weights dropped, server order kept", []string{"br;q=0.1, gzip;q=1.0"}, nil, "br, gzip"},
		{"weights and star", []string{"br;q=1.0, gzip;q=0.8, *;q=0.1"}, nil, "br, gzip"},
		{"upper case coding", []string{"GZIP, BR"}, nil, "br, gzip"},
		{"mixed case q", []string{"br;Q=0, gzip"}, nil, "gzip"},
		{"x-gzip is gzip (§8.4.1.3)", []string{"x-gzip"}, nil, "gzip"},
		{"X-GZip is gzip", []string{"X-GZip;q=0.5"}, nil, "gzip"},
		{"x-gzip refused refuses gzip", []string{"gzip, x-gzip;q=0"}, nil, ""},
		{"x-br is not br", []string{"x-br"}, nil, ""},
		{"identity only", []string{"identity"}, nil, ""},
		{"all refused", []string{"br;q=0, gzip;q=0"}, nil, ""},
		{"q=0.000", []string{"br;q=0.000, gzip"}, nil, "gzip"},
		{"q=0.", []string{"br;q=0., gzip"}, nil, "gzip"},
		{"q=1", []string{"gzip;q=1"}, nil, "gzip"},
		{"q=1.000", []string{"br;q=1.000"}, nil, "br"},
		{"q=0.001 is positive", []string{"br;q=0.001"}, nil, "br"},
		{"q=1.5 malformed refuses", []string{"br;q=1.5, gzip"}, nil, "gzip"},
		{"q=2 malformed refuses", []string{"br;q=2, gzip"}, nil, "gzip"},
		{"q=0.5000 too many digits", []string{"br;q=0.5000, gzip"}, nil, "gzip"},
		{"q=.5 malformed", []string{"br;q=.5, gzip"}, nil, "gzip"},
		{"q=abc malformed", []string{"br;q=abc, gzip"}, nil, "gzip"},
		{"q empty malformed", []string{"br;q=, gzip"}, nil, "gzip"},
		{"quoted q refused", []string{`br;q="1", gzip`}, nil, "gzip"},
		{"OWS around params", []string{"br ; q = 0.5 ,gzip"}, nil, "br, gzip"},
		{"tabs", []string{"\tbr\t;\tq=1\t"}, nil, "br"},
		{"unknown param ignored", []string{"br;level=3"}, nil, "br"},
		{"quoted param with comma", []string{`br;x="a, gzip;q=1", deflate`}, nil, "br"},
		{"quoted param hides nothing", []string{`deflate;x="br, gzip"`}, nil, ""},
		{"param without value malformed", []string{"br;q, gzip"}, nil, "gzip"},
		{"garbage after coding refuses it", []string{"br junk, gzip"}, nil, "gzip"},
		{"garbage element ignored", []string{"@@@, gzip"}, nil, "gzip"},
		{"empty elements (§5.6.1)", []string{",,br,,"}, nil, "br"},
		{"star accepts unlisted", []string{"*"}, nil, "br, gzip"},
		{"star with weight", []string{"*;q=0.1"}, nil, "br, gzip"},
		{"star refused", []string{"*;q=0"}, nil, ""},
		{"star but br refused", []string{"*, br;q=0"}, nil, "gzip"},
		{"star refused but gzip listed", []string{"*;q=0, gzip"}, nil, "gzip"},
		{"star refused twice-listed", []string{"*, *;q=0"}, nil, ""},
		{"repeat refuses", []string{"br, br;q=0, gzip"}, nil, "gzip"},
		{"several lines", []string{"gzip", "deflate, br"}, nil, "br, gzip"},
		{"refusal on another line", []string{"br, gzip", "br;q=0"}, nil, "gzip"},
		{"empty line beside a list", []string{"", "gzip"}, nil, "gzip"},
		{"configured order", []string{"gzip, br, zstd"}, []string{"zstd", "br", "gzip"}, "zstd, br, gzip"},
		{"configured order, part of it", []string{"gzip, zstd"}, []string{"zstd", "br", "gzip"}, "zstd, gzip"},
		{"no prefs", []string{"gzip, br"}, []string{}, ""},
		{"pref x-gzip matches gzip", []string{"gzip"}, []string{"x-gzip"}, "x-gzip"},
		{"own output br", []string{"br"}, nil, "br"},
		{"own output gzip", []string{"gzip"}, nil, "gzip"},
		{"own output br, gzip", []string{"br, gzip"}, nil, "br, gzip"},
		{"brotli-only client", []string{"br;q=1, gzip;q=0"}, nil, "br"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefs := defaultPrefs
			if tt.prefs != nil {
				prefs = byteLines(tt.prefs...)
			}
			var lines [][]byte
			if tt.lines != nil {
				lines = byteLines(tt.lines...)
			}
			set := AcceptedEncodings(lines, prefs)
			if got := string(AppendEncodingField(nil, set, prefs)); got != tt.want {
				t.Errorf("AcceptedEncodings(%q, %q) = %b, field %q, want %q", tt.lines, prefs, set, got, tt.want)
			}
		})
	}
}

func TestCheckEncodingPrefs(t *testing.T) {
	tests := []struct {
		prefs   []string
		wantIdx int
		wantMsg string
	}{
		{[]string{"br", "gzip"}, -1, ""},
		{[]string{"zstd", "br", "gzip", "deflate", "compress"}, -1, ""},
		{nil, -1, ""},
		{[]string{}, -1, ""},
		{[]string{"br", "g zip"}, 1, "not a token"},
		{[]string{"br", ""}, 1, "empty"},
		{[]string{"br", "gzip;q=1"}, 1, "not a token"},
		{[]string{"identity"}, 0, "not a content coding"},
		{[]string{"br", "IDENTITY"}, 1, "not a content coding"},
		{[]string{"*"}, 0, "not a content coding"},
		{[]string{"gzip", "GZIP"}, 1, "repeats"},
		{[]string{"gzip", "br", "x-gzip"}, 2, "repeats"},
		{[]string{"brö"}, 0, "not a token"},
		{[]string{"a", "b", "c", "d", "e", "f", "g", "h"}, -1, ""},
		{[]string{"a", "b", "c", "d", "e", "f", "g", "h", "i"}, 8, "at most 8"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.prefs, ","), func(t *testing.T) {
			i, err := CheckEncodingPrefs(tt.prefs)
			if i != tt.wantIdx {
				t.Errorf("index = %d, want %d (err %v)", i, tt.wantIdx, err)
			}
			if tt.wantMsg == "" {
				if err != nil {
					t.Errorf("err = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrBadEncodingPref) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("err = %v, want ErrBadEncodingPref containing %q", err, tt.wantMsg)
			}
		})
	}
}

func TestAcceptedEncodingsAllocatesNothing(t *testing.T) {
	lines := byteLines("gzip, deflate, br;q=0.9, zstd", `*;q=0.1;x="a,b"`)
	allocs := testing.AllocsPerRun(1000, func() { AcceptedEncodings(lines, defaultPrefs) })
	if allocs != 0 {
		t.Errorf("AcceptedEncodings allocs: got %v want 0", allocs)
	}
}

func BenchmarkAcceptedEncodings(b *testing.B) {
	for _, bc := range []struct{ name, v string }{
		{"chrome", "gzip, deflate, br, zstd"},
		{"weighted", "br;q=1.0, gzip;q=0.8, *;q=0.1"},
		{"gzip-only", "gzip, deflate"},
		{"normalised", "br, gzip"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			lines := byteLines(bc.v)
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.v)))
			for b.Loop() {
				AcceptedEncodings(lines, defaultPrefs)
			}
		})
	}
}

// FuzzAcceptedEncodings checks that any field (split into lines at '\n')
// neither panics nor yields a bit beyond prefs, that every coding in the set
// is one the field accepts on its own, and that the result is idempotent:
// the header the edge writes back (the set's field, or none) yields the same
// set. The seed corpus runs as part of `go test`.
func FuzzAcceptedEncodings(f *testing.F) {
	for _, s := range []string{
		"", "gzip, deflate, br, zstd", "br;q=1.0, gzip;q=0.8, *;q=0.1", "*;q=0", "x-gzip",
		"br;q=0, gzip;q=0", "identity", `br;x="a,\"b`, "\"", ";;;", "br;q", "br;q=1.0001",
		"gzip\ndeflate, br", ",,,", "GZIP;Q=0.5", "*, br;q=0", "br\x00gzip", "zstd;q=0.9, br;q=0.8",
		"br, gzip",
	} {
		f.Add(s, uint8(0))
	}
	f.Add("gzip, br", uint8(1))
	f.Add("deflate, zstd;q=0.5", uint8(2))
	prefSets := [][][]byte{
		byteLines("br", "gzip"),
		byteLines("zstd", "br", "gzip", "deflate"),
		byteLines("x-gzip", "compress"),
	}
	f.Fuzz(func(t *testing.T, v string, set uint8) {
		prefs := prefSets[int(set)%len(prefSets)]
		var lines [][]byte
		if v != "" {
			lines = bytes.Split([]byte(v), []byte("\n"))
		}
		got := AcceptedEncodings(lines, prefs)
		if got>>len(prefs) != 0 {
			t.Fatalf("AcceptedEncodings(%q) = %b, more bits than %d prefs", v, got, len(prefs))
		}
		for i, p := range prefs {
			if got&(1<<i) != 0 && !acceptsCoding(lines, p) {
				t.Fatalf("AcceptedEncodings(%q) = %b includes %q, which the field does not accept", v, got, p)
			}
		}
		var out [][]byte // what the edge forwards: one line, or no field
		if got != 0 {
			out = [][]byte{AppendEncodingField(nil, got, prefs)}
		}
		if again := AcceptedEncodings(out, prefs); again != got {
			t.Fatalf("not idempotent: %q -> %b, its output %q -> %b", v, got, out, again)
		}
	})
}

func TestTcharTable(t *testing.T) {
	const want = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	for c := 0; c < 256; c++ {
		if got := isTchar(byte(c)); got != strings.ContainsRune(want, rune(c)) || (c >= 0x80 && got) {
			t.Errorf("isTchar(%q) = %v", rune(c), got)
		}
	}
}

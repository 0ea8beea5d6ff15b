package cache

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func headerGetter(h map[string]string) func([]byte) []byte {
	return func(name []byte) []byte {
		v, ok := h[string(name)]
		if !ok {
			return nil
		}
		return []byte(v)
	}
}

func TestVariantKey(t *testing.T) {
	primary := []byte("example.com/a")
	vary := [][]byte{[]byte("accept-encoding"), []byte("accept-language")}
	key := func(h map[string]string) string {
		return string(VariantKey(nil, primary, vary, headerGetter(h)))
	}
	tests := []struct {
		name string
		a, b map[string]string
		same bool
	}{
		{"§4.1 equal values match", map[string]string{"accept-encoding": "gzip"}, map[string]string{"accept-encoding": "gzip"}, true},
		{"§4.1 different values differ", map[string]string{"accept-encoding": "gzip"}, map[string]string{"accept-encoding": "br"}, false},
		{"§4.1 whitespace normalized", map[string]string{"accept-encoding": "  gzip,\t  br "}, map[string]string{"accept-encoding": "gzip, br"}, true},
		{"§4.1 absent differs from empty", map[string]string{}, map[string]string{"accept-encoding": ""}, false},
		{"§4.1 values cannot forge the next field", map[string]string{"accept-encoding": "a", "accept-language": "b"},
			map[string]string{"accept-encoding": "a\x01\x01b"}, false},
		{"§4.1 value order matters (no semantic normalization)", map[string]string{"accept-encoding": "gzip, br"},
			map[string]string{"accept-encoding": "br, gzip"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ka, kb := key(tt.a), key(tt.b)
			if (ka == kb) != tt.same {
				t.Errorf("keys equal: got %v want %v (%q vs %q)", ka == kb, tt.same, ka, kb)
			}
			if !strings.HasPrefix(ka, string(primary)+"\x00") {
				t.Errorf("key prefix: got %q want prefix %q", ka, string(primary)+"\x00")
			}
		})
	}
}

func TestVariantKeyZeroAlloc(t *testing.T) {
	primary := []byte("example.com/a")
	vary := [][]byte{[]byte("accept-encoding")}
	val := []byte(" gzip,  br ")
	get := func([]byte) []byte { return val }
	dst := make([]byte, 0, 256)
	allocs := testing.AllocsPerRun(1000, func() {
		dst = VariantKey(dst[:0], primary, vary, get)
	})
	if allocs != 0 {
		t.Errorf("VariantKey allocs: got %v want 0", allocs)
	}
	if !bytes.Contains(dst, []byte("gzip, br")) {
		t.Errorf("VariantKey: got %q want it to contain %q", dst, "gzip, br")
	}
}

func TestETagMatch(t *testing.T) {
	tests := []struct {
		name      string
		inm, etag string
		want      bool
	}{
		{"RFC 9110 §13.1.2 exact strong match", `"abc"`, `"abc"`, true},
		{"RFC 9110 §8.8.3.2 weak comparison ignores W/ in request", `W/"abc"`, `"abc"`, true},
		{"RFC 9110 §8.8.3.2 weak comparison ignores W/ in entry", `"abc"`, `W/"abc"`, true},
		{"RFC 9110 §13.1.2 different tags", `"abc"`, `"abd"`, false},
		{"RFC 9110 §13.1.2 list match", `"x", "y" , W/"abc"`, `"abc"`, true},
		{"RFC 9110 §13.1.2 list without match", `"x", "y"`, `"abc"`, false},
		{"RFC 9110 §13.1.2 star matches", `*`, `"abc"`, true},
		{"RFC 9110 §13.1.2 star matches without etag", ` * `, ``, true},
		{"RFC 9110 §8.8.3 tag containing comma", `"a,b"`, `"a,b"`, true},
		{"RFC 9110 §8.8.3 no etag no match", `"abc"`, ``, false},
		{"RFC 9110 §8.8.3 quotes are part of the tag", `abc`, `"abc"`, false},
		{"RFC 9110 §8.8.3 unquoted legacy tags compare raw", `abc`, `abc`, true},
		{"RFC 9110 §13.1.2 empty header", ``, `"abc"`, false},
		{"RFC 9110 §13.1.2 garbage", `,,,W/`, `"abc"`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ETagMatch([]byte(tt.inm), []byte(tt.etag)); got != tt.want {
				t.Errorf("ETagMatch(%q, %q): got %v want %v", tt.inm, tt.etag, got, tt.want)
			}
		})
	}
}

func TestNotModifiedSince(t *testing.T) {
	const lm = "Sun, 06 Nov 1994 08:49:37 GMT"
	tests := []struct {
		name    string
		ims, lm string
		want    bool
	}{
		{"RFC 9110 §13.1.3 same date", lm, lm, true},
		{"RFC 9110 §13.1.3 later IMS", "Sun, 06 Nov 1994 08:49:38 GMT", lm, true},
		{"RFC 9110 §13.1.3 earlier IMS", "Sun, 06 Nov 1994 08:49:36 GMT", lm, false},
		{"RFC 9110 §5.6.7 obsolete RFC 850 date", "Sunday, 06-Nov-94 08:49:37 GMT", lm, true},
		{"RFC 9110 §5.6.7 obsolete asctime date", "Sun Nov  6 08:49:37 1994", lm, true},
		{"RFC 9110 §13.1.3 invalid IMS ignored", "yesterday", lm, false},
		{"RFC 9110 §13.1.3 no Last-Modified", lm, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := NotModifiedSince([]byte(tt.ims), []byte(tt.lm)); got != tt.want {
				t.Errorf("NotModifiedSince(%q, %q): got %v want %v", tt.ims, tt.lm, got, tt.want)
			}
		})
	}
}

func TestIfRangeMatches(t *testing.T) {
	const lm = "Sun, 06 Nov 1994 08:49:37 GMT"
	tests := []struct {
		name              string
		ifRange, etag, lm string
		want              bool
	}{
		{"RFC 9110 §13.1.5 strong etag match", `"v1"`, `"v1"`, lm, true},
		{"RFC 9110 §13.1.5 etag mismatch", `"v1"`, `"v2"`, lm, false},
		{"RFC 9110 §13.1.5 weak If-Range never matches", `W/"v1"`, `"v1"`, lm, false},
		{"RFC 9110 §13.1.5 weak stored etag never matches", `"v1"`, `W/"v1"`, lm, false},
		{"RFC 9110 §13.1.5 exact date match", lm, `"v1"`, lm, true},
		{"RFC 9110 §13.1.5 equivalent date in obsolete format", "Sunday, 06-Nov-94 08:49:37 GMT", `"v1"`, lm, true},
		{"RFC 9110 §13.1.5 later date is not a match", "Sun, 06 Nov 1994 08:49:38 GMT", `"v1"`, lm, false},
		{"RFC 9110 §13.1.5 date without Last-Modified", lm, `"v1"`, "", false},
		{"RFC 9110 §13.1.5 garbage", "garbage", `"v1"`, "garbage", false},
		{"RFC 9110 §13.1.5 empty", "", `"v1"`, lm, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := IfRangeMatches([]byte(tt.ifRange), []byte(tt.etag), []byte(tt.lm)); got != tt.want {
				t.Errorf("IfRangeMatches(%q, %q, %q): got %v want %v", tt.ifRange, tt.etag, tt.lm, got, tt.want)
			}
		})
	}
}

func FuzzValidators(f *testing.F) {
	for _, s := range [][2]string{
		{`"abc"`, `"abc"`}, {`W/"abc", "x"`, `W/"abc"`}, {`*`, ``}, {`"a,b", W/`, `"a,b"`},
		{"Sun, 06 Nov 1994 08:49:37 GMT", "Sun, 06 Nov 1994 08:49:37 GMT"}, {"Sun Nov  6 08:49:37 1994", "x"},
		{`W/`, `W/`}, {`"`, `"`}, {",,,,", ""},
	} {
		f.Add([]byte(s[0]), []byte(s[1]))
	}
	f.Fuzz(func(t *testing.T, a, b []byte) {
		ETagMatch(a, b)
		IfRangeMatches(a, b, b)
		NotModifiedSince(a, b)
		ParseHTTPDate(a)
		// Any well-formed strong entity-tag matches itself both ways.
		if len(b) > 0 && !bytes.ContainsAny(b, "\"\x00") {
			tag := append(append([]byte{'"'}, b...), '"')
			if !ETagMatch(tag, tag) || !IfRangeMatches(tag, tag, nil) {
				t.Fatalf("strong tag %q does not match itself: ETagMatch %v IfRangeMatches %v",
					tag, ETagMatch(tag, tag), IfRangeMatches(tag, tag, nil))
			}
			weak := append([]byte("W/"), tag...)
			if !ETagMatch(weak, tag) || IfRangeMatches(weak, tag, nil) {
				t.Fatalf("weak tag %q: ETagMatch %v want true, IfRangeMatches %v want false",
					weak, ETagMatch(weak, tag), IfRangeMatches(weak, tag, nil))
			}
		}
	})
}

func TestParseHTTPDate(t *testing.T) {
	want := time.Date(1994, 11, 6, 8, 49, 37, 0, time.UTC)
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"RFC 9110 §5.6.7 IMF-fixdate", "Sun, 06 Nov 1994 08:49:37 GMT", true},
		{"§5.6.7 obsolete rfc850-date", "Sunday, 06-Nov-94 08:49:37 GMT", true},
		{"§5.6.7 obsolete asctime-date", "Sun Nov  6 08:49:37 1994", true},
		{"§5.6.7 asctime with two-digit day", "Sun Nov 06 08:49:37 1994", true},
		{"surrounding whitespace is not part of the value", "  Sun, 06 Nov 1994 08:49:37 GMT\t", true},
		{"lower-case gmt tolerated", "Sun, 06 Nov 1994 08:49:37 gmt", true},
		{"odd-case Gmt tolerated", "Sunday, 06-Nov-94 08:49:37 Gmt", true},
		{"RFC 9111 §5.3 zero", "0", false},
		{"§5.3 minus one", "-1", false},
		{"empty", "", false},
		{"extra space inside", "Sun, 06 Nov 1994  08:49:37 GMT", false},
		{"extra space after comma", "Sun,  06 Nov 1994 08:49:37 GMT", false},
		{"one-digit hour", "Sun, 06 Nov 1994 8:49:37 GMT", false},
		{"one-digit day in IMF-fixdate", "Sun, 6 Nov 1994 08:49:37 GMT", false},
		{"two dates (several lines joined)", "Sun, 06 Nov 1994 08:49:37 GMT, Sun, 06 Nov 1994 08:49:37 GMT", false},
		{"other zone", "Sun, 06 Nov 1994 08:49:37 UTC", false},
		{"numeric zone", "Sun, 06 Nov 1994 08:49:37 +0000", false},
		{"lower-case month (case-sensitive)", "Sun, 06 nov 1994 08:49:37 GMT", false},
		{"bad day name", "Sux, 06 Nov 1994 08:49:37 GMT", false},
		{"hour 24", "Sun, 06 Nov 1994 24:49:37 GMT", false},
		{"31 February", "Sun, 31 Feb 1994 08:49:37 GMT", false},
		{"ISO 8601", "1994-11-06T08:49:37Z", false},
		{"asctime with zone", "Sun Nov  6 08:49:37 1994 GMT", false},
		{"rfc850 with four-digit year", "Sunday, 06-Nov-1994 08:49:37 GMT", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ParseHTTPDate([]byte(tt.in))
			if ok != tt.ok {
				t.Fatalf("ParseHTTPDate(%q): ok got %v want %v (%v)", tt.in, ok, tt.ok, got)
			}
			if ok && !got.Equal(want) {
				t.Errorf("ParseHTTPDate(%q): got %v want %v", tt.in, got, want)
			}
		})
	}
	if got, ok := ParseHTTPDate([]byte("Fri, 31 Dec 1999 23:59:60 GMT")); !ok || !got.Equal(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("leap second: got %v %v want 2000-01-01 true", got, ok)
	}
	if allocs := testing.AllocsPerRun(100, func() { ParseHTTPDate([]byte("Sun, 06 Nov 1994 08:49:37 GMT")) }); allocs != 0 {
		t.Errorf("ParseHTTPDate allocates %.0f times, want 0", allocs)
	}
}

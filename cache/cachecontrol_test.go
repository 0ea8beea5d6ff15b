package cache

import (
	"reflect"
	"testing"
)

// dirs builds an expected Directives from a base with all deltas absent.
func dirs(mod func(d *Directives)) Directives {
	var d Directives
	d.Reset()
	if mod != nil {
		mod(&d)
	}
	return d
}

func parseLines(lines ...string) Directives {
	var d Directives
	d.Reset()
	for _, l := range lines {
		ParseCacheControl(&d, []byte(l))
	}
	return d
}

func TestParseCacheControl(t *testing.T) {
	tests := []struct {
		name  string
		lines []string
		want  Directives
	}{
		{"§5.2 empty field", []string{""}, dirs(nil)},
		{"§5.2.2.1 max-age", []string{"max-age=60"}, dirs(func(d *Directives) { d.MaxAge = 60 })},
		{"§5.2 tokens are case-insensitive", []string{"Max-Age=60, S-MAXAGE=30, No-Store"},
			dirs(func(d *Directives) { d.MaxAge, d.SMaxAge, d.NoStore = 60, 30, true })},
		{"§5.2 quoted-string argument", []string{`max-age="60"`}, dirs(func(d *Directives) { d.MaxAge = 60 })},
		{"§5.2 OWS around list elements", []string{" public ,\tmax-age=5 , "},
			dirs(func(d *Directives) { d.Public, d.MaxAge = true, 5 })},
		{"§5.2 empty list elements", []string{",,no-cache,,"}, dirs(func(d *Directives) { d.NoCache = true })},
		{"§4.2.1 invalid max-age letters is stale", []string{"max-age=abc"}, dirs(func(d *Directives) { d.MaxAge = 0 })},
		{"§4.2.1 negative max-age is stale", []string{"max-age=-1"}, dirs(func(d *Directives) { d.MaxAge = 0 })},
		{"§4.2.1 max-age without value is stale", []string{"max-age"}, dirs(func(d *Directives) { d.MaxAge = 0 })},
		{"§4.2.1 empty max-age is stale", []string{"max-age="}, dirs(func(d *Directives) { d.MaxAge = 0 })},
		{"§4.2.1 fractional s-maxage is stale", []string{"s-maxage=1.5"}, dirs(func(d *Directives) { d.SMaxAge = 0 })},
		{"§4.2.1 invalid min-fresh ignored", []string{"min-fresh=x"}, dirs(nil)},
		{"§4.2.1 invalid stale-if-error ignored", []string{"stale-if-error=-5"}, dirs(nil)},
		{"§1.2.2 delta-seconds clamp at 2^31", []string{"max-age=99999999999999999999999"},
			dirs(func(d *Directives) { d.MaxAge = 2147483648 })},
		{"§1.2.2 exactly 2^31", []string{"max-age=2147483648"}, dirs(func(d *Directives) { d.MaxAge = 2147483648 })},
		{"§4.2.1 duplicate directive keeps smallest", []string{"max-age=60, max-age=30"},
			dirs(func(d *Directives) { d.MaxAge = 30 })},
		{"§4.2.1 duplicates across lines keep smallest", []string{"max-age=30", "max-age=90"},
			dirs(func(d *Directives) { d.MaxAge = 30 })},
		{"§4.2.1 invalid duplicate wins as 0", []string{"max-age=60, max-age=zz"},
			dirs(func(d *Directives) { d.MaxAge = 0 })},
		{"§5.2.2.4 qualified no-cache treated as unqualified", []string{`no-cache="Set-Cookie, X-Foo", max-age=10`},
			dirs(func(d *Directives) { d.NoCache, d.MaxAge = true, 10 })},
		{"§5.2.2.7 qualified private keeps its field list", []string{`private="Set-Cookie, X-Foo"`},
			dirs(func(d *Directives) { d.PrivateFields = []byte("Set-Cookie, X-Foo") })},
		{"§5.2.2.7 token-form qualified private", []string{`private=Set-Cookie`},
			dirs(func(d *Directives) { d.PrivateFields = []byte("Set-Cookie") })},
		{"§5.2.2.7 empty qualified private is unqualified", []string{`private=""`},
			dirs(func(d *Directives) { d.Private = true })},
		{"§5.2.2.7 unqualified and qualified private: unqualified", []string{`private="X-Foo", private`},
			dirs(func(d *Directives) { d.Private, d.PrivateFields = true, []byte("X-Foo") })},
		{"§5.2.2.7 two different qualified private: unqualified", []string{`private="X-Foo"`, `private="X-Bar"`},
			dirs(func(d *Directives) { d.Private, d.PrivateFields = true, []byte("X-Foo") })},
		{"§5.2.1.2 max-stale without value", []string{"max-stale"}, dirs(func(d *Directives) { d.MaxStaleAny = true })},
		{"§5.2.1.2 max-stale with value", []string{"max-stale=120"}, dirs(func(d *Directives) { d.MaxStale = 120 })},
		{"§5.2.1.3 min-fresh", []string{"min-fresh=10"}, dirs(func(d *Directives) { d.MinFresh = 10 })},
		{"RFC 5861 stale-while-revalidate and stale-if-error", []string{"stale-while-revalidate=30, stale-if-error=86400"},
			dirs(func(d *Directives) { d.StaleWhileRevalidate, d.StaleIfError = 30, 86400 })},
		{"§5.2.2 every boolean response directive", []string{
			"no-store, no-cache, private, public, must-revalidate, proxy-revalidate, no-transform, immutable, must-understand"},
			dirs(func(d *Directives) {
				d.NoStore, d.NoCache, d.Private, d.Public = true, true, true, true
				d.MustRevalidate, d.ProxyRevalidate, d.NoTransform, d.Immutable, d.MustUnderstand = true, true, true, true, true
			})},
		{"§5.2.1.7 only-if-cached", []string{"only-if-cached"}, dirs(func(d *Directives) { d.OnlyIfCached = true })},
		{"§5.2.3 unknown directives ignored", []string{`foo, bar="max-age=1", baz=2, max-age=7`},
			dirs(func(d *Directives) { d.MaxAge = 7 })},
		{"§5.2 garbage after argument does not become a directive", []string{"max-age=5 no-store"},
			dirs(func(d *Directives) { d.MaxAge = 5 })},
		{"§5.2 unterminated quote", []string{`private="abc, no-store`}, dirs(func(d *Directives) { d.Private = true })},
		{"§5.2 prefix of a directive name is not the directive", []string{"max-ag=5, no-stor"}, dirs(nil)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := parseLines(tt.lines...)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseCacheControl(%q):\n got %+v\nwant %+v", tt.lines, got, tt.want)
			}
		})
	}
}

func TestParseCacheControlZeroAlloc(t *testing.T) {
	v := []byte(`public, max-age=3600, s-maxage="600", stale-while-revalidate=30, no-cache="Set-Cookie", must-revalidate`)
	var d Directives
	allocs := testing.AllocsPerRun(1000, func() {
		d.Reset()
		ParseCacheControl(&d, v)
	})
	if allocs != 0 {
		t.Errorf("ParseCacheControl allocs: got %v want 0", allocs)
	}
}

func BenchmarkParseCacheControl(b *testing.B) {
	v := []byte(`public, max-age=3600, s-maxage=600, stale-while-revalidate=30, stale-if-error=86400`)
	var d Directives
	b.ReportAllocs()
	b.SetBytes(int64(len(v)))
	for b.Loop() {
		d.Reset()
		ParseCacheControl(&d, v)
	}
}

func FuzzParseCacheControl(f *testing.F) {
	for _, s := range []string{
		"", "max-age=60", `max-age="60"`, "no-cache=\"a,b\"", "max-stale", "max-age=99999999999999999999",
		",,,", "=", `"`, `private="`, "s-maxage=-1, max-age=abc", "\t\t", "max-age = 5",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		var d Directives
		d.Reset()
		ParseCacheControl(&d, v)
		for name, n := range map[string]int64{
			"MaxAge": d.MaxAge, "SMaxAge": d.SMaxAge, "MaxStale": d.MaxStale, "MinFresh": d.MinFresh,
			"StaleWhileRevalidate": d.StaleWhileRevalidate, "StaleIfError": d.StaleIfError,
		} {
			if n < -1 || n > maxDeltaSeconds {
				t.Fatalf("%s out of range for %q: got %d want -1..2^31", name, v, n)
			}
		}
		// Parsing the same line again must not change anything (minimum of
		// equal values): the parser is deterministic and idempotent.
		again := d
		ParseCacheControl(&again, v)
		if !reflect.DeepEqual(again, d) {
			t.Fatalf("reparse of %q changed result: got %+v want %+v", v, again, d)
		}
	})
}

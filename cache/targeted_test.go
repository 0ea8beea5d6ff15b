package cache

import (
	"reflect"
	"testing"
)

func TestParseTargeted(t *testing.T) {
	tests := []struct {
		name string
		in   string
		ok   bool
		want Directives
	}{
		{"RFC 9213 §2.1 max-age", "max-age=60", true, dirs(func(d *Directives) { d.MaxAge = 60 })},
		{"flags are Booleans", "no-store, must-revalidate, public", true,
			dirs(func(d *Directives) { d.NoStore, d.MustRevalidate, d.Public = true, true, true })},
		{"explicit ?1 and ?0", "no-store=?0, immutable=?1, max-age=5", true,
			dirs(func(d *Directives) { d.Immutable, d.MaxAge = true, 5 })},
		{"several lines are one dictionary", "max-age=60, s-maxage=10, stale-while-revalidate=5", true,
			dirs(func(d *Directives) { d.MaxAge, d.SMaxAge, d.StaleWhileRevalidate = 60, 10, 5 })},
		{"RFC 8941 §4.2.2 last duplicate wins", "max-age=10, max-age=60", true, dirs(func(d *Directives) { d.MaxAge = 60 })},
		{"parameters ignored", "max-age=60;foo=bar, public;x", true, dirs(func(d *Directives) { d.MaxAge, d.Public = 60, true })},
		{"unknown members of any type ignored", `foo="x", bar=(a b), baz=:AAA=:, qux=1.5, max-age=3`, true,
			dirs(func(d *Directives) { d.MaxAge = 3 })},
		{"qualified private is a String", `private="Set-Cookie", max-age=60`, true,
			dirs(func(d *Directives) { d.PrivateFields, d.MaxAge = []byte("Set-Cookie"), 60 })},
		{"qualified no-cache is a String", `no-cache="X-Foo"`, true, dirs(func(d *Directives) { d.NoCache = true })},
		{"delta clamp at 2^31", "max-age=999999999999999", true, dirs(func(d *Directives) { d.MaxAge = maxDeltaSeconds })},
		{"OWS after comma", "max-age=60,\tpublic", true, dirs(func(d *Directives) { d.MaxAge, d.Public = 60, true })},
		// The whole field is ignored (RFC 9213 §2.1):
		{"empty field", "", false, Directives{}},
		{"max-age as String", `max-age="60"`, false, Directives{}},
		{"max-age as Token", "max-age=abc", false, Directives{}},
		{"max-age as Decimal", "max-age=1.5", false, Directives{}},
		{"negative max-age", "max-age=-1", false, Directives{}},
		{"no-store as Integer", "no-store=1", false, Directives{}},
		{"private as Token", "private=Set-Cookie", false, Directives{}},
		{"upper-case key is not an sf-key", "Max-Age=60", false, Directives{}},
		{"trailing comma", "max-age=60,", false, Directives{}},
		{"missing comma", "max-age=60 public", false, Directives{}},
		{"unterminated string", `private="x`, false, Directives{}},
		{"integer too long", "max-age=1234567890123456", false, Directives{}},
		{"garbage", ",,;;==", false, Directives{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got Directives
			ok := ParseTargeted(&got, []byte(tt.in))
			if ok != tt.ok {
				t.Fatalf("ParseTargeted(%q): ok got %v want %v", tt.in, ok, tt.ok)
			}
			if ok && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseTargeted(%q):\n got %+v\nwant %+v", tt.in, got, tt.want)
			}
		})
	}
	v := []byte(`max-age=60, s-maxage=30, stale-if-error=5, private="Set-Cookie", public;x=1, foo=(a "b")`)
	var d Directives
	if allocs := testing.AllocsPerRun(100, func() { ParseTargeted(&d, v) }); allocs != 0 {
		t.Errorf("ParseTargeted allocates %.0f times, want 0", allocs)
	}
}

func FuzzParseTargeted(f *testing.F) {
	for _, s := range []string{"max-age=60", `private="a", x=(1 2);q=?1`, ",", `"`, "a=:", "a=-", "a=?"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var d Directives
		if ParseTargeted(&d, []byte(s)) && (d.MaxAge < -1 || d.MaxAge > maxDeltaSeconds) {
			t.Fatalf("max-age out of range for %q: got %d", s, d.MaxAge)
		}
	})
}

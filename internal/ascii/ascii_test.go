package ascii

import "testing"

func TestEqualFold(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"Content-Length", "content-length", true},
		{"ETAG", "etag", true},
		{"etag", "etags", false},
		{"", "", true},
		{"a", "b", false},
		{"[", "{", false}, // 0x5b and 0x7b differ by 0x20 but are not letters
		{"\xc4", "\xe4", false},
	}
	for _, tt := range tests {
		t.Run(tt.a+"/"+tt.b, func(t *testing.T) {
			if got := EqualFold([]byte(tt.a), []byte(tt.b)); got != tt.want {
				t.Errorf("EqualFold(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.want)
			}
			if got := EqualFold([]byte(tt.b), []byte(tt.a)); got != tt.want {
				t.Errorf("EqualFold(%q, %q) = %v, want %v", tt.b, tt.a, got, tt.want)
			}
		})
	}
}

func TestEqualFoldLower(t *testing.T) {
	tests := []struct {
		b, lower string
		want     bool
	}{
		{"Max-Age", "max-age", true},
		{"max-age", "max-age", true},
		{"MAX-AGE", "max-age", true},
		{"max-ag", "max-age", false},
		{"max_age", "max-age", false},
		{"@", "`", false}, // 0x40 is not a letter: never folded onto 0x60
	}
	for _, tt := range tests {
		t.Run(tt.b, func(t *testing.T) {
			if got := EqualFoldLower([]byte(tt.b), tt.lower); got != tt.want {
				t.Errorf("EqualFoldLower(%q, %q) = %v, want %v", tt.b, tt.lower, got, tt.want)
			}
		})
	}
}

func TestEqualFoldAllocatesNothing(t *testing.T) {
	a, b := []byte("Cache-Control"), []byte("cache-control")
	if got := testing.AllocsPerRun(100, func() { EqualFold(a, b); EqualFoldLower(a, "cache-control") }); got != 0 {
		t.Errorf("got %v allocations, want 0", got)
	}
}

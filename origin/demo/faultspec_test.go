package demo

import (
	"errors"
	"testing"
	"time"
)

func TestParseFault(t *testing.T) {
	tests := []struct {
		spec    string
		want    Fault
		wantErr bool
	}{
		{"prefix=/img/,status=503,rate=0.1", Fault{PathPrefix: "/img/", Status: 503, Rate: 0.1}, false},
		{"prefix=/api/, delay=250ms", Fault{PathPrefix: "/api/", Delay: 250 * time.Millisecond}, false},
		{"reset,rate=0.01", Fault{Reset: true, Rate: 0.01}, false},
		{"reset=true,status=500", Fault{Reset: true, Status: 500}, false},
		{"status=502,reset=false", Fault{Status: 502}, false},
		{"", Fault{}, true},                  // no effect
		{"prefix=/a", Fault{}, true},         // no effect
		{"status=abc", Fault{}, true},        // not a number
		{"status=700", Fault{}, true},        // out of range
		{"delay=soon", Fault{}, true},        // not a duration
		{"rate=2,status=503", Fault{}, true}, // out of range
		{"prefix=img,status=503", Fault{}, true},
		{"colour=red", Fault{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			got, err := ParseFault(tt.spec)
			if gotErr := err != nil; gotErr != tt.wantErr {
				t.Fatalf("ParseFault(%q) error = %v, want error %v", tt.spec, err, tt.wantErr)
			}
			if err != nil {
				if !errors.Is(err, ErrFaultSpec) {
					t.Errorf("got error %v, want it to wrap ErrFaultSpec", err)
				}
				return
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
			if again, err := ParseFault(got.String()); err != nil || again != got {
				t.Errorf("round trip through %q: got %+v, %v, want %+v", got.String(), again, err, got)
			}
		})
	}
}

func FuzzParseFault(f *testing.F) {
	f.Add("prefix=/img/,status=503,rate=0.1")
	f.Add("reset=1,delay=1ms")
	f.Fuzz(func(t *testing.T, spec string) {
		got, err := ParseFault(spec)
		if err != nil {
			return
		}
		again, err := ParseFault(got.String())
		if err != nil || again != got {
			t.Fatalf("ParseFault(%q) = %+v; round trip through %q gave %+v, %v", spec, got, got.String(), again, err)
		}
	})
}

package bench

import (
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestRoundRobin(t *testing.T) {
	tg, err := RoundRobin("http://a/", "http://b/")
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"http://a/", "http://b/", "http://a/"} {
		if got := tg.Pick(uint64(i), nil); got != want {
			t.Errorf("pick %d = %q, want %q", i, got, want)
		}
	}
	for _, bad := range [][]string{nil, {"ftp://a/"}, {"/relative"}, {"http://"}} {
		if _, err := RoundRobin(bad...); !errors.Is(err, ErrBadTarget) {
			t.Errorf("RoundRobin(%q) err %v, want ErrBadTarget", bad, err)
		}
	}
}

func TestParseURLListAndWeights(t *testing.T) {
	list, err := ParseURLList(strings.NewReader("# popular first\nhttp://e/a 3\n\nhttp://e/b\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0] != (WeightedURL{"http://e/a", 3}) || list[1] != (WeightedURL{"http://e/b", 1}) {
		t.Fatalf("got %+v", list)
	}
	tg, err := Weighted(list)
	if err != nil {
		t.Fatal(err)
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	count := map[string]int{}
	for i := range 40000 {
		count[tg.Pick(uint64(i), rnd)]++
	}
	if share := float64(count["http://e/a"]) / 40000; !within(share, 0.75, 0.02) {
		t.Errorf("share of weight 3 of 4: %.3f, want 0.75", share)
	}

	bad := []struct{ in, want string }{
		{"", "no URL"},
		{"http://e/a 0", "line 1: weight"},
		{"http://e/a\nhttp://e/b x", "line 2: weight"},
		{"http://e/a 1 2", "fields"},
		{"e/a", "line 1"},
	}
	for _, tc := range bad {
		if _, err := ParseURLList(strings.NewReader(tc.in)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseURLList(%q) err %v, want %q", tc.in, err, tc.want)
		}
	}
}

func TestZipf(t *testing.T) {
	tg, err := Zipf("http://e/dyn/o%d?size=10", 100, 1)
	if err != nil {
		t.Fatal(err)
	}
	rnd := rand.New(rand.NewPCG(3, 4))
	count := map[string]int{}
	const n = 100000
	for i := range n {
		count[tg.Pick(uint64(i), rnd)]++
	}
	// P(rank 1) = 1/H(100) = 0.193, P(rank 2) = half of that.
	if p1 := float64(count["http://e/dyn/o1?size=10"]) / n; !within(p1, 0.1928, 0.03) {
		t.Errorf("P(rank 1) %.4f, want 0.1928", p1)
	}
	if r := float64(count["http://e/dyn/o1?size=10"]) / float64(count["http://e/dyn/o2?size=10"]); !within(r, 2, 0.06) {
		t.Errorf("rank1/rank2 %.2f, want 2", r)
	}
	if len(count) < 90 {
		t.Errorf("%d distinct objects of 100 requested", len(count))
	}
	app, err := Zipf("http://e/obj-", 1, 0)
	if err != nil || app.Pick(0, rnd) != "http://e/obj-1" {
		t.Errorf("base without %%d: %v %v", app, err)
	}
	for _, tc := range []struct {
		n int
		s float64
	}{{0, 1}, {MaxZipfObjects + 1, 1}, {10, -1}} {
		if _, err := Zipf("http://e/", tc.n, tc.s); !errors.Is(err, ErrBadTarget) {
			t.Errorf("Zipf(n=%d, s=%v) err %v, want ErrBadTarget", tc.n, tc.s, err)
		}
	}
}

func FuzzParseURLList(f *testing.F) {
	f.Add("http://e/a 3\n# c\nhttp://e/b\n")
	f.Add("https://[::1]:8443/x 0.5")
	f.Add("http://e/a NaN")
	f.Fuzz(func(t *testing.T, s string) {
		list, err := ParseURLList(strings.NewReader(s))
		if err != nil {
			return
		}
		tg, err := Weighted(list)
		if err != nil {
			if !errors.Is(err, ErrBadTarget) { // only a sum of weights overflowing to +Inf
				t.Fatalf("parsed list %+v rejected by Weighted: %v", list, err)
			}
			return
		}
		_ = tg.Pick(0, rand.New(rand.NewPCG(1, 1)))
	})
}

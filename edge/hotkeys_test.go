package edge

import (
	"fmt"
	"testing"
)

// TestHotKeysBoundedAndRanked: the table never holds more than its
// capacity (rounded up to whole shards), keeps the heavily used keys when
// a stream of one-off keys passes through, and lists them most used first
// with the encodings sets they were requested with.
func TestHotKeysBoundedAndRanked(t *testing.T) {
	h := newHotKeys(160)
	for i := range 10 {
		key := []byte(fmt.Sprintf("cdn.example/hot/%d", i))
		h.touch(key, 1, uint32(1000*(i+1)))
		h.touch(key, 3, 1)
	}
	for i := range 5000 {
		h.touch([]byte(fmt.Sprintf("cdn.example/once/%d", i)), 0, 1)
	}
	if got, limit := h.len(), 16*h.perShard; got > limit {
		t.Fatalf("table holds %d keys, want at most %d", got, limit)
	}
	top := h.list(10)
	if len(top) != 10 {
		t.Fatalf("list(10) = %d items", len(top))
	}
	for rank, it := range top {
		want := fmt.Sprintf("cdn.example/hot/%d", 9-rank)
		if it.key != want {
			t.Fatalf("rank %d: %q (uses %d), want %q: the one-off keys pushed a hot key out or the order is wrong", rank, it.key, it.uses, want)
		}
		if it.sets != 1<<1|1<<3 {
			t.Errorf("%s: encoding sets %b, want sets 1 and 3", it.key, it.sets)
		}
	}
	h.touch([]byte("no-target"), 0, 1) // nothing to refetch: ignored
	for _, it := range h.list(0) {
		if it.key == "no-target" {
			t.Error("a key without a target was tracked")
		}
	}
}

// TestHotKeysTouchTrackedAllocatesNothing: counting a tracked key (what a
// sampled hit does) does not allocate.
func TestHotKeysTouchTrackedAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race")
	}
	h := newHotKeys(100)
	key := []byte("cdn.example/a")
	h.touch(key, 0, 1)
	if allocs := testing.AllocsPerRun(1000, func() { h.touch(key, 0, 1) }); allocs != 0 {
		t.Fatalf("touch of a tracked key allocates %.1f times, want 0", allocs)
	}
	var nilTable *hotKeys
	if nilTable.sampled() {
		t.Fatal("a nil table samples")
	}
	nilTable.touch(key, 0, 1) // warm restarts off: a no-op
}

// TestHotKeysCountSampledHits: hits on a node count (one in
// hotSampleEvery, weighted), so a key read from the cache ranks above one
// only filled.
func TestHotKeysCountSampledHits(t *testing.T) {
	o := warmTestOrigin(t)
	n := newTestNode(t, o.srv.URL, nil, nil)
	getVia(t, n, "/filled-only")
	for range 50 * hotSampleEvery {
		getVia(t, n, "/read-often")
	}
	top := n.pipe.hot.list(0)
	if len(top) != 2 || top[0].key != "cdn.example/read-often" || top[0].uses < 2*hotSampleEvery {
		t.Fatalf("hot keys %+v: want /read-often first with its sampled hits counted", top)
	}
}

package cache

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

func newTestPurges(ttl time.Duration, clock *time.Time) *Purges {
	p := NewPurges(ttl)
	p.now = func() time.Time { return *clock }
	return p
}

func TestPurgesCheck(t *testing.T) {
	variant := VariantKey(nil, []byte("a.com/x"), [][]byte{[]byte("accept-encoding")}, headerGetter(map[string]string{"accept-encoding": "gzip"}))
	mk := func(key string, storedAt time.Time, tags ...string) *Entry {
		e := &Entry{Key: []byte(key), StoredAt: storedAt}
		for _, tg := range tags {
			e.SurrogateKeys = append(e.SurrogateKeys, []byte(tg))
		}
		return e
	}
	type purge struct {
		kind  PurgeKind
		value string
		hard  bool
		at    time.Time
	}
	before, after := t0.Add(-time.Second), t0.Add(time.Second)
	tests := []struct {
		name           string
		purges         []purge
		e              *Entry
		purged, isHard bool
	}{
		{"no tombstones", nil, mk("a.com/x", before), false, false},
		{"URL soft purge of older entry", []purge{{PurgeURL, "a.com/x", false, t0}}, mk("a.com/x", before), true, false},
		{"URL hard purge of older entry", []purge{{PurgeURL, "a.com/x", true, t0}}, mk("a.com/x", before), true, true},
		{"URL purge does not touch newer entry", []purge{{PurgeURL, "a.com/x", true, t0}}, mk("a.com/x", after), false, false},
		{"URL purge covers Vary variants", []purge{{PurgeURL, "a.com/x", false, t0}}, mk(string(variant), before), true, false},
		{"URL purge is exact, not a prefix", []purge{{PurgeURL, "a.com/x", false, t0}}, mk("a.com/xy", before), false, false},
		{"prefix purge", []purge{{PurgePrefix, "a.com/", false, t0}}, mk("a.com/deep/x", before), true, false},
		{"prefix purge misses other host", []purge{{PurgePrefix, "a.com/", false, t0}}, mk("b.com/x", before), false, false},
		{"tag purge", []purge{{PurgeTag, "product-1", true, t0}}, mk("a.com/x", before, "home", "product-1"), true, true},
		{"tag purge misses untagged", []purge{{PurgeTag, "product-1", true, t0}}, mk("a.com/x", before, "home"), false, false},
		{"hard beats soft when both apply", []purge{{PurgeURL, "a.com/x", false, t0}, {PurgeTag, "t", true, t0}},
			mk("a.com/x", before, "t"), true, true},
		{"newer soft after older hard: entry between them", []purge{{PurgeURL, "a.com/x", true, t0.Add(-time.Hour)}, {PurgeURL, "a.com/x", false, t0}},
			mk("a.com/x", t0.Add(-time.Minute)), true, false},
		{"entry without StoredAt counts as old", []purge{{PurgeTag, "t", false, t0}}, mk("a.com/x", time.Time{}, "t"), true, false},
		{"unknown kind ignored", []purge{{PurgeKind(9), "a.com/x", true, t0}}, mk("a.com/x", before), false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := t0
			p := newTestPurges(time.Hour, &clock)
			for _, pg := range tt.purges {
				p.Add(pg.kind, []byte(pg.value), pg.hard, pg.at)
			}
			purged, hard := p.Check(tt.e)
			if purged != tt.purged || hard != tt.isHard {
				t.Errorf("Check: got (%v, %v) want (%v, %v)", purged, hard, tt.purged, tt.isHard)
			}
		})
	}
}

func TestPurgesAddCopiesAndDedupes(t *testing.T) {
	clock := t0.Add(time.Minute)
	p := newTestPurges(time.Hour, &clock)
	v := []byte("a.com/x")
	p.Add(PurgeURL, v, false, t0)
	p.Add(PurgeURL, v, false, t0) // same purge received twice
	p.Add(PurgeURL, v, false, t0.Add(time.Second))
	copy(v, "zzzzzzz") // caller reuses its buffer
	if got := p.Len(); got != 1 {
		t.Errorf("Len after duplicate adds: got %d want 1", got)
	}
	if purged, _ := p.Check(&Entry{Key: []byte("a.com/x"), StoredAt: t0}); !purged {
		t.Errorf("Check after caller reused value buffer: got false want true (newest purge at t0+1s)")
	}
	p.Add(PurgeURL, []byte("a.com/x"), true, t0)
	if got := p.Len(); got != 2 {
		t.Errorf("Len after soft and hard purge of one URL: got %d want 2", got)
	}
}

func TestPurgesTTL(t *testing.T) {
	clock := t0
	p := newTestPurges(time.Hour, &clock)
	p.Add(PurgeTag, []byte("old"), false, t0)
	p.Add(PurgePrefix, []byte("a.com/"), true, t0)
	clock = t0.Add(30 * time.Minute)
	p.Add(PurgeTag, []byte("new"), false, clock)
	if got := p.Prune(clock); got != 0 {
		t.Errorf("Prune before ttl: got %d dropped want 0", got)
	}
	clock = t0.Add(61 * time.Minute)
	if got := p.Prune(clock); got != 2 {
		t.Errorf("Prune after ttl: got %d dropped want 2", got)
	}
	if got := p.Len(); got != 1 {
		t.Errorf("Len after prune: got %d want 1", got)
	}
	e := &Entry{Key: []byte("a.com/x"), StoredAt: t0.Add(-time.Second), SurrogateKeys: [][]byte{[]byte("old")}}
	if purged, _ := p.Check(e); purged {
		t.Errorf("Check against expired tombstones: got purged want not purged (ttl expiry sets no floor)")
	}
	clock = t0.Add(2 * time.Hour)
	p.Prune(clock)
	if got, _ := p.Check(e); got || p.active.Load() != 0 {
		t.Errorf("after all tombstones expired: got purged=%v active=%d want false, 0", got, p.active.Load())
	}
}

func TestPurgesCapSetsSoftFloor(t *testing.T) {
	clock := t0.Add(time.Minute)
	p := newTestPurges(time.Hour, &clock)
	p.max = 100
	for i := range 101 {
		p.Add(PurgeTag, []byte(fmt.Sprint(i)), true, t0.Add(time.Duration(i)*time.Millisecond))
	}
	if got := p.Len(); got > 100 || got < 80 {
		t.Errorf("Len after exceeding cap: got %d want 80..100", got)
	}
	// Entries older than the forgotten tombstones are soft-purged by the
	// floor even though their own tombstone is gone.
	old := &Entry{Key: []byte("k"), StoredAt: t0.Add(-time.Second), SurrogateKeys: [][]byte{[]byte("0")}}
	if purged, hard := p.Check(old); !purged || hard {
		t.Errorf("Check of entry predating forgotten tombstone: got (%v, %v) want (true, false)", purged, hard)
	}
	// The newest tombstones are still exact (hard).
	newest := &Entry{Key: []byte("k"), StoredAt: t0.Add(99 * time.Millisecond), SurrogateKeys: [][]byte{[]byte("100")}}
	if purged, hard := p.Check(newest); !purged || !hard {
		t.Errorf("Check of entry purged by kept tombstone: got (%v, %v) want (true, true)", purged, hard)
	}
	fresh := &Entry{Key: []byte("k"), StoredAt: t0.Add(time.Second)}
	if purged, _ := p.Check(fresh); purged {
		t.Errorf("Check of entry newer than everything: got purged want not purged")
	}
}

func TestPurgesFutureDatedPurgeClampedToNow(t *testing.T) {
	clock := t0
	p := newTestPurges(time.Hour, &clock)
	p.Add(PurgeTag, []byte("t"), false, t0.Add(100*365*24*time.Hour))
	// Fetched after the purge arrived: not purged, whatever the peer's clock said.
	later := &Entry{Key: []byte("k"), StoredAt: t0.Add(time.Second), SurrogateKeys: [][]byte{[]byte("t")}}
	if purged, _ := p.Check(later); purged {
		t.Errorf("Check of entry stored after a future-dated purge arrived: got purged want not purged")
	}
	clock = t0.Add(2 * time.Hour)
	if got := p.Prune(clock); got != 1 {
		t.Errorf("Prune of future-dated tombstone after ttl: got %d dropped want 1", got)
	}
}

func TestPurgesCheckCacheInvalidatedByNewPurge(t *testing.T) {
	clock := t0
	p := newTestPurges(time.Hour, &clock)
	p.Add(PurgeTag, []byte("other"), false, t0)
	e := &Entry{Key: []byte("a.com/x"), StoredAt: t0.Add(-time.Second), SurrogateKeys: [][]byte{[]byte("t")}}
	for range 3 { // the first Check caches the negative verdict
		if purged, _ := p.Check(e); purged {
			t.Fatalf("Check before purge: got purged want not purged")
		}
	}
	p.Add(PurgeTag, []byte("t"), true, t0)
	if purged, hard := p.Check(e); !purged || !hard {
		t.Errorf("Check after purge of a cached-unpurged entry: got (%v, %v) want (true, true)", purged, hard)
	}
	// A second, independent set must not trust the first set's cache.
	q := newTestPurges(time.Hour, &clock)
	q.Add(PurgeTag, []byte("other"), false, t0)
	f := &Entry{Key: []byte("a.com/y"), StoredAt: t0.Add(-time.Second), SurrogateKeys: [][]byte{[]byte("t")}}
	p.Check(f) // purged in p: nothing cached
	q.Check(f) // unpurged in q: cached for q's generation
	if purged, _ := p.Check(f); !purged {
		t.Errorf("Check in p after q cached a negative verdict: got not purged want purged")
	}
}

func TestPurgesConcurrent(t *testing.T) {
	clock := t0
	p := newTestPurges(time.Hour, &clock)
	e := &Entry{Key: []byte("a.com/x"), StoredAt: t0.Add(-time.Second), SurrogateKeys: [][]byte{[]byte("t")}}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 200 {
				p.Add(PurgeTag, []byte(fmt.Sprint(w, i)), false, t0)
				p.Check(e)
			}
		})
	}
	wg.Wait()
	if got := p.Len(); got != 800 {
		t.Errorf("Len after concurrent adds: got %d want 800", got)
	}
}

func TestPurgesCheckZeroAlloc(t *testing.T) {
	clock := t0
	p := newTestPurges(time.Hour, &clock)
	e := &Entry{Key: []byte("a.com/x\x00variant"), StoredAt: t0, SurrogateKeys: [][]byte{[]byte("t1"), []byte("t2")}}
	if allocs := testing.AllocsPerRun(1000, func() { p.Check(e) }); allocs != 0 {
		t.Errorf("Check allocs without tombstones: got %v want 0", allocs)
	}
	p.Add(PurgeURL, []byte("a.com/y"), false, t0)
	p.Add(PurgeTag, []byte("t3"), false, t0)
	p.Add(PurgePrefix, []byte("c.com/"), false, t0)
	if allocs := testing.AllocsPerRun(1000, func() { p.Check(e) }); allocs != 0 {
		t.Errorf("Check allocs with tombstones: got %v want 0", allocs)
	}
}

func BenchmarkPurgesCheck(b *testing.B) {
	for _, bc := range []struct {
		tombstones int
		cached     bool // entry already checked at the current generation
	}{{0, false}, {1000, true}, {1000, false}} {
		b.Run(fmt.Sprintf("tombstones=%d/cached=%v", bc.tombstones, bc.cached), func(b *testing.B) {
			clock := t0
			p := newTestPurges(time.Hour, &clock)
			for i := range bc.tombstones {
				p.Add(PurgeKind(1+i%3), []byte(fmt.Sprintf("b.com/%d", i)), false, t0)
			}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				e := &Entry{Key: []byte("a.com/assets/app.js"), StoredAt: t0, SurrogateKeys: [][]byte{[]byte("assets"), []byte("js")}}
				for pb.Next() {
					if !bc.cached {
						e.purgeGen.Store(0)
					}
					p.Check(e)
				}
			})
		})
	}
}

func TestPurgesRecordAppliesOnce(t *testing.T) {
	clock := t0.Add(time.Minute)
	p := newTestPurges(time.Hour, &clock)
	rec := func(id string, hard bool, at time.Time) bool {
		return p.Record(Tombstone{Kind: PurgeTag, Value: []byte("t"), Hard: hard, At: at, ID: id, Origin: "n1"})
	}
	tests := []struct {
		name string
		id   string
		hard bool
		at   time.Time
		want bool
	}{
		{"first soft purge", "a", false, t0.Add(10 * time.Second), true},
		{"same ID again, later", "a", false, t0.Add(20 * time.Second), false},
		{"older soft purge, covered", "b", false, t0.Add(5 * time.Second), false},
		{"hard purge not covered by soft", "c", true, t0.Add(10 * time.Second), true},
		{"soft purge covered by newer hard", "d", false, t0.Add(8 * time.Second), false},
		{"newer soft purge", "e", false, t0.Add(30 * time.Second), true},
		{"older than the ttl", "f", true, clock.Add(-2 * time.Hour), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := rec(tt.id, tt.hard, tt.at); got != tt.want {
				t.Errorf("Record(%s): got %v want %v", tt.id, got, tt.want)
			}
		})
	}
	var ids []string
	for _, ts := range p.Tombstones(nil) {
		ids = append(ids, ts.ID)
	}
	slices.Sort(ids)
	if want := []string{"c", "e"}; !slices.Equal(ids, want) {
		t.Errorf("Tombstones IDs: got %v want %v", ids, want)
	}
}

// TestPurgesOneLimitForLookupsAndExchange: past the limit, the tombstones
// Check uses and those listed for the cluster's exchange are one bounded
// set, and what was dropped stays soft-purged through the floor.
func TestPurgesOneLimitForLookupsAndExchange(t *testing.T) {
	clock := t0.Add(time.Minute)
	p := newTestPurges(time.Hour, &clock)
	p.max = 100
	for i := range 150 {
		p.Record(Tombstone{Kind: PurgeTag, Value: []byte(fmt.Sprint(i)), Hard: true,
			At: t0.Add(time.Duration(i) * time.Millisecond), ID: fmt.Sprint("id", i), Origin: "n1"})
	}
	listed := p.Tombstones(nil)
	if n := p.Len(); n > 100 || len(listed) != n {
		t.Fatalf("Len %d, Tombstones %d: got different or over 100, want one set of at most 100", n, len(listed))
	}
	for _, ts := range listed {
		e := &Entry{Key: []byte("k"), StoredAt: ts.At.Add(-time.Nanosecond), SurrogateKeys: [][]byte{ts.Value}}
		if purged, hard := p.Check(e); !purged || !hard {
			t.Errorf("listed tombstone %s: Check got (%v, %v) want (true, true)", ts.ID, purged, hard)
		}
	}
	old := &Entry{Key: []byte("k"), StoredAt: t0.Add(-time.Second), SurrogateKeys: [][]byte{[]byte("0")}}
	if purged, _ := p.Check(old); !purged {
		t.Errorf("entry predating a dropped tombstone: got not purged want soft-purged")
	}
	if p.Record(Tombstone{Kind: PurgeTag, Value: []byte("0"), Hard: true, At: t0, ID: "id0", Origin: "n1"}) {
		t.Errorf("Record of a dropped tombstone older than the floor: got true want false (it would be dropped again)")
	}
}

// TestPurgesSetTTL: a shorter tombstone lifetime set on a running set
// (cache.purge_ttl on a reload) drops tombstones the old one kept.
func TestPurgesSetTTL(t *testing.T) {
	now := time.Now()
	p := newTestPurges(time.Hour, &now)
	p.Add(PurgeURL, []byte("example.com/a"), false, now)
	now = now.Add(10 * time.Minute)
	if got := p.Prune(now); got != 0 {
		t.Fatalf("Prune within the hour: dropped %d", got)
	}
	p.SetTTL(5 * time.Minute)
	p.SetTTL(0) // ignored
	if got := p.TTL(); got != 5*time.Minute {
		t.Fatalf("TTL %s, want 5m", got)
	}
	if got := p.Prune(now); got != 1 {
		t.Errorf("Prune after SetTTL(5m) of a 10-minute-old tombstone: dropped %d, want 1", got)
	}
}

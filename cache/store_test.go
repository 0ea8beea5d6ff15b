package cache

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

func newTestStore(t testing.TB, maxBytes int64) *Store {
	t.Helper()
	s, err := NewStore(StoreConfig{MaxBytes: maxBytes, AvgObjectSize: 1 << 10})
	if err != nil {
		t.Fatalf("NewStore: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

func storeEntry(key string, bodySize int) *Entry {
	return &Entry{Key: []byte(key), Status: 200, Body: make([]byte, bodySize), SWR: -1, SIE: -1, StoredAt: t0}
}

// setAndWait retries a Set that ristretto dropped under contention (its set
// buffer is lossy by design), bounded so the test cannot hang.
func setAndWait(t testing.TB, s *Store, e *Entry) {
	t.Helper()
	for range 100 {
		if s.Set(e) {
			s.Wait()
			return
		}
		s.Wait()
	}
	t.Fatalf("Set(%q) dropped 100 times", e.Key)
}

func TestNewStoreValidates(t *testing.T) {
	tests := []struct {
		name string
		cfg  StoreConfig
	}{
		{"zero MaxBytes", StoreConfig{}},
		{"negative MaxBytes", StoreConfig{MaxBytes: -1}},
		{"negative AvgObjectSize", StoreConfig{MaxBytes: 1 << 20, AvgObjectSize: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := NewStore(tt.cfg)
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("NewStore(%+v): got (%v, %v) want error %v", tt.cfg, s, err, ErrInvalidConfig)
			}
		})
	}
}

func TestStoreSetGetDelete(t *testing.T) {
	s := newTestStore(t, 1<<20)
	e := storeEntry("example.com/a", 100)
	setAndWait(t, s, e)
	if got := s.Get([]byte("example.com/a")); got != e {
		t.Fatalf("Get after Set: got %p want %p", got, e)
	}
	if got := s.Get([]byte("example.com/b")); got != nil {
		t.Errorf("Get of absent key: got %p want nil", got)
	}
	st := s.Stats()
	if st.Entries != 1 || st.Bytes != e.Cost() || st.Sets != 1 {
		t.Errorf("Stats after one Set: got %+v want Entries 1, Bytes %d, Sets 1", st, e.Cost())
	}
	s.Delete([]byte("example.com/a"))
	if got := s.Get([]byte("example.com/a")); got != nil {
		t.Errorf("Get after Delete: got %p want nil", got)
	}
	s.Wait()
	if st := s.Stats(); st.Entries != 0 || st.Bytes != 0 {
		t.Errorf("Stats after Delete: got %+v want Entries 0, Bytes 0", st)
	}
}

func TestStoreReplaceKeepsAccounting(t *testing.T) {
	s := newTestStore(t, 1<<20)
	small, big := storeEntry("k", 100), storeEntry("k", 5000)
	setAndWait(t, s, small)
	setAndWait(t, s, big)
	if got := s.Get([]byte("k")); got != big {
		t.Errorf("Get after replace: got %p want the new entry %p", got, big)
	}
	if st := s.Stats(); st.Entries != 1 || st.Bytes != big.Cost() {
		t.Errorf("Stats after replace: got %+v want Entries 1, Bytes %d", st, big.Cost())
	}
	setAndWait(t, s, storeEntry("k", 10))
	if st := s.Stats(); st.Entries != 1 || st.Bytes != storeEntry("k", 10).Cost() {
		t.Errorf("Stats after shrinking replace: got %+v want Entries 1, Bytes %d", st, storeEntry("k", 10).Cost())
	}
}

func TestStoreBoundedBytes(t *testing.T) {
	const maxBytes = 64 << 10
	s := newTestStore(t, maxBytes)
	for i := range 500 {
		key := []byte(fmt.Sprintf("example.com/%d", i))
		s.Get(key) // a miss counts as an access for TinyLFU admission, as on the edge
		s.Set(storeEntry(string(key), 1000))
		if i%50 == 0 {
			s.Wait()
		}
	}
	s.Wait()
	st := s.Stats()
	if st.Bytes > maxBytes || st.Bytes <= 0 {
		t.Errorf("Bytes after filling past MaxBytes: got %d want 1..%d", st.Bytes, maxBytes)
	}
	if st.Evicted+st.Rejected == 0 {
		t.Errorf("Evicted+Rejected after 500 KB into 64 KiB: got 0 want > 0 (%+v)", st)
	}
	// Entries must agree with what Get can find.
	var found int64
	for i := range 500 {
		if s.Get([]byte(fmt.Sprintf("example.com/%d", i))) != nil {
			found++
		}
	}
	if found != st.Entries {
		t.Errorf("Entries: got %d want %d (entries reachable by Get)", st.Entries, found)
	}
}

func TestStoreRejectsOversized(t *testing.T) {
	s := newTestStore(t, 10<<10)
	if s.Set(storeEntry("huge", 20<<10)) {
		t.Errorf("Set of entry larger than MaxBytes: got true want false")
	}
	s.Wait()
	if st := s.Stats(); st.Entries != 0 || st.Rejected != 1 {
		t.Errorf("Stats after oversized Set: got %+v want Entries 0, Rejected 1", st)
	}
}

func TestStoreVerifiesKey(t *testing.T) {
	s := newTestStore(t, 1<<20)
	// Simulate a hash collision: an entry whose Key differs from the key it is
	// stored under must never be returned.
	e := storeEntry("other", 1)
	for range 100 {
		if s.c.Set([]byte("k"), e, e.Cost()) {
			break
		}
	}
	s.Wait()
	if got := s.Get([]byte("k")); got != nil {
		t.Errorf("Get with mismatching stored key: got %q want nil", got.Key)
	}
}

func TestStoreGetZeroAlloc(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items under the race detector; run without -race")
	}
	s := newTestStore(t, 1<<20)
	e := storeEntry("example.com/a", 10)
	setAndWait(t, s, e)
	key := []byte("example.com/a")
	miss := []byte("example.com/nope")
	allocs := testing.AllocsPerRun(10000, func() {
		if s.Get(key) == nil {
			panic("entry vanished")
		}
		s.Get(miss)
	})
	if allocs != 0 {
		t.Errorf("Get allocs: got %v want 0", allocs)
	}
}

func TestStoreClearAndClose(t *testing.T) {
	s := newTestStore(t, 1<<20)
	for i := range 10 {
		setAndWait(t, s, storeEntry(fmt.Sprint(i), 10))
	}
	s.Clear()
	s.Wait()
	if st := s.Stats(); st.Entries != 0 || st.Bytes != 0 || st.Evicted != 0 {
		t.Errorf("Stats after Clear: got %+v want Entries 0, Bytes 0, Evicted 0", st)
	}
	setAndWait(t, s, storeEntry("after", 10))
	if s.Get([]byte("after")) == nil {
		t.Errorf("Get after Clear and Set: got nil want entry")
	}
	s.Close()
	s.Close() // idempotent
	if s.Get([]byte("after")) != nil || s.Set(storeEntry("x", 1)) {
		t.Errorf("after Close: Get/Set still work, want nil/false")
	}
}

func TestStoreSweep(t *testing.T) {
	s := newTestStore(t, 1<<20)
	p := NewPurges(time.Hour)
	p.now = func() time.Time { return t0.Add(time.Minute) }
	soft, hard, keep := storeEntry("a.com/soft", 1), storeEntry("a.com/hard", 1), storeEntry("b.com/keep", 1)
	for _, e := range []*Entry{soft, hard, keep} {
		setAndWait(t, s, e)
	}
	if inv, del := s.Sweep(p); inv != 0 || del != 0 {
		t.Errorf("Sweep without purges: got (%d, %d) want (0, 0)", inv, del)
	}
	p.Add(PurgeURL, []byte("a.com/soft"), false, t0.Add(time.Second))
	p.Add(PurgeURL, []byte("a.com/hard"), true, t0.Add(time.Second))
	inv, del := s.Sweep(p)
	s.Wait()
	if inv != 1 || del != 1 {
		t.Errorf("Sweep: got (%d invalidated, %d deleted) want (1, 1)", inv, del)
	}
	if !soft.Invalidated() || s.Get(hard.Key) != nil || s.Get(keep.Key) == nil || keep.Invalidated() {
		t.Errorf("after Sweep: soft invalidated=%v, hard present=%v, keep present=%v invalidated=%v; want true,false,true,false",
			soft.Invalidated(), s.Get(hard.Key) != nil, s.Get(keep.Key) != nil, keep.Invalidated())
	}
}

func TestStoreConcurrentAccounting(t *testing.T) {
	s := newTestStore(t, 1<<20)
	const keys = 64
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 2000 {
				k := (i*7 + w) % keys
				key := fmt.Sprintf("example.com/%d", k)
				switch i % 5 {
				case 0, 1:
					s.Set(storeEntry(key, 100+k)) // cost depends on the key only
				case 2:
					s.Delete([]byte(key))
				default:
					if e := s.Get([]byte(key)); e != nil && string(e.Key) != key {
						t.Errorf("Get(%q): got entry for %q", key, e.Key)
					}
				}
			}
		})
	}
	wg.Wait()
	s.Wait()
	var found, bytes int64
	for k := range keys {
		if e := s.Get([]byte(fmt.Sprintf("example.com/%d", k))); e != nil {
			found++
			bytes += e.Cost()
		}
	}
	st := s.Stats()
	if st.Entries != found || st.Bytes != bytes {
		t.Errorf("Stats after concurrent Set/Delete: got Entries %d Bytes %d want %d and %d (what Get finds)",
			st.Entries, st.Bytes, found, bytes)
	}
}

func BenchmarkStoreGet(b *testing.B) {
	s := newTestStore(b, 64<<20)
	const n = 1024
	keys := make([][]byte, n)
	for i := range keys {
		keys[i] = []byte(fmt.Sprintf("example.com/assets/%d.js", i))
		setAndWait(b, s, storeEntry(string(keys[i]), 1024))
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if s.Get(keys[i%n]) == nil {
				b.Error("miss")
				return
			}
			i++
		}
	})
}

// TestSetMaxBytes: a reload's cache.max_bytes takes effect on the running
// store: a smaller capacity is reached as new entries are admitted, and a
// larger one admits entries the old one refused as too big.
func TestSetMaxBytes(t *testing.T) {
	s := newTestStore(t, 64<<10)
	for i := 0; i < 64; i++ {
		s.Set(&Entry{Key: []byte(fmt.Sprintf("a%d", i)), Status: 200, Body: make([]byte, 900)})
	}
	s.Wait()
	s.SetMaxBytes(16 << 10)
	for i := 0; i < 64; i++ {
		s.Set(&Entry{Key: []byte(fmt.Sprintf("b%d", i)), Status: 200, Body: make([]byte, 900)})
		s.Wait()
	}
	if got := s.Stats().Bytes; got > 16<<10 {
		t.Errorf("after shrinking to 16 KiB and admitting more: %d bytes stored", got)
	}
	big := &Entry{Key: []byte("big"), Status: 200, Body: make([]byte, 32<<10)}
	if s.Set(big) {
		t.Fatal("a 32 KiB entry was taken by a 16 KiB store")
	}
	s.SetMaxBytes(1 << 20)
	if !s.Set(&Entry{Key: []byte("big"), Status: 200, Body: make([]byte, 32<<10)}) {
		t.Fatal("a 32 KiB entry was refused after growing to 1 MiB")
	}
	s.Wait()
	if s.Get([]byte("big")) == nil {
		t.Error("the 32 KiB entry is not served after growing the store")
	}
}

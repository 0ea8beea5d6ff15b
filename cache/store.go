package cache

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"
	"github.com/dgraph-io/ristretto/v2"
	"github.com/dgraph-io/ristretto/v2/z"
)

// ErrInvalidConfig is wrapped by NewStore for configuration errors.
var ErrInvalidConfig = errors.New("cache: invalid config")

// StoreConfig configures a Store.
type StoreConfig struct {
	// MaxBytes bounds the total cost of stored entries (cost = Entry.Cost(),
	// roughly bytes). Required, > 0.
	MaxBytes int64
	// AvgObjectSize is the expected average Entry.Cost() in bytes, used to size
	// the admission counters at about 10× the expected number of items (the
	// ristretto recommendation). 0 means 16 KiB.
	AvgObjectSize int64
}

// Store is a bounded in-memory map from cache key to *Entry, backed by
// ristretto (TinyLFU admission, sampled LFU eviction). It is safe for
// concurrent use. Sets are asynchronous: an entry becomes visible to Get
// shortly after Set returns, and may be rejected by the admission policy;
// Wait blocks until buffered Sets are applied.
type Store struct {
	c        *ristretto.Cache[[]byte, *Entry]
	maxBytes atomic.Int64

	// Counters for Stats. entries counts values handed to ristretto minus the
	// values ristretto let go of (OnExit covers eviction, rejection, deletion
	// and replacement), so it is exact once buffered Sets are applied.
	entries  atomic.Int64
	sets     atomic.Uint64
	rejected atomic.Uint64
	evicted  atomic.Uint64
	// clearing is set while Clear runs, so that entries dropped by Clear are
	// not reported as evictions.
	clearing atomic.Bool

	// closed makes calls after Close cheap no-ops. It cannot make a call that
	// races with Close safe (ristretto closes its channels), see Close.
	closed    atomic.Bool
	closeOnce sync.Once
}

// StoreStats is a snapshot of Store counters.
type StoreStats struct {
	Entries, Bytes int64 // resident entries and their total cost
	// Sets counts accepted Set calls; Rejected counts entries refused by the
	// admission policy (or larger than MaxBytes); Evicted counts entries
	// removed to make room.
	Sets, Rejected, Evicted uint64
}

// NewStore returns a Store bounded by cfg.MaxBytes. Close it when done.
func NewStore(cfg StoreConfig) (*Store, error) {
	if cfg.MaxBytes <= 0 {
		return nil, fmt.Errorf("%w: MaxBytes must be > 0, got %d", ErrInvalidConfig, cfg.MaxBytes)
	}
	if cfg.AvgObjectSize < 0 {
		return nil, fmt.Errorf("%w: AvgObjectSize must be >= 0, got %d", ErrInvalidConfig, cfg.AvgObjectSize)
	}
	if cfg.AvgObjectSize == 0 {
		cfg.AvgObjectSize = 16 << 10
	}
	items := max(cfg.MaxBytes/cfg.AvgObjectSize, 1)
	s := &Store{}
	s.maxBytes.Store(cfg.MaxBytes)
	c, err := ristretto.NewCache(&ristretto.Config[[]byte, *Entry]{
		NumCounters:        max(items*10, 1000),
		MaxCost:            cfg.MaxBytes,
		BufferItems:        64,
		IgnoreInternalCost: true, // cost is already in bytes, overhead included
		// ristretto's default hasher goes through an interface conversion
		// that allocates for []byte keys; hash the two halves directly.
		KeyToHash: func(k []byte) (uint64, uint64) { return z.MemHash(k), xxhash.Sum64(k) },
		OnEvict: func(it *ristretto.Item[*Entry]) {
			if it.Value != nil && !s.clearing.Load() {
				s.evicted.Add(1)
			}
		},
		OnReject: func(it *ristretto.Item[*Entry]) {
			if it.Value != nil {
				s.rejected.Add(1)
			}
		},
		OnExit: func(e *Entry) {
			if e != nil {
				s.entries.Add(-1)
				if e.Blob != nil {
					e.Blob.Release()
				}
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("cache: new ristretto cache: %w", err)
	}
	s.c = c
	return s, nil
}

// Get returns the entry stored under key, or nil. It verifies the stored key,
// so a 128-bit hash collision can never return another URL's entry. It does
// not allocate. The returned entry must not be modified (except Invalidate).
func (s *Store) Get(key []byte) *Entry {
	if s.closed.Load() {
		return nil
	}
	e, ok := s.c.Get(key)
	if !ok || e == nil || !bytes.Equal(e.Key, key) {
		return nil
	}
	return e
}

// Set stores e under e.Key with cost e.Cost(). It returns false when the set
// was dropped (contention or an entry larger than MaxBytes); true means it
// was buffered and may still be refused by the admission policy. e must not
// be modified afterwards. Set takes over e's Blob reference: it is released
// when the entry leaves the store (evicted, refused, replaced, deleted), or
// at once when Set returns false. Replacing an existing key takes effect at once and
// adjusts the byte accounting; ristretto does not evict on replacement, so a
// larger replacement can exceed MaxBytes until the next new entry is admitted.
// Two Sets of a new key in quick succession (before Wait) may keep the first
// entry: ristretto treats the second as a duplicate admission. A cache may
// serve either response, so this costs at most one extra revalidation.
func (s *Store) Set(e *Entry) bool {
	if e == nil {
		return false
	}
	if s.closed.Load() {
		e.releaseBlob()
		return false
	}
	cost := e.Cost()
	if cost > s.maxBytes.Load() {
		s.rejected.Add(1)
		e.releaseBlob()
		return false
	}
	// Count before Set: OnExit for this value can run before Set returns.
	s.entries.Add(1)
	if !s.c.Set(e.Key, e, cost) {
		s.entries.Add(-1)
		e.releaseBlob()
		return false
	}
	s.sets.Add(1)
	return true
}

// Delete removes key. It is visible to Get immediately.
func (s *Store) Delete(key []byte) {
	if !s.closed.Load() {
		s.c.Del(key)
	}
}

// SetMaxBytes changes the store's capacity (cache.max_bytes on reload). A
// smaller capacity is reached as new entries are admitted: ristretto
// evicts on admission, not at once.
func (s *Store) SetMaxBytes(n int64) {
	if n <= 0 || s.closed.Load() {
		return
	}
	s.maxBytes.Store(n)
	s.c.UpdateMaxCost(n)
}

// Wait blocks until all buffered Sets and Deletes are applied; for tests and
// for Stats that must be exact.
func (s *Store) Wait() {
	if !s.closed.Load() {
		s.c.Wait()
	}
}

// Clear removes every entry. Concurrent Sets may or may not survive it.
func (s *Store) Clear() {
	if s.closed.Load() {
		return
	}
	s.clearing.Store(true)
	defer s.clearing.Store(false)
	s.c.Clear()
}

// Close stops ristretto's goroutines and drops all entries. It is idempotent;
// afterwards Get returns nil, Set false and the other methods do nothing.
// Call it once the store's users have stopped (after the listeners are shut
// down): ristretto closes its internal channels, so a Get or Set running
// concurrently with Close may panic.
func (s *Store) Close() {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.clearing.Store(true)
		s.c.Close()
	})
}

// Stats returns the counters. Entries and Bytes are exact after Wait (with
// no concurrent writers) and approximate otherwise.
func (s *Store) Stats() StoreStats {
	return StoreStats{
		Entries:  s.entries.Load(),
		Bytes:    s.c.MaxCost() - s.c.RemainingCost(),
		Sets:     s.sets.Load(),
		Rejected: s.rejected.Load(),
		Evicted:  s.evicted.Load(),
	}
}

// Sweep applies the purges in p to every resident entry: soft-purged entries
// are invalidated and hard-purged ones deleted. It makes purges permanent, so
// call it more often than the Purges ttl (e.g. every ttl/2); it costs one
// Purges.Check per resident entry. It returns the counts of entries it
// invalidated and deleted.
func (s *Store) Sweep(p *Purges) (invalidated, deleted int) {
	if p.active.Load() == 0 || s.closed.Load() {
		return 0, 0
	}
	var doomed [][]byte
	// Deleting inside IterValues would deadlock on ristretto's shard locks,
	// so hard-purged keys are collected first.
	s.c.IterValues(func(e *Entry) bool {
		if e == nil {
			return false
		}
		purged, hard := p.Check(e)
		switch {
		case hard:
			doomed = append(doomed, e.Key)
		case purged && !e.Invalidated():
			e.Invalidate()
			invalidated++
		}
		return false
	})
	for _, k := range doomed {
		s.Delete(k)
	}
	return invalidated, len(doomed)
}

func (e *Entry) releaseBlob() {
	if e.Blob != nil {
		e.Blob.Release()
	}
}

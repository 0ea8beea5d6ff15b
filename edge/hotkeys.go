package edge

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"
)

// hotKeys is the node's table of recently used cacheable GET targets, for
// warm restarts (warm.go): bounded (cache.warm_keys), sharded, with an
// approximate use count per key. Fills always count; hits count one in
// hotSampleEvery, so the fresh-hit path pays a random draw and nothing
// else most of the time (and never allocates for a key already tracked).
//
// The count is a sampled, aged estimate, not a log: when a shard is full a
// new key evicts the least used of a few it looks at (map iteration order
// is random), and every 8×capacity updates all counts are halved (each
// shard catches up with the table's epoch when next used), so keys that
// stopped being used make room for those in use now, and counts in
// different shards stay comparable.
type hotKeys struct {
	perShard int
	ops      atomic.Uint64 // updates, for the epoch
	epoch    atomic.Uint32 // ages: counts are halved once per epoch
	shards   [hotShards]hotShard
}

const (
	hotShards      = 16
	hotSampleEvery = 32 // one hit in this many is counted
	hotEvictProbe  = 8  // entries looked at to find one to evict
)

type hotShard struct {
	mu    sync.Mutex         // guards m and epoch
	m     map[string]*hotKey // primary cache key (lower-cased host + target)
	epoch uint32             // the table's epoch the counts are aged to
	_     [40]byte           // keep shards' locks on separate cache lines
}

// hotKey is what a key's refetch needs beyond the key itself: which
// normalised Accept-Encoding values selected its variants.
type hotKey struct {
	sets uint32 // bit i: a request whose accepted-encodings set is i (n.aeFields[i])
	uses uint32
}

// hotItem is one tracked key, as listed for a warm-up.
type hotItem struct {
	key  string
	sets uint32
	uses uint32
}

func newHotKeys(capacity int) *hotKeys {
	h := &hotKeys{perShard: max(1, (capacity+hotShards-1)/hotShards)}
	for i := range h.shards {
		h.shards[i].m = make(map[string]*hotKey)
	}
	return h
}

// sampled reports whether a hit should be counted (one in hotSampleEvery).
func (h *hotKeys) sampled() bool { return h != nil && rand.Uint32N(hotSampleEvery) == 0 }

// touch counts uses of key by a request of accepted-encodings set (bits
// above 31 are not tracked). Keys without a '/' (no origin-form target to
// refetch) are ignored. It allocates only when it inserts a key.
func (h *hotKeys) touch(key []byte, set uint, uses uint32) {
	if h == nil || bytes.IndexByte(key, '/') <= 0 {
		return
	}
	if h.ops.Add(1)%uint64(8*hotShards*h.perShard) == 0 {
		h.epoch.Add(1)
	}
	s := &h.shards[xxhash.Sum64(key)%hotShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ageLocked(h.epoch.Load())
	k := s.m[string(key)] // no allocation: a tracked key is updated in place
	if k == nil {
		if len(s.m) >= h.perShard {
			s.evictLocked()
		}
		k = &hotKey{}
		s.m[string(key)] = k
	}
	if set < 32 {
		k.sets |= 1 << set
	}
	if k.uses += uses; k.uses < uses {
		k.uses = ^uint32(0) // saturate
	}
}

// evictLocked removes the least used of hotEvictProbe entries.
func (s *hotShard) evictLocked() {
	victim, least, seen := "", ^uint32(0), 0
	for k, v := range s.m {
		if v.uses < least {
			victim, least = k, v.uses
		}
		if seen++; seen == hotEvictProbe {
			break
		}
	}
	delete(s.m, victim)
}

// ageLocked halves every count once per epoch since the shard's last,
// dropping keys that reach 0.
func (s *hotShard) ageLocked(epoch uint32) {
	d := epoch - s.epoch
	if d == 0 {
		return
	}
	s.epoch = epoch
	for k, v := range s.m {
		if v.uses >>= min(d, 31); v.uses == 0 {
			delete(s.m, k)
		}
	}
}

// list returns at most limit tracked keys (limit <= 0: all), most used
// first.
func (h *hotKeys) list(limit int) []hotItem {
	if h == nil {
		return nil
	}
	var out []hotItem
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.Lock()
		s.ageLocked(h.epoch.Load())
		for k, v := range s.m {
			out = append(out, hotItem{key: k, sets: v.sets, uses: v.uses})
		}
		s.mu.Unlock()
	}
	slices.SortFunc(out, func(a, b hotItem) int {
		if a.uses != b.uses {
			return int(int64(b.uses) - int64(a.uses))
		}
		return strings.Compare(a.key, b.key)
	})
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out
}

// len is the number of tracked keys.
func (h *hotKeys) len() int {
	n := 0
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

package cache

import (
	"bytes"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// PurgeKind selects what a purge tombstone matches.
type PurgeKind uint8

// Purge kinds. The values are stable so they can be sent between nodes.
const (
	// PurgeURL matches a primary cache key and all its Vary variants (keys
	// that start with the primary key followed by 0x00, see VariantKey).
	PurgeURL PurgeKind = 1
	// PurgePrefix matches every key starting with the value.
	PurgePrefix PurgeKind = 2
	// PurgeTag matches entries carrying the value among their SurrogateKeys.
	PurgeTag PurgeKind = 3
)

func (k PurgeKind) String() string {
	switch k {
	case PurgeURL:
		return "url"
	case PurgePrefix:
		return "prefix"
	case PurgeTag:
		return "tag"
	}
	return "unknown"
}

// DefaultMaxTombstones is the tombstone count above which Purges forgets the
// oldest ones (see Purges).
const DefaultMaxTombstones = 100_000

// tomb holds the newest soft and hard purge times (Unix ns, 0 = none) of one
// value, so repeated purges of a hot tag take constant memory.
type tomb struct{ soft, hard int64 }

func (t *tomb) merge(o tomb) {
	t.soft = max(t.soft, o.soft)
	t.hard = max(t.hard, o.hard)
}

func (t tomb) newest() int64 { return max(t.soft, t.hard) }

type prefixTomb struct {
	value []byte
	tomb
}

// Purges is a concurrency-safe set of purge tombstones. A purge applies to
// every entry stored before it (Entry.StoredAt earlier than the purge time),
// including entries looked up long after the purge and entries of other
// nodes that learn of it late, which is what a delete from the store alone
// cannot do.
//
// Memory is bounded two ways. Tombstones older than the ttl are dropped by
// Prune (also run from Add, at most every ttl/8): the caller must make a
// purge permanent before then, by calling Store.Sweep more often than the ttl
// (or by invalidating/deleting entries for which Check reports a purge).
// When more than DefaultMaxTombstones remain, the oldest tenth are dropped and
// their newest time becomes a soft floor: every entry stored before it counts
// as soft-purged, so forgetting never lets purged content be served as fresh.
type Purges struct {
	ttl time.Duration
	max int
	now func() time.Time

	// active is the number of tombstones plus one when a floor is set, so
	// that Check without tombstones is a single atomic load.
	active atomic.Int64
	// gen changes on every change of the tombstone set. An entry remembers
	// the generation at which it was last found unpurged (Entry.purgeGen), so
	// repeated hits on it skip the lock until the next purge. It starts at a
	// random value so that two Purges never share generation numbers.
	gen atomic.Uint64

	mu        sync.RWMutex // guards the fields below
	urls      map[string]tomb
	tags      map[string]tomb
	prefixes  []prefixTomb
	floor     int64 // Unix ns; entries stored before it are soft-purged
	count     int   // tombstones (soft and hard counted separately)
	lastPrune time.Time
}

// NewPurges returns an empty set whose tombstones live for ttl (<= 0 means
// 24h).
func NewPurges(ttl time.Duration) *Purges {
	if ttl <= 0 {
		ttl = 24 * time.Hour
	}
	p := &Purges{
		ttl:  ttl,
		max:  DefaultMaxTombstones,
		now:  time.Now,
		urls: make(map[string]tomb),
		tags: make(map[string]tomb),
	}
	p.gen.Store(rand.Uint64() | 1) // never 0, the zero value of Entry.purgeGen
	return p
}

// Add records a purge of value at time at. hard purges make matching entries
// absent; soft ones make them stale (revalidate, RFC 9111 §4.4 style). Adding
// the same purge again is a no-op, so tombstones received twice (broadcast
// and push/pull) are harmless. value is copied. A zero at, or one in the
// future, means now.
func (p *Purges) Add(kind PurgeKind, value []byte, hard bool, at time.Time) {
	now := p.now()
	if at.IsZero() || at.After(now) {
		// A purge from a peer whose clock runs ahead is dated on arrival:
		// content fetched here before that moment predates it anyway, and a
		// far-future date would otherwise never expire.
		at = now
	}
	ns := unixNano(at)
	var t tomb
	if hard {
		t.hard = ns
	} else {
		t.soft = ns
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch kind {
	case PurgeURL:
		p.mergeMap(p.urls, value, t)
	case PurgeTag:
		p.mergeMap(p.tags, value, t)
	case PurgePrefix:
		i := slices.IndexFunc(p.prefixes, func(pt prefixTomb) bool { return bytes.Equal(pt.value, value) })
		if i < 0 {
			p.prefixes = append(p.prefixes, prefixTomb{value: bytes.Clone(value)})
			i = len(p.prefixes) - 1
		}
		p.count += added(p.prefixes[i].tomb, t)
		p.prefixes[i].merge(t)
	default:
		return
	}
	if p.count > p.max || now.Sub(p.lastPrune) > p.ttl/8 {
		p.pruneLocked(now)
	}
	p.publish()
}

func (p *Purges) mergeMap(m map[string]tomb, value []byte, t tomb) {
	cur := m[string(value)]
	p.count += added(cur, t)
	cur.merge(t)
	m[string(value)] = cur
}

// added returns how many tombstones (0 or 1) merging t into cur creates.
func added(cur, t tomb) int {
	if (t.soft != 0 && cur.soft == 0) || (t.hard != 0 && cur.hard == 0) {
		return 1
	}
	return 0
}

func (p *Purges) publish() {
	p.gen.Add(2) // stays odd, hence never 0
	n := int64(p.count)
	if p.floor != 0 {
		n++
	}
	p.active.Store(n)
}

// Check reports whether e was purged by a tombstone newer than e.StoredAt:
// purged means treat it as stale (soft) or, when hard is also true, as absent.
// Without tombstones it is one atomic load; otherwise one map lookup for the
// URL, one per surrogate key and a scan of the prefix tombstones, under a
// read lock; an entry found unpurged is not looked up again until the set of
// tombstones changes (two atomic loads). It does not allocate.
func (p *Purges) Check(e *Entry) (purged, hard bool) {
	if p.active.Load() == 0 {
		return false, false
	}
	gen := p.gen.Load()
	if e.purgeGen.Load() == gen {
		return false, false
	}
	stored := unixNano(e.StoredAt)
	if e.StoredAt.IsZero() {
		stored = math.MinInt64
	}
	primary := e.Key
	if i := bytes.IndexByte(primary, 0); i >= 0 {
		primary = primary[:i]
	}
	p.mu.RLock()
	t := tomb{soft: p.floor}
	if len(p.urls) > 0 {
		t.merge(p.urls[string(primary)])
	}
	if len(p.tags) > 0 {
		for _, k := range e.SurrogateKeys {
			t.merge(p.tags[string(k)])
		}
	}
	for i := range p.prefixes {
		if bytes.HasPrefix(e.Key, p.prefixes[i].value) {
			t.merge(p.prefixes[i].tomb)
		}
	}
	p.mu.RUnlock()
	hard = t.hard != 0 && t.hard > stored
	purged = hard || (t.soft != 0 && t.soft > stored)
	if !purged {
		// gen was read before the lookup: a purge added meanwhile changed
		// p.gen, so this cached verdict is not trusted for it.
		e.purgeGen.Store(gen)
	}
	return purged, hard
}

// Len returns the number of tombstones (a soft and a hard purge of the same
// value count as two).
func (p *Purges) Len() int {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.count
}

// Prune drops tombstones older than the ttl at now and returns how many it
// dropped. Add calls it periodically; callers may also call it from a timer.
func (p *Purges) Prune(now time.Time) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	before := p.count
	p.pruneLocked(now)
	p.publish()
	return before - p.count
}

func (p *Purges) pruneLocked(now time.Time) {
	p.lastPrune = now
	p.dropBefore(unixNano(now.Add(-p.ttl)))
	if p.count <= p.max {
		return
	}
	// Over the cap: forget the oldest tenth in one go, so the sort is
	// amortized over many Adds, and remember their newest time as a floor.
	times := make([]int64, 0, p.count)
	for _, t := range p.urls {
		times = appendTimes(times, t)
	}
	for _, t := range p.tags {
		times = appendTimes(times, t)
	}
	for _, pt := range p.prefixes {
		times = appendTimes(times, pt.tomb)
	}
	slices.Sort(times)
	drop := min(max(p.count-p.max*9/10, 1), len(times))
	cut := times[drop-1]
	p.floor = max(p.floor, cut)
	p.dropBefore(cut + 1)
}

func appendTimes(dst []int64, t tomb) []int64 {
	if t.soft != 0 {
		dst = append(dst, t.soft)
	}
	if t.hard != 0 {
		dst = append(dst, t.hard)
	}
	return dst
}

// dropBefore removes tombstone times older than cutoff (Unix ns).
func (p *Purges) dropBefore(cutoff int64) {
	trim := func(t tomb) tomb {
		if t.soft < cutoff && t.soft != 0 {
			t.soft = 0
			p.count--
		}
		if t.hard < cutoff && t.hard != 0 {
			t.hard = 0
			p.count--
		}
		return t
	}
	for _, m := range []map[string]tomb{p.urls, p.tags} {
		for k, t := range m {
			if t = trim(t); t.newest() == 0 {
				delete(m, k)
			} else {
				m[k] = t
			}
		}
	}
	kept := p.prefixes[:0]
	for _, pt := range p.prefixes {
		if pt.tomb = trim(pt.tomb); pt.newest() != 0 {
			kept = append(kept, pt)
		}
	}
	clear(p.prefixes[len(kept):])
	p.prefixes = kept
}

// unixNano converts t to Unix nanoseconds, saturating outside the int64
// range (zero and far-future times from buggy peers must not wrap).
func unixNano(t time.Time) int64 {
	const minSec, maxSec = math.MinInt64 / int64(time.Second), math.MaxInt64 / int64(time.Second)
	switch s := t.Unix(); {
	case s <= minSec:
		return math.MinInt64 + 1
	case s >= maxSec:
		return math.MaxInt64
	}
	return t.UnixNano()
}

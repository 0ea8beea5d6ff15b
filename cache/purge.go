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
// oldest ones (see Purges). It is the node's only bound on purge records: in
// a cluster the same tombstones are exchanged in push/pull state (the edge
// backs cluster.Config.Tombstones with Purges), so it also sizes that state
// (about 100 bytes a tombstone, well under the cluster's 16 MiB state limit).
const DefaultMaxTombstones = 10_000

// Tombstone is one purge as recorded by Purges.Record and listed by
// Purges.Tombstones.
type Tombstone struct {
	Kind  PurgeKind
	Value []byte
	Hard  bool
	At    time.Time
	// ID and Origin identify a cluster purge (empty for one made without a
	// cluster), so that a purge received again is recognised and the
	// cluster can acknowledge it; WantAck is whether its issuer waits for
	// acknowledgements. Purges only stores them.
	ID, Origin string
	WantAck    bool
}

// purgeRef identifies the purge that set a tombstone time.
type purgeRef struct {
	id, origin string
	wantAck    bool
}

// tomb holds the newest soft and hard purge times (Unix ns, 0 = none) of one
// value, so repeated purges of a hot tag take constant memory, and which
// purge set each (nil for a purge without an ID).
type tomb struct {
	soft, hard       int64
	softRef, hardRef *purgeRef
}

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
//
// In a cluster the same set is the cluster's (cluster.Config.Tombstones, see
// Record and Tombstones): each tombstone keeps the ID and origin of the purge
// that set it, so the limit and ttl bound both lookups and the push/pull
// exchange.
type Purges struct {
	ttl atomic.Int64 // time.Duration; SetTTL changes it
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

// TTL is how long tombstones live.
func (p *Purges) TTL() time.Duration { return time.Duration(p.ttl.Load()) }

// SetTTL changes how long tombstones live (cache.purge_ttl on a reload);
// d <= 0 is ignored. Tombstones older than the new TTL go at the next Prune.
func (p *Purges) SetTTL(d time.Duration) {
	if d > 0 {
		p.ttl.Store(int64(d))
	}
}

// NewPurges returns an empty set whose tombstones live for ttl (<= 0 means
// 24h).
func NewPurges(ttl time.Duration) *Purges {
	if ttl <= 0 {
		ttl = 24 * time.Hour
	}
	p := &Purges{
		max:  DefaultMaxTombstones,
		now:  time.Now,
		urls: make(map[string]tomb),
		tags: make(map[string]tomb),
	}
	p.ttl.Store(int64(ttl))
	p.gen.Store(rand.Uint64() | 1) // never 0, the zero value of Entry.purgeGen
	return p
}

// Add records a purge of value at time at. hard purges make matching entries
// absent; soft ones make them stale (revalidate, RFC 9111 §4.4 style). Adding
// the same purge again is a no-op, so tombstones received twice (broadcast
// and push/pull) are harmless. value is copied. A zero at, or one in the
// future, means now.
func (p *Purges) Add(kind PurgeKind, value []byte, hard bool, at time.Time) {
	p.Record(Tombstone{Kind: kind, Value: value, Hard: hard, At: at})
}

// Record stores t and reports whether it changed the set. It reports false,
// storing nothing, when t is already known: a tombstone of the same kind and
// value carries t.ID, or is at least as new and as hard (a hard purge covers
// an older soft one), or t is older than the ttl or than the floor (see
// Purges: entries stored before the floor are soft-purged already, so a
// purge that old is covered, and re-adding it would only be dropped again).
// A false result means applying t would change nothing, so the cluster
// applies each purge once and may still acknowledge it. t.Value is copied;
// a zero At, or one in the future, means now.
func (p *Purges) Record(t Tombstone) bool {
	now := p.now()
	at := t.At
	if at.IsZero() || at.After(now) {
		// A purge from a peer whose clock runs ahead is dated on arrival:
		// content fetched here before that moment predates it anyway, and a
		// far-future date would otherwise never expire.
		at = now
	}
	ns := unixNano(at)
	if ns < unixNano(now.Add(-p.TTL())) {
		return false
	}
	var ref *purgeRef
	if t.ID != "" {
		ref = &purgeRef{id: t.ID, origin: t.Origin, wantAck: t.WantAck}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if ns <= p.floor {
		return false
	}
	var changed bool
	switch t.Kind {
	case PurgeURL:
		changed = p.recordMap(p.urls, t.Value, t.Hard, ns, ref)
	case PurgeTag:
		changed = p.recordMap(p.tags, t.Value, t.Hard, ns, ref)
	case PurgePrefix:
		i := slices.IndexFunc(p.prefixes, func(pt prefixTomb) bool { return bytes.Equal(pt.value, t.Value) })
		if i < 0 {
			p.prefixes = append(p.prefixes, prefixTomb{value: bytes.Clone(t.Value)})
			i = len(p.prefixes) - 1
		}
		changed = p.set(&p.prefixes[i].tomb, t.Hard, ns, ref)
		if p.prefixes[i].newest() == 0 { // a new entry that recorded nothing
			p.prefixes = p.prefixes[:i]
		}
	}
	if !changed {
		return false
	}
	if p.count > p.max || now.Sub(p.lastPrune) > p.TTL()/8 {
		p.pruneLocked(now)
	}
	p.publish()
	return true
}

func (p *Purges) recordMap(m map[string]tomb, value []byte, hard bool, ns int64, ref *purgeRef) bool {
	cur := m[string(value)]
	if !p.set(&cur, hard, ns, ref) {
		return false
	}
	m[string(value)] = cur
	return true
}

// set records a purge at ns in cur unless cur already covers it.
func (p *Purges) set(cur *tomb, hard bool, ns int64, ref *purgeRef) bool {
	if ref != nil && (cur.softRef != nil && cur.softRef.id == ref.id || cur.hardRef != nil && cur.hardRef.id == ref.id) {
		return false
	}
	slot, slotRef := &cur.soft, &cur.softRef
	covered := cur.newest() >= ns
	if hard {
		slot, slotRef = &cur.hard, &cur.hardRef
		covered = cur.hard >= ns
	}
	if covered {
		return false
	}
	if *slot == 0 {
		p.count++
	}
	*slot, *slotRef = ns, ref
	return true
}

// Tombstones appends the tombstones recorded with an ID (cluster purges)
// that are younger than the ttl to dst: the set the cluster exchanges. It
// allocates; it is meant for push/pull, every few seconds at most.
func (p *Purges) Tombstones(dst []Tombstone) []Tombstone {
	cutoff := unixNano(p.now().Add(-p.TTL()))
	add := func(kind PurgeKind, value []byte, t tomb) {
		for _, s := range [2]struct {
			ns   int64
			ref  *purgeRef
			hard bool
		}{{t.soft, t.softRef, false}, {t.hard, t.hardRef, true}} {
			if s.ref != nil && s.ns >= cutoff {
				dst = append(dst, Tombstone{Kind: kind, Value: value, Hard: s.hard, At: time.Unix(0, s.ns).UTC(),
					ID: s.ref.id, Origin: s.ref.origin, WantAck: s.ref.wantAck})
			}
		}
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	for k, t := range p.urls {
		add(PurgeURL, []byte(k), t)
	}
	for k, t := range p.tags {
		add(PurgeTag, []byte(k), t)
	}
	for _, pt := range p.prefixes {
		add(PurgePrefix, bytes.Clone(pt.value), pt.tomb)
	}
	return dst
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
	p.dropBefore(unixNano(now.Add(-p.TTL())))
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
			t.soft, t.softRef = 0, nil
			p.count--
		}
		if t.hard < cutoff && t.hard != 0 {
			t.hard, t.hardRef = 0, nil
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

package cluster

import (
	"slices"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"
)

// Ownership uses rendezvous (highest-random-weight) hashing: each candidate
// member scores the key and the highest score owns it. Every process computes
// the same order from the same member set, and when a member joins or leaves
// only the keys it wins or held move (about 1/N), unlike modulo hashing.
// Thaler & Ravishankar, "Using Name-Based Mappings to Increase Hit Rates",
// IEEE/ACM ToN 1998.
//
// The score is mix64(xxhash64(name) XOR xxhash64(key)), where mix64 is the
// MurmurHash3 64-bit finalizer (a bijection with full avalanche). Hashing the
// key once and mixing per member makes a lookup cost one key hash plus a few
// nanoseconds per member, instead of one full hash per member.

// ring is an immutable snapshot of the owner candidates, replaced whenever
// membership or a MarkDown changes, so Owners never takes a lock.
type ring struct {
	all     []candidate // alive members with valid metadata, sorted by name
	shield  []candidate // the ShieldRegion subset of all (nil without one)
	anyDown bool        // some candidate has a MarkDown deadline
}

type candidate struct {
	member    Member
	nameHash  uint64 // xxhash64(member name)
	downUntil int64  // UnixNano of the MarkDown deadline; 0 if none
}

func newCandidate(m Member) candidate {
	return candidate{member: m, nameHash: xxhash.Sum64String(m.Name)}
}

// score is the rendezvous weight of this candidate for a key hash.
func (c *candidate) score(keyHash uint64) uint64 {
	return mix64(c.nameHash ^ keyHash)
}

// mix64 is the MurmurHash3 fmix64 finalizer.
func mix64(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// rebuildLocked recomputes the ring from peers and down. c.mu must be held.
func (c *Cluster) rebuildLocked() {
	now := time.Now()
	r := &ring{}
	for name, until := range c.down {
		if !until.After(now) {
			delete(c.down, name)
		}
	}
	alive := 0
	for name, p := range c.peers {
		if p.member.State == StateAlive {
			alive++
		}
		// Suspect members stay owners: suspicion is often a slow probe on a
		// busy node, and moving keys on every false alarm would send misses
		// to the origin. A member that really is down fails the forward and
		// is MarkDown-ed at once.
		if (p.member.State != StateAlive && p.member.State != StateSuspect) || p.member.PeerAddr == "" {
			continue
		}
		cand := newCandidate(p.member)
		if until, ok := c.down[name]; ok {
			cand.downUntil = until.UnixNano()
			r.anyDown = true
		}
		r.all = append(r.all, cand)
	}
	slices.SortFunc(r.all, func(a, b candidate) int { return strings.Compare(a.member.Name, b.member.Name) })
	if c.cfg.ShieldRegion != "" {
		r.shield = []candidate{}
		for _, cand := range r.all {
			if cand.member.Region == c.cfg.ShieldRegion {
				r.shield = append(r.shield, cand)
			}
		}
	}
	c.ring.Store(r)
	c.alive.Store(int32(alive))
}

// candidates picks the shield region's members when any of them is usable,
// else every member. now is zero when no MarkDown is active.
func (r *ring) candidates(now int64) []candidate {
	for i := range r.shield {
		if r.shield[i].downUntil <= now {
			return r.shield
		}
	}
	return r.all
}

// Owners appends to dst[:0] the candidate owners of key, best first, and
// returns it: alive members (of ShieldRegion when it has any usable member)
// that have a peer address and are not marked down. The order is the same on
// every node that sees the same members. This node is included when it is a
// candidate. The result is empty when there is no candidate (for example after
// Leave). With a dst of sufficient capacity it does not allocate.
func (c *Cluster) Owners(dst []Member, key []byte) []Member {
	r := c.ring.Load()
	var now int64
	if r.anyDown {
		now = time.Now().UnixNano()
	}
	set := r.candidates(now)
	kh := xxhash.Sum64(key)
	dst = dst[:0]
	var buf [64]uint64
	scores := buf[:0]
	for i := range set {
		cand := &set[i]
		if cand.downUntil > now {
			continue
		}
		s := cand.score(kh)
		dst = append(dst, cand.member)
		scores = append(scores, s)
		// Insertion sort: clusters are small, and set is sorted by name, so a
		// score tie (only if two names hash alike: practically impossible) would
		// keep the smaller name first.
		j := len(dst) - 1
		for ; j > 0 && scores[j-1] < s; j-- {
			dst[j], scores[j] = dst[j-1], scores[j-1]
		}
		dst[j], scores[j] = cand.member, s
	}
	return dst
}

// Owner returns the first of Owners(key) without sorting the rest; false
// when there is no candidate.
func (c *Cluster) Owner(key []byte) (Member, bool) {
	r := c.ring.Load()
	var now int64
	if r.anyDown {
		now = time.Now().UnixNano()
	}
	set := r.candidates(now)
	kh := xxhash.Sum64(key)
	best, found := -1, false
	var bestScore uint64
	for i := range set {
		if set[i].downUntil > now {
			continue
		}
		if s := set[i].score(kh); !found || s > bestScore {
			best, bestScore, found = i, s, true
		}
	}
	if !found {
		return Member{}, false
	}
	return set[best].member, true
}

// MarkDown excludes member name from ownership at once and for d, typically
// because a request to it just failed: its keys go to the next member in
// rendezvous order long before gossip declares it dead. After d it is a
// candidate again if gossip still says it is alive. d <= 0 clears the mark.
// This node cannot be marked down.
func (c *Cluster) MarkDown(name string, d time.Duration) {
	if name == c.name {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if d <= 0 {
		delete(c.down, name)
	} else {
		c.down[name] = time.Now().Add(d)
	}
	c.rebuildLocked()
}

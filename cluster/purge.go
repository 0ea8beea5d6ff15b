package cluster

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"
)

// Purge kinds.
const (
	KindURL    = "url"    // one cache key
	KindPrefix = "prefix" // every key starting with Value
	KindTag    = "tag"    // every object tagged Value (Surrogate-Key / Cache-Tag)
)

// Purge is one cluster-wide invalidation.
type Purge struct {
	// ID identifies the purge for deduplication and acks. Empty means Purge
	// generates one (node name + random process prefix + sequence).
	ID string
	// Kind is KindURL, KindPrefix or KindTag.
	Kind string
	// Value is the key, key prefix or tag. Required.
	Value string
	// Hard removes the objects; soft (false) marks them stale so that the
	// next request revalidates (RFC 9111 §4.3).
	Hard bool
	// At is when the purge was issued; zero means now. A node that learns
	// of the purge late (anti-entropy after a partition) must purge only
	// objects stored before At, not ones fetched since.
	At time.Time
	// Origin is the issuing node; Purge sets it to the local name.
	Origin string
}

func (p *Purge) validate() error {
	if kindCode(p.Kind) == 0 {
		return fmt.Errorf("kind %q is not %q, %q or %q: %w", p.Kind, KindURL, KindPrefix, KindTag, ErrInvalidPurge)
	}
	if p.Value == "" {
		return fmt.Errorf("empty value: %w", ErrInvalidPurge)
	}
	if p.ID == "" || p.Origin == "" {
		return fmt.Errorf("missing id or origin: %w", ErrInvalidPurge)
	}
	if err := checkText(p.ID, maxNameLen); err != nil {
		return fmt.Errorf("id: %w: %w", ErrInvalidPurge, err)
	}
	if err := checkText(p.Value, maxValueLen); err != nil {
		return fmt.Errorf("value: %w: %w", ErrInvalidPurge, err)
	}
	return nil
}

// Tombstone is a purge this node applied, as kept by a TombstoneStore.
type Tombstone struct {
	Purge
	// WantAck is whether the issuer waits for acknowledgements: a member
	// that learns the purge from push/pull state confirms it too.
	WantAck bool
}

// TombstoneStore keeps the purges this node applied (Config.Tombstones).
// Its methods are called concurrently, from gossip receive goroutines too.
type TombstoneStore interface {
	// Record stores t and reports whether it is new. It must report false
	// for a purge it already holds (same ID) and may for one that an
	// earlier purge covers (same kind and value, at least as new and hard),
	// or that is older than the store keeps: OnPurge is called only when
	// Record reports true. The cluster refuses purges older than PurgeTTL
	// before calling it.
	Record(t Tombstone) bool
	// Append appends the tombstones to exchange with other members (those
	// recorded through Record that the store still keeps) to dst.
	Append(dst []Tombstone) []Tombstone
}

// waiter collects acks for one PurgeWait.
type waiter struct {
	acked map[string]bool
	ch    chan struct{} // capacity 1: "something changed"
}

func (w *waiter) signal() {
	select {
	case w.ch <- struct{}{}:
	default:
	}
}

// send is a job for the reliable sender goroutine.
type send struct {
	to  string // member name
	msg []byte
}

const (
	sendQueueLen = 1024
	// maxPacketMsg bounds purge messages sent over UDP (direct or gossip):
	// memberlist packets are limited to UDPBufferSize (1400) including its own
	// framing. Larger purges go over TCP (SendReliable) and push/pull.
	maxPacketMsg = 1100
	// maxQueued bounds the gossip queue while there is nobody to gossip to.
	maxQueued = 512
	// departedRetention is how long dead or left members stay listed.
	departedRetention = 15 * time.Minute
)

// Purge applies p cluster-wide. It fills ID, At and Origin, calls OnPurge
// locally (before returning), sends p directly to every member, queues it for
// gossip, and keeps it as a tombstone exchanged in push/pull state until
// At+PurgeTTL, so members that miss both still apply it when they next sync or
// rejoin. Each member calls its OnPurge once per ID. Purge does not wait for
// remote members (see PurgeWait); ctx is only checked before starting.
func (c *Cluster) Purge(ctx context.Context, p Purge) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if c.isClosed() {
		return ErrClosed
	}
	if err := c.prepare(&p); err != nil {
		return err
	}
	c.issue(p, 0)
	return nil
}

// PurgeWait is Purge, then waits until every member that was alive when it
// started acknowledged having applied p, or ctx ends. Members that do not
// confirm quickly are sent p again over TCP. It returns the names that
// confirmed (this node included) and those that did not (including members
// that failed or left while it waited); err is nil exactly when missing is
// empty, else it wraps ErrPurgeIncomplete (and the context error, if any).
func (c *Cluster) PurgeWait(ctx context.Context, p Purge) (confirmed, missing []string, err error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	if c.isClosed() {
		return nil, nil, ErrClosed
	}
	if err := c.prepare(&p); err != nil {
		return nil, nil, err
	}
	expected := c.aliveNames()
	w := &waiter{acked: make(map[string]bool, len(expected)), ch: make(chan struct{}, 1)}
	c.pmu.Lock()
	c.waiters[p.ID] = w
	c.pmu.Unlock()
	defer func() {
		c.pmu.Lock()
		delete(c.waiters, p.ID)
		c.pmu.Unlock()
	}()

	fresh := c.issue(p, flagWantAck)
	if !fresh { // the same ID again: ask everyone to confirm again
		c.resend(p, expected, w)
	}
	retry := 200 * time.Millisecond
	timer := time.NewTimer(retry)
	defer timer.Stop()
	for {
		confirmed, missing, pending := c.waitStatus(expected, w)
		if pending == 0 {
			if len(missing) > 0 {
				err = fmt.Errorf("%w: %d of %d members left before confirming", ErrPurgeIncomplete, len(missing), len(expected)+1)
			}
			return confirmed, missing, err
		}
		select {
		case <-w.ch:
		case <-timer.C:
			c.resend(p, expected, w)
			retry = min(retry*2, 2*time.Second)
			timer.Reset(retry)
		case <-ctx.Done():
			return confirmed, missing, fmt.Errorf("%w: %d of %d members did not confirm: %w",
				ErrPurgeIncomplete, len(missing), len(expected)+1, ctx.Err())
		case <-c.stop:
			return confirmed, missing, ErrClosed
		}
	}
}

// waitStatus splits expected into confirmed and missing; pending counts the
// missing ones that are still alive (worth waiting for).
func (c *Cluster) waitStatus(expected []string, w *waiter) (confirmed, missing []string, pending int) {
	alive := make(map[string]bool, len(expected))
	for _, n := range c.aliveNames() {
		alive[n] = true
	}
	confirmed = []string{c.name}
	c.pmu.Lock()
	defer c.pmu.Unlock()
	for _, n := range expected {
		switch {
		case w.acked[n]:
			confirmed = append(confirmed, n)
		default:
			missing = append(missing, n)
			if alive[n] {
				pending++
			}
		}
	}
	return confirmed, missing, pending
}

// resend sends p over TCP to the expected members that have not acked yet.
func (c *Cluster) resend(p Purge, expected []string, w *waiter) {
	msg := encodePurgeMsg(&p, flagWantAck|flagResend)
	c.pmu.Lock()
	var todo []string
	for _, n := range expected {
		if !w.acked[n] {
			todo = append(todo, n)
		}
	}
	c.pmu.Unlock()
	for _, n := range todo {
		c.enqueueSend(n, msg)
	}
}

// NewPurgeID returns a cluster-unique purge ID (node name, a random
// per-process part and a sequence number), for callers that want to know the
// ID before calling Purge, e.g. to return it from an admin API.
func (c *Cluster) NewPurgeID() string {
	return c.name + "-" + c.idBase + "-" + strconv.FormatUint(c.seq.Add(1), 36)
}

// prepare fills the generated fields and validates.
func (c *Cluster) prepare(p *Purge) error {
	if p.ID == "" {
		p.ID = c.NewPurgeID()
	}
	if p.At.IsZero() {
		p.At = c.now()
	}
	p.At = p.At.UTC()
	p.Origin = c.name
	if !p.At.Add(c.cfg.PurgeTTL).After(c.now()) {
		return fmt.Errorf("at %s is older than PurgeTTL: %w", p.At.Format(time.RFC3339), ErrInvalidPurge)
	}
	return p.validate()
}

// issue records, applies and sends a local purge. It reports false when the
// ID was already known (nothing applied or sent).
func (c *Cluster) issue(p Purge, flags byte) bool {
	if !c.record(p, flags&flagWantAck != 0) {
		return false
	}
	c.cbMu.RLock()
	if c.cfg.OnPurge != nil && !c.cbClosed {
		c.cfg.OnPurge(p)
	}
	c.cbMu.RUnlock()
	msg := encodePurgeMsg(&p, flags)
	if len(msg) <= maxPacketMsg {
		// Gossip alone needs a few GossipIntervals to reach everyone; a direct
		// UDP packet to each member makes the common case one RTT, and gossip
		// retransmissions cover lost packets.
		c.queue.QueueBroadcast(broadcast(msg))
		for _, n := range c.otherNodes() {
			if err := c.list().SendBestEffort(&n, msg); err != nil {
				c.log.Debug("purge send failed", "to", n.Name, "err", err)
			}
		}
		return true
	}
	for _, n := range c.otherNodes() {
		c.enqueueSend(n.Name, msg)
	}
	return true
}

// record stores a tombstone for p and reports whether it is new. Expired
// purges are refused, so that a peer with a slower clock cannot resurrect a
// tombstone the store already dropped (which would call OnPurge twice).
func (c *Cluster) record(p Purge, wantAck bool) bool {
	if !p.At.Add(c.cfg.PurgeTTL).After(c.now()) {
		return false
	}
	if c.cfg.Tombstones == nil {
		return true
	}
	return c.cfg.Tombstones.Record(Tombstone{Purge: p, WantAck: wantAck})
}

// receive handles a purge learned from a peer through a message (msg) or
// through push/pull state (viaMsg false).
func (c *Cluster) receive(p Purge, flags byte, viaMsg bool) {
	c.cbMu.RLock()
	defer c.cbMu.RUnlock()
	if c.cbClosed {
		return
	}
	wantAck := flags&flagWantAck != 0
	if !c.record(p, wantAck) {
		// Already applied. A resend means the issuer missed our ack.
		if wantAck && flags&flagResend != 0 && p.Origin != c.name {
			c.enqueueSend(p.Origin, encodeAckMsg(p.ID, c.name))
		}
		return
	}
	if c.cfg.OnPurge != nil {
		c.cfg.OnPurge(p)
	}
	if wantAck && p.Origin != c.name {
		c.enqueueSend(p.Origin, encodeAckMsg(p.ID, c.name))
	}
	// Gossip it on, as Serf does with user events: a member the issuer
	// believed dead for a moment (a flapping probe) gets it from the others
	// within a few GossipIntervals instead of at the next push/pull.
	via := "push/pull"
	if viaMsg {
		via = "message"
		if msg := encodePurgeMsg(&p, flags&flagWantAck); len(msg) <= maxPacketMsg {
			c.queue.QueueBroadcast(broadcast(msg))
		}
	}
	if c.log.Enabled(context.Background(), slog.LevelDebug) {
		c.log.Debug("purge applied", "id", p.ID, "origin", p.Origin, "kind", p.Kind, "value", p.Value, "via", via)
	}
}

func (c *Cluster) receiveAck(id, from string) {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	if w, ok := c.waiters[id]; ok {
		w.acked[from] = true
		w.signal()
	}
}

// Tombstones returns the purges still remembered (Config.Tombstones, as
// exchanged in push/pull state), oldest first.
func (c *Cluster) Tombstones() []Purge {
	ts := c.liveTombstones()
	out := make([]Purge, len(ts))
	for i, t := range ts {
		out[i] = t.Purge
	}
	return out
}

// liveTombstones lists the store's tombstones younger than PurgeTTL, oldest
// first.
func (c *Cluster) liveTombstones() []Tombstone {
	if c.cfg.Tombstones == nil {
		return nil
	}
	ts := c.cfg.Tombstones.Append(nil)
	cutoff := c.now().Add(-c.cfg.PurgeTTL)
	ts = slices.DeleteFunc(ts, func(t Tombstone) bool { return !t.At.After(cutoff) })
	slices.SortFunc(ts, func(a, b Tombstone) int {
		return cmp.Or(a.At.Compare(b.At), cmp.Compare(a.ID, b.ID))
	})
	return ts
}

func (c *Cluster) stateSnapshot() []byte { return encodeState(c.liveTombstones()) }

func (c *Cluster) enqueueSend(to string, msg []byte) {
	select {
	case c.sendq <- send{to: to, msg: msg}:
	default:
		// Acks and resends are retried by PurgeWait and covered by push/pull.
		c.log.Warn("cluster send queue full, dropping message", "to", to)
	}
}

// sendLoop performs reliable (TCP) sends off the gossip receive path.
func (c *Cluster) sendLoop() {
	defer c.wg.Done()
	for {
		select {
		case <-c.stop:
			return
		case s := <-c.sendq:
			n, ok := c.nodeByName(s.to)
			if !ok {
				continue
			}
			if err := c.list().SendReliable(&n, s.msg); err != nil {
				c.log.Debug("reliable send failed", "to", s.to, "err", err)
			}
		}
	}
}

// gcLoop forgets long-departed members and bounds the gossip queue
// (tombstones expire in the store).
func (c *Cluster) gcLoop() {
	defer c.wg.Done()
	every := min(max(c.cfg.PurgeTTL/10, time.Second), time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	logs := time.NewTicker(repeatWindow / 3)
	defer logs.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-logs.C:
			c.mlLog.flush()
		case <-t.C:
			c.forgetDeparted()
			// Prune dereferences the queue's tree, which memberlist v0.7.0
			// only creates on the first QueueBroadcast.
			if c.queue.NumQueued() > maxQueued {
				c.queue.Prune(maxQueued)
			}
		}
	}
}

// broadcast is a purge in the gossip queue. Every purge is distinct, so no
// message invalidates another.
type broadcast []byte

func (b broadcast) Invalidates(memberlist.Broadcast) bool { return false }
func (b broadcast) Message() []byte                       { return b }
func (b broadcast) Finished()                             {}
func (b broadcast) UniqueBroadcast()                      {}

func randomID() string {
	var b [6]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}

package cluster

import (
	"errors"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/memberlist"
)

// The member table is built from memberlist's event callbacks, which run with
// memberlist's node lock held: they must not call back into memberlist (for
// example Members), so everything they need is kept here under c.mu.

// Members returns every known member, this node included, sorted by name.
// Dead and left members stay listed for a while (departedRetention).
// memberlist v0.7.0 does not expose suspicion, so State is alive until the
// member is declared dead or announces its departure.
func (c *Cluster) Members() []Member {
	c.mu.Lock()
	out := make([]Member, 0, len(c.peers))
	for _, p := range c.peers {
		out = append(out, p.member)
	}
	c.mu.Unlock()
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Alive returns the number of alive members, this node included until it
// leaves.
func (c *Cluster) Alive() int { return int(c.alive.Load()) }

// aliveNames returns the names of the other alive members.
func (c *Cluster) aliveNames() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for name, p := range c.peers {
		if p.member.State == StateAlive && name != c.name {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// otherNodes returns copies of the other alive members' memberlist nodes.
func (c *Cluster) otherNodes() []memberlist.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]memberlist.Node, 0, len(c.peers))
	for name, p := range c.peers {
		if p.member.State == StateAlive && name != c.name {
			out = append(out, p.node)
		}
	}
	return out
}

func (c *Cluster) nodeByName(name string) (memberlist.Node, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.peers[name]
	if !ok || p.member.State != StateAlive {
		return memberlist.Node{}, false
	}
	return p.node, true
}

// setPeer records node n in state; it runs inside memberlist callbacks.
func (c *Cluster) setPeer(n *memberlist.Node, state string) {
	m := Member{
		Name:       n.Name,
		GossipAddr: net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port))),
		State:      state,
		Self:       n.Name == c.name,
	}
	if meta, err := decodeMeta(n.Meta); err == nil {
		m.PeerAddr, m.PublicAddr, m.Region, m.Version = meta.PeerAddr, meta.PublicAddr, meta.Region, meta.Version
	} else if state == StateAlive {
		// NotifyAlive refuses such nodes; this only happens for a node
		// whose metadata we cannot read at all. It is listed, never owner.
		c.log.Warn("member has invalid metadata; it will not own keys", "member", n.Name, "err", err)
	}
	node := *n
	node.Addr = slices.Clone(n.Addr)
	node.Meta = nil
	c.mu.Lock()
	old := c.peers[n.Name]
	if old != nil && state == StateDead && old.member.State == StateLeft {
		m.State = StateLeft // it told us it was leaving: not a failure
	}
	c.peers[n.Name] = &peer{node: node, member: m, since: c.now()}
	c.rebuildLocked()
	c.mu.Unlock()
	c.log.Info("member "+m.State, "member", m.Name, "gossip", m.GossipAddr, "peer", m.PeerAddr, "region", m.Region)
	c.changedNow()
}

// markLeft handles a member's own "leaving" notice, which usually arrives
// before memberlist's leave gossip (ownership moves away from it at once) but
// may be processed just after it (then it relabels dead as left).
func (c *Cluster) markLeft(name string) {
	c.mu.Lock()
	p, ok := c.peers[name]
	ok = ok && name != c.name && p.member.State != StateLeft
	if ok {
		p.member.State = StateLeft
		p.since = c.now()
		c.rebuildLocked()
	}
	c.mu.Unlock()
	if ok {
		c.changedNow()
	}
}

// forgetDeparted drops members that have been dead or left for a long time.
func (c *Cluster) forgetDeparted() {
	cutoff := c.now().Add(-departedRetention)
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, p := range c.peers {
		if p.member.State != StateAlive && p.since.Before(cutoff) {
			delete(c.peers, name)
		}
	}
}

// changedNow triggers OnChange and wakes PurgeWait calls, which stop
// waiting for members that failed or left.
func (c *Cluster) changedNow() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
	c.pmu.Lock()
	for _, w := range c.waiters {
		w.signal()
	}
	c.pmu.Unlock()
}

// notifyLoop calls OnChange outside memberlist's locks.
func (c *Cluster) notifyLoop() {
	defer c.wg.Done()
	for {
		select {
		case <-c.stop:
			return
		case <-c.changed:
			if c.cfg.OnChange != nil {
				c.cfg.OnChange()
			}
		}
	}
}

// delegate implements memberlist.Delegate and memberlist.AliveDelegate
// without exporting those methods on Cluster.
type delegate struct{ c *Cluster }

func (d delegate) NodeMeta(limit int) []byte {
	if len(d.c.meta) > limit { // checked in New against MetaMaxSize; defensive
		return nil
	}
	return d.c.meta
}

// NotifyMsg runs on memberlist's packet handler (and stream handler for
// reliable messages); buf is only valid during the call.
func (d delegate) NotifyMsg(buf []byte) {
	m, err := decodeMsg(buf)
	if err != nil {
		d.c.log.Debug("dropping malformed cluster message", "bytes", len(buf), "err", err)
		return
	}
	switch m.typ {
	case msgPurge:
		d.c.receive(m.purge, m.flags, true)
	case msgAck:
		d.c.receiveAck(m.ackID, m.from)
	case msgLeave:
		d.c.markLeft(m.from)
	}
}

func (d delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.c.queue.GetBroadcasts(overhead, limit)
}

func (d delegate) LocalState(bool) []byte { return d.c.stateSnapshot() }

func (d delegate) MergeRemoteState(buf []byte, _ bool) {
	if len(buf) == 0 {
		return
	}
	ps, err := decodeState(buf)
	if err != nil {
		d.c.log.Warn("dropping malformed push/pull state", "bytes", len(buf), "err", err)
		return
	}
	for _, sp := range ps {
		d.c.receive(sp.p, sp.flags&flagWantAck, false)
	}
}

var errBadMeta = errors.New("invalid edgeshield node metadata")

// NotifyAlive refuses nodes whose metadata we cannot use, so a foreign or
// broken process that has the key never becomes a member or an owner.
func (d delegate) NotifyAlive(n *memberlist.Node) error {
	if _, err := decodeMeta(n.Meta); err != nil {
		return errors.Join(errBadMeta, err)
	}
	return nil
}

// events implements memberlist.EventDelegate for one generation of the
// memberlist: when the advertise address changed and the memberlist was
// re-created (advertise.go), the old one's last events (its own leave
// above all) must not reach the member table.
type events struct {
	c   *Cluster
	gen uint64
}

func (e events) current() bool { return e.gen == e.c.mlGen.Load() }

func (e events) NotifyJoin(n *memberlist.Node) {
	if e.current() {
		e.c.setPeer(n, StateAlive)
	}
}

func (e events) NotifyUpdate(n *memberlist.Node) {
	if e.current() {
		e.c.setPeer(n, StateAlive)
	}
}

// NotifyLeave: memberlist v0.7.0 does not say whether the node failed or
// left (Node.State is not maintained), so it is dead unless it told us first.
func (e events) NotifyLeave(n *memberlist.Node) {
	if !e.current() {
		return
	}
	state := StateDead
	if n.Name == e.c.name {
		state = StateLeft
	}
	e.c.setPeer(n, state)
}

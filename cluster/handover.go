package cluster

import (
	"fmt"
	"time"

	"github.com/hashicorp/memberlist"
)

// A binary upgrade (cmd/edgeshield, tableflip) starts the new process while
// the old one still serves. The new one inherits every listening socket but
// not the gossip port: memberlist binds its own UDP and TCP sockets and has
// no way to adopt inherited ones. So the old process pauses its membership
// (Pause: the memberlist is shut down and the port released, without a
// leave), the new one binds the port and joins under the same name and
// address, and the old one, once the new one is ready, closes as usual.
//
// No leave on purpose: for the other members the node never goes away. Its
// peer listener is one of the inherited sockets, so the shield hops they
// send it are answered by whichever process accepts them, and ownership
// does not move twice. If the new process takes longer than failure
// detection, they count it dead and then alive again when it joins; its
// refutation (a higher incarnation) makes that immediate.
//
// If the new process fails, Resume re-creates the memberlist on the same
// port and re-joins, as an address move does (advertise.go). While paused
// the member table is frozen as it was: this process keeps forwarding misses
// to the owners it knew, over the peer listeners, which gossip is not needed for.

// Pause shuts gossip down and releases its port, keeping the member table,
// so that another process can bind the port and join as this node. A
// paused cluster counts as left for Leave and Close. Pause on a paused or
// left cluster is a no-op.
func (c *Cluster) Pause() error {
	c.lmu.Lock()
	defer c.lmu.Unlock()
	if c.closed {
		return ErrClosed
	}
	if c.left || c.mlShut {
		return nil
	}
	// From here on the old memberlist's events are stale: its shutdown
	// must not empty the member table.
	c.mlGen.Add(1)
	err := c.list().Shutdown()
	c.mlShut = true
	// Leave, Close and the advertise loop treat a paused node as one that
	// left: no leave message, no re-creation on an address change.
	c.left = true
	c.paused = true
	if err != nil {
		return fmt.Errorf("cluster: pause: %w", err)
	}
	c.log.Info("gossip paused: port released for the new process", "gossip", c.GossipAddr())
	return nil
}

// Resume undoes Pause: it binds the gossip port again (same port, same
// advertised address) and re-joins the seeds and the members it knew.
// Resume on a cluster that is not paused is a no-op.
func (c *Cluster) Resume() error {
	c.lmu.Lock()
	if c.closed {
		c.lmu.Unlock()
		return ErrClosed
	}
	if !c.paused {
		c.lmu.Unlock()
		return nil
	}
	old := c.list()
	port := int(old.LocalNode().Port)
	if bind, _ := parseAddrPort(c.cfg.BindAddr, true); bind.Port() != 0 {
		port = int(bind.Port())
	}
	c.mlGen.Add(1)
	ml, err := c.createMemberlistRetry(port, old.LocalNode().Addr.String())
	if err != nil {
		c.lmu.Unlock()
		return err
	}
	c.setMemberlist(ml)
	c.mlShut, c.left, c.paused = false, false, false
	c.lmu.Unlock()
	c.log.Info("gossip resumed", "gossip", c.GossipAddr())
	c.rejoinAfterMove()
	return nil
}

// createMemberlistRetry binds the gossip port again. The process that
// failed to start may have bound it a moment before it exited, so a bind
// error is retried for up to two seconds.
func (c *Cluster) createMemberlistRetry(port int, advertised string) (*memberlist.Memberlist, error) {
	adv, _ := parseAdvertise(advertised)
	var err error
	for range 20 {
		var ml *memberlist.Memberlist
		if ml, err = c.createMemberlist(adv.Addr(), port); err == nil {
			return ml, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil, err
}

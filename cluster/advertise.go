package cluster

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// A container that is reconnected to its network gets a new IP. memberlist
// v0.7.0 fixes the advertised address at Create and has no call to change
// it: the node kept advertising the vanished address, the others probed it
// there, declared it dead, took its refutation for a resurrection, and it
// flapped alive/dead forever (issue 13). So when the advertise address is a
// host name, advertiseLoop re-resolves it, and on a change re-creates the
// memberlist on the new address: leave (the others mark the old address
// left, which memberlist lets a node with the same name replace at once,
// where a dead one waits DeadNodeReclaimTime), shut down, create on the same
// port, re-join the seeds and the members it knew. Purge tombstones (in
// Config.Tombstones), the member table and the join status live outside
// the memberlist, so they carry over.

// resolvesAdvertise reports whether the advertise address is looked up
// (a host name) rather than fixed (an IP, or the bind address).
func (c *Cluster) resolvesAdvertise() bool {
	if c.cfg.advertiseSource != nil {
		return true
	}
	if c.cfg.AdvertiseAddr == "" {
		return false
	}
	_, err := parseAdvertise(c.cfg.AdvertiseAddr)
	return err != nil
}

// resolveAdvertise returns the address the advertise host name has now,
// preferring IPv4 like memberlist's own address choice.
func (c *Cluster) resolveAdvertise() (netip.Addr, error) {
	if c.cfg.advertiseSource != nil {
		return c.cfg.advertiseSource()
	}
	host := c.cfg.AdvertiseAddr
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("cluster: resolve advertise %q: %w", host, err)
	}
	if len(ips) == 0 {
		return netip.Addr{}, fmt.Errorf("cluster: resolve advertise %q: no address", host)
	}
	for _, ip := range ips {
		if ip.Unmap().Is4() {
			return ip.Unmap(), nil
		}
	}
	return ips[0], nil
}

// advertiseLoop re-resolves the advertise address every AdvertiseCheck and
// moves the node to a new one.
func (c *Cluster) advertiseLoop() {
	defer c.wg.Done()
	for c.sleep(c.cfg.AdvertiseCheck) {
		ip, err := c.resolveAdvertise()
		if err != nil {
			c.log.Warn("cannot re-resolve the advertise address; keeping the current one", "advertise", c.cfg.AdvertiseAddr, "err", err)
			continue
		}
		n := c.list().LocalNode()
		if cur, ok := netip.AddrFromSlice(n.Addr); ok && cur.Unmap() == ip {
			continue
		}
		if err := c.moveTo(ip); err != nil {
			c.log.Error("cannot move gossip to the new advertise address; retrying", "address", ip, "err", err)
		}
	}
}

// moveTo re-creates the memberlist advertising ip and re-joins.
func (c *Cluster) moveTo(ip netip.Addr) error {
	c.lmu.Lock()
	if c.closed || c.left {
		c.lmu.Unlock()
		return nil
	}
	old := c.list()
	from := c.GossipAddr()
	port := int(old.LocalNode().Port)
	// From here on the old memberlist's events are stale: its own leave
	// must not take this node out of the member table.
	c.mlGen.Add(1)
	if !c.mlShut {
		if err := old.Leave(time.Second); err != nil {
			c.log.Debug("leave before the address change", "err", err)
		}
		if err := old.Shutdown(); err != nil {
			c.log.Debug("shutdown before the address change", "err", err)
		}
		c.mlShut = true
	}
	// With port 0 configured the transport reported the port it got; the
	// others and the seeds know this one.
	if bind, _ := parseAddrPort(c.cfg.BindAddr, true); bind.Port() != 0 {
		port = int(bind.Port())
	}
	ml, err := c.createMemberlist(ip, port)
	if err != nil {
		c.lmu.Unlock()
		return err
	}
	c.setMemberlist(ml)
	c.mlShut = false
	c.lmu.Unlock()
	c.log.Warn("advertise address changed; re-joined gossip on the new one", "from", from, "to", c.GossipAddr())
	c.rejoinAfterMove()
	return nil
}

// rejoinAfterMove joins the seeds and every member that was alive: a fresh
// memberlist knows nobody, and a cluster without seeds (or whose seeds are
// gone) is still reachable through the members.
func (c *Cluster) rejoinAfterMove() {
	addrs := append([]string(nil), c.seeds...)
	self := c.GossipAddr()
	for _, n := range c.otherNodes() {
		if a := net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port))); a != self {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		return
	}
	if _, err := c.list().Join(addrs); err != nil {
		c.log.Warn("re-join after the address change failed; the periodic re-join retries", "err", err)
	}
}

// isHostName accepts "host" or "host:port" with a DNS host name (letters,
// digits, '-', '.'; RFC 1123 §2.1), the shape of a container's service name.
func isHostName(s string) bool {
	host := s
	if h, p, err := net.SplitHostPort(s); err == nil {
		if _, err := strconv.ParseUint(p, 10, 16); err != nil {
			return false
		}
		host = h
	}
	if host == "" || len(host) > 253 || strings.HasPrefix(host, "-") || strings.HasSuffix(host, "-") {
		return false
	}
	for _, r := range host {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
			return false
		}
	}
	return true
}

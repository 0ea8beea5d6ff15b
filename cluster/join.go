package cluster

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
)

// Joined reports, for readiness, whether this node has joined at least one
// seed (always true without seeds), with a human-readable detail such as
// "joined via 1 of 1 seeds; 3 alive members" or "seeds unreachable, running
// alone since 2026-11-22T01:50:03Z: …". Once true it stays true: a later
// partition heals through the periodic re-join and is visible in Members.
func (c *Cluster) Joined() (ok bool, detail string) {
	alive := c.Alive()
	c.jmu.Lock()
	defer c.jmu.Unlock()
	switch {
	case len(c.seeds) == 0:
		return true, fmt.Sprintf("no seeds to join; %d alive members", alive)
	case c.joined:
		d := fmt.Sprintf("joined via %d of %d seeds at %s; %d alive members",
			c.joinedWith, len(c.seeds), c.joinedAt.UTC().Format(time.RFC3339), alive)
		return true, d
	default:
		d := "seeds unreachable, running alone since " + c.startedAt.UTC().Format(time.RFC3339)
		if c.joinErr != nil {
			d += ": " + c.joinErr.Error()
		}
		return false, d
	}
}

// Partitioned reports whether this node sees fewer alive members than
// Config.MinMembers, with a detail such as "sees 1 alive member of the 2
// required (min_members); alive: n01". Unlike Joined it turns back to false
// as soon as enough members are alive again (the periodic re-join heals the
// partition), so readiness follows it both ways.
func (c *Cluster) Partitioned() (bool, string) {
	alive := c.Alive()
	if alive >= c.cfg.MinMembers {
		return false, fmt.Sprintf("sees %d alive members, min_members %d", alive, c.cfg.MinMembers)
	}
	d := fmt.Sprintf("partitioned: sees %d alive members, fewer than min_members %d", alive, c.cfg.MinMembers)
	if names := c.aliveNames(); len(names) > 0 {
		d += "; other alive members: " + strings.Join(names, ", ")
	} else {
		d += "; no other member reachable"
	}
	return true, d
}

// JoinError returns the error of the last join attempt (the initial join or
// a periodic re-join), nil if it succeeded. It wraps ErrSecretKeyMismatch
// when a seed and this node use different secret keys.
func (c *Cluster) JoinError() error {
	c.jmu.Lock()
	defer c.jmu.Unlock()
	return c.joinErr
}

// joinLoop joins the seeds with exponential backoff until one answers, then
// re-joins them every RejoinInterval (jittered) for as long as the node runs.
func (c *Cluster) joinLoop() {
	defer c.wg.Done()
	if len(c.seeds) == 0 {
		return
	}
	backoff := min(100*time.Millisecond, c.cfg.JoinRetryMax)
	for !c.join() {
		if !c.sleep(backoff) {
			return
		}
		backoff = min(backoff*2, c.cfg.JoinRetryMax)
	}
	for {
		jitter := time.Duration(rand.Int64N(int64(c.cfg.RejoinInterval)/5+1)) - c.cfg.RejoinInterval/10
		if !c.sleep(c.cfg.RejoinInterval + jitter) {
			return
		}
		c.join()
	}
}

// sleep waits d or until Close; false means Close.
func (c *Cluster) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-c.stop:
		return false
	case <-t.C:
		return true
	}
}

// join pushes/pulls state with each seed (one at a time, so Close is not held
// up by more than one TCPTimeout) and records the outcome.
func (c *Cluster) join() bool {
	ok := 0
	var errs []string
	mismatch := false
	for _, s := range c.seeds {
		if c.isClosed() {
			return false
		}
		if _, err := c.list().Join([]string{s}); err != nil {
			if isKeyMismatch(err) {
				mismatch = true
			}
			errs = append(errs, err.Error())
			continue
		}
		ok++
	}
	var err error
	switch {
	case ok > 0:
	case mismatch:
		err = fmt.Errorf("%w with seeds %v: %s", ErrSecretKeyMismatch, c.seeds, strings.Join(errs, "; "))
	default:
		err = fmt.Errorf("cluster: no seed of %v answered: %s", c.seeds, strings.Join(errs, "; "))
	}
	c.jmu.Lock()
	first := !c.joined && ok > 0
	if first {
		c.joined, c.joinedAt, c.joinedWith = true, time.Now(), ok
	}
	c.joinErr = err
	c.jmu.Unlock()
	switch {
	case first:
		c.log.Info("joined cluster", "seeds", ok, "alive", c.Alive())
	case err != nil && mismatch:
		c.log.Error("cannot join cluster: secret key mismatch (this node's SecretKey differs from the seeds')", "err", err)
	case err != nil && c.Alive() <= 1:
		c.log.Warn("cannot reach any seed; running alone and retrying", "err", err)
	case err != nil:
		// Still in a cluster: only the partition-healing re-join failed.
		c.log.Info("periodic re-join: no seed answered", "err", err)
	}
	return ok > 0
}

// isKeyMismatch recognises memberlist's decryption failures on either side of
// a push/pull: ours ("no installed keys could decrypt"), or the seed's error
// reply when one side has no key.
func isKeyMismatch(err error) bool {
	return isKeyMismatchText(err.Error())
}

func isKeyMismatchText(s string) bool {
	s = strings.ToLower(s)
	return strings.Contains(s, "no installed keys could decrypt") ||
		strings.Contains(s, "remote state is encrypted and encryption is not configured") ||
		strings.Contains(s, "encryption is configured but remote state is not encrypted")
}

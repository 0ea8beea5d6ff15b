package cluster

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestPartitionedFollowsMinMembers: a node cut off from the others counts
// itself partitioned while it sees fewer than MinMembers alive members, and
// no longer once the re-join healed the partition (issue 13: a partitioned
// node said "ok: joined … 1 alive members").
func TestPartitionedFollowsMinMembers(t *testing.T) {
	nodes := startCluster(t, 3, func(_ int, cfg *Config) { cfg.MinMembers = 2 })
	cut := nodes[2]
	for _, n := range nodes {
		if part, why := n.Partitioned(); part {
			t.Fatalf("%s partitioned in a healthy cluster: %s", n.LocalName(), why)
		}
	}
	cut.gate.closed.Store(true)
	eventually(t, 15*time.Second, func() (bool, string) {
		part, why := cut.Partitioned()
		return part, fmt.Sprintf("cut-off n02 sees %v: Partitioned = false (%s), want true", names(cut.Members()), why)
	})
	if _, why := cut.Partitioned(); !strings.Contains(why, "partitioned: sees 1 alive members, fewer than min_members 2") {
		t.Errorf("detail %q does not say partitioned with the counts", why)
	}
	// The majority side still has 2 of the 2 required.
	if part, why := nodes[0].Partitioned(); part {
		t.Errorf("n00 (majority side) partitioned: %s", why)
	}
	cut.gate.closed.Store(false)
	eventually(t, 15*time.Second, func() (bool, string) {
		part, why := cut.Partitioned()
		return !part, fmt.Sprintf("n02 still partitioned after the heal: %s", why)
	})
}

// TestMinMembersDefault: zero means 1, so a lone node is never partitioned;
// a negative value is refused naming the key.
func TestMinMembersDefault(t *testing.T) {
	n := startNode(t, fastConfig("alone"))
	if part, why := n.Partitioned(); part {
		t.Fatalf("lone node with the default min_members partitioned: %s", why)
	}
	cfg := fastConfig("bad")
	cfg.MinMembers = -1
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "min_members") {
		t.Fatalf("Validate(min_members -1) = %v, want an error naming min_members", err)
	}
	if got := DefaultConfig().MinMembers; got != 1 {
		t.Errorf("DefaultConfig().MinMembers = %d, want 1", got)
	}
}

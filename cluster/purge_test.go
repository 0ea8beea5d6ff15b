package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestPurgeAppliedOnceEverywhere(t *testing.T) {
	for _, size := range []int{3, 10} {
		t.Run(fmt.Sprintf("%d nodes", size), func(t *testing.T) {
			nodes := startCluster(t, size, nil)
			const purges = 100
			lat := make([]time.Duration, 0, purges)
			ids := make([]string, 0, purges)
			for i := range purges {
				issuer := nodes[i%size]
				id := fmt.Sprintf("lat-%d", i)
				p := Purge{ID: id, Kind: KindURL, Value: fmt.Sprintf("example.com/p/%d", i), Hard: i%2 == 0}
				if i%5 == 0 {
					p.Kind, p.Value = KindTag, fmt.Sprintf("tag-%d", i)
				}
				start := time.Now()
				if err := issuer.Purge(t.Context(), p); err != nil {
					t.Fatalf("Purge: %v", err)
				}
				ids = append(ids, id)
				if issuer.appliedCount(id) != 1 {
					t.Fatalf("issuer %s applied %s %d times when Purge returned, want 1", issuer.LocalName(), id, issuer.appliedCount(id))
				}
				var last time.Time
				eventually(t, 10*time.Second, func() (bool, string) {
					for _, n := range nodes {
						at, ok := n.appliedAt(id)
						if !ok {
							return false, fmt.Sprintf("%s did not apply %s", n.LocalName(), id)
						}
						if at.After(last) {
							last = at
						}
					}
					return true, ""
				})
				lat = append(lat, last.Sub(start))
			}
			// Let retransmissions and push/pull run, then check exactly-once.
			for _, n := range nodes {
				for _, id := range ids {
					if got := n.appliedCount(id); got != 1 {
						t.Fatalf("%s applied %s %d times, want exactly once", n.LocalName(), id, got)
					}
				}
			}
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			t.Logf("purge propagation to all %d nodes over %d purges: p50 %v, p99 %v, max %v",
				size, purges, lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1])
		})
	}
}

func TestPurgeExactlyOnceAfterGossipSettles(t *testing.T) {
	nodes := startCluster(t, 3, func(i int, cfg *Config) { cfg.PushPullInterval = 100 * time.Millisecond })
	if err := nodes[0].Purge(t.Context(), Purge{ID: "fixed-id", Kind: KindPrefix, Value: "example.com/a/"}); err != nil {
		t.Fatalf("Purge: %v", err)
	}
	// The same ID again (e.g. a retried admin call) is not applied again.
	if err := nodes[1].Purge(t.Context(), Purge{ID: "fixed-id", Kind: KindPrefix, Value: "example.com/a/"}); err != nil {
		t.Fatalf("Purge: %v", err)
	}
	eventually(t, 5*time.Second, func() (bool, string) {
		for _, n := range nodes {
			if n.appliedCount("fixed-id") == 0 {
				return false, n.LocalName() + " did not apply fixed-id"
			}
		}
		return true, ""
	})
	// Several push/pull rounds (each exchanges the tombstones) later it has
	// still been applied once per node. The count can only grow, so polling
	// for a wrong value until a deadline is the check.
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		for _, n := range nodes {
			if got := n.appliedCount("fixed-id"); got != 1 {
				t.Fatalf("%s applied fixed-id %d times, want 1", n.LocalName(), got)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestPurgeWaitConfirmsAllMembers(t *testing.T) {
	nodes := startCluster(t, 5, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	confirmed, missing, err := nodes[2].PurgeWait(ctx, Purge{Kind: KindURL, Value: "example.com/w"})
	if err != nil {
		t.Fatalf("PurgeWait: %v (missing %v)", err, missing)
	}
	slices.Sort(confirmed)
	if want := []string{"n00", "n01", "n02", "n03", "n04"}; !slices.Equal(confirmed, want) || len(missing) != 0 {
		t.Fatalf("PurgeWait: confirmed %v missing %v, want %v and none", confirmed, missing, want)
	}
}

func TestPurgeWaitReportsMissing(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	nodes[2].gate.closed.Store(true) // still listed alive for a moment, never answers
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	confirmed, missing, err := nodes[0].PurgeWait(ctx, Purge{Kind: KindURL, Value: "example.com/m"})
	if !errors.Is(err, ErrPurgeIncomplete) {
		t.Fatalf("PurgeWait err = %v, want ErrPurgeIncomplete", err)
	}
	slices.Sort(confirmed)
	if !slices.Equal(confirmed, []string{"n00", "n01"}) || !slices.Equal(missing, []string{"n02"}) {
		t.Fatalf("PurgeWait: confirmed %v missing %v, want [n00 n01] and [n02]", confirmed, missing)
	}
}

func TestPartitionedNodeAppliesTombstoneOnRejoin(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	cut := nodes[2]
	cut.gate.closed.Store(true)
	eventually(t, 10*time.Second, func() (bool, string) {
		return nodes[0].Alive() == 2 && nodes[1].Alive() == 2,
			fmt.Sprintf("n00 sees %v, n01 sees %v; want n02 gone", names(nodes[0].Members()), names(nodes[1].Members()))
	})
	if err := nodes[0].Purge(t.Context(), Purge{ID: "during-partition", Kind: KindTag, Value: "product-42"}); err != nil {
		t.Fatalf("Purge: %v", err)
	}
	eventually(t, 5*time.Second, func() (bool, string) {
		return nodes[1].appliedCount("during-partition") == 1, "n01 did not apply the purge"
	})
	if got := cut.appliedCount("during-partition"); got != 0 {
		t.Fatalf("cut-off node applied the purge %d times; the test partition leaks", got)
	}
	cut.gate.closed.Store(false)
	eventually(t, 10*time.Second, func() (bool, string) {
		return cut.appliedCount("during-partition") == 1, "reconnected node did not apply the tombstone"
	})
	waitAlive(t, nodes, 3)
	for _, n := range nodes {
		if got := n.appliedCount("during-partition"); got != 1 {
			t.Fatalf("%s applied the purge %d times, want 1", n.LocalName(), got)
		}
	}
	ts := cut.Tombstones()
	if len(ts) != 1 || ts[0].ID != "during-partition" || ts[0].Origin != "n00" || ts[0].Kind != KindTag || ts[0].Value != "product-42" {
		t.Fatalf("Tombstones() on the reconnected node = %+v, want the purge from n00", ts)
	}
}

func TestPurgeValidation(t *testing.T) {
	n := startNode(t, fastConfig("solo"))
	tests := []struct {
		name string
		p    Purge
	}{
		{"bad kind", Purge{Kind: "host", Value: "x"}},
		{"empty value", Purge{Kind: KindURL}},
		{"control characters", Purge{Kind: KindURL, Value: "a\nb"}},
		{"too long", Purge{Kind: KindURL, Value: strings.Repeat("a", maxValueLen+1)}},
		{"expired", Purge{Kind: KindURL, Value: "a", At: time.Now().Add(-time.Hour)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := n.Purge(t.Context(), tt.p); !errors.Is(err, ErrInvalidPurge) {
				t.Fatalf("Purge(%+v) = %v, want ErrInvalidPurge", tt.p, err)
			}
		})
	}
	if got := len(n.Tombstones()); got != 0 {
		t.Fatalf("invalid purges left %d tombstones, want 0", got)
	}
}

func TestNewPurgeIDIsUniqueAcrossRestarts(t *testing.T) {
	a := startNode(t, fastConfig("same"))
	first := a.NewPurgeID()
	if err := a.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	b := startNode(t, fastConfig("same")) // same name, new process state
	seen := map[string]bool{first: true}
	for range 100 {
		id := b.NewPurgeID()
		if seen[id] || !strings.HasPrefix(id, "same-") {
			t.Fatalf("NewPurgeID() = %q: duplicate or without the node name (seen %d)", id, len(seen))
		}
		seen[id] = true
	}
	id := b.NewPurgeID()
	if err := b.Purge(t.Context(), Purge{ID: id, Kind: KindURL, Value: "x"}); err != nil || b.appliedCount(id) != 1 {
		t.Fatalf("Purge with a NewPurgeID: err %v, applied %d; want nil, 1", err, b.appliedCount(id))
	}
}

func TestLargePurgeTravelsOverTCP(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	long := "example.com/" + strings.Repeat("q", 4000) // too big for a gossip packet
	if err := nodes[0].Purge(t.Context(), Purge{ID: "large", Kind: KindURL, Value: long}); err != nil {
		t.Fatalf("Purge: %v", err)
	}
	eventually(t, 5*time.Second, func() (bool, string) {
		for _, n := range nodes {
			if n.appliedCount("large") != 1 {
				return false, n.LocalName() + " did not apply the large purge"
			}
		}
		return true, ""
	})
}

func TestTombstonesExpire(t *testing.T) {
	var clock fakeClock
	clock.set(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	cfg := fastConfig("solo")
	cfg.PurgeTTL = time.Minute
	cfg.now = clock.now
	n := startNode(t, cfg)
	if err := n.Purge(t.Context(), Purge{ID: "old", Kind: KindURL, Value: "a"}); err != nil {
		t.Fatalf("Purge: %v", err)
	}
	clock.add(30 * time.Second)
	if err := n.Purge(t.Context(), Purge{ID: "new", Kind: KindURL, Value: "b"}); err != nil {
		t.Fatalf("Purge: %v", err)
	}
	tests := []struct {
		advance time.Duration
		want    []string
	}{
		{0, []string{"old", "new"}},
		{31 * time.Second, []string{"new"}}, // old is 61s old
		{30 * time.Second, nil},
	}
	for _, tt := range tests {
		clock.add(tt.advance)
		var got []string
		for _, p := range n.Tombstones() {
			got = append(got, p.ID)
		}
		if !slices.Equal(got, tt.want) {
			t.Fatalf("after +%v: tombstones %v, want %v", tt.advance, got, tt.want)
		}
	}
	// An expired purge arriving from a peer (slow clock, stale state) is not
	// applied again.
	n.receive(Purge{ID: "old", Kind: KindURL, Value: "a", Origin: "x", At: clock.now().Add(-2 * time.Minute)}, 0, false)
	if got := n.appliedCount("old"); got != 1 {
		t.Fatalf("expired purge re-applied: count %d, want 1", got)
	}
}

func TestPurgeAfterClose(t *testing.T) {
	n := startNode(t, fastConfig("solo"))
	if err := n.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := n.Purge(t.Context(), Purge{Kind: KindURL, Value: "a"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Purge after Close = %v, want ErrClosed", err)
	}
	if _, _, err := n.PurgeWait(t.Context(), Purge{Kind: KindURL, Value: "a"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("PurgeWait after Close = %v, want ErrClosed", err)
	}
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) set(t time.Time)     { c.mu.Lock(); c.t = t; c.mu.Unlock() }
func (c *fakeClock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

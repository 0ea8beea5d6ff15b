package cluster

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

func testKeys(n int) [][]byte {
	keys := make([][]byte, n)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "example.com/assets/%d.js?v=%d", i, i*7)
	}
	return keys
}

func owners(n *node, keys [][]byte) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		m, ok := n.Owner(k)
		if !ok {
			out[i] = ""
			continue
		}
		out[i] = m.Name
	}
	return out
}

func TestOwnersIdenticalOnEveryNode(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	keys := testKeys(1000)
	perNode := map[string]int{}
	for _, k := range keys {
		want := ownerNames(nodes[0].Owners(nil, k))
		if len(want) != 3 {
			t.Fatalf("Owners(%s) on n00 = %v, want all 3 members", k, want)
		}
		for _, n := range nodes[1:] {
			if got := ownerNames(n.Owners(nil, k)); !slices.Equal(got, want) {
				t.Fatalf("Owners(%s) on %s = %v, want %v (as on n00)", k, n.LocalName(), got, want)
			}
		}
		if o, _ := nodes[1].Owner(k); o.Name != want[0] {
			t.Fatalf("Owner(%s) = %s, want first of Owners %s", k, o.Name, want[0])
		}
		perNode[want[0]]++
	}
	// Every member owns a fair share (expected 333 each).
	for name, got := range perNode {
		if got < 250 || got > 420 {
			t.Errorf("%s owns %d of 1000 keys, want about 333", name, got)
		}
	}
}

func TestOwnershipMovesMinimally(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	keys := testKeys(1000)
	before := owners(nodes[0], keys)

	// A fourth member joins: about 1/4 of the keys move, all of them to it.
	cfg := fastConfig("n03", nodes[0].GossipAddr())
	cfg.PeerAddr = "127.0.0.1:21003"
	fourth := startNode(t, cfg)
	all := append(slices.Clone(nodes), fourth)
	waitAlive(t, all, 4)
	after := owners(nodes[0], keys)
	moved := 0
	for i := range keys {
		if after[i] != before[i] {
			moved++
			if after[i] != "n03" {
				t.Fatalf("key %s moved from %s to %s, want moves only to the new member n03", keys[i], before[i], after[i])
			}
		}
	}
	if moved < 150 || moved > 350 {
		t.Fatalf("adding a 4th member moved %d of 1000 keys, want 15%%–35%%", moved)
	}
	t.Logf("join of a 4th member moved %d/1000 keys", moved)

	// n01 leaves: only its keys move.
	if err := nodes[1].Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	eventually(t, 10*time.Second, func() (bool, string) {
		return nodes[0].Alive() == 3, fmt.Sprintf("n00 sees %v, want 3 alive", names(nodes[0].Members()))
	})
	final := owners(nodes[0], keys)
	for i := range keys {
		if (after[i] == "n01") != (final[i] != after[i]) {
			t.Fatalf("key %s: owner %s before n01 left, %s after; want a move exactly when n01 owned it", keys[i], after[i], final[i])
		}
	}
}

func TestShieldRegion(t *testing.T) {
	regions := []string{"us", "eu", "eu", "ap"}
	tests := []struct {
		name   string
		shield string
		want   []string // acceptable owners
	}{
		{"shield region with members", "eu", []string{"n01", "n02"}},
		{"empty shield region falls back to all", "sa", []string{"n00", "n01", "n02", "n03"}},
		{"no shield region", "", []string{"n00", "n01", "n02", "n03"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nodes := startCluster(t, 4, func(i int, cfg *Config) {
				cfg.Region = regions[i]
				cfg.ShieldRegion = tt.shield
			})
			seen := map[string]bool{}
			for _, k := range testKeys(300) {
				got := ownerNames(nodes[3].Owners(nil, k))
				if len(got) != len(tt.want) {
					t.Fatalf("Owners(%s) = %v, want a permutation of %v", k, got, tt.want)
				}
				for _, name := range got {
					if !slices.Contains(tt.want, name) {
						t.Fatalf("Owners(%s) = %v contains %s, want only %v", k, got, name, tt.want)
					}
				}
				seen[got[0]] = true
			}
			if len(seen) != len(tt.want) {
				t.Fatalf("first owners over 300 keys: %v, want every one of %v", seen, tt.want)
			}
		})
	}
}

func TestShieldRegionFallsBackWhenRegionDies(t *testing.T) {
	regions := []string{"us", "eu", "us"}
	nodes := startCluster(t, 3, func(i int, cfg *Config) {
		cfg.Region = regions[i]
		cfg.ShieldRegion = "eu"
	})
	k := []byte("example.com/x")
	if o, _ := nodes[0].Owner(k); o.Name != "n01" {
		t.Fatalf("Owner = %s, want the only eu member n01", o.Name)
	}
	if err := nodes[1].Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	eventually(t, 10*time.Second, func() (bool, string) {
		o, ok := nodes[0].Owner(k)
		return ok && o.Name != "n01", fmt.Sprintf("Owner = %s %v, want a us member once eu is gone", o.Name, ok)
	})
}

func TestMarkDown(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	a := nodes[0]
	keys := testKeys(200)
	var key []byte
	var victim string
	for _, k := range keys {
		if o, _ := a.Owner(k); o.Name != a.LocalName() {
			key, victim = k, o.Name
			break
		}
	}
	full := ownerNames(a.Owners(nil, key))

	a.MarkDown(victim, time.Hour)
	got := ownerNames(a.Owners(nil, key))
	want := slices.DeleteFunc(slices.Clone(full), func(s string) bool { return s == victim })
	if !slices.Equal(got, want) {
		t.Fatalf("Owners after MarkDown(%s) = %v, want %v", victim, got, want)
	}
	if o, _ := a.Owner(key); o.Name == victim {
		t.Fatalf("Owner after MarkDown(%s) = %s, want another member", victim, o.Name)
	}
	// Other nodes are not affected by a local mark.
	if got := ownerNames(nodes[1].Owners(nil, key)); !slices.Equal(got, full) {
		t.Fatalf("Owners on n01 = %v, want unchanged %v", got, full)
	}
	// Marking this node itself is ignored.
	a.MarkDown(a.LocalName(), time.Hour)
	if got := ownerNames(a.Owners(nil, key)); !slices.Equal(got, want) {
		t.Fatalf("Owners after MarkDown(self) = %v, want %v", got, want)
	}
	a.MarkDown(victim, 0)
	if got := ownerNames(a.Owners(nil, key)); !slices.Equal(got, full) {
		t.Fatalf("Owners after clearing the mark = %v, want %v", got, full)
	}
	// A short mark expires by itself while gossip still says alive.
	a.MarkDown(victim, 50*time.Millisecond)
	if o, _ := a.Owner(key); o.Name == victim {
		t.Fatalf("Owner right after MarkDown = %s, want another member", o.Name)
	}
	eventually(t, 5*time.Second, func() (bool, string) {
		o, _ := a.Owner(key)
		return o.Name == victim, fmt.Sprintf("Owner = %s, want %s back after the mark expired", o.Name, victim)
	})
}

func TestOwnersDoesNotAllocate(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	key := []byte("example.com/a/b/c.css")
	dst := make([]Member, 0, 8)
	nodes[0].MarkDown("n01", time.Hour) // exercise the MarkDown path too
	if allocs := testing.AllocsPerRun(100, func() { dst = nodes[0].Owners(dst, key) }); allocs != 0 {
		t.Fatalf("Owners allocates %.1f times per call, want 0", allocs)
	}
	if allocs := testing.AllocsPerRun(100, func() { _, _ = nodes[0].Owner(key) }); allocs != 0 {
		t.Fatalf("Owner allocates %.1f times per call, want 0", allocs)
	}
}

// benchCluster builds a Cluster with a synthetic ring of n members, without
// gossip, to measure the lookup alone.
func benchRing(n int) *Cluster {
	c := &Cluster{peers: map[string]*peer{}, down: map[string]time.Time{}}
	for i := range n {
		name := fmt.Sprintf("edge-%02d", i)
		c.peers[name] = &peer{member: Member{Name: name, State: StateAlive, PeerAddr: "10.0.0.1:8080"}}
	}
	c.rebuildLocked()
	return c
}

func BenchmarkOwners(b *testing.B) {
	for _, n := range []int{3, 10, 50} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			c := benchRing(n)
			key := []byte("example.com/static/js/app.8f3a2c.js")
			dst := make([]Member, 0, n)
			b.ReportAllocs()
			for b.Loop() {
				dst = c.Owners(dst, key)
			}
		})
	}
}

func BenchmarkOwner(b *testing.B) {
	for _, n := range []int{3, 10, 50} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			c := benchRing(n)
			key := []byte("example.com/static/js/app.8f3a2c.js")
			b.ReportAllocs()
			for b.Loop() {
				_, _ = c.Owner(key)
			}
		})
	}
}

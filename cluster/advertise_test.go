package cluster

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestAdvertiseAddressChangeRecovers: a node advertising an address nobody
// reaches it on (a container's vanished IP, here 127.0.0.2 while it listens
// on 127.0.0.1) is unreachable for the others; once its advertise address
// resolves to the new one it moves its gossip there, and the others list it
// alive at the new address for good (issue 13: it flapped alive/dead and
// never recovered).
func TestAdvertiseAddressChangeRecovers(t *testing.T) {
	nodes := startCluster(t, 2, nil)
	var current atomic.Pointer[netip.Addr]
	stale := netip.MustParseAddr("127.0.0.2")
	current.Store(&stale)
	cfg := fastConfig("moved", nodes[0].GossipAddr())
	cfg.AdvertiseCheck = 100 * time.Millisecond
	cfg.advertiseSource = func() (netip.Addr, error) { return *current.Load(), nil }
	moved := startNode(t, cfg)
	if got := moved.GossipAddr(); !strings.HasPrefix(got, "127.0.0.2:") {
		t.Fatalf("GossipAddr = %q, want the resolved 127.0.0.2", got)
	}
	_, port, _ := net.SplitHostPort(moved.GossipAddr())
	eventually(t, 10*time.Second, func() (bool, string) {
		m := memberNamed(nodes[0].Members(), "moved")
		return m.GossipAddr == "127.0.0.2:"+port, fmt.Sprintf("n00 lists moved at %q, want the stale 127.0.0.2", m.GossipAddr)
	})
	fresh := netip.MustParseAddr("127.0.0.1")
	current.Store(&fresh)
	want := "127.0.0.1:" + port
	eventually(t, 15*time.Second, func() (bool, string) {
		for _, n := range nodes {
			m := memberNamed(n.Members(), "moved")
			if m.GossipAddr != want || m.State != StateAlive {
				return false, fmt.Sprintf("%s lists moved %s at %q, want alive at %q", n.LocalName(), m.State, m.GossipAddr, want)
			}
		}
		return moved.Alive() == 3, fmt.Sprintf("moved sees %v, want 3 alive", names(moved.Members()))
	})
	if got := moved.GossipAddr(); got != want {
		t.Errorf("GossipAddr after the move = %q, want %q", got, want)
	}
	// Stable: no more flapping. Probes run every 400ms; a failed one would
	// declare it dead within a few.
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		for _, n := range nodes {
			if m := memberNamed(n.Members(), "moved"); m.State != StateAlive || m.GossipAddr != want {
				t.Fatalf("%s lists moved %s at %q after the move, want alive at %q", n.LocalName(), m.State, m.GossipAddr, want)
			}
		}
	}
	// Purges still reach it and it still sends them.
	if err := moved.Purge(t.Context(), Purge{Kind: KindURL, Value: "example.com/after-move"}); err != nil {
		t.Fatalf("Purge: %v", err)
	}
	eventually(t, 10*time.Second, func() (bool, string) {
		ids := 0
		for _, n := range nodes {
			n.mu.Lock()
			ids += len(n.applied)
			n.mu.Unlock()
		}
		return ids == len(nodes), fmt.Sprintf("%d of %d nodes applied the purge sent after the move", ids, len(nodes))
	})
}

// TestAdvertiseHostNameValidated: a host name is accepted as advertise
// address (it is resolved), garbage is refused naming the key.
func TestAdvertiseHostNameValidated(t *testing.T) {
	key := make([]byte, 32)
	tests := []struct {
		advertise string
		wantErr   bool
	}{
		{"edge-1", false}, {"edge-1:7946", false}, {"edge-1.cluster.internal", false}, {"10.0.0.1", false},
		{"edge_1", true}, {"edge-1:port", true}, {"-edge", true}, {"a b", true},
	}
	for _, tt := range tests {
		t.Run(tt.advertise, func(t *testing.T) {
			cfg := Config{BindAddr: "0.0.0.0:7946", AdvertiseAddr: tt.advertise, SecretKey: key}
			err := cfg.Validate()
			if (err != nil) != tt.wantErr || (err != nil && !strings.Contains(err.Error(), "advertise")) {
				t.Errorf("Validate(advertise %q) = %v, want error %v naming advertise", tt.advertise, err, tt.wantErr)
			}
		})
	}
}

// TestAdvertiseHostNameResolved: a host name resolves at start (localhost
// resolves without DNS), and the node advertises its address.
func TestAdvertiseHostNameResolved(t *testing.T) {
	cfg := fastConfig("named")
	cfg.AdvertiseAddr = "localhost"
	cfg.SecretKey = make([]byte, 32) // a host name counts as beyond loopback
	n := startNode(t, cfg)
	if got := n.GossipAddr(); !strings.HasPrefix(got, "127.0.0.1:") {
		t.Fatalf("GossipAddr = %q, want localhost's 127.0.0.1", got)
	}
}

package cluster

import (
	"fmt"
	"net"
	"testing"
	"time"
)

// TestPauseHandsTheNodeToANewProcess is the binary upgrade's gossip path:
// the old member pauses (the port is free at once: a new memberlist binds
// it), a new member with the same name and port joins, the old one closes,
// and the others list the node alive throughout the handover's end state,
// never left.
func TestPauseHandsTheNodeToANewProcess(t *testing.T) {
	nodes := startCluster(t, 2, nil)
	old := nodes[1]
	addr := old.GossipAddr()
	if err := old.Pause(); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	if err := old.Pause(); err != nil {
		t.Errorf("second Pause: %v, want a no-op", err)
	}
	if got := old.Alive(); got != 2 {
		t.Errorf("paused member's table has %d alive, want the 2 it knew (frozen)", got)
	}
	cfg := fastConfig(old.LocalName(), nodes[0].GossipAddr())
	cfg.BindAddr = addr
	cfg.PeerAddr = "127.0.0.1:21001"
	successor := startNode(t, cfg)
	if got := successor.GossipAddr(); got != addr {
		t.Fatalf("successor gossips on %q, want the paused port %q", got, addr)
	}
	if err := old.Leave(time.Second); err != nil {
		t.Errorf("Leave on a paused member: %v, want nil (no leave message)", err)
	}
	if err := old.Close(); err != nil {
		t.Errorf("Close on a paused member: %v", err)
	}
	waitAlive(t, []*node{nodes[0], successor}, 2)
	// Stable: the old process's close did not announce a leave.
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if m := memberNamed(nodes[0].Members(), old.LocalName()); m.State != StateAlive {
			t.Fatalf("n00 lists %s %s after the handover, want alive", m.Name, m.State)
		}
	}
}

// TestResumeAfterAFailedUpgrade: when the new process never comes, the
// paused member binds its port again and is alive for the others.
func TestResumeAfterAFailedUpgrade(t *testing.T) {
	nodes := startCluster(t, 2, nil)
	n := nodes[1]
	addr := n.GossipAddr()
	if err := n.Pause(); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	// The port is free for TCP and UDP (what a new process would bind).
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("paused member still holds TCP %s: %v", addr, err)
	}
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatalf("paused member still holds UDP %s: %v", addr, err)
	}
	ln.Close()
	pc.Close()
	if err := n.Resume(); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	if err := n.Resume(); err != nil {
		t.Errorf("second Resume: %v, want a no-op", err)
	}
	if got := n.GossipAddr(); got != addr {
		t.Errorf("resumed on %q, want %q", got, addr)
	}
	waitAlive(t, nodes, 2)
	// Gossip works again: a purge from n00 reaches it.
	p := Purge{ID: "after-resume", Kind: KindURL, Value: "example.com/after-resume"}
	if err := nodes[0].Purge(t.Context(), p); err != nil {
		t.Fatalf("Purge: %v", err)
	}
	eventually(t, 10*time.Second, func() (bool, string) {
		got := n.appliedCount(p.ID)
		return got == 1, fmt.Sprintf("resumed member applied the purge %d times, want 1", got)
	})
}

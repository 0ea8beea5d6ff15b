package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestNewValidatesConfig(t *testing.T) {
	key := make([]byte, 32)
	tests := []struct {
		name    string
		cfg     Config
		wantErr string // substring; "" means success
	}{
		{"loopback without key", Config{NodeName: "a", BindAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:8080"}, ""},
		{"missing PeerAddr", Config{NodeName: "a", BindAddr: "127.0.0.1:0"}, "PeerAddr"},
		{"bad PeerAddr", Config{NodeName: "a", BindAddr: "127.0.0.1:0", PeerAddr: "nope"}, "PeerAddr"},
		{"unspecified PeerAddr", Config{NodeName: "a", BindAddr: "127.0.0.1:0", PeerAddr: "[::]:8081"}, "PeerAddr"},
		{"control character in NodeName", Config{NodeName: "a\nb", BindAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:8080"}, "NodeName"},
		{"unspecified bind needs advertise", Config{NodeName: "a", BindAddr: "0.0.0.0:0", PeerAddr: "127.0.0.1:8080", SecretKey: key}, "advertise"},
		{"unspecified bind with advertise", Config{NodeName: "a", BindAddr: "0.0.0.0:0", AdvertiseAddr: "127.0.0.1", PeerAddr: "127.0.0.1:8080", SecretKey: key}, ""},
		{"non-loopback seed needs key", Config{NodeName: "a", BindAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:8080", Seeds: []string{"10.0.0.1:7946"}}, "secret_key"},
		{"non-loopback advertise needs key", Config{NodeName: "a", BindAddr: "127.0.0.1:0", AdvertiseAddr: "10.0.0.1", PeerAddr: "127.0.0.1:8080"}, "secret_key"},
		{"localhost seed is loopback", Config{NodeName: "a", BindAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:8080", Seeds: []string{"localhost:1"}, JoinRetryMax: time.Hour}, ""},
		{"short key", Config{NodeName: "a", BindAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:8080", SecretKey: []byte("short")}, "secret_key: must be 16, 24 or 32"},
		{"hostname bind", Config{NodeName: "a", BindAddr: "example.com:0", PeerAddr: "127.0.0.1:8080"}, "bind"},
		{"negative duration", Config{NodeName: "a", BindAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:8080", PurgeTTL: -1}, "PurgeTTL"},
		{"oversized metadata", Config{NodeName: "a", BindAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:8080", Region: strings.Repeat("r", 300)}, "Region"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Logger, _ = testLogger(t, slog.LevelError)
			c, err := New(tt.cfg)
			if c != nil {
				t.Cleanup(func() { _ = c.Close() })
			}
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("New: got error %v, want none", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("New: got error %v, want ErrInvalidConfig naming %q", err, tt.wantErr)
			}
		})
	}
}

func TestMembersConverge(t *testing.T) {
	for _, size := range []int{3, 10} {
		t.Run(fmt.Sprintf("%d nodes", size), func(t *testing.T) {
			nodes := startCluster(t, size, func(i int, cfg *Config) { cfg.Region = fmt.Sprintf("r%d", i%2) })
			for _, n := range nodes {
				ms := n.Members()
				if len(ms) != size {
					t.Fatalf("%s: got %d members %v, want %d", n.LocalName(), len(ms), names(ms), size)
				}
				for i, m := range ms {
					want := fmt.Sprintf("n%02d", i)
					if m.Name != want || m.State != StateAlive || m.Self != (m.Name == n.LocalName()) {
						t.Fatalf("%s: member %d = %+v, want alive %s", n.LocalName(), i, m, want)
					}
					if wantPeer := fmt.Sprintf("127.0.0.1:%d", 21000+i); m.PeerAddr != wantPeer || m.Region != fmt.Sprintf("r%d", i%2) {
						t.Fatalf("%s: member %s metadata = %+v, want peer %s region r%d", n.LocalName(), m.Name, m, wantPeer, i%2)
					}
					if m.GossipAddr != nodes[i].GossipAddr() {
						t.Fatalf("%s: member %s gossip addr got %s want %s", n.LocalName(), m.Name, m.GossipAddr, nodes[i].GossipAddr())
					}
				}
				if ok, detail := n.Joined(); !ok {
					t.Fatalf("%s: Joined() = false (%s), want true", n.LocalName(), detail)
				}
			}
		})
	}
}

func TestJoinedWhileSeedsUnreachable(t *testing.T) {
	// A port that was just free: nothing answers there.
	probe := startNode(t, fastConfig("probe"))
	dead := probe.GossipAddr()
	if err := probe.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	n := startNode(t, fastConfig("lonely", dead))
	eventually(t, 5*time.Second, func() (bool, string) {
		ok, detail := n.Joined()
		return !ok && strings.Contains(detail, "running alone") && n.JoinError() != nil,
			fmt.Sprintf("Joined() = %v %q, JoinError %v; want false, running alone", ok, detail, n.JoinError())
	})
	if got := n.Alive(); got != 1 {
		t.Fatalf("Alive() = %d, want 1 (itself)", got)
	}
	// The seed comes up later on that address: the retry loop joins it.
	cfg := fastConfig("late")
	cfg.BindAddr = dead
	late, err := New(withLogger(t, cfg))
	if err != nil {
		t.Skipf("could not rebind %s: %v", dead, err)
	}
	t.Cleanup(func() { _ = late.Close() })
	eventually(t, 10*time.Second, func() (bool, string) {
		ok, detail := n.Joined()
		return ok && n.Alive() == 2, fmt.Sprintf("Joined() = %v %q, alive %d; want true, 2", ok, detail, n.Alive())
	})
}

func withLogger(t testing.TB, cfg Config) Config {
	cfg.Logger, _ = testLogger(t, slog.LevelWarn)
	return cfg
}

func TestWrongSecretKeyIsRefused(t *testing.T) {
	keyA := []byte("0123456789abcdef")
	keyB := []byte("fedcba9876543210")
	tests := []struct {
		name   string
		joiner []byte
	}{
		{"different key", keyB},
		{"no key", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfgA := fastConfig("a")
			cfgA.SecretKey = keyA
			a := startNode(t, cfgA)
			cfgB := fastConfig("b", a.GossipAddr())
			cfgB.SecretKey = tt.joiner
			b := startNode(t, cfgB)
			eventually(t, 5*time.Second, func() (bool, string) {
				err := b.JoinError()
				return errors.Is(err, ErrSecretKeyMismatch) && strings.Contains(err.Error(), "secret key mismatch"),
					fmt.Sprintf("JoinError() = %v, want ErrSecretKeyMismatch", err)
			})
			if ok, detail := b.Joined(); ok || !strings.Contains(detail, "secret key mismatch") {
				t.Fatalf("Joined() = %v %q, want false mentioning the key mismatch", ok, detail)
			}
			eventually(t, 5*time.Second, func() (bool, string) {
				return strings.Contains(a.log.String(), "secret key mismatch"), "seed log does not mention the key mismatch"
			})
			for _, n := range []*node{a, b} {
				if got := names(n.Members()); len(got) != 1 {
					t.Fatalf("%s: members %v, want only itself", n.LocalName(), got)
				}
			}
		})
	}
}

func TestRestartWithSameName(t *testing.T) {
	tests := []struct {
		name     string
		graceful bool
	}{
		{"after leave", true},
		{"after crash", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nodes := startCluster(t, 3, nil)
			old := nodes[2]
			oldAddr := old.GossipAddr()
			if tt.graceful {
				if err := old.Leave(time.Second); err != nil {
					t.Fatalf("Leave: %v", err)
				}
				_ = old.Close()
			} else {
				// Cut it off first so that no leave message gets out: the
				// others must detect the failure.
				old.gate.closed.Store(true)
				_ = old.Close()
			}
			eventually(t, 10*time.Second, func() (bool, string) {
				m := memberNamed(nodes[0].Members(), "n02")
				return m.State != StateAlive, fmt.Sprintf("n02 is %q on n00, want dead or left", m.State)
			})
			if !tt.graceful {
				if m := memberNamed(nodes[0].Members(), "n02"); m.State != StateDead {
					t.Fatalf("crashed n02 is %q on n00, want %q", m.State, StateDead)
				}
			} else if m := memberNamed(nodes[0].Members(), "n02"); m.State != StateLeft {
				t.Fatalf("left n02 is %q on n00, want %q", m.State, StateLeft)
			}

			cfg := fastConfig("n02", nodes[0].GossipAddr())
			cfg.PeerAddr = "127.0.0.1:29999"
			restarted := startNode(t, cfg)
			if restarted.GossipAddr() == oldAddr {
				t.Fatalf("restarted node got the same address %s; the test needs a new port", oldAddr)
			}
			eventually(t, 10*time.Second, func() (bool, string) {
				for _, n := range []*node{nodes[0], nodes[1], restarted} {
					m := memberNamed(n.Members(), "n02")
					if m.State != StateAlive || m.GossipAddr != restarted.GossipAddr() || m.PeerAddr != "127.0.0.1:29999" {
						return false, fmt.Sprintf("%s sees n02 as %+v, want alive at %s", n.LocalName(), m, restarted.GossipAddr())
					}
				}
				return true, ""
			})
		})
	}
}

func memberNamed(ms []Member, name string) Member {
	for _, m := range ms {
		if m.Name == name {
			return m
		}
	}
	return Member{}
}

func TestPartitionHealsByRejoin(t *testing.T) {
	tests := []struct {
		name     string
		rejoin   time.Duration
		wantHeal bool
	}{
		{"periodic re-join heals", 300 * time.Millisecond, true},
		// Control: without the re-join memberlist alone never heals a
		// partition longer than GossipToTheDeadTime, so the case above
		// really tests the re-join.
		{"no re-join stays split", time.Hour, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nodes := startCluster(t, 3, func(_ int, cfg *Config) { cfg.RejoinInterval = tt.rejoin })
			cut := nodes[2]
			cut.gate.closed.Store(true)
			eventually(t, 15*time.Second, func() (bool, string) {
				return nodes[0].Alive() == 2 && nodes[1].Alive() == 2 && cut.Alive() == 1,
					fmt.Sprintf("n00 sees %v, n02 sees %v; want each side without the other", names(nodes[0].Members()), names(cut.Members()))
			})
			// Let GossipToTheDeadTime (300ms) pass: from then on memberlist
			// itself no longer talks to the other side.
			time.Sleep(600 * time.Millisecond)
			cut.gate.closed.Store(false)
			if tt.wantHeal {
				waitAlive(t, nodes, 3)
				return
			}
			for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
				if got := cut.Alive(); got != 1 {
					t.Fatalf("partition healed without re-join (n02 sees %v); the re-join test proves nothing", names(cut.Members()))
				}
			}
		})
	}
}

// TestOnChangeMayCallBack checks that OnChange fires on membership changes
// and may call back into the Cluster (it runs outside memberlist's locks,
// so this would deadlock otherwise).
func TestOnChangeMayCallBack(t *testing.T) {
	var self atomic.Pointer[Cluster]
	var lastSeen atomic.Int32
	cfg := fastConfig("n00")
	cfg.OnChange = func() {
		if c := self.Load(); c != nil {
			lastSeen.Store(int32(len(c.Members())))
			_, _ = c.Owner([]byte("k"))
		}
	}
	first := startNode(t, cfg)
	self.Store(first.Cluster)
	nodes := []*node{first}
	for i := 1; i < 3; i++ {
		nodes = append(nodes, startNode(t, fastConfig(fmt.Sprintf("n%02d", i), first.GossipAddr())))
	}
	waitAlive(t, nodes, 3)
	eventually(t, 5*time.Second, func() (bool, string) {
		return lastSeen.Load() == 3, fmt.Sprintf("OnChange last saw %d members, want 3", lastSeen.Load())
	})
}

func TestLeaveMovesOwnershipAndCloseIsIdempotent(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	leaver := nodes[1]
	if err := leaver.Leave(time.Second); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	if err := leaver.Leave(time.Second); err != nil {
		t.Fatalf("second Leave: %v", err)
	}
	eventually(t, 5*time.Second, func() (bool, string) {
		m := memberNamed(nodes[0].Members(), leaver.LocalName())
		return m.State == StateLeft, fmt.Sprintf("leaver is %q on n00, want left", m.State)
	})
	for i := range 200 {
		key := []byte(fmt.Sprintf("/k/%d", i))
		if o, _ := nodes[0].Owner(key); o.Name == leaver.LocalName() {
			t.Fatalf("Owner(%s) = %s after it left", key, o.Name)
		}
	}
	var wg sync.WaitGroup
	for i := range 3 { // concurrent and repeated Close calls all succeed
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := leaver.Close(); err != nil {
				t.Errorf("Close #%d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	if err := leaver.Close(); err != nil {
		t.Fatalf("Close after Close: %v", err)
	}
	if err := leaver.Leave(time.Second); !errors.Is(err, ErrClosed) {
		t.Fatalf("Leave after Close: got %v, want ErrClosed", err)
	}
}

// TestNoGoroutineLeak starts and closes a cluster and checks that every
// goroutine of ours and of memberlist is gone.
func TestNoGoroutineLeak(t *testing.T) {
	func() {
		nodes := startCluster(t, 3, nil)
		if _, _, err := nodes[0].PurgeWait(t.Context(), Purge{Kind: KindURL, Value: "/x"}); err != nil {
			t.Fatalf("PurgeWait: %v", err)
		}
		for _, n := range nodes {
			if err := n.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
		}
	}()
	eventually(t, 15*time.Second, func() (bool, string) {
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		var leaked []string
		for _, g := range strings.Split(stacks, "\n\n") {
			if strings.Contains(g, "hashicorp/memberlist") || strings.Contains(g, "edgeshield/cluster.") {
				if !strings.Contains(g, "TestNoGoroutineLeak") {
					leaked = append(leaked, g)
				}
			}
		}
		return len(leaked) == 0, fmt.Sprintf("%d goroutines left after Close:\n%s", len(leaked), strings.Join(leaked, "\n\n"))
	})
}

func TestDepartedMembersAreForgotten(t *testing.T) {
	var clock fakeClock
	clock.set(time.Now())
	cfg := fastConfig("n00")
	cfg.now = clock.now
	a := startNode(t, cfg)
	b := startNode(t, fastConfig("n01", a.GossipAddr()))
	waitAlive(t, []*node{a, b}, 2)
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	eventually(t, 5*time.Second, func() (bool, string) {
		m := memberNamed(a.Members(), "n01")
		return m.State == StateLeft, fmt.Sprintf("n01 is %q, want left", m.State)
	})
	tests := []struct {
		advance time.Duration
		want    int
	}{
		{departedRetention - time.Minute, 2}, // still listed
		{2 * time.Minute, 1},                 // forgotten; the alive self stays
	}
	for _, tt := range tests {
		clock.add(tt.advance)
		a.forgetDeparted()
		if got := a.Members(); len(got) != tt.want {
			t.Fatalf("after +%v: members %v, want %d", tt.advance, names(got), tt.want)
		}
	}
}

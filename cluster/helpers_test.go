package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// gate wraps the gossip transport so a test can cut a node off: while closed
// it drops every packet in and out and refuses every stream. It simulates a
// network partition without touching the node's own code paths.
type gate struct {
	memberlist.NodeAwareTransport
	closed  atomic.Bool
	packets chan *memberlist.Packet
	streams chan net.Conn
	done    chan struct{}
	wg      sync.WaitGroup
	once    sync.Once
}

func newGate(inner memberlist.NodeAwareTransport) *gate {
	g := &gate{
		NodeAwareTransport: inner,
		packets:            make(chan *memberlist.Packet),
		streams:            make(chan net.Conn),
		done:               make(chan struct{}),
	}
	g.wg.Add(2)
	go func() {
		defer g.wg.Done()
		for {
			select {
			case <-g.done:
				return
			case p := <-inner.PacketCh():
				if g.closed.Load() {
					continue
				}
				select {
				case g.packets <- p:
				case <-g.done:
					return
				}
			}
		}
	}()
	go func() {
		defer g.wg.Done()
		for {
			select {
			case <-g.done:
				return
			case c := <-inner.StreamCh():
				if g.closed.Load() {
					_ = c.Close()
					continue
				}
				select {
				case g.streams <- c:
				case <-g.done:
					_ = c.Close()
					return
				}
			}
		}
	}()
	return g
}

var errGateClosed = errors.New("test gate: partitioned")

func (g *gate) PacketCh() <-chan *memberlist.Packet { return g.packets }
func (g *gate) StreamCh() <-chan net.Conn           { return g.streams }

func (g *gate) WriteTo(b []byte, addr string) (time.Time, error) {
	if g.closed.Load() {
		return time.Now(), nil // silently lost, like a real partition
	}
	return g.NodeAwareTransport.WriteTo(b, addr)
}

func (g *gate) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	if g.closed.Load() {
		return time.Now(), nil
	}
	return g.NodeAwareTransport.WriteToAddress(b, a)
}

func (g *gate) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if g.closed.Load() {
		return nil, errGateClosed
	}
	return g.NodeAwareTransport.DialTimeout(addr, timeout)
}

func (g *gate) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if g.closed.Load() {
		return nil, errGateClosed
	}
	return g.NodeAwareTransport.DialAddressTimeout(a, timeout)
}

func (g *gate) Shutdown() error {
	err := g.NodeAwareTransport.Shutdown()
	g.once.Do(func() { close(g.done) })
	g.wg.Wait()
	return err
}

// syncWriter is a log sink that stops writing to the test once it ended:
// memberlist goroutines may still log briefly after Close returns.
type syncWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
	buf  bytes.Buffer // everything logged, for assertions
}

func (w *syncWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(b)
	if !w.done && testing.Verbose() {
		w.t.Logf("%s", bytes.TrimSpace(b))
	}
	return len(b), nil
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func testLogger(t testing.TB, level slog.Level) (*slog.Logger, *syncWriter) {
	w := &syncWriter{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})), w
}

// node is a test cluster member with a record of the purges it applied.
type node struct {
	*Cluster
	gate *gate
	log  *syncWriter

	mu      sync.Mutex
	applied map[string]int       // purge ID -> OnPurge calls
	at      map[string]time.Time // purge ID -> first OnPurge
}

func (n *node) appliedCount(id string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.applied[id]
}

func (n *node) appliedAt(id string) (time.Time, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	t, ok := n.at[id]
	return t, ok
}

// fastConfig returns a loopback Config with timings small enough for tests.
func fastConfig(name string, seeds ...string) Config {
	return Config{
		NodeName:       name,
		BindAddr:       "127.0.0.1:0",
		PeerAddr:       "127.0.0.1:" + fmt.Sprint(20000+len(name)),
		Region:         "test",
		Version:        "test",
		Seeds:          seeds,
		RejoinInterval: 300 * time.Millisecond,
		JoinRetryMax:   200 * time.Millisecond,
		// Generous enough for 10 nodes under -race on a loaded 2-core machine
		// (tighter values make healthy members flap suspect/dead).
		ProbeInterval:       400 * time.Millisecond,
		ProbeTimeout:        300 * time.Millisecond,
		GossipInterval:      50 * time.Millisecond,
		PushPullInterval:    2 * time.Second,
		GossipToTheDeadTime: 300 * time.Millisecond,
		DeadNodeReclaimTime: 100 * time.Millisecond,
		TCPTimeout:          time.Second,
	}
}

// startNode starts a member with a gate around its transport; it is closed
// in t.Cleanup.
func startNode(t testing.TB, cfg Config) *node {
	t.Helper()
	n := &node{applied: map[string]int{}, at: map[string]time.Time{}}
	if cfg.Logger == nil {
		cfg.Logger, n.log = testLogger(t, slog.LevelWarn)
	}
	if cfg.Tombstones == nil {
		cfg.Tombstones = &memTombstones{m: map[string]Tombstone{}}
	}
	user := cfg.OnPurge
	cfg.OnPurge = func(p Purge) {
		now := time.Now()
		n.mu.Lock()
		n.applied[p.ID]++
		if _, ok := n.at[p.ID]; !ok {
			n.at[p.ID] = now
		}
		n.mu.Unlock()
		if user != nil {
			user(p)
		}
	}
	cfg.wrapTransport = func(inner memberlist.NodeAwareTransport) memberlist.NodeAwareTransport {
		n.gate = newGate(inner)
		return n.gate
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%s): %v", cfg.NodeName, err)
	}
	n.Cluster = c
	t.Cleanup(func() { _ = c.Close() })
	return n
}

// startCluster starts size members that join through the first one and
// waits until every member sees all of them alive.
func startCluster(t testing.TB, size int, tweak func(i int, cfg *Config)) []*node {
	t.Helper()
	nodes := make([]*node, 0, size)
	var seed string
	for i := range size {
		cfg := fastConfig(fmt.Sprintf("n%02d", i))
		cfg.PeerAddr = fmt.Sprintf("127.0.0.1:%d", 21000+i)
		if seed != "" {
			cfg.Seeds = []string{seed}
		}
		if tweak != nil {
			tweak(i, &cfg)
		}
		n := startNode(t, cfg)
		if seed == "" {
			seed = n.GossipAddr()
		}
		nodes = append(nodes, n)
	}
	waitAlive(t, nodes, size)
	return nodes
}

func waitAlive(t testing.TB, nodes []*node, want int) {
	t.Helper()
	eventually(t, 15*time.Second, func() (bool, string) {
		for _, n := range nodes {
			if got := n.Alive(); got != want {
				return false, fmt.Sprintf("%s sees %d alive members, want %d: %v", n.LocalName(), got, want, names(n.Members()))
			}
		}
		return true, ""
	})
}

// eventually polls cond every 10ms until it holds or timeout passes.
func eventually(t testing.TB, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v: %s", timeout, why)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not a correctness wait
	}
}

func names(ms []Member) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Name + "/" + m.State
	}
	return out
}

func ownerNames(ms []Member) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Name
	}
	return out
}

// memTombstones is the tests' TombstoneStore: it keeps every purge by ID
// (the cluster filters by PurgeTTL). The edge uses cache.Purges, whose
// limit and expiry the cache and edge tests cover.
type memTombstones struct {
	mu sync.Mutex
	m  map[string]Tombstone
}

func (s *memTombstones) Record(t Tombstone) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[t.ID]; ok {
		return false
	}
	s.m[t.ID] = t
	return true
}

func (s *memTombstones) Append(dst []Tombstone) []Tombstone {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.m {
		dst = append(dst, t)
	}
	return dst
}

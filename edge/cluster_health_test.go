package edge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeshield/edgeshield/cluster"
	"github.com/edgeshield/edgeshield/origin"
)

// TestReadinessMinMembers: with cluster.min_members 2, a node that sees
// fewer members answers /readyz 503 saying it is partitioned, and 200
// again once a member is back (issue 13: a partitioned node said "ok:
// joined … 1 alive members").
func TestReadinessMinMembers(t *testing.T) {
	o := newTestOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	min2 := func(_ int, c *Config) { c.Cluster.MinMembers = 2 }
	nodes := newCluster(t, 2, o.srv.URL, min2)
	survivor, gone := nodes[0], nodes[1]
	readyz := "http://" + survivor.AdminAddr() + "/readyz"
	if r, b := get(t, readyz); r.StatusCode != 200 || !strings.Contains(b, `"cluster": "ok: `) {
		t.Fatalf("2 of 2 alive: /readyz = %d %s, want 200 ok", r.StatusCode, b)
	}
	if err := gone.Shutdown(t.Context()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	waitFor(t, "the survivor to see 1 alive member", 15*time.Second, func() bool { return survivor.Cluster().Alive() == 1 })
	r, b := get(t, readyz)
	if r.StatusCode != 503 || !strings.Contains(b, "partitioned: sees 1 alive members, fewer than min_members 2") {
		t.Fatalf("1 of 2 alive: /readyz = %d %s, want 503 saying partitioned", r.StatusCode, b)
	}
	// The member comes back (same name, new ports) and joins again.
	newTestNode(t, o.srv.URL, nil, func(c *Config) {
		c.Name = gone.Name()
		c.Cluster = ClusterConfig{
			Config:  cluster.Config{BindAddr: "127.0.0.1:0", Seeds: []string{survivor.GossipAddr()}, RejoinInterval: time.Second, MinMembers: 2},
			Enabled: true, PeerListen: "127.0.0.1:0",
		}
	})
	waitFor(t, "/readyz 200 once the member is back", 15*time.Second, func() bool {
		r, _ := get(t, readyz)
		return r.StatusCode == 200
	})
}

// lockedBuffer is a log sink safe for the node's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestPeerFailureLoggedAsPeer: a forward to a dead peer is logged as the
// peer's failure, naming it, not as "origin refused connection" (issue 13:
// "origin timeout: GET 10.77.0.12:7947" for a peer).
func TestPeerFailureLoggedAsPeer(t *testing.T) {
	o := newTestOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		io.WriteString(w, r.URL.Path)
	})
	var logs lockedBuffer
	nodes := newCluster(t, 2, o.srv.URL, nil)
	// A third node whose log is captured; the key is owned by node-1.
	cfg := DefaultConfig()
	cfg.Name, cfg.Listen, cfg.Admin.Listen, cfg.Origin.URL = "node-2", "127.0.0.1:0", "127.0.0.1:0", o.srv.URL
	cfg.Cluster = ClusterConfig{
		Config:  cluster.Config{BindAddr: "127.0.0.1:0", Seeds: []string{nodes[0].GossipAddr()}, RejoinInterval: time.Second},
		Enabled: true, PeerListen: "127.0.0.1:0", PeerDownFor: Duration(5 * time.Second),
		PeerConnectTimeout: Duration(500 * time.Millisecond),
	}
	n, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := n.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		testHTTP.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = n.Shutdown(ctx)
	})
	waitFor(t, "3 members alive on node-2", 15*time.Second, func() bool { return n.Cluster().Alive() == 3 })
	victim := nodes[1]
	var path string
	for i := 0; path == ""; i++ {
		p := fmt.Sprintf("/peer-fail/%d", i)
		if m, _ := n.Cluster().Owner([]byte("cdn.example" + p)); m.Name == victim.Name() {
			path = p
		}
	}
	// Abrupt: the peer listener goes away, gossip still lists it alive.
	victim.peers.srv.Shutdown()
	victim.peers.ln.Close()
	req, _ := http.NewRequest(http.MethodGet, "http://"+n.Addr()+path, nil)
	req.Host = "cdn.example"
	resp, err := testHTTP.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != path {
		t.Fatalf("GET %s = %d %q, want 200 from the origin", path, resp.StatusCode, body)
	}
	got := logs.String()
	want := "peer refused connection (" + victim.Name() + "): GET " + victim.PeerAddr()
	if !strings.Contains(got, want) || strings.Contains(got, "origin refused") {
		t.Fatalf("node log does not word the peer failure as %q (or still says origin):\n%s", want, got)
	}
}

// TestPeerErrorWording: every origin.Client error kind reads as the peer's.
func TestPeerErrorWording(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{fmt.Errorf("%w: GET 10.77.0.12:7947: timeout", origin.ErrTimeout), "peer timeout (edge-2): GET 10.77.0.12:7947: timeout"},
		{fmt.Errorf("%w: GET 10.77.0.12:7947: dial tcp: connection refused", origin.ErrRefused), "peer refused connection (edge-2): GET 10.77.0.12:7947: dial tcp: connection refused"},
		{fmt.Errorf("%w: GET 10.77.0.12:7947: EOF", origin.ErrReset), "peer reset connection (edge-2): GET 10.77.0.12:7947: EOF"},
		{fmt.Errorf("%w: 10.77.0.12:7947: all 8 connections busy", origin.ErrBusy), "peer connection limit reached (edge-2): 10.77.0.12:7947: all 8 connections busy"},
		{fmt.Errorf("%w: GET 10.77.0.12:7947: bad header", origin.ErrBadResponse), "peer sent a malformed response (edge-2): GET 10.77.0.12:7947: bad header"},
		{errors.New("origin request abandoned: context canceled"), "peer edge-2 failed: origin request abandoned: context canceled"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			e := &peerError{peer: "edge-2", err: tt.err}
			if got := e.Error(); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			if !errors.Is(e, tt.err) {
				t.Errorf("errors.Is(peerError, cause) = false")
			}
		})
	}
}

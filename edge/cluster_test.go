package edge

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeshield/edgeshield/cache"
	"github.com/edgeshield/edgeshield/cluster"
)

// newCluster starts size nodes on loopback that join through the first one,
// and waits until every node sees every member alive.
func newCluster(t testing.TB, size int, originURL string, mutate func(i int, c *Config)) []*Node {
	t.Helper()
	nodes := make([]*Node, 0, size)
	for i := 0; i < size; i++ {
		var seeds []string
		if i > 0 {
			seeds = []string{nodes[0].GossipAddr()}
		}
		n := newTestNode(t, originURL, nil, func(c *Config) {
			clusterMember(c, i, seeds)
			if mutate != nil {
				mutate(i, c)
			}
		})
		nodes = append(nodes, n)
	}
	waitFor(t, fmt.Sprintf("%d members alive on every node", size), 20*time.Second, func() bool {
		for _, n := range nodes {
			if n.Cluster().Alive() != size {
				return false
			}
		}
		return true
	})
	return nodes
}

// clusterMember configures c as member i of a test cluster joining seeds.
func clusterMember(c *Config, i int, seeds []string) {
	c.Name = fmt.Sprintf("node-%d", i)
	// Generous: under -race on 2 shared cores a 2000-client crowd
	// takes seconds to arrive while the gated origin holds every
	// flight; a timeout here would send nodes to the origin.
	c.Origin.HeaderTimeout = 60 * time.Second
	c.Cluster = ClusterConfig{
		Config:  cluster.Config{BindAddr: "127.0.0.1:0", Seeds: seeds, RejoinInterval: time.Second},
		Enabled: true, PeerListen: "127.0.0.1:0", PeerDownFor: Duration(5 * time.Second),
		// Loopback dials are refused at once when a peer is gone;
		// a short timeout only trips when -race tests share two
		// busy cores (a dial not scheduled within 500 ms), and then
		// the failover sends one more request to the origin
		// (seen in CI in TestClusterCompressOneOriginRequest).
		PeerConnectTimeout: Duration(10 * time.Second),
	}
}

var crowdHTTP = &http.Client{
	Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 1024},
	Timeout:   60 * time.Second,
}

// TestClusterFlashCrowdOneOriginRequest: concurrent cold requests for one
// object on every node cost the origin exactly ONE request (issue 5).
func TestClusterFlashCrowdOneOriginRequest(t *testing.T) {
	for _, tc := range []struct{ nodes, perNode int }{{3, 200}, {10, 200}} {
		t.Run(fmt.Sprintf("%d nodes x %d", tc.nodes, tc.perNode), func(t *testing.T) {
			gate := make(chan struct{})
			var openGate sync.Once
			body := strings.Repeat("flash-crowd ", 1000)
			o := newTestOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
				<-gate
				w.Header().Set("Cache-Control", "public, max-age=300")
				io.WriteString(w, body)
			})
			// Runs before the origin's own cleanup, which waits for handlers.
			t.Cleanup(func() { openGate.Do(func() { close(gate) }) })
			// A forward that fails before the owner answers goes to the next
			// owner, and from there to the origin: correct failover, but a
			// second origin request. Under -race with 2000 clients on 2 shared
			// cores that happened about once in 15 runs (one node counted a
			// failed forward, then fetched through the next owner); the 500 ms
			// dial timeout is the only limit short enough to trip there, so
			// this test gives dialing the same slack as the gated origin.
			nodes := newCluster(t, tc.nodes, o.srv.URL, func(_ int, c *Config) {
				c.Cluster.PeerConnectTimeout = Duration(30 * time.Second)
			})
			total := tc.nodes * tc.perNode
			var wg sync.WaitGroup
			var failed atomic.Int64
			for _, n := range nodes {
				for j := 0; j < tc.perNode; j++ {
					wg.Add(1)
					go func(url string) {
						defer wg.Done()
						// Every node serves the same site: one Host, one key.
						req, _ := http.NewRequest(http.MethodGet, url, nil)
						req.Host = "cdn.example"
						resp, err := crowdHTTP.Do(req)
						if err != nil {
							failed.Add(1)
							t.Errorf("GET: %v", err)
							return
						}
						b, _ := io.ReadAll(resp.Body)
						resp.Body.Close()
						if resp.StatusCode != 200 || string(b) != body {
							failed.Add(1)
							t.Errorf("got %d with %d bytes", resp.StatusCode, len(b))
						}
					}("http://" + n.Addr() + "/flash/object")
				}
			}
			// Open the origin once every client request has reached a node.
			waitFor(t, "all requests to arrive", 90*time.Second, func() bool {
				var got uint64
				for _, n := range nodes {
					got += n.pipe.stats.requests.Load()
				}
				return got >= uint64(total)
			})
			openGate.Do(func() { close(gate) })
			wg.Wait()
			if got := o.count("/flash/object"); got != 1 {
				var who []string
				for _, n := range nodes {
					s := n.Stats()
					who = append(who, fmt.Sprintf("%s: origin_fetches=%d peer_forwards=%d peer_forward_failures=%d hops=%d alive=%d",
						s.Node, s.OriginFetches, s.PeerForwards, s.PeerForwardFailures, s.ShieldHopsServed, s.ClusterAlive))
				}
				t.Fatalf("origin saw %d requests for %d concurrent cold requests on %d nodes, want exactly 1\n%s", got, total, tc.nodes, strings.Join(who, "\n"))
			}
			var forwards, hops uint64
			for _, n := range nodes {
				s := n.Stats()
				forwards += s.PeerForwards
				hops += s.ShieldHopsServed
			}
			t.Logf("%d nodes: %d client requests, origin requests 1, peer forwards %d, shield hops served %d, failures %d",
				tc.nodes, total, forwards, hops, failed.Load())
		})
	}
}

// TestClusterOwnerLossUnderLoad stops the owner of many keys while the other
// nodes serve misses for them: no client request fails, and ownership
// converges on the survivors. The owner first goes away abruptly (its peer
// listener refuses while gossip still calls it alive), then leaves for good.
func TestClusterOwnerLossUnderLoad(t *testing.T) {
	o := newTestOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=300")
		io.WriteString(w, r.URL.Path)
	})
	nodes := newCluster(t, 3, o.srv.URL, nil)
	victim, survivors := nodes[0], nodes[1:]

	var (
		stop     atomic.Bool
		wg       sync.WaitGroup
		requests atomic.Int64
		failures atomic.Int64
		seq      atomic.Int64
	)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 5000 && !stop.Load(); i++ { // bounded
				n := survivors[w%len(survivors)]
				path := fmt.Sprintf("/k/%d", seq.Add(1)) // always a miss: exercises forwarding
				req, _ := http.NewRequest(http.MethodGet, "http://"+n.Addr()+path, nil)
				req.Host = "cdn.example"
				resp, err := crowdHTTP.Do(req)
				requests.Add(1)
				if err != nil {
					failures.Add(1)
					t.Errorf("GET %s: %v", path, err)
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(b) != path {
					failures.Add(1)
					t.Errorf("GET %s: %d %q", path, resp.StatusCode, b)
				}
			}
		}(w)
	}
	waitFor(t, "load to start", 10*time.Second, func() bool { return requests.Load() > 200 })
	// Abrupt: the victim's peer listener goes away without a word to gossip.
	victim.peers.srv.Shutdown()
	victim.peers.ln.Close()
	before := requests.Load()
	waitFor(t, "load during the abrupt loss", 20*time.Second, func() bool { return requests.Load() > before+300 })
	// Graceful: it leaves the cluster and stops.
	if err := victim.Shutdown(t.Context()); err != nil {
		t.Logf("victim shutdown: %v", err)
	}
	before = requests.Load()
	waitFor(t, "load after the leave", 20*time.Second, func() bool { return requests.Load() > before+300 })
	stop.Store(true)
	wg.Wait()
	if f := failures.Load(); f != 0 {
		t.Fatalf("%d of %d client requests failed while the owner went away", f, requests.Load())
	}
	waitFor(t, "ownership to converge on the survivors", 20*time.Second, func() bool {
		for _, n := range survivors {
			if n.Cluster().Alive() != 2 {
				return false
			}
		}
		return true
	})
	for i := 0; i < 100; i++ {
		key := []byte(fmt.Sprintf("cdn.example/k/%d", i))
		a, _ := survivors[0].Cluster().Owner(key)
		b, _ := survivors[1].Cluster().Owner(key)
		if a.Name != b.Name || a.Name == victim.Name() {
			t.Fatalf("key %s: owners %q and %q after convergence", key, a.Name, b.Name)
		}
	}
	var failovers uint64
	for _, n := range survivors {
		failovers += n.Stats().PeerForwardFailures
	}
	t.Logf("%d requests, 0 failed; peer forward failures absorbed: %d", requests.Load(), failovers)
}

// TestClusterPurgeVisibility measures the time from a purge call on one
// node until every node answers with a fresh fetch, over many purges.
func TestClusterPurgeVisibility(t *testing.T) {
	for _, size := range []int{3, 10} {
		t.Run(fmt.Sprintf("%d nodes", size), func(t *testing.T) {
			var version atomic.Int64
			o := newTestOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Cache-Control", "max-age=600")
				fmt.Fprintf(w, "v%d", version.Load())
			})
			nodes := newCluster(t, size, o.srv.URL, nil)
			const purges = 20
			var lat []time.Duration
			for p := 0; p < purges; p++ {
				url := "/purged/object"
				for _, n := range nodes {
					warm(t, n, "http://"+n.Addr()+url, "Host: "+nodes[0].Addr())
				}
				want := fmt.Sprintf("v%d", version.Add(1))
				start := time.Now()
				issuer := nodes[p%size]
				if _, err := issuer.Purge("url", "http://"+nodes[0].Addr()+url, false, 0); err != nil {
					t.Fatal(err)
				}
				// Each node's request uses its own Host so keys match the purge.
				waitFor(t, "every node to serve the new version", 10*time.Second, func() bool {
					for _, n := range nodes {
						_, b := get(t, "http://"+n.Addr()+url, "Host: "+nodes[0].Addr())
						if b != want {
							return false
						}
					}
					return true
				})
				lat = append(lat, time.Since(start))
			}
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
			t.Logf("purge visibility on %d nodes over %d purges: p50 %s, p99 %s, max %s (target p99 <= 100ms)", size, purges, p50, p99, lat[len(lat)-1])
			if p99 > 5*time.Second {
				t.Errorf("p99 purge visibility %s: purges are not propagating", p99)
			}
		})
	}
}

// TestClusterPurgeWaitConfirms: POST /purge?wait= returns the members that
// applied the purge.
func TestClusterPurgeWaitConfirms(t *testing.T) {
	o := newTestOrigin(t, nil, static("x", "Cache-Control: max-age=60"))
	nodes := newCluster(t, 3, o.srv.URL, nil)
	r, b := do(t, http.MethodPost, "http://"+nodes[1].AdminAddr()+"/purge?tag=t1&wait=5s")
	if r.StatusCode != 200 {
		t.Fatalf("purge: %d %s", r.StatusCode, b)
	}
	for _, n := range nodes {
		if !strings.Contains(b, `"`+n.Name()+`"`) {
			t.Errorf("purge answer %s does not list %s as confirmed", b, n.Name())
		}
	}
	if strings.Contains(b, `"missing"`) {
		t.Errorf("purge answer lists missing members: %s", b)
	}
}

// TestShieldHopForgeryRefused: the peer listener only serves signed hops
// from members; a hop header on the public listener is refused too; garbage
// on the peer port leaves the node serving.
func TestShieldHopForgeryRefused(t *testing.T) {
	o := newTestOrigin(t, nil, static("x", "Cache-Control: max-age=60"))
	nodes := newCluster(t, 2, o.srv.URL, func(i int, c *Config) {
		c.Cluster.SecretKey = cluster.Key("0123456789abcdef") // 16 bytes
	})
	n := nodes[0]
	peer := "http://" + n.PeerAddr() + "/x"
	now := time.Now().Unix()
	forged := nodes[1].peers.sign(nil, "node-1", now, "GET", "evil.example", "/x") // signed for another host
	tests := []struct {
		name string
		url  string
		hdr  []string
	}{
		{"peer without hop", peer, nil},
		{"peer with garbage hop", peer, []string{shieldHopHeader + ": nonsense"}},
		{"peer with a signature for another request", peer, []string{shieldHopHeader + ": " + string(forged)}},
		{"peer with a stale signature", peer, []string{shieldHopHeader + ": " + string(nodes[1].peers.sign(nil, "node-1", now-3600, "GET", n.PeerAddr(), "/x"))}},
		{"public listener with a hop header", "http://" + n.Addr() + "/x", []string{shieldHopHeader + ": node-1;1;00"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := get(t, tt.url, tt.hdr...)
			if r.StatusCode != http.StatusForbidden {
				t.Errorf("got %d, want 403", r.StatusCode)
			}
		})
	}
	if o.count("/x") != 0 {
		t.Errorf("a refused hop reached the origin")
	}
	good := nodes[1].peers.sign(nil, "node-1", now, "GET", n.PeerAddr(), "/x")
	if r, b := get(t, peer, shieldHopHeader+": "+string(good)); r.StatusCode != 200 || b != "x" {
		t.Errorf("a correctly signed hop: %d %q, want 200", r.StatusCode, b)
	}
	// Garbage bytes on the peer port are answered 400 and dropped.
	c, err := net.Dial("tcp", n.PeerAddr())
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "\x16\x03\x01garbage\r\n\r\n")
	buf := make([]byte, 12)
	io.ReadFull(c, buf)
	c.Close()
	if !strings.HasPrefix(string(buf), "HTTP/1.1 400") {
		t.Errorf("garbage on the peer port: %q, want 400", buf)
	}
	if r, _ := get(t, "http://"+n.Addr()+"/x"); r.StatusCode != 200 {
		t.Errorf("node stopped serving after garbage: %d", r.StatusCode)
	}
}

// BenchmarkClusterFlashCrowd reports origin requests per object when 3
// nodes each get 50 concurrent cold requests for a new object (the issue's
// "origin requests per object for a 3-node flash crowd"; want 1).
func BenchmarkClusterFlashCrowd(b *testing.B) {
	o := newTestOrigin(b, nil, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(20 * time.Millisecond) // an origin that takes a moment
		w.Header().Set("Cache-Control", "max-age=300")
		io.WriteString(w, strings.Repeat("x", 16<<10))
	})
	nodes := newCluster(b, 3, o.srv.URL, nil)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		path := fmt.Sprintf("/crowd/%d", i)
		var wg sync.WaitGroup
		for _, n := range nodes {
			for j := 0; j < 50; j++ {
				wg.Add(1)
				go func(url string) {
					defer wg.Done()
					req, _ := http.NewRequest(http.MethodGet, url, nil)
					req.Host = "cdn.example"
					if resp, err := crowdHTTP.Do(req); err == nil {
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
				}("http://" + n.Addr() + path)
			}
		}
		wg.Wait()
	}
	b.StopTimer()
	b.ReportMetric(float64(o.total.Load())/float64(b.N), "origin-requests/object")
}

func TestAdvertised(t *testing.T) {
	tests := []struct {
		addr, want string
		hints      []string
	}{
		{"127.0.0.1:8080", "127.0.0.1:8080", nil},
		{"[::]:8080", "10.0.0.2:8080", []string{"", "0.0.0.0:7946", "10.0.0.2:7947"}},
		{"0.0.0.0:8080", "10.0.0.1:8080", []string{"10.0.0.1:7946"}},
		{"[::]:8080", "[::]:8080", []string{"0.0.0.0:7946"}},
	}
	for _, tt := range tests {
		if got := advertised(tt.addr, tt.hints...); got != tt.want {
			t.Errorf("advertised(%q, %q) = %q, want %q", tt.addr, tt.hints, got, tt.want)
		}
	}
}

// TestShieldHopNeverWaitsOnAForward: a shield hop arriving at a node that is
// itself forwarding the same key to another owner (membership views briefly
// disagree) goes to the origin instead of joining that forward, so two
// nodes can never wait on each other.
func TestShieldHopNeverWaitsOnAForward(t *testing.T) {
	gate := make(chan struct{})
	var once sync.Once
	o := newTestOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		<-gate
		w.Header().Set("Cache-Control", "max-age=60")
		io.WriteString(w, "ok")
	})
	t.Cleanup(func() { once.Do(func() { close(gate) }) })
	nodes := newCluster(t, 2, o.srv.URL, nil)
	// Find a path owned by node-1, so node-0 forwards it.
	var path string
	for i := 0; i < 1000 && path == ""; i++ {
		p := fmt.Sprintf("/loop/%d", i)
		if m, _ := nodes[0].Cluster().Owner([]byte("cdn.example" + p)); m.Name == "node-1" {
			path = p
		}
	}
	if path == "" {
		t.Fatal("no key owned by node-1")
	}
	done := make(chan struct{}, 2)
	go func() { // public request on node-0: a forward flight to node-1
		get(t, "http://"+nodes[0].Addr()+path, "Host: cdn.example")
		done <- struct{}{}
	}()
	waitFor(t, "node-1 to reach the origin", 10*time.Second, func() bool { return o.count(path) == 1 })
	go func() { // a hop to node-0 for the same key, as if node-1 thought node-0 owned it
		sig := nodes[1].peers.sign(nil, "node-1", time.Now().Unix(), "GET", "cdn.example", path)
		get(t, "http://"+nodes[0].PeerAddr()+path, "Host: cdn.example", shieldHopHeader+": "+string(sig))
		done <- struct{}{}
	}()
	waitFor(t, "the hop to go to the origin rather than wait on node-0's forward", 10*time.Second, func() bool { return o.count(path) == 2 })
	once.Do(func() { close(gate) })
	<-done
	<-done
}

// TestStartUnderLoadServesOnlyWhenBuilt (issue 13): clients hammer the
// public and admin ports of a clustered node while it starts, 50 times.
// Before, the public listener served before the cluster glue was built: a
// miss met a nil member list (a recovered panic, 500) and /readyz answered
// 500. Now nothing serves until every part exists.
func TestStartUnderLoadServesOnlyWhenBuilt(t *testing.T) {
	o := newTestOrigin(t, nil, static("x", "Cache-Control: no-store"))
	freePort := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	var served, bad atomic.Int64
	for round := 0; round < 50; round++ {
		pub, adm := freePort(), freePort()
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					url := fmt.Sprintf("http://%s/miss/%d", pub, i)
					if i%3 == 0 {
						url = "http://" + adm + "/readyz"
					}
					resp, err := client.Get(url)
					if err != nil {
						time.Sleep(time.Millisecond) // not listening yet
						continue
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					served.Add(1)
					if resp.StatusCode >= 500 && resp.StatusCode != 503 {
						bad.Add(1)
						t.Errorf("round %d: %s answered %d", round, url, resp.StatusCode)
					}
				}
			}()
		}
		n := newTestNode(t, o.srv.URL, nil, func(c *Config) {
			c.Name = fmt.Sprintf("start-%d", round)
			c.Listen, c.Admin.Listen = pub, adm
			c.Cluster = ClusterConfig{Config: cluster.Config{BindAddr: "127.0.0.1:0", RejoinInterval: time.Second},
				Enabled: true, PeerListen: "127.0.0.1:0", PeerDownFor: Duration(5 * time.Second), PeerConnectTimeout: Duration(500 * time.Millisecond)}
		})
		waitFor(t, "requests to be served", 5*time.Second, func() bool { return n.Stats().Requests > 20 })
		close(stop)
		wg.Wait()
		if p := n.Stats().Panics; p != 0 {
			t.Fatalf("round %d: %d panics recovered while starting under load", round, p)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := n.Shutdown(ctx)
		cancel()
		if err != nil {
			t.Fatalf("round %d: shutdown: %v", round, err)
		}
	}
	if bad.Load() != 0 || served.Load() == 0 {
		t.Errorf("%d answers, %d of them 5xx other than 503", served.Load(), bad.Load())
	}
}

// TestClusterTombstonesOneBoundedSet: the tombstones lookups check are the
// ones the cluster exchanges, under one limit. More purges than the limit
// leave one bounded set, and a node that joins afterwards receives exactly
// that set in push/pull state.
func TestClusterTombstonesOneBoundedSet(t *testing.T) {
	o := newTestOrigin(t, nil, static("x", "Cache-Control: max-age=60"))
	first := newCluster(t, 1, o.srv.URL, nil)[0]
	const extra = 500
	for i := range cache.DefaultMaxTombstones + extra {
		if _, err := first.Purge("tag", fmt.Sprint("t", i), false, 0); err != nil {
			t.Fatalf("purge %d: %v", i, err)
		}
	}
	ids := func(n *Node) []string {
		var out []string
		for _, ts := range n.pipe.purges.Tombstones(nil) {
			out = append(out, ts.ID)
		}
		sort.Strings(out)
		return out
	}
	kept := ids(first)
	var exchanged []string
	for _, p := range first.purger.cluster.Tombstones() {
		exchanged = append(exchanged, p.ID)
	}
	sort.Strings(exchanged)
	// Over the limit the oldest tenth is dropped at once (cache.Purges).
	if n := first.pipe.purges.Len(); n > cache.DefaultMaxTombstones || n < cache.DefaultMaxTombstones*8/10 ||
		len(kept) != n || !slices.Equal(kept, exchanged) {
		t.Fatalf("after %d purges: lookups hold %d, listed %d, cluster exchanges %d; want one set of 80-100%% of %d",
			cache.DefaultMaxTombstones+extra, n, len(kept), len(exchanged), cache.DefaultMaxTombstones)
	}
	joiner := newTestNode(t, o.srv.URL, nil, func(c *Config) {
		c.Name = "joiner"
		c.Cluster = ClusterConfig{
			Config:  cluster.Config{BindAddr: "127.0.0.1:0", Seeds: []string{first.GossipAddr()}, RejoinInterval: time.Second},
			Enabled: true, PeerListen: "127.0.0.1:0", PeerDownFor: Duration(5 * time.Second),
			PeerConnectTimeout: Duration(500 * time.Millisecond),
		}
	})
	waitFor(t, "the joiner to hold the first node's tombstones", 20*time.Second, func() bool {
		return joiner.pipe.purges.Len() == len(kept)
	})
	if got := ids(joiner); !slices.Equal(got, kept) {
		t.Fatalf("joiner's tombstones: got %d (first %v…) want the first node's %d", len(got), got[:min(3, len(got))], len(kept))
	}
}

// TestClusterTagPurgeReachesMemberCopies: a member stores the owner's
// answer, not the origin's; the owner must pass the object's surrogate keys
// on a shield hop (never to clients), or a purge by tag misses every copy
// outside the owner and members keep serving purged content.
func TestClusterTagPurgeReachesMemberCopies(t *testing.T) {
	var version atomic.Int64
	o := newTestOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("Surrogate-Key", "product-7 catalog")
		fmt.Fprintf(w, "v%d", version.Load())
	})
	nodes := newCluster(t, 3, o.srv.URL, nil)
	const host = "Host: shop.example"
	for _, n := range nodes {
		r, b := warm(t, n, "http://"+n.Addr()+"/p/7", host)
		if b != "v0" || r.Header.Get("Surrogate-Key") != "" {
			t.Fatalf("%s: %q Surrogate-Key %q, want v0 and no Surrogate-Key to the client", n.Name(), b, r.Header.Get("Surrogate-Key"))
		}
	}
	for _, n := range nodes {
		if r, _ := get(t, "http://"+n.Addr()+"/p/7", host); !isHit(r) {
			t.Fatalf("%s: %q, want every node to hold a copy before the purge", n.Name(), csOf(r))
		}
	}
	version.Store(1)
	if _, err := nodes[1].Purge("tag", "product-7", true, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if _, b := get(t, "http://"+n.Addr()+"/p/7", host); b != "v1" {
			t.Errorf("%s: %q after purging tag product-7, want v1 (its copy was not tagged)", n.Name(), b)
		}
	}
}

package edge

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeshield/edgeshield/cluster"
)

// warmTestOrigin serves every path as a fresh object (max-age=300) whose
// body names the path; "/stale/..." objects arrive already stale but within
// stale-while-revalidate, so a cache serving them would revalidate them
// at the origin in the background.
func warmTestOrigin(t *testing.T) *testOrigin {
	return newTestOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		if strings.HasPrefix(r.URL.Path, "/stale/") {
			w.Header().Set("Cache-Control", "max-age=1, stale-while-revalidate=600")
			w.Header().Set("Age", "5")
		} else {
			w.Header().Set("Cache-Control", "public, max-age=300")
		}
		io.WriteString(w, "object "+r.URL.Path)
	})
}

const warmHost = "Host: cdn.example"

// getVia requests path from node n (Host cdn.example) and checks the body.
func getVia(t *testing.T, n *Node, path string) *http.Response {
	t.Helper()
	r, body := get(t, "http://"+n.Addr()+path, warmHost)
	if r.StatusCode != 200 || body != "object "+path {
		t.Fatalf("GET %s via %s: %d %q", path, n.Name(), r.StatusCode, body)
	}
	return r
}

// settle waits until no node has a fill in flight.
func settle(t *testing.T, nodes ...*Node) {
	t.Helper()
	waitFor(t, "fills to be stored", 10*time.Second, func() bool {
		for _, n := range nodes {
			if n.pipe.flights.Len() != 0 {
				return false
			}
		}
		return true
	})
}

// ownedBy lists the paths whose owner is member name, in n's view.
func ownedBy(n *Node, name string, paths []string) []string {
	var out []string
	for _, p := range paths {
		if m, ok := n.Cluster().Owner([]byte("cdn.example" + p)); ok && m.Name == name {
			out = append(out, p)
		}
	}
	return out
}

func warmPaths(prefix string, count int) []string {
	out := make([]string, count)
	for i := range out {
		out[i] = fmt.Sprintf("/%s/%d", prefix, i)
	}
	return out
}

// warmFileOf writes a warm file listing paths (host cdn.example).
func warmFileOf(t *testing.T, paths []string) string {
	t.Helper()
	var items []warmItem
	for _, p := range paths {
		items = append(items, warmItem{Host: "cdn.example", Target: p, Uses: 1})
	}
	file := filepath.Join(t.TempDir(), "warm.jsonl")
	if err := writeWarmFile(file, items); err != nil {
		t.Fatal(err)
	}
	return file
}

// restartMember shuts member i down (its hand-over runs) and starts a new
// node with its name, joining through another member; mutate is
// newCluster's. It returns once every node sees every member alive.
func restartMember(t *testing.T, nodes []*Node, i int, originURL string, mutate func(int, *Config)) *Node {
	t.Helper()
	testHTTP.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := nodes[i].Shutdown(ctx); err != nil {
		t.Fatalf("shutdown %s: %v", nodes[i].Name(), err)
	}
	seed := nodes[(i+1)%len(nodes)]
	waitFor(t, "the others to see the member leave", 20*time.Second, func() bool {
		return seed.Cluster().Alive() == len(nodes)-1
	})
	return restartAfterShutdown(t, nodes, i, originURL, mutate)
}

func waitWarmStart(t *testing.T, n *Node) WarmStats {
	t.Helper()
	waitFor(t, n.Name()+"'s start-up warm-up", 30*time.Second, func() bool { return n.Warm().StartDone })
	return n.Warm()
}

// TestWarmRestartPullsOwnedKeysFromPeers: objects filled through every
// member; a restarted member pulls its peers' hot keys, prefetches the
// ones it owns from their caches, and then serves them as hits, while the
// origin sees no request at all after the fill.
func TestWarmRestartPullsOwnedKeysFromPeers(t *testing.T) {
	o := warmTestOrigin(t)
	nodes := newCluster(t, 3, o.srv.URL, nil)
	paths := warmPaths("obj", 60)
	for _, p := range paths {
		for _, n := range nodes {
			getVia(t, n, p)
		}
	}
	settle(t, nodes...)
	// One per object, or a few more: the store may drop a Set under
	// contention (ristretto), and the next request then refetches.
	base := o.total.Load()
	owned := ownedBy(nodes[0], "node-2", paths)
	if len(owned) < 5 {
		t.Fatalf("node-2 owns %d of %d objects; the test needs a share", len(owned), len(paths))
	}
	r := restartMember(t, nodes, 2, o.srv.URL, nil)
	ws := waitWarmStart(t, r)
	// Its owned objects (they would cost the origin) and the peers' others
	// (it held copies of those before too).
	if ws.Fetched < uint64(len(paths))*9/10 || ws.Fetched > uint64(len(paths)) {
		t.Errorf("restarted node prefetched %d objects, want the %d hot ones (at least 90%%)", ws.Fetched, len(paths))
	}
	if st := r.Stats(); st.WarmPrefetched != ws.Fetched || st.WarmBytes != ws.Bytes || st.HotKeys < int(ws.Fetched) {
		t.Errorf("/stats: hot_keys %d, warm_prefetched %d, warm_bytes %d; want the warm-up's %d objects, %d bytes",
			st.HotKeys, st.WarmPrefetched, st.WarmBytes, ws.Fetched, ws.Bytes)
	}
	hits := 0
	for _, p := range paths {
		if isHit(getVia(t, r, p)) {
			hits++
		}
	}
	settle(t, nodes...)
	if hits < len(paths)*9/10 {
		t.Errorf("restarted node served %d of %d objects as hits, want at least 90%%", hits, len(paths))
	}
	if got := o.total.Load(); got-base > int64(len(owned))/10 {
		t.Errorf("origin requests went from %d to %d across the restart, want at most 10%% of the %d owned objects", base, got, len(owned))
	}
	t.Logf("owned %d, prefetched %d (%d bytes), hits %d, origin requests %d after the fill, %d after the restart", len(owned), ws.Fetched, ws.Bytes, hits, base, o.total.Load())
}

// TestWarmHandOverOnDrain: objects only the draining member holds (its
// own clients fetched what it owns) are prefetched from it by their new
// owners during its drain delay, and come back to it from them when it
// restarts: the origin sees each object once in all.
func TestWarmHandOverOnDrain(t *testing.T) {
	o := warmTestOrigin(t)
	drainDelay := func(i int, c *Config) {
		if i == 2 {
			c.Server.DrainDelay = Duration(2 * time.Second)
		}
	}
	nodes := newCluster(t, 3, o.srv.URL, drainDelay)
	only := ownedBy(nodes[0], "node-2", warmPaths("own", 90))
	if len(only) < 5 {
		t.Fatalf("node-2 owns %d objects; the test needs a share", len(only))
	}
	for _, p := range only {
		getVia(t, nodes[2], p) // owner and requester: nobody else has a copy
	}
	// In node-2's list too, but node-0's: node-1 must not take them over.
	for _, p := range ownedBy(nodes[0], "node-0", warmPaths("zero", 30)) {
		getVia(t, nodes[2], p)
	}
	settle(t, nodes...)
	base := o.total.Load()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	testHTTP.CloseIdleConnections()
	if err := nodes[2].Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	taken := nodes[0].Warm().Fetched + nodes[1].Warm().Fetched
	if taken < uint64(len(only))*9/10 || taken > uint64(len(only)) {
		t.Errorf("new owners prefetched %d objects, want the drained member's %d (at least 90%%) and no others", taken, len(only))
	}
	waitFor(t, "node-2 gone", 20*time.Second, func() bool { return nodes[0].Cluster().Alive() == 2 })
	for _, p := range only {
		getVia(t, nodes[0], p)
		getVia(t, nodes[1], p)
	}
	settle(t, nodes[0], nodes[1])
	if got := o.total.Load(); got > base+int64(len(only))/10 {
		t.Errorf("after the hand-over the origin got %d more requests for %d objects, want at most 10%%", got-base, len(only))
	}
	base = o.total.Load()
	r := restartAfterShutdown(t, nodes, 2, o.srv.URL, drainDelay)
	ws := waitWarmStart(t, r)
	if ws.Fetched < uint64(len(only))*9/10 {
		t.Errorf("restarted node prefetched %d of its %d objects back from the new owners, want at least 90%%", ws.Fetched, len(only))
	}
	if got := o.total.Load(); got != base {
		t.Errorf("the restart's warm-up cost the origin %d requests, want 0", got-base)
	}
	t.Logf("%d objects: handed over %d, taken back %d", len(only), taken, ws.Fetched)
}

// restartAfterShutdown is restartMember for a member the test already shut
// down (nodes[i] nil).
func restartAfterShutdown(t *testing.T, nodes []*Node, i int, originURL string, mutate func(int, *Config)) *Node {
	t.Helper()
	seed := nodes[(i+1)%len(nodes)]
	nodes[i] = newTestNode(t, originURL, nil, func(c *Config) {
		clusterMember(c, i, []string{seed.GossipAddr()})
		if mutate != nil {
			mutate(i, c)
		}
	})
	waitFor(t, "every member alive on every node", 20*time.Second, func() bool {
		for _, n := range nodes {
			if n.Cluster().Alive() != len(nodes) {
				return false
			}
		}
		return true
	})
	return nodes[i]
}

// TestWarmPrefetchOnlyIfCached: a warm list naming objects no peer has,
// and one a peer holds only stale (within stale-while-revalidate): the
// peers answer 504 to the only-if-cached, min-fresh hops, the warm-up moves
// on, and the origin sees no request for any of them, while the objects a
// peer has are prefetched.
func TestWarmPrefetchOnlyIfCached(t *testing.T) {
	o := warmTestOrigin(t)
	nodes := newCluster(t, 2, o.srv.URL, nil)
	have, nowhere := warmPaths("have", 20), warmPaths("nowhere", 10)
	for _, p := range append(append([]string{}, have...), "/stale/1") {
		getVia(t, nodes[0], p)
	}
	settle(t, nodes...)
	base := o.total.Load()
	file := warmFileOf(t, append(append(append([]string{}, have...), nowhere...), "/stale/1"))
	n := newTestNode(t, o.srv.URL, nil, func(c *Config) {
		clusterMember(c, 2, []string{nodes[0].GossipAddr()})
		c.Cache.WarmFile = file
	})
	ws := waitWarmStart(t, n)
	if ws.Fetched != uint64(len(have)) {
		t.Errorf("prefetched %d objects, want the %d a peer has", ws.Fetched, len(have))
	}
	if ws.Absent != uint64(len(nowhere)+1) {
		t.Errorf("%d objects found on no peer, want %d (the absent ones and the stale one)", ws.Absent, len(nowhere)+1)
	}
	settle(t, append(nodes, n)...)
	if got := o.total.Load(); got != base {
		t.Errorf("warming cost the origin %d requests (stale /stale/1: %d), want 0", got-base, o.count("/stale/1"))
	}
	for _, p := range have {
		if r := getVia(t, n, p); !isHit(r) {
			t.Errorf("GET %s after warm-up: Cache-Status %q, want a hit", p, csOf(r))
		}
	}
}

// TestWarmFileSingleNode: a node without a cluster writes its hot keys on
// shutdown and, restarted, prefetches them (from the origin: it has no
// peers), so its clients get hits at once.
func TestWarmFileSingleNode(t *testing.T) {
	o := warmTestOrigin(t)
	file := filepath.Join(t.TempDir(), "warm.jsonl")
	cfg := func(c *Config) { c.Cache.WarmFile = file }
	n := startTestNode(t, o.srv.URL, nil, cfg)
	paths := warmPaths("file", 25)
	for _, p := range paths {
		getVia(t, n, p)
	}
	settle(t, n)
	testHTTP.CloseIdleConnections()
	if err := n.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	items, err := readWarmFile(file)
	if err != nil || len(items) != len(paths) {
		t.Fatalf("warm file holds %d items (err %v), want %d", len(items), err, len(paths))
	}
	n = newTestNode(t, o.srv.URL, nil, cfg)
	if ws := waitWarmStart(t, n); ws.Fetched != uint64(len(paths)) {
		t.Fatalf("prefetched %d objects, want %d", ws.Fetched, len(paths))
	}
	for _, p := range paths {
		if r := getVia(t, n, p); !isHit(r) {
			t.Errorf("GET %s after warm-up: Cache-Status %q, want a hit", p, csOf(r))
		}
		if c := o.count(p); c != 2 {
			t.Errorf("origin saw %s %d times, want 2 (the first fill, the warm-up)", p, c)
		}
	}
}

// TestWarmShutdownStopsWarmUp: Shutdown during a long (slowly paced)
// warm-up stops it at once; nothing it started outlives the node.
func TestWarmShutdownStopsWarmUp(t *testing.T) {
	o := warmTestOrigin(t)
	file := warmFileOf(t, warmPaths("slow", 1000))
	n := startTestNode(t, o.srv.URL, nil, func(c *Config) {
		c.Cache.WarmFile = file
		c.Cache.WarmRate = 5
		c.Cache.WarmTimeout = Duration(time.Hour)
	})
	waitFor(t, "the warm-up to start", 10*time.Second, func() bool { return n.Warm().Fetched >= 2 })
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Shutdown took %s during a warm-up, want it stopped at once", took)
	}
	if left := n.bg.running.Load(); left != 0 {
		t.Errorf("%d background tasks outlived Shutdown", left)
	}
	if !n.Warm().StartDone {
		t.Error("the start-up warm-up did not end")
	}
	if got := o.total.Load(); got > 20 {
		t.Errorf("origin got %d warm requests, want the few paced ones before Shutdown", got)
	}
	// The file is rewritten from what this node saw: its hot keys.
	if data, err := os.ReadFile(file); err != nil || len(data) == 0 {
		t.Errorf("warm file after shutdown: %d bytes, err %v", len(data), err)
	}
}

// TestWarmOffIsCold: cache.warm_keys 0 keeps no table and warms nothing.
func TestWarmOffIsCold(t *testing.T) {
	o := warmTestOrigin(t)
	nodes := newCluster(t, 2, o.srv.URL, func(_ int, c *Config) { c.Cache.WarmKeys = 0 })
	for _, p := range warmPaths("cold", 20) {
		getVia(t, nodes[0], p)
		getVia(t, nodes[1], p)
	}
	settle(t, nodes...)
	r := restartMember(t, nodes, 1, o.srv.URL, func(_ int, c *Config) { c.Cache.WarmKeys = 0 })
	if r.pipe.hot != nil || r.Warm() != (WarmStats{}) {
		t.Fatalf("warm restarts off, yet a table %v or counters %+v", r.pipe.hot != nil, r.Warm())
	}
	// The peer listener answers the endpoint with nothing to hand.
	body, err := nodes[0].peers.call(t.Context(), cluster.Member{Name: r.Name(), PeerAddr: r.PeerAddr()}, warmKeysPath, 1<<10)
	if err != nil || len(body) != 0 {
		t.Fatalf("warm keys of a node with warm restarts off: %q, %v", body, err)
	}
}

// TestWarmEndpointsAreSigned: the warm endpoints answer members only.
func TestWarmEndpointsAreSigned(t *testing.T) {
	o := warmTestOrigin(t)
	nodes := newCluster(t, 2, o.srv.URL, nil)
	for _, uri := range []string{warmKeysPath, warmNotifyPath + "?name=x&peer=127.0.0.1:1"} {
		r, _ := get(t, "http://"+nodes[0].PeerAddr()+uri)
		if r.StatusCode != http.StatusForbidden {
			t.Errorf("unsigned GET %s: %d, want 403", uri, r.StatusCode)
		}
		r, _ = get(t, "http://"+nodes[0].PeerAddr()+uri, shieldHopHeader+": node-9;1;00")
		if r.StatusCode != http.StatusForbidden {
			t.Errorf("forged GET %s: %d, want 403", uri, r.StatusCode)
		}
	}
	// A member's hand-over names its own peer address, nothing else.
	body, err := nodes[1].peers.call(t.Context(), cluster.Member{Name: "node-0", PeerAddr: nodes[0].PeerAddr()}, warmNotifyPath+"?name=node-1&peer=127.0.0.1:1", 1<<10)
	if err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("hand-over naming another address: %q, %v; want 400", body, err)
	}
	getVia(t, nodes[0], "/signed")
	settle(t, nodes...)
	body, err = nodes[1].peers.call(t.Context(), cluster.Member{Name: "node-0", PeerAddr: nodes[0].PeerAddr()}, warmKeysPath, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	items, err := parseWarmItems(body)
	if err != nil || len(items) != 1 || items[0].Target != "/signed" || items[0].Host != "cdn.example" {
		t.Fatalf("signed GET %s: %+v, %v; want the one hot key", warmKeysPath, items, err)
	}
}

// TestDedupeWarmItemsOrder: repeated variants merge (uses summed, first
// kept), first items come before the others, then the most used.
func TestDedupeWarmItemsOrder(t *testing.T) {
	got := dedupeWarmItems([]warmItem{
		{Host: "h", Target: "/a", Uses: 5},
		{Host: "h", Target: "/b", Uses: 1, first: true},
		{Host: "h", Target: "/a", Uses: 7},
		{Host: "h", Target: "/a", AcceptEncoding: "gzip", Uses: 3},
		{Host: "h", Target: "/c", Uses: 100},
		{Host: "h", Target: "/b", Uses: 2},
	}, 3)
	want := []string{"/b 3 true", "/c 100 false", "/a 12 false"}
	if len(got) != len(want) {
		t.Fatalf("got %d items %+v, want %v", len(got), got, want)
	}
	for i, it := range got {
		if s := fmt.Sprintf("%s %d %v", it.Target, it.Uses, it.first); s != want[i] {
			t.Errorf("item %d: %s, want %s", i, s, want[i])
		}
	}
}

func TestParseWarmItemsNamesTheLine(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{"host":"a","target":"/x","uses":1}` + "\n{bad\n", "line 2"},
		{"\n" + `{"host":"a","target":"x"}`, "line 2: want a host and an origin-form target"},
		{`{"host":"","target":"/x"}`, "line 1"},
	} {
		items, err := parseWarmItems([]byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parse %q: err %v, want %q", tc.in, err, tc.want)
		}
		if strings.HasPrefix(tc.in, `{"host":"a","target":"/x"`) && len(items) != 1 {
			t.Errorf("parse %q kept %d items before the bad line, want 1", tc.in, len(items))
		}
	}
}

func TestPacerSpacesEvents(t *testing.T) {
	p := newPacer(200) // 5 ms apart
	start := time.Now()
	for range 11 {
		if err := p.wait(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if took := time.Since(start); took < 50*time.Millisecond {
		t.Errorf("11 events at 200/s took %s, want at least 50ms", took)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	slow := newPacer(0.001)
	slow.wait(ctx) // the first is immediate
	if err := slow.wait(ctx); err == nil {
		t.Error("wait after cancel: nil, want the context's error")
	}
}

// TestWarmKeepsEncodingVariants: objects the edge compresses, asked for by
// browsers (Accept-Encoding normalised to "br, gzip"), come back after a
// restart as that variant: the restarted member's browser requests hit.
func TestWarmKeepsEncodingVariants(t *testing.T) {
	o := newTestOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Cache-Control", "public, max-age=300")
		io.WriteString(w, strings.Repeat("compressible text "+r.URL.Path+" ", 50))
	})
	nodes := newCluster(t, 2, o.srv.URL, nil)
	const browser = "Accept-Encoding: gzip, deflate, br, zstd"
	paths := warmPaths("text", 20)
	for _, p := range paths {
		for _, n := range nodes {
			if r, _ := get(t, "http://"+n.Addr()+p, warmHost, browser); r.Header.Get("Content-Encoding") != "br" {
				t.Fatalf("GET %s via %s: Content-Encoding %q, want br (the edge compresses)", p, n.Name(), r.Header.Get("Content-Encoding"))
			}
		}
	}
	settle(t, nodes...)
	base := o.total.Load()
	r := restartMember(t, nodes, 1, o.srv.URL, nil)
	if ws := waitWarmStart(t, r); ws.Fetched < uint64(len(paths))*9/10 {
		t.Errorf("prefetched %d of %d variants", ws.Fetched, len(paths))
	}
	hits := 0
	for _, p := range paths {
		resp, _ := get(t, "http://"+r.Addr()+p, warmHost, browser)
		if isHit(resp) && resp.Header.Get("Content-Encoding") == "br" {
			hits++
		}
	}
	if hits < len(paths)*9/10 {
		t.Errorf("%d of %d browser requests hit the br variant after the restart, want at least 90%%", hits, len(paths))
	}
	if got := o.total.Load(); got != base {
		t.Errorf("the restart cost the origin %d requests, want 0", got-base)
	}
}

// TestWarmMissesAskPeersFirst: while a warm-up runs, a miss the node would
// send to the origin for a key it owns asks a peer's cache first; a
// request that asks for the origin's word (no-cache) still goes there.
func TestWarmMissesAskPeersFirst(t *testing.T) {
	o := warmTestOrigin(t)
	nodes := newCluster(t, 2, o.srv.URL, nil)
	paths := warmPaths("pf", 40)
	for _, p := range paths {
		getVia(t, nodes[0], p)
	}
	settle(t, nodes...)
	file := warmFileOf(t, warmPaths("absent", 1000)) // a long warm-up: 1000 keys nobody has, 2 per second
	n := newTestNode(t, o.srv.URL, nil, func(c *Config) {
		clusterMember(c, 2, []string{nodes[0].GossipAddr()})
		c.Cache.WarmFile, c.Cache.WarmRate, c.Cache.WarmTimeout = file, 2, Duration(time.Hour)
	})
	waitFor(t, "the warm-up to run", 10*time.Second, n.pipe.warming)
	owned := ownedBy(n, "node-2", paths)
	if len(owned) < 4 {
		t.Fatalf("node-2 owns %d of %d objects; the test needs a few", len(owned), len(paths))
	}
	base := o.total.Load()
	for _, p := range owned[1:] {
		getVia(t, n, p)
	}
	if got := o.total.Load(); got != base {
		t.Errorf("misses for owned objects while warming cost the origin %d requests, want 0 (a peer had them)", got-base)
	}
	if r, _ := get(t, "http://"+n.Addr()+owned[0], warmHost, "Cache-Control: no-cache"); r.StatusCode != 200 || o.count(owned[0]) != 2 {
		t.Errorf("no-cache request while warming: %d, origin saw %s %d times, want 2 (it asks for the origin)", r.StatusCode, owned[0], o.count(owned[0]))
	}
	if !n.pipe.warming() {
		t.Fatal("the warm-up ended before the test did; the checks above prove nothing")
	}
}

package edge

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestWarmRollingRestartMeasure measures what a rolling restart of a
// 3-node cluster under a Zipf workload costs the origin, warm
// (cache.warm_keys on) against cold (off), and how fast the hit ratio comes
// back. It is a measurement, not a check: it runs only with
// EDGESHIELD_WARM_MEASURE=1 and reports (bench/RESULTS.md "Warm restart"):
//
//	EDGESHIELD_WARM_MEASURE=1 go test -count=1 -run TestWarmRollingRestartMeasure -v ./edge
//
// EDGESHIELD_WARM_RATE (requests/s, default 400) and EDGESHIELD_WARM_OBJECTS
// (default 2000) tune the load, EDGESHIELD_WARM_OBJECT_RATE cache.warm_rate.
func TestWarmRollingRestartMeasure(t *testing.T) {
	if os.Getenv("EDGESHIELD_WARM_MEASURE") != "1" {
		t.Skip("a measurement: set EDGESHIELD_WARM_MEASURE=1 (see bench/RESULTS.md)")
	}
	rate, objects := envInt("EDGESHIELD_WARM_RATE", 400), envInt("EDGESHIELD_WARM_OBJECTS", 2000)
	for _, mode := range []string{"cold", "warm"} {
		t.Run(mode, func(t *testing.T) { measureRollingRestart(t, mode == "warm", rate, objects) })
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// zipfLoad sends rate requests/s, round robin over the nodes that are up,
// for Zipf-distributed objects (s = 1.1), and counts answers per second:
// all, and hits (the answering node's Cache-Status says hit).
type zipfLoad struct {
	nodes   []*Node
	up      []atomic.Bool
	mu      sync.Mutex // guards nodes
	start   time.Time
	total   [][600]atomic.Int64 // per node, per second since start
	hits    [][600]atomic.Int64
	failed  atomic.Int64
	stop    atomic.Bool
	wg      sync.WaitGroup
	objects int
}

func startZipfLoad(nodes []*Node, rate, objects int) *zipfLoad {
	l := &zipfLoad{nodes: nodes, up: make([]atomic.Bool, len(nodes)), start: time.Now(), objects: objects,
		total: make([][600]atomic.Int64, len(nodes)), hits: make([][600]atomic.Int64, len(nodes))}
	for i := range l.up {
		l.up[i].Store(true)
	}
	const workers = 8
	for w := range workers {
		l.wg.Go(func() { l.run(w, time.Second*workers/time.Duration(rate)) })
	}
	return l
}

func (l *zipfLoad) run(w int, every time.Duration) {
	rng := rand.New(rand.NewPCG(uint64(w), 42))
	z := rand.NewZipf(rng, 1.1, 1, uint64(l.objects-1))
	client := &http.Client{Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 4}, Timeout: 20 * time.Second}
	defer client.CloseIdleConnections()
	next := time.Now()
	for i := 0; !l.stop.Load() && i < 10_000_000; i++ { // bounded
		next = next.Add(every)
		time.Sleep(time.Until(next))
		l.mu.Lock()
		k := (w + i) % len(l.nodes)
		for j := 0; j < len(l.nodes) && !l.up[k].Load(); j++ {
			k = (k + 1) % len(l.nodes)
		}
		n := l.nodes[k]
		l.mu.Unlock()
		l.one(client, k, n, fmt.Sprintf("/z/%d", z.Uint64()))
	}
}

func (l *zipfLoad) one(client *http.Client, k int, n *Node, path string) {
	req, _ := http.NewRequest(http.MethodGet, "http://"+n.Addr()+path, nil)
	req.Host = "cdn.example"
	resp, err := client.Do(req)
	if err != nil {
		l.failed.Add(1)
		return
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	sec := min(int(time.Since(l.start)/time.Second), len(l.total[k])-1)
	l.total[k][sec].Add(1)
	if strings.Contains(resp.Header.Get("Cache-Status"), "; hit") {
		l.hits[k][sec].Add(1)
	}
}

// ratio is the hit ratio over whole seconds [from, to) since start, of
// node k (-1: all).
func (l *zipfLoad) ratio(k, from, to int) float64 {
	var tot, hit int64
	for i := range l.total {
		if k >= 0 && i != k {
			continue
		}
		for s := max(from, 0); s < min(to, len(l.total[i])); s++ {
			tot += l.total[i][s].Load()
			hit += l.hits[i][s].Load()
		}
	}
	if tot == 0 {
		return 0
	}
	return float64(hit) / float64(tot)
}

func (l *zipfLoad) second() int { return int(time.Since(l.start) / time.Second) }

func measureRollingRestart(t *testing.T, warm bool, rate, objects int) {
	o := newTestOrigin(t, nil, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		w.Header().Set("Content-Type", "application/octet-stream")
		io.WriteString(w, strings.Repeat("z", 2048))
	})
	mutate := func(_ int, c *Config) {
		c.Server.DrainDelay = Duration(time.Second)
		if r := envInt("EDGESHIELD_WARM_OBJECT_RATE", 0); r > 0 {
			c.Cache.WarmRate = float64(r)
		}
		if !warm {
			c.Cache.WarmKeys = 0
		}
	}
	nodes := newCluster(t, 3, o.srv.URL, mutate)
	l := startZipfLoad(nodes, rate, objects)
	defer func() { l.stop.Store(true); l.wg.Wait() }()
	time.Sleep(20 * time.Second) // fill: the working set settles
	for i := range nodes {
		measureOneRestart(t, l, o, i, mutate)
	}
	t.Logf("%s: %d requests failed (to a node while it stopped)", map[bool]string{true: "warm", false: "cold"}[warm], l.failed.Load())
}

// measureOneRestart restarts member i under the load and logs the origin's
// re-fetches (objects it had served before) as a share of the objects
// stored, and the hit ratio after ready against the 5 s before.
func measureOneRestart(t *testing.T, l *zipfLoad, o *testOrigin, i int, mutate func(int, *Config)) {
	before := o.snapshot()
	now := l.second()
	base, nodeBase := l.ratio(-1, now-5, now), l.ratio(i, now-5, now)
	l.up[i].Store(false)
	stopped := time.Now()
	restartMember(t, l.nodes, i, o.srv.URL, mutate) // replaces l.nodes[i], which no worker reads while down
	ready, readySec := time.Now(), l.second()
	l.up[i].Store(true)
	time.Sleep(11 * time.Second)
	after := o.snapshot()
	refetched := 0
	for p, c := range after {
		if b := before[p]; b > 0 {
			refetched += c - b
		}
	}
	t.Logf("restart node-%d: down %.1fs; origin re-fetches %d = %.1f%% of %d objects stored before (new objects: %d); "+
		"hit ratio all nodes: 5 s before %.3f, 10 s after ready %.3f (%.0f%%); restarted node: %.3f, %.3f (%.0f%%), 1 s buckets after ready %s",
		i, ready.Sub(stopped).Seconds(), refetched, 100*float64(refetched)/float64(len(before)), len(before), len(after)-len(before),
		base, l.ratio(-1, readySec, readySec+10), 100*l.ratio(-1, readySec, readySec+10)/base,
		nodeBase, l.ratio(i, readySec, readySec+10), 100*l.ratio(i, readySec, readySec+10)/nodeBase, l.buckets(i, readySec, 10))
}

// buckets formats node k's hit ratio per second from second from.
func (l *zipfLoad) buckets(k, from, count int) string {
	var b strings.Builder
	for s := from; s < from+count; s++ {
		fmt.Fprintf(&b, "%.2f ", l.ratio(k, s, s+1))
	}
	return strings.TrimSpace(b.String())
}

// snapshot copies the per-path request counts.
func (o *testOrigin) snapshot() map[string]int {
	o.mu.Lock()
	defer o.mu.Unlock()
	m := make(map[string]int, len(o.counts))
	for k, v := range o.counts {
		m[k] = v
	}
	return m
}

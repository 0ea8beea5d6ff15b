package edge

// Warm restart (issue 13, item 3). A node that restarts comes back with an
// empty cache, while the objects it owns are, most of them, in its peers'
// caches: members keep their own copy of what their clients fetched
// through the owner, and the members that owned its keys while it was away
// fetched them. So:
//
//   - every node counts its hot keys (hotkeys.go), on fills and on a sample
//     of hits;
//   - a draining node tells every peer (GET /_edgeshield/warm/notify); each
//     pulls the drainer's hot-key list at once and keeps the keys it owns
//     once the drainer is gone (rendezvous without it);
//   - a starting node pulls every peer's list (GET /_edgeshield/warm/keys);
//     the keys it owns now and cache.warm_file's go first, then the rest;
//   - the kept keys, most used first, are prefetched FROM PEERS ONLY: a
//     shield hop with "Cache-Control: only-if-cached, min-fresh=1", which
//     the peer answers from a fresh stored copy or with 504 (RFC 9111
//     §5.2.1.7: proxy.go serveMiss) and never forwards — so warming sends
//     no request to the origin, and an object no peer has is left to real
//     traffic. min-fresh=1 keeps the peer from serving stale, which would
//     start a background revalidation at the origin (stale-while-revalidate).
//
// Readiness: the node is ready at once and warms in the background ("while",
// not "before"). A node that waited for its warm-up would still get misses
// for keys nobody listed; instead, for as long as a warm-up runs
// (cache.warm_timeout at most), this node's own misses ask a peer's cache
// the same way before the origin (warmMiss). Warm-ups are paced (cache.warm_rate),
// bounded in bytes (cache.warm_max_bytes) and time, run on tracked
// background goroutines and stop at the first step of Shutdown.

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeshield/edgeshield/cache"
	"github.com/edgeshield/edgeshield/cluster"
	"github.com/edgeshield/edgeshield/origin"
	"github.com/valyala/fasthttp"
)

// The peer listener's warm endpoints (signed like shield hops).
const (
	warmPathPrefix = "/_edgeshield/warm/"
	warmKeysPath   = warmPathPrefix + "keys"
	warmNotifyPath = warmPathPrefix + "notify"
)

const (
	warmWorkers       = 4               // prefetches in flight at once
	warmMaxSources    = 3               // peers asked for one object
	warmListMaxBytes  = 32 << 20        // a pulled hot-key list
	warmCallTimeout   = 5 * time.Second // one pull or notify
	warmJoinWait      = 5 * time.Second // a starting node waits this long for peers
	warmFlightSuffix  = "\x00warm"      // a prefetch's own flight: no client waits on a 504
	warmOnlyIfCached  = "only-if-cached, min-fresh=1"
	warmTargetMaxSize = 8 << 10
)

// errNotOnPeers: no peer had a fresh copy (a prefetch leaves the object to
// real traffic).
var errNotOnPeers = errors.New("no peer has a fresh copy")

// warmItem is one hot key as pulled from a peer and in cache.warm_file
// (one JSON object per line): what refetching that variant takes.
type warmItem struct {
	Host           string `json:"host"`
	Target         string `json:"target"`
	AcceptEncoding string `json:"accept_encoding,omitempty"`
	Uses           uint32 `json:"uses"`
	first          bool   // prefetched before the others (this node owns it, or it is in the warm file)
}

// warmer is the node's warm-up state.
type warmer struct {
	ctx     context.Context // every warm-up's parent; stop cancels it
	stop    context.CancelFunc
	runs    atomic.Int32  // prefetches running: while > 0, own misses ask peers first
	started chan struct{} // closed when the start-up warm-up ended (or never ran)
	fetched atomic.Uint64
	bytes   atomic.Uint64
	absent  atomic.Uint64 // objects no peer had
}

// WarmStats are the warm-up counters (tests, logs): objects and bytes
// prefetched, objects no peer had; StartDone once the start-up warm-up
// ended.
type WarmStats struct {
	Fetched, Bytes, Absent uint64
	StartDone              bool
}

// initWarm builds the hot-key table and warm-up state (cache.warm_keys > 0).
func (n *Node) initWarm() {
	if n.cfg.Cache.WarmKeys <= 0 {
		return
	}
	n.pipe.hot = newHotKeys(n.cfg.Cache.WarmKeys)
	w := &warmer{started: make(chan struct{})}
	w.ctx, w.stop = context.WithCancel(n.bg.base)
	n.pipe.warm = w
}

// Warm returns the warm-up counters (zero when warm restarts are off).
func (n *Node) Warm() WarmStats {
	if n.pipe.warm == nil {
		return WarmStats{}
	}
	w := n.pipe.warm
	s := WarmStats{Fetched: w.fetched.Load(), Bytes: w.bytes.Load(), Absent: w.absent.Load()}
	select {
	case <-w.started:
		s.StartDone = true
	default:
	}
	return s
}

// addWarmStats fills the warm-restart figures of s.
func (n *Node) addWarmStats(s *Stats) {
	if n.pipe.warm == nil {
		return
	}
	w := n.Warm()
	s.HotKeys, s.WarmPrefetched, s.WarmBytes, s.WarmNotOnPeers = n.pipe.hot.len(), w.Fetched, w.Bytes, w.Absent
}

// warmMiss answers a miss this node would send to the origin from a peer's
// fresh copy while a warm-up runs: the object it now owns is likely in a
// peer's cache. Not when the request or a purge asks for the origin's word
// (no-cache, max-age=0, Pragma: no-cache, a purged copy): a peer's stored
// copy would not do.
func (pl *pipeline) warmMiss(ctx context.Context, j *fetchJob) (*origin.Response, bool) {
	r := &j.req
	if pl.peers == nil || !j.originOnly || !pl.warming() || j.purged || r.Revalidate || r.CC.NoCache || r.PragmaNoCache || r.CC.MaxAge == 0 {
		return nil, false
	}
	resp, err := pl.peers.cachedCopy(ctx, j.key, j.host, "", j.oreq)
	return resp, err == nil
}

// warming reports whether a warm-up prefetches (own misses then ask peers
// first).
func (pl *pipeline) warming() bool { return pl.warm != nil && pl.warm.runs.Load() > 0 }

// startWarm begins the start-up warm-up in the background (Start, once
// everything serves).
func (n *Node) startWarm() {
	if n.pipe.warm == nil {
		return
	}
	if (n.peers == nil && n.cfg.Cache.WarmFile == "") || !n.bg.goBackground("warm-up", n.warmOnStart) {
		close(n.pipe.warm.started)
	}
}

func (n *Node) warmOnStart() {
	defer close(n.pipe.warm.started)
	ctx, cancel := context.WithTimeout(n.pipe.warm.ctx, n.cfg.Cache.WarmTimeout.D())
	defer cancel()
	items, err := readWarmFile(n.cfg.Cache.WarmFile)
	if err != nil {
		n.log.Warn("warm file not used", "file", n.cfg.Cache.WarmFile, "err", err)
	}
	for i := range items {
		items[i].first = true
	}
	if n.peers != nil {
		n.awaitPeers(ctx)
		for _, m := range n.peers.c.Members() {
			if !m.Self && m.State == cluster.StateAlive && m.PeerAddr != "" {
				items = append(items, n.pullHotKeys(ctx, m, false)...)
			}
		}
	}
	n.prefetchAll(ctx, items, "")
}

// awaitPeers waits (bounded) until this node sees another member: a node
// that starts with its seeds still joining would pull from nobody.
func (n *Node) awaitPeers(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, warmJoinWait)
	defer cancel()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for n.peers.c.Alive() < 2 {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// warmShutdown is Shutdown's first step: stop warming, hand the hot keys
// over to the peers, write cache.warm_file.
func (n *Node) warmShutdown(ctx context.Context) {
	if n.pipe.warm == nil {
		return
	}
	n.pipe.warm.stop()
	if n.peers != nil && n.pipe.hot.len() > 0 {
		n.handOver(ctx)
	}
	if f := n.cfg.Cache.WarmFile; f != "" {
		if err := writeWarmFile(f, n.hotItems(0)); err != nil {
			n.log.Warn("warm file not written", "file", f, "err", err)
		}
	}
}

// handOver tells every alive peer that this node is leaving; each pulls
// this node's list before the call returns (bounded by warmCallTimeout).
func (n *Node) handOver(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, warmCallTimeout)
	defer cancel()
	self := n.peers.c.Members()
	q := url.Values{"name": {n.name}, "peer": {n.peerAdvertised()}}
	uri := warmNotifyPath + "?" + q.Encode()
	var wg sync.WaitGroup
	for _, m := range self {
		if m.Self || m.State != cluster.StateAlive || m.PeerAddr == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			body, err := n.peers.call(ctx, m, uri, 1<<10)
			if err != nil {
				n.log.Warn("warm hand-over failed", "peer", m.Name, "err", err)
				return
			}
			n.log.Info("warm hand-over", "peer", m.Name, "answer", strings.TrimSpace(string(body)))
		}()
	}
	wg.Wait()
}

// peerAdvertised is the peer address this node's members dial.
func (n *Node) peerAdvertised() string {
	for _, m := range n.peers.c.Members() {
		if m.Self {
			return m.PeerAddr
		}
	}
	return n.PeerAddr()
}

// serveWarm answers the peer listener's warm endpoints (the request is a
// verified hop from member from).
func (n *Node) serveWarm(ctx *fasthttp.RequestCtx, from string) {
	if !ctx.IsGet() {
		ctx.Error("warm endpoints are GET\n", fasthttp.StatusMethodNotAllowed)
		return
	}
	args := ctx.QueryArgs()
	switch string(ctx.Path()) {
	case warmKeysPath:
		if n.pipe.hot == nil {
			ctx.SetStatusCode(fasthttp.StatusNoContent)
			return
		}
		limit, _ := strconv.Atoi(string(args.Peek("limit")))
		ctx.SetContentType("application/jsonl")
		ctx.SetBody(appendWarmItems(nil, n.hotItems(limit)))
	case warmNotifyPath:
		n.serveWarmNotify(ctx, from, string(args.Peek("peer")))
	default:
		ctx.Error("unknown warm endpoint\n", fasthttp.StatusNotFound)
	}
}

// serveWarmNotify takes a draining member's hand-over: pull its list now
// (it is about to go), keep the keys this node owns without it, and
// prefetch them in the background, from it first.
func (n *Node) serveWarmNotify(ctx *fasthttp.RequestCtx, from, peerAddr string) {
	if n.pipe.warm == nil || peerAddr == "" || n.pipe.draining.Load() {
		ctx.SetStatusCode(fasthttp.StatusNoContent) // nothing to take over: off, or leaving too
		return
	}
	if !n.isMemberAt(from, peerAddr) {
		// Only the sender's own address: a member must not make this node
		// send signed requests anywhere else.
		ctx.Error("peer is not "+from+"'s peer address\n", fasthttp.StatusBadRequest)
		return
	}
	pctx, cancel := context.WithTimeout(n.pipe.warm.ctx, warmCallTimeout)
	items := n.pullHotKeys(pctx, cluster.Member{Name: from, PeerAddr: peerAddr}, true)
	cancel()
	n.bg.goBackground("warm-up", func() {
		wctx, cancel := context.WithTimeout(n.pipe.warm.ctx, n.cfg.Cache.WarmTimeout.D())
		defer cancel()
		n.prefetchAll(wctx, items, peerAddr)
	})
	fmt.Fprintf(ctx, "%d keys taken over from %s\n", len(items), from)
}

// isMemberAt reports whether member name advertises peer address addr.
func (n *Node) isMemberAt(name, addr string) bool {
	for _, m := range n.peers.c.Members() {
		if m.Name == name && m.PeerAddr == addr {
			return true
		}
	}
	return false
}

// pullHotKeys pulls peer's hot-key list. For a hand-over (the peer is
// leaving) it keeps the keys this node owns once the peer is gone. At
// start-up it keeps them all, those this node owns marked first (they
// would cost the origin): it held copies of the peers' hot keys before, and
// its clients ask for them too.
func (n *Node) pullHotKeys(ctx context.Context, peer cluster.Member, handOver bool) []warmItem {
	uri := warmKeysPath + "?limit=" + strconv.Itoa(n.cfg.Cache.WarmKeys)
	body, err := n.peers.call(ctx, peer, uri, warmListMaxBytes)
	if err != nil {
		n.log.Warn("warm-up: hot keys not pulled", "peer", peer.Name, "err", err)
		return nil
	}
	items, err := parseWarmItems(body)
	if err != nil {
		n.log.Warn("warm-up: bad hot-key list", "peer", peer.Name, "err", err)
	}
	without := ""
	if handOver {
		without = peer.Name
	}
	var key []byte
	var buf [8]cluster.Member
	kept := items[:0]
	for _, it := range items {
		key = n.warmKey(key[:0], it)
		owners := n.peers.c.Owners(buf[:0], key)
		i := slices.IndexFunc(owners, func(m cluster.Member) bool { return m.Name != without })
		if it.first = i >= 0 && owners[i].Self; it.first || !handOver {
			kept = append(kept, it)
		}
	}
	return kept
}

// warmKey is the primary cache key of an item (as appendKey makes it).
func (n *Node) warmKey(dst []byte, it warmItem) []byte {
	dst = append(dst, strings.ToLower(it.Host)...)
	return appendKeyTarget(dst, []byte(it.Target), n.cfg.Cache.KeyIgnoreQuery)
}

// hotItems lists the hot keys (at most limit; <= 0: all), one item per
// variant, most used first.
func (n *Node) hotItems(limit int) []warmItem {
	var out []warmItem
	for _, h := range n.pipe.hot.list(limit) {
		i := strings.IndexByte(h.key, '/')
		for set := range n.pipe.aeFields {
			if set < 32 && h.sets&(1<<set) != 0 {
				out = append(out, warmItem{Host: h.key[:i], Target: h.key[i:], AcceptEncoding: string(n.pipe.aeFields[set]), Uses: h.uses})
			}
		}
		if h.sets == 0 { // encodings >= 32 sets: identity
			out = append(out, warmItem{Host: h.key[:i], Target: h.key[i:], Uses: h.uses})
		}
	}
	return out
}

func appendWarmItems(dst []byte, items []warmItem) []byte {
	for _, it := range items {
		b, _ := json.Marshal(it) // strings and a number: cannot fail
		dst = append(append(dst, b...), '\n')
	}
	return dst
}

// parseWarmItems reads JSON lines; it keeps the valid items before an
// error, which names the line.
func parseWarmItems(data []byte) ([]warmItem, error) {
	var out []warmItem
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 2*warmTargetMaxSize)
	for line := 1; sc.Scan(); line++ {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var it warmItem
		if err := json.Unmarshal(sc.Bytes(), &it); err != nil {
			return out, fmt.Errorf("line %d: %w", line, err)
		}
		if it.Host == "" || !strings.HasPrefix(it.Target, "/") || len(it.Target) > warmTargetMaxSize {
			return out, fmt.Errorf("line %d: want a host and an origin-form target, got %q %q", line, it.Host, it.Target)
		}
		out = append(out, it)
	}
	return out, sc.Err()
}

func readWarmFile(path string) ([]warmItem, error) {
	if path == "" {
		return nil, nil
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil // first start
	}
	if err != nil {
		return nil, err
	}
	items, err := parseWarmItems(data)
	if err != nil {
		err = fmt.Errorf("%s: %w", path, err)
	}
	return items, err
}

// writeWarmFile replaces path atomically (a crash leaves the old file).
func writeWarmFile(path string, items []warmItem) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(appendWarmItems(nil, items)); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// prefetchAll prefetches items (deduplicated, most used first, at most
// limit) with warmWorkers workers, paced by cache.warm_rate and stopped by
// cache.warm_max_bytes or ctx. prefer is a peer address asked first (a
// draining member's).
func (n *Node) prefetchAll(ctx context.Context, items []warmItem, prefer string) {
	items = dedupeWarmItems(items, n.cfg.Cache.WarmKeys)
	if len(items) == 0 {
		return
	}
	budget := n.warmBudget()
	n.pipe.warm.runs.Add(1)
	defer n.pipe.warm.runs.Add(-1)
	start := time.Now()
	f0, b0, a0 := n.pipe.warm.fetched.Load(), n.pipe.warm.bytes.Load(), n.pipe.warm.absent.Load()
	p := newPacer(n.cfg.Cache.WarmRate)
	next := make(chan warmItem)
	var wg sync.WaitGroup
	for range min(warmWorkers, len(items)) {
		wg.Go(func() {
			for it := range next {
				if size, ok := n.prefetch(ctx, it, prefer); ok {
					budget.Add(-size)
				}
			}
		})
	}
	for _, it := range items {
		if budget.Load() <= 0 || p.wait(ctx) != nil {
			break
		}
		next <- it
	}
	close(next)
	wg.Wait()
	n.log.Info("warm-up done", "listed", len(items), "fetched", n.pipe.warm.fetched.Load()-f0,
		"bytes", n.pipe.warm.bytes.Load()-b0, "not_on_peers", n.pipe.warm.absent.Load()-a0, "took", time.Since(start).Round(time.Millisecond))
}

// warmBudget is one warm-up's byte budget (cache.warm_max_bytes).
func (n *Node) warmBudget() *atomic.Int64 {
	b := new(atomic.Int64)
	b.Store(int64(n.cfg.Cache.WarmMaxBytes))
	return b
}

// dedupeWarmItems merges repeated variants (summing uses), sorts them
// (first ones first, then by uses, most first) and keeps at most limit.
func dedupeWarmItems(items []warmItem, limit int) []warmItem {
	slices.SortFunc(items, func(a, b warmItem) int {
		return cmp.Or(strings.Compare(a.Host, b.Host), strings.Compare(a.Target, b.Target), strings.Compare(a.AcceptEncoding, b.AcceptEncoding))
	})
	out := items[:0]
	for _, it := range items {
		if k := len(out) - 1; k >= 0 && out[k].Host == it.Host && out[k].Target == it.Target && out[k].AcceptEncoding == it.AcceptEncoding {
			out[k].Uses = max(out[k].Uses, out[k].Uses+it.Uses) // never wraps
			out[k].first = out[k].first || it.first
			continue
		}
		out = append(out, it)
	}
	items = out
	slices.SortStableFunc(items, func(a, b warmItem) int {
		switch {
		case a.first && !b.first:
			return -1
		case b.first && !a.first:
			return 1
		}
		return cmp.Compare(b.Uses, a.Uses)
	})
	if limit > 0 && len(items) > limit {
		items = items[:limit]
	}
	return items
}

// prefetch stores one object unless it is stored already: from a peer's
// cache in a cluster, else (a single node's warm file) from the origin. It
// reports the body size when the object was fetched.
func (n *Node) prefetch(ctx context.Context, it warmItem, prefer string) (int64, bool) {
	key := n.warmKey(nil, it)
	if n.pipe.store.Get(key) != nil {
		return 0, false // stored (or a Vary marker): real traffic revalidates it
	}
	j := n.warmJob(key, it, prefer)
	c := n.pipe.flights.Do(string(key)+warmFlightSuffix, n.pipe.fetchAndStore(j))
	if !c.Leader() || c.Refused() {
		j.release()
		return 0, false
	}
	if _, err := c.Wait(ctx); err != nil {
		if errors.Is(err, errNotOnPeers) {
			n.pipe.warm.absent.Add(1)
		}
		return 0, false
	}
	r, err := c.Reader()
	if err != nil {
		return 0, false
	}
	defer r.Close()
	size, err := io.Copy(io.Discard, r)
	if err != nil {
		return 0, false
	}
	n.pipe.warm.fetched.Add(1)
	n.pipe.warm.bytes.Add(uint64(size))
	return size, true
}

// warmJob is the fetch job of a prefetch: a background fetch of the item's
// variant, from peers only in a cluster.
func (n *Node) warmJob(key []byte, it warmItem, prefer string) *fetchJob {
	j := &fetchJob{
		key: key, host: []byte(it.Host), fwd: fwdURIMiss,
		oreq:       &origin.Request{Method: "GET", RequestURI: it.Target, Host: n.pipe.originHost(it.Host)},
		originOnly: true, background: true,
		fromPeers: n.peers != nil, prefer: prefer,
	}
	j.req.CC.Reset()
	j.req.Method = "GET"
	j.vary.hdr.SetHost(it.Host)
	if it.AcceptEncoding != "" {
		j.oreq.Header = append(j.oreq.Header, origin.Field{Name: "Accept-Encoding", Value: it.AcceptEncoding})
		j.vary.hdr.Set("Accept-Encoding", it.AcceptEncoding)
		j.aeSet = cache.AcceptedEncodings([][]byte{[]byte(it.AcceptEncoding)}, n.pipe.encodings)
	}
	j.oreq.Header = append(j.oreq.Header, origin.Field{Name: "Via", Value: n.pipe.via})
	return j
}

// call sends a signed GET for uri to peer and returns its 2xx body (at
// most limit bytes). A failure is worded as the peer's (peerError).
func (p *peerSet) call(ctx context.Context, peer cluster.Member, uri string, limit int64) ([]byte, error) {
	client, err := p.client(peer.PeerAddr)
	if err != nil {
		return nil, err
	}
	host := "edgeshield-peer"
	req := &origin.Request{Method: "GET", RequestURI: uri, Host: host, Header: []origin.Field{
		{Name: shieldHopHeader, Value: string(p.sign(nil, p.name, p.now().Unix(), "GET", host, uri))},
	}}
	resp, err := client.Do(ctx, req)
	if err != nil {
		return nil, &peerError{peer: peer.Name, err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	switch {
	case err != nil:
		return nil, &peerError{peer: peer.Name, err: err}
	case int64(len(body)) > limit:
		return nil, fmt.Errorf("%s answered more than %d bytes", uri, limit)
	case resp.Status/100 != 2:
		return nil, fmt.Errorf("%s: status %d: %s", uri, resp.Status, bytes.TrimSpace(body))
	}
	return body, nil
}

// cachedCopy asks other members (prefer first, then in rendezvous order,
// at most warmMaxSources) for a fresh stored copy of req: a shield hop with
// only-if-cached, which a peer answers from its cache or with 504, never
// from the origin. A peer's hit (its Cache-Status says "hit") is returned;
// else errNotOnPeers.
func (p *peerSet) cachedCopy(ctx context.Context, key, host []byte, prefer string, req *origin.Request) (*origin.Response, error) {
	var buf [8]cluster.Member
	addrs := make([]string, 0, warmMaxSources)
	if prefer != "" {
		addrs = append(addrs, prefer)
	}
	for _, m := range p.c.Owners(buf[:0], key) {
		if !m.Self && m.PeerAddr != "" && m.PeerAddr != prefer && len(addrs) < warmMaxSources {
			addrs = append(addrs, m.PeerAddr)
		}
	}
	preq := *req
	preq.Host = string(host)
	preq.Header = make([]origin.Field, 0, len(req.Header)+2)
	for _, f := range req.Header {
		if !strings.EqualFold(f.Name, "Cache-Control") && !strings.EqualFold(f.Name, "Pragma") {
			preq.Header = append(preq.Header, f)
		}
	}
	preq.Header = append(preq.Header, origin.Field{Name: "Cache-Control", Value: warmOnlyIfCached},
		origin.Field{Name: shieldHopHeader, Value: string(p.sign(nil, p.name, p.now().Unix(), req.Method, preq.Host, req.RequestURI))})
	for _, addr := range addrs {
		if resp := p.askCache(ctx, addr, &preq); resp != nil {
			return resp, nil
		}
	}
	return nil, errNotOnPeers
}

// askCache sends one only-if-cached hop; nil unless the peer had a copy.
func (p *peerSet) askCache(ctx context.Context, addr string, req *origin.Request) *origin.Response {
	client, err := p.client(addr)
	if err != nil {
		return nil
	}
	resp, err := client.Do(ctx, req)
	if err != nil {
		return nil // gone (a drained member) or slow: the next one
	}
	if strings.Contains(header1(resp.Header, "Cache-Status"), "; hit") {
		return resp
	}
	drainBody(resp.Body)
	return nil
}

// pacer spaces events at most rate per second (rate <= 0: unpaced).
type pacer struct {
	mu       sync.Mutex // guards next
	next     time.Time
	interval time.Duration
}

func newPacer(rate float64) *pacer {
	p := &pacer{}
	if rate > 0 {
		p.interval = time.Duration(float64(time.Second) / rate)
	}
	return p
}

// wait blocks until the next event may happen (or ctx ends: its error).
func (p *pacer) wait(ctx context.Context) error {
	p.mu.Lock()
	now := time.Now()
	at := p.next
	if at.Before(now) {
		at = now
	}
	p.next = at.Add(p.interval)
	p.mu.Unlock()
	if d := time.Until(at); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return ctx.Err()
}

// validateWarm checks the cache.warm_* keys.
func (c *Config) validateWarm(bad badFunc) error {
	w := c.Cache
	switch {
	case w.WarmKeys < 0 || w.WarmKeys > 10_000_000:
		return bad("cache.warm_keys", "must be 0 (off) to 10000000, got %d", w.WarmKeys)
	case w.WarmRate < 0 || w.WarmRate != w.WarmRate:
		return bad("cache.warm_rate", "must be a positive number of objects per second (0: unpaced), got %v", w.WarmRate)
	case w.WarmMaxBytes < 0:
		return bad("cache.warm_max_bytes", "must be a size, got %s", w.WarmMaxBytes)
	case w.WarmTimeout < 0:
		return bad("cache.warm_timeout", "must be a duration, got %s", w.WarmTimeout.D())
	}
	return nil
}

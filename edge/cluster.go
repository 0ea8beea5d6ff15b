package edge

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeshield/edgeshield/cluster"
	"github.com/edgeshield/edgeshield/origin"
	"github.com/valyala/fasthttp"
)

// ClusterConfig joins the node to a gossip cluster (hashicorp/memberlist)
// whose members shield the origin together: a miss on a node that does not
// own the key (rendezvous hashing) is forwarded to the owner, so the origin
// sees one request per object per cluster. The gossip keys (bind,
// advertise, region, shield_region, seeds, secret_key, rejoin_interval) are
// cluster.Config's own, documented, defaulted and validated there; the
// secret key also signs shield hops. configs/cluster-*.yaml documents a
// 3-node setup.
type ClusterConfig struct {
	cluster.Config `yaml:",inline"`
	// Enabled turns clustering on. Default false.
	Enabled bool `yaml:"enabled"`
	// PeerListen is the peer HTTP listener for shield hops. Only cluster
	// members can use it: every request is signed with the secret key.
	PeerListen string `yaml:"peer_listen"`
	// PeerAdvertise is the peer address others dial; "" = PeerListen.
	PeerAdvertise string `yaml:"peer_advertise"`
	// PeerDownFor: a peer that refused, reset or timed out is skipped this
	// long, before gossip notices. Default 10s.
	PeerDownFor Duration `yaml:"peer_down_for"`
	// PeerConnectTimeout bounds dialing a peer. Default 1s.
	PeerConnectTimeout Duration `yaml:"peer_connect_timeout"`
}

// revalidateHeader on a shield hop says the sender's copy was purged or
// invalidated, so the owner must not answer from a copy that may predate the
// purge (it may not have reached the owner yet): it revalidates first.
const revalidateHeader = "X-Edgeshield-Revalidate"

// shieldHop signing: "name;unix-seconds;hex(HMAC-SHA256(key, name;ts;method;host;uri))".
// The timestamp bounds replay; the body is not signed (shield hops are GET).
const hopMaxSkew = 60 * time.Second

// peerSet is the cluster glue of a node: membership and key ownership (the
// cluster), the signed peer listener, and the forwarding of misses to
// their owners. It knows the node only through the fields below.
type peerSet struct {
	c          *cluster.Cluster
	key        []byte // cluster.secret_key: signs shield hops
	name       string // this node's name, signed into its hops
	now        func() time.Time
	log        *slog.Logger
	downFor    time.Duration       // cluster.peer_down_for
	peerClient origin.ClientConfig // template of the clients to peers (URL set per peer)
	// serve answers a verified hop from this node's cache or origin;
	// recoverPanic answers 500 and counts the panic.
	serve        func(ctx *fasthttp.RequestCtx, hop bool, now time.Time) outcome
	recoverPanic func(*fasthttp.RequestCtx)
	warm         func(ctx *fasthttp.RequestCtx, from string) // the warm endpoints (warm.go)

	ln      net.Listener
	srv     *fasthttp.Server
	mu      sync.Mutex // guards clients
	clients map[string]*origin.Client

	forwards, forwardFailures, hopsServed, hopsRefused atomic.Uint64
}

// newPeerSet builds the glue around the peer listener ln; startCluster
// adds the cluster.
func (n *Node) newPeerSet(key []byte, ln net.Listener) *peerSet {
	return &peerSet{
		key: key, name: n.name, now: n.pipe.now, log: n.log, ln: ln,
		downFor:      n.cfg.Cluster.PeerDownFor.D(),
		peerClient:   n.peerClientConfig(),
		serve:        n.pipe.serveCacheable,
		recoverPanic: n.pipe.recoverPanic,
		warm:         n.serveWarm,
		clients:      map[string]*origin.Client{},
	}
}

// peerClientConfig is how this node talks to its peers: the origin's limits,
// with room for the peer's own origin fetch in the header timeout.
func (n *Node) peerClientConfig() origin.ClientConfig {
	return origin.ClientConfig{
		ConnectTimeout:  n.cfg.Cluster.PeerConnectTimeout.D(),
		HeaderTimeout:   n.cfg.Origin.HeaderTimeout + n.cfg.Origin.ConnectTimeout + time.Second,
		IdleReadTimeout: n.cfg.Origin.IdleReadTimeout + time.Second,
		MaxConns:        n.cfg.Origin.MaxConns,
		MaxConnWait:     n.cfg.Origin.MaxConnWait,
		Name:            "edgeshield-peer/" + Version,
	}
}

// startCluster binds the peer listener, then joins the gossip cluster
// advertising it.
func (n *Node) startCluster() error {
	cc := n.cfg.Cluster
	ln, err := n.listenTCP(cc.PeerListen)
	if err != nil {
		return fmt.Errorf("cluster peer listen %s: %w", cc.PeerListen, err)
	}
	peerAddr := cc.PeerAdvertise
	if peerAddr == "" {
		peerAddr = ln.Addr().String()
	}
	p := n.newPeerSet(cc.SecretKey, ln)
	// The operator's keys are in cc.Config already; these are the node's.
	gc := cc.Config
	gc.NodeName = n.name
	gc.PeerAddr = peerAddr
	gc.PublicAddr = advertised(n.Addr(), cc.AdvertiseAddr, cc.BindAddr, peerAddr)
	gc.Version = Version
	gc.PurgeTTL = n.cfg.Cache.PurgeTTL.D()
	gc.OnPurge = n.applyClusterPurge
	// One tombstone set: the one lookups check is the one push/pull
	// exchanges, under one limit (cache.DefaultMaxTombstones) and TTL.
	gc.Tombstones = clusterTombstones{n.pipe.purges}
	gc.Logger = n.log.With("component", "cluster")
	c, err := cluster.New(gc)
	if err != nil {
		ln.Close()
		return fmt.Errorf("cluster: %w", err)
	}
	p.c = c
	// Published only now, complete: handlers read n.peers without a lock
	// (Start serves the public listeners after this returns).
	n.peers, n.pipe.peers, n.purger.cluster, n.api.peers = p, p, c, p
	p.srv = n.newPublicServer(p.handle)
	p.srv.Name = "edgeshield-peer"
	// server.max_conns_per_ip counts client connections; its listener
	// wrapper is not on this one, so neither is the release hook.
	p.srv.ConnState = nil
	n.serve(p.srv, ln, "peer")
	return nil
}

// PeerAddr is the peer listener's address ("" without a cluster).
func (n *Node) PeerAddr() string {
	if n.peers == nil {
		return ""
	}
	return n.peers.ln.Addr().String()
}

// GossipAddr is the gossip address ("" without a cluster).
func (n *Node) GossipAddr() string {
	if n.peers == nil {
		return ""
	}
	return n.peers.c.GossipAddr()
}

// Cluster exposes membership for tests and the admin API (nil without one).
func (n *Node) Cluster() *cluster.Cluster {
	if n.peers == nil {
		return nil
	}
	return n.peers.c
}

// advertised turns a listener address bound to the unspecified address
// ("[::]:8080") into one peers can reach, using the host of the first
// specified address among hints (gossip advertise, bind, peer address).
func advertised(addr string, hints ...string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || (host != "" && !net.ParseIP(host).IsUnspecified()) {
		return addr
	}
	for _, h := range hints {
		if hh, _, err := net.SplitHostPort(h); err == nil && hh != "" && !net.ParseIP(hh).IsUnspecified() {
			return net.JoinHostPort(hh, port)
		}
	}
	return addr
}

func (p *peerSet) sign(dst []byte, name string, ts int64, method, host, uri string) []byte {
	m := hmac.New(sha256.New, p.key)
	fmt.Fprintf(m, "%s;%d;%s;%s;%s", name, ts, method, host, uri)
	dst = append(dst, name...)
	dst = append(dst, ';')
	dst = strconv.AppendInt(dst, ts, 10)
	dst = append(dst, ';')
	return hex.AppendEncode(dst, m.Sum(nil))
}

// verifyHop checks a shield-hop signature; it returns the sending node's
// name.
func (p *peerSet) verifyHop(v []byte, method, host, uri []byte, now time.Time) (string, error) {
	parts := bytes.SplitN(v, []byte(";"), 3)
	if len(parts) != 3 {
		return "", errors.New("malformed shield hop")
	}
	ts, err := strconv.ParseInt(string(parts[1]), 10, 64)
	if err != nil {
		return "", errors.New("malformed shield hop timestamp")
	}
	if d := now.Sub(time.Unix(ts, 0)); d > hopMaxSkew || d < -hopMaxSkew {
		return "", errors.New("shield hop timestamp out of range")
	}
	want := p.sign(nil, string(parts[0]), ts, string(method), string(host), string(uri))
	if !hmac.Equal(want, v) {
		return "", errors.New("bad shield hop signature")
	}
	return string(parts[0]), nil
}

// handle serves the peer listener: only signed shield hops from
// members, answered from this node's cache or its own (coalesced) origin
// fetch — never forwarded again, so there are no loops.
func (p *peerSet) handle(ctx *fasthttp.RequestCtx) {
	defer p.recoverPanic(ctx)
	if ctx.Request.IsBodyStream() {
		// Hops have no body; an unread one must not be read as the next
		// request (see body.go). Nothing is forwarded, so skip it first.
		defer skipBody(ctx)
	}
	hop := ctx.Request.Header.Peek(shieldHopHeader)
	if len(hop) == 0 {
		p.hopsRefused.Add(1)
		ctx.Error("forbidden: peer listener is for cluster members\n", fasthttp.StatusForbidden)
		return
	}
	from, err := p.verifyHop(hop, ctx.Method(), ctx.Request.Header.Host(), ctx.Request.Header.RequestURI(), p.now())
	if err != nil {
		p.hopsRefused.Add(1)
		p.log.Warn("refused shield hop", "remote", ctx.RemoteAddr().String(), "err", err)
		ctx.Error("forbidden: "+err.Error()+"\n", fasthttp.StatusForbidden)
		return
	}
	if bytes.HasPrefix(ctx.Path(), []byte(warmPathPrefix)) {
		p.warm(ctx, from)
		return
	}
	if !ctx.IsGet() && !ctx.IsHead() {
		ctx.Error("shield hops are GET or HEAD\n", fasthttp.StatusMethodNotAllowed)
		return
	}
	p.hopsServed.Add(1)
	if p.log.Enabled(context.Background(), slog.LevelDebug) {
		p.log.Debug("shield hop", "from", from, "uri", string(ctx.Request.Header.RequestURI()))
	}
	p.serve(ctx, true, p.now())
}

// upstreamOwner fetches a cacheable miss: from the key's owner when that is
// another member (peerSet.forward), else (and always when originOnly: shield
// hops, origin flights) from the origin.
func (pl *pipeline) upstreamOwner(ctx context.Context, key, host []byte, originOnly, purged bool, req *origin.Request) (*origin.Response, error) {
	if pl.peers != nil && !originOnly {
		if resp, ok := pl.peers.forward(ctx, key, host, purged, req); ok {
			return resp, nil
		}
	}
	return pl.upstream(ctx, host, req)
}

// owner is the key's first owner in rendezvous order (false when no member
// is alive).
func (p *peerSet) owner(key []byte) (cluster.Member, bool) { return p.c.Owner(key) }

// forward sends a cacheable miss to the key's owner when that is another
// member, signed as a shield hop. A peer that refuses, resets or times out is
// marked down at once and the next owner in rendezvous order is tried; ok is
// false when no peer answered (or this node owns the key), and the caller
// asks the origin: a client never sees a peer's failure.
func (p *peerSet) forward(ctx context.Context, key, host []byte, purged bool, req *origin.Request) (resp *origin.Response, ok bool) {
	var buf [8]cluster.Member
	for _, m := range p.c.Owners(buf[:0], key) {
		if m.Self || m.PeerAddr == "" {
			break
		}
		client, err := p.client(m.PeerAddr)
		if err != nil {
			continue
		}
		preq := *req
		preq.Host = string(host)
		preq.Header = append(req.Header[:len(req.Header):len(req.Header)],
			origin.Field{Name: shieldHopHeader, Value: string(p.sign(nil, p.name, p.now().Unix(), req.Method, string(host), req.RequestURI))})
		if purged {
			preq.Header = append(preq.Header, origin.Field{Name: revalidateHeader, Value: "1"})
		}
		p.forwards.Add(1)
		resp, err := client.Do(ctx, &preq)
		if err == nil {
			return resp, true
		}
		p.forwardFailures.Add(1)
		p.c.MarkDown(m.Name, p.downFor)
		p.log.Warn("peer failed; trying the next owner", "peer", m.Name, "addr", m.PeerAddr, "err", &peerError{peer: m.Name, err: err})
	}
	return nil, false
}

// peerError words a failed shield hop as the peer's failure. The hop goes
// through an origin.Client, whose errors say "origin timeout: GET
// 10.77.0.12:7947": read in a log, that sends the operator to the origin
// when a cluster member failed (issue 13).
type peerError struct {
	peer string // member name
	err  error  // from origin.Client.Do; kept for errors.Is
}

func (e *peerError) Error() string {
	msg := e.err.Error()
	for _, k := range [...]struct {
		sentinel error
		kind     string
	}{
		{origin.ErrTimeout, "peer timeout"}, {origin.ErrRefused, "peer refused connection"},
		{origin.ErrReset, "peer reset connection"}, {origin.ErrBusy, "peer connection limit reached"},
		{origin.ErrBadResponse, "peer sent a malformed response"},
	} {
		if errors.Is(e.err, k.sentinel) {
			// The client prefixes its sentinel; the rest is the cause.
			rest, _ := strings.CutPrefix(msg, k.sentinel.Error()+": ")
			return k.kind + " (" + e.peer + "): " + rest
		}
	}
	return "peer " + e.peer + " failed: " + msg
}

func (e *peerError) Unwrap() error { return e.err }

func (p *peerSet) client(addr string) (*origin.Client, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.clients[addr]; ok {
		return c, nil
	}
	cc := p.peerClient
	cc.URL = "http://" + addr
	c, err := origin.NewClient(cc)
	if err != nil {
		return nil, err
	}
	p.clients[addr] = c
	return c, nil
}

func (p *peerSet) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.clients {
		c.Close()
	}
	p.clients = nil
}

// applyClusterPurge is the cluster's OnPurge (purger.applyCluster).
func (n *Node) applyClusterPurge(p cluster.Purge) { n.purger.applyCluster(p) }

// addStats fills the cluster figures of s.
func (p *peerSet) addStats(s *Stats) {
	s.ClusterAlive = p.c.Alive()
	s.PeerForwards = p.forwards.Load()
	s.PeerForwardFailures = p.forwardFailures.Load()
	s.ShieldHopsServed = p.hopsServed.Load()
	s.ShieldHopsRefused = p.hopsRefused.Load()
}

// ClusterStatus is the /cluster document.
type ClusterStatus struct {
	Node    string          `json:"node"`
	Joined  bool            `json:"joined"`
	Detail  string          `json:"detail"`
	Alive   int             `json:"alive"`
	Members []ClusterMember `json:"members"`
}

// ClusterMember is one member as this node sees it.
type ClusterMember struct {
	cluster.Member
	// OwnedShare estimates the share of keys this member owns: the
	// fraction of 4096 sample keys whose rendezvous owner it is.
	OwnedShare float64 `json:"owned_share"`
}

func (p *peerSet) status() ClusterStatus {
	c := p.c
	ok, detail := c.Joined()
	st := ClusterStatus{Node: p.name, Joined: ok, Detail: detail, Alive: c.Alive()}
	counts := map[string]int{}
	const samples = 4096
	var buf [8]byte
	for i := 0; i < samples; i++ {
		k := strconv.AppendInt(buf[:0], int64(i), 10)
		if m, ok := p.owner(k); ok {
			counts[m.Name]++
		}
	}
	for _, m := range c.Members() {
		st.Members = append(st.Members, ClusterMember{Member: m, OwnedShare: float64(counts[m.Name]) / samples})
	}
	return st
}

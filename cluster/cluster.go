// Package cluster turns a set of Edgeshield nodes into one gossip cluster.
//
// It wraps hashicorp/memberlist for membership and failure detection, carries
// each node's peer address, region and version in compact node metadata,
// assigns every cache key an owner by rendezvous (highest-random-weight)
// hashing, and propagates purges cluster-wide: applied locally, sent directly
// and by gossip, and kept as tombstones in the push/pull state so that a node
// that missed the broadcast, was partitioned or rejoins still applies them.
//
// Concurrency: every exported method of *Cluster is safe for concurrent use.
// Owners and Owner read an immutable snapshot and never block on gossip.
// OnPurge runs on the caller's goroutine for a local purge and on memberlist's
// receive goroutines for remote ones: it must not block for long and must not
// call Purge, PurgeWait or Close (reading methods such as Owner are fine).
// OnChange runs on its own goroutine without any lock held and may call any
// method. New starts the background goroutines, Close stops them and waits;
// Close is idempotent.
package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Sentinel errors for errors.Is.
var (
	// ErrClosed is returned by calls made after Close.
	ErrClosed = errors.New("cluster: closed")
	// ErrInvalidConfig wraps every Config validation error of New.
	ErrInvalidConfig = errors.New("cluster: invalid config")
	// ErrSecretKeyMismatch is reported (by JoinError and in logs) when a seed
	// refused us, or we refused it, because the gossip encryption keys differ.
	ErrSecretKeyMismatch = errors.New("cluster: secret key mismatch")
	// ErrInvalidPurge is returned by Purge and PurgeWait for a malformed Purge.
	ErrInvalidPurge = errors.New("cluster: invalid purge")
	// ErrPurgeIncomplete is returned by PurgeWait when some members did not
	// confirm before the context ended (or left while it waited).
	ErrPurgeIncomplete = errors.New("cluster: purge not confirmed by every member")
)

// Defaults applied by New to zero Config fields.
const (
	DefaultBindAddr       = "0.0.0.0:7946"
	DefaultRejoinInterval = 30 * time.Second
	DefaultJoinRetryMax   = 10 * time.Second
	DefaultPurgeTTL       = 10 * time.Minute
	DefaultMaxTombstones  = 10000
	// DefaultDeadNodeReclaimTime lets a node restarted under the same name but
	// on a new address take its name back this long after it was declared dead.
	// memberlist's own default (0) never allows it, so a restarted node would be
	// refused as a "conflicting address" forever.
	DefaultDeadNodeReclaimTime = 30 * time.Second
)

// Config configures a Cluster. The zero value of each field selects the
// default named in its comment. Only PeerAddr is always required.
type Config struct {
	// NodeName is the unique member name. Empty means the host name.
	NodeName string
	// BindAddr is the gossip "ip:port" for both UDP and TCP. Port 0 picks a
	// free port (see Cluster.GossipAddr). Empty means DefaultBindAddr.
	BindAddr string
	// AdvertiseAddr is the "ip" or "ip:port" other members use to reach this
	// node's gossip listener. Empty means the bind address, which then must
	// not be unspecified (0.0.0.0 or ::).
	AdvertiseAddr string
	// PeerAddr is this node's peer HTTP "host:port", published in the node
	// metadata so that other members can forward misses to it. Required.
	PeerAddr string
	// PublicAddr is the optional public address, published in the metadata.
	PublicAddr string
	// Region is the region label published in the metadata.
	Region string
	// Version is the software version published in the metadata.
	Version string
	// Seeds are gossip "host:port" addresses to join at start and re-join
	// every RejoinInterval. Empty means a single-node cluster until another
	// node joins us.
	Seeds []string
	// SecretKey is the AES key (16, 24 or 32 bytes) that encrypts and
	// authenticates all gossip. It is required unless the bind address, the
	// advertise address and every seed are loopback. Nodes with a different
	// key cannot join: the error and the logs say "secret key mismatch".
	SecretKey []byte
	// RejoinInterval is the period of the re-join of the seeds. Re-joining
	// heals a partition that lasted longer than GossipToTheDeadTime, after
	// which memberlist stops talking to the other side. Zero means
	// DefaultRejoinInterval; it is jittered by ±10%.
	RejoinInterval time.Duration
	// JoinRetryMax caps the exponential backoff between the first join
	// attempts. Zero means DefaultJoinRetryMax.
	JoinRetryMax time.Duration
	// ShieldRegion, when set, restricts owners to members of this region so
	// that misses from every region funnel through it. When no member of the
	// region is available, owners are chosen among all members.
	ShieldRegion string
	// PurgeTTL is how long a purge tombstone is kept and exchanged, counted
	// from Purge.At. Zero means DefaultPurgeTTL.
	PurgeTTL time.Duration
	// MaxTombstones bounds the tombstone set; the oldest are dropped beyond
	// it (with a warning). Zero means DefaultMaxTombstones.
	MaxTombstones int
	// OnPurge is called exactly once per purge ID this node learns about, the
	// local ones included, before Purge returns for a local purge, and never
	// after Close returned. It must not block for long (remote purges are
	// delivered on the gossip receive path) and must not call Purge,
	// PurgeWait or Close.
	OnPurge func(Purge)
	// OnChange is called (asynchronously, coalesced) after members joined,
	// left, failed or changed metadata. It must not block for long.
	OnChange func()
	// Logger receives cluster and memberlist logs (memberlist's with
	// source=memberlist). Nil means slog.Default().
	Logger *slog.Logger

	// Timing knobs, mostly for tests. Zero means memberlist.DefaultLANConfig's
	// value, except DeadNodeReclaimTime (DefaultDeadNodeReclaimTime).
	ProbeInterval       time.Duration
	ProbeTimeout        time.Duration
	GossipInterval      time.Duration
	PushPullInterval    time.Duration
	GossipToTheDeadTime time.Duration
	DeadNodeReclaimTime time.Duration
	SuspicionMult       int
	// TCPTimeout bounds gossip TCP dials and push/pull exchanges; Close may
	// wait this long for an in-flight join. Zero means memberlist's 10s.
	TCPTimeout time.Duration

	// wrapTransport is a test hook that wraps the gossip transport (used to
	// simulate partitions). Nil in production.
	wrapTransport func(memberlist.NodeAwareTransport) memberlist.NodeAwareTransport
	// now is a test hook for the clock of tombstone expiry and of departed
	// member retention. Nil means time.Now.
	now func() time.Time
}

// Member states reported in Member.State.
const (
	StateAlive   = "alive"
	StateSuspect = "suspect"
	StateDead    = "dead"
	StateLeft    = "left"
)

// Member is one node of the cluster as seen by this node.
type Member struct {
	Name       string
	Region     string
	PeerAddr   string // peer HTTP "host:port"; empty if the metadata was invalid
	PublicAddr string
	GossipAddr string // memberlist "ip:port"
	Version    string
	State      string // StateAlive, StateSuspect, StateDead or StateLeft
	Self       bool   // this node
}

// Cluster is this node's membership in the gossip cluster.
type Cluster struct {
	cfg        Config
	log        *slog.Logger
	ml         *memberlist.Memberlist
	queue      *memberlist.TransmitLimitedQueue
	meta       []byte // encoded node metadata, immutable
	name       string
	gossipAddr string
	seeds      []string
	now        func() time.Time

	mu    sync.Mutex // guards peers, down
	peers map[string]*peer
	down  map[string]time.Time // MarkDown deadlines
	ring  atomic.Pointer[ring] // owner candidates, rebuilt under mu
	alive atomic.Int32         // alive members in peers, updated with ring

	pmu     sync.Mutex // guards tombs, waiters
	tombs   map[string]*tomb
	waiters map[string]*waiter
	seq     atomic.Uint64
	idBase  string // random per-process prefix of generated purge IDs

	jmu        sync.Mutex // guards join status below
	joined     bool
	joinedAt   time.Time
	startedAt  time.Time
	joinErr    error
	joinedWith int

	sendq   chan send     // reliable sends (acks, resends, large purges)
	changed chan struct{} // OnChange trigger, capacity 1
	stop    chan struct{}
	wg      sync.WaitGroup

	closeDone chan struct{} // closed when Close has finished

	lmu    sync.Mutex // guards left, closed (memberlist panics on Leave after Shutdown)
	left   bool
	closed bool

	// cbMu makes Close wait for a running OnPurge and keeps memberlist
	// handlers that outlive Shutdown from calling OnPurge after Close.
	cbMu     sync.RWMutex
	cbClosed bool // guarded by cbMu
}

// peer is the member table entry for one node, built from memberlist events.
type peer struct {
	node   memberlist.Node // copy; Meta is not retained
	member Member
	since  time.Time // last state change seen
}

// New validates cfg, fills the defaults, starts the gossip listener and the
// background goroutines, and starts joining the seeds. It does not wait for
// the join: while the seeds are unreachable the node runs alone and retries
// with backoff (see Joined).
func New(cfg Config) (*Cluster, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	meta, err := encodeMeta(nodeMeta{PeerAddr: cfg.PeerAddr, PublicAddr: cfg.PublicAddr, Region: cfg.Region, Version: cfg.Version})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	c := &Cluster{
		cfg:       cfg,
		log:       cfg.Logger,
		queue:     &memberlist.TransmitLimitedQueue{RetransmitMult: 2},
		meta:      meta,
		name:      cfg.NodeName,
		now:       cfg.now,
		peers:     make(map[string]*peer),
		down:      make(map[string]time.Time),
		tombs:     make(map[string]*tomb),
		waiters:   make(map[string]*waiter),
		idBase:    randomID(),
		startedAt: time.Now(),
		sendq:     make(chan send, sendQueueLen),
		changed:   make(chan struct{}, 1),
		stop:      make(chan struct{}),
		closeDone: make(chan struct{}),
	}
	c.ring.Store(&ring{})
	// Set before memberlist starts calling GetBroadcasts. Not ml.NumMembers:
	// the queue is read on memberlist's send path, which must not re-enter
	// memberlist's node lock.
	c.queue.NumNodes = c.Alive
	ml, err := c.createMemberlist()
	if err != nil {
		return nil, err
	}
	c.ml = ml
	n := ml.LocalNode()
	c.gossipAddr = net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
	for _, s := range cfg.Seeds {
		if s != c.gossipAddr {
			c.seeds = append(c.seeds, s)
		}
	}
	c.wg.Add(4)
	go c.joinLoop()
	go c.gcLoop()
	go c.sendLoop()
	go c.notifyLoop()
	return c, nil
}

// fill applies defaults and validates. Errors name the Config field.
func (cfg *Config) fill() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, a...)...)
	}
	if cfg.NodeName == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			return bad("NodeName is empty and the host name is unknown: %v", err)
		}
		cfg.NodeName = h
	}
	if err := checkText(cfg.NodeName, maxNodeNameLen); err != nil {
		return bad("NodeName %q: %w", cfg.NodeName, err)
	}
	if cfg.BindAddr == "" {
		cfg.BindAddr = DefaultBindAddr
	}
	bind, err := parseAddrPort("BindAddr", cfg.BindAddr, true)
	if err != nil {
		return bad("%w", err)
	}
	if cfg.AdvertiseAddr == "" {
		if bind.Addr().IsUnspecified() {
			return bad("AdvertiseAddr is required when BindAddr %q is unspecified (0.0.0.0 or ::)", cfg.BindAddr)
		}
	} else if _, err := parseAdvertise(cfg.AdvertiseAddr); err != nil {
		return bad("%w", err)
	}
	if cfg.PeerAddr == "" {
		return bad("PeerAddr is required")
	}
	if host, _, err := net.SplitHostPort(cfg.PeerAddr); err == nil {
		if ip, err := netip.ParseAddr(host); err == nil && ip.IsUnspecified() {
			return bad("PeerAddr %q is unspecified: other members could not reach it; advertise a routable address", cfg.PeerAddr)
		}
	}
	switch len(cfg.SecretKey) {
	case 0:
		if !cfg.allLoopback(bind) {
			return bad("SecretKey is required unless BindAddr, AdvertiseAddr and all Seeds are loopback")
		}
	case 16, 24, 32:
	default:
		return bad("SecretKey must be 16, 24 or 32 bytes (AES-128/192/256), got %d", len(cfg.SecretKey))
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"RejoinInterval", &cfg.RejoinInterval, DefaultRejoinInterval},
		{"JoinRetryMax", &cfg.JoinRetryMax, DefaultJoinRetryMax},
		{"PurgeTTL", &cfg.PurgeTTL, DefaultPurgeTTL},
		{"DeadNodeReclaimTime", &cfg.DeadNodeReclaimTime, DefaultDeadNodeReclaimTime},
	} {
		if *d.v < 0 {
			return bad("%s must not be negative", d.name)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if cfg.MaxTombstones < 0 {
		return bad("MaxTombstones must not be negative")
	}
	if cfg.MaxTombstones == 0 {
		cfg.MaxTombstones = DefaultMaxTombstones
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.now == nil {
		cfg.now = time.Now
	}
	cfg.Seeds = append([]string(nil), cfg.Seeds...)
	cfg.SecretKey = append([]byte(nil), cfg.SecretKey...)
	return nil
}

// allLoopback reports whether gossip can only ever reach this host, the one
// case where running without encryption is acceptable.
func (cfg *Config) allLoopback(bind netip.AddrPort) bool {
	if !bind.Addr().IsLoopback() {
		return false
	}
	if cfg.AdvertiseAddr != "" {
		a, err := parseAdvertise(cfg.AdvertiseAddr)
		if err != nil || !a.Addr().IsLoopback() {
			return false
		}
	}
	for _, s := range cfg.Seeds {
		host, _, err := net.SplitHostPort(s)
		if err != nil {
			host = s
		}
		if host == "localhost" {
			continue
		}
		ip, err := netip.ParseAddr(host)
		if err != nil || !ip.IsLoopback() {
			return false
		}
	}
	return true
}

func parseAddrPort(field, s string, allowEmptyHost bool) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%s %q: %w", field, s, err)
	}
	if host == "" && allowEmptyHost {
		host = "0.0.0.0"
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%s %q: host must be an IP address: %w", field, s, err)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%s %q: bad port: %w", field, s, err)
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(p)), nil
}

// parseAdvertise accepts "ip" or "ip:port"; a zero port means the bind port.
func parseAdvertise(s string) (netip.AddrPort, error) {
	if ip, err := netip.ParseAddr(s); err == nil {
		return netip.AddrPortFrom(ip.Unmap(), 0), nil
	}
	return parseAddrPort("AdvertiseAddr", s, false)
}

// createMemberlist binds the transport (retrying the racy port-0 case: the
// kernel picks the TCP port, which may then be taken for UDP) and creates the
// memberlist with our delegates.
func (c *Cluster) createMemberlist() (*memberlist.Memberlist, error) {
	cfg := c.cfg
	bind, _ := parseAddrPort("BindAddr", cfg.BindAddr, true)
	mlLog := newMemberlistLogger(c.log)
	var nt *memberlist.NetTransport
	var err error
	for range 10 {
		nt, err = memberlist.NewNetTransport(&memberlist.NetTransportConfig{
			BindAddrs: []string{bind.Addr().String()},
			BindPort:  int(bind.Port()),
			Logger:    mlLog,
		})
		if err == nil || bind.Port() != 0 {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("cluster: bind gossip %s: %w", cfg.BindAddr, err)
	}
	port := nt.GetAutoBindPort()
	var tr memberlist.NodeAwareTransport = nt
	if cfg.wrapTransport != nil {
		tr = cfg.wrapTransport(nt)
	}

	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.NodeName
	mc.Transport = tr
	mc.BindAddr = bind.Addr().String()
	mc.BindPort = port
	mc.AdvertisePort = port
	if cfg.AdvertiseAddr != "" {
		adv, _ := parseAdvertise(cfg.AdvertiseAddr)
		mc.AdvertiseAddr = adv.Addr().String()
		if adv.Port() != 0 {
			mc.AdvertisePort = int(adv.Port())
		}
	}
	if len(cfg.SecretKey) > 0 {
		mc.SecretKey = cfg.SecretKey
	}
	mc.Logger = mlLog
	mc.Delegate = delegate{c}
	mc.Events = events{c}
	mc.Alive = delegate{c}
	mc.DeadNodeReclaimTime = cfg.DeadNodeReclaimTime
	setIf(&mc.ProbeInterval, cfg.ProbeInterval)
	setIf(&mc.ProbeTimeout, cfg.ProbeTimeout)
	setIf(&mc.GossipInterval, cfg.GossipInterval)
	setIf(&mc.PushPullInterval, cfg.PushPullInterval)
	setIf(&mc.GossipToTheDeadTime, cfg.GossipToTheDeadTime)
	setIf(&mc.TCPTimeout, cfg.TCPTimeout)
	if cfg.SuspicionMult > 0 {
		mc.SuspicionMult = cfg.SuspicionMult
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		_ = tr.Shutdown()
		return nil, fmt.Errorf("cluster: start memberlist: %w", err)
	}
	return ml, nil
}

func setIf(dst *time.Duration, v time.Duration) {
	if v > 0 {
		*dst = v
	}
}

// LocalName returns this node's member name.
func (c *Cluster) LocalName() string { return c.name }

// GossipAddr returns the advertised gossip "ip:port" (with the actual port
// when BindAddr asked for port 0).
func (c *Cluster) GossipAddr() string { return c.gossipAddr }

// Leave announces a graceful departure and waits up to timeout for the
// announcement to go out (zero waits without limit). The node keeps
// answering gossip until Close; other members stop choosing it as owner as
// soon as they learn it left. Calling Leave again is a no-op.
func (c *Cluster) Leave(timeout time.Duration) error {
	c.lmu.Lock()
	defer c.lmu.Unlock()
	if c.closed {
		return ErrClosed
	}
	if c.left {
		return nil
	}
	c.left = true
	c.announceLeave()
	if err := c.ml.Leave(timeout); err != nil {
		return fmt.Errorf("cluster: leave: %w", err)
	}
	return nil
}

// Close leaves the cluster if Leave was not called (waiting at most one
// second for the announcement), shuts gossip down and waits for the
// background goroutines. It is safe to call more than once.
func (c *Cluster) Close() error {
	c.lmu.Lock()
	if c.closed {
		c.lmu.Unlock()
		<-c.closeDone // a concurrent Close returns only once shutdown is complete
		return nil
	}
	defer close(c.closeDone)
	var errs []error
	if !c.left {
		c.left = true
		c.announceLeave()
		if err := c.ml.Leave(time.Second); err != nil {
			errs = append(errs, fmt.Errorf("cluster: leave: %w", err))
		}
	}
	c.closed = true
	c.lmu.Unlock()

	close(c.stop)
	if err := c.ml.Shutdown(); err != nil {
		errs = append(errs, fmt.Errorf("cluster: shutdown: %w", err))
	}
	c.cbMu.Lock()
	c.cbClosed = true
	c.cbMu.Unlock()
	c.wg.Wait()
	c.pmu.Lock()
	for _, w := range c.waiters {
		w.signal()
	}
	c.pmu.Unlock()
	return errors.Join(errs...)
}

// announceLeave tells every member directly that we are leaving, so that they
// move ownership away at once and list us as left rather than dead.
// memberlist's own leave message does not tell the two apart.
func (c *Cluster) announceLeave() {
	msg := encodeLeaveMsg(c.name)
	for _, n := range c.otherNodes() {
		if err := c.ml.SendBestEffort(&n, msg); err != nil {
			c.log.Debug("leave notice failed", "to", n.Name, "err", err)
		}
	}
}

func (c *Cluster) isClosed() bool {
	select {
	case <-c.stop:
		return true
	default:
		return false
	}
}

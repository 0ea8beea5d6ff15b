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
	"encoding/base64"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeshield/edgeshield/internal/conf"
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
	// DefaultDeadNodeReclaimTime lets a node restarted under the same name but
	// on a new address take its name back this long after it was declared dead.
	// memberlist's own default (0) never allows it, so a restarted node would be
	// refused as a "conflicting address" forever.
	DefaultDeadNodeReclaimTime = 30 * time.Second
	// DefaultAdvertiseCheck: a container that was reconnected with a new IP
	// is reachable again within about this long (plus a re-join).
	DefaultAdvertiseCheck = 10 * time.Second
)

// Config configures a Cluster. The zero value of each field selects the
// default named in its comment. Only PeerAddr is always required. The yaml
// keys are the edge's cluster block (configs/cluster-node1.yaml); fields
// tagged "-" are set by the program, not the operator. Durations are
// time.Duration for Go callers; the edge's loader reads "30s" into them.
type Config struct {
	// NodeName is the unique member name. Empty means the host name.
	NodeName string `yaml:"-"`
	// BindAddr is the gossip "ip:port" for both UDP and TCP. Port 0 picks a
	// free port (see Cluster.GossipAddr). Empty means DefaultBindAddr.
	BindAddr string `yaml:"bind"`
	// AdvertiseAddr is the "ip" or "ip:port" other members use to reach this
	// node's gossip listener. Empty means the bind address, which then must
	// not be unspecified (0.0.0.0 or ::). It may also be a host name ("host"
	// or "host:port", e.g. the container's service name): resolved at start
	// and again every AdvertiseCheck, and when its address changed (the
	// container was reconnected with a new IP) the node moves its gossip
	// membership to the new address (advertise.go). Bind 0.0.0.0 then, so
	// that the listener does not depend on the address.
	AdvertiseAddr string `yaml:"advertise"`
	// PeerAddr is this node's peer HTTP "host:port", published in the node
	// metadata so that other members can forward misses to it. Required.
	PeerAddr string `yaml:"-"`
	// PublicAddr is the optional public address, published in the metadata.
	PublicAddr string `yaml:"-"`
	// Region is the region label published in the metadata.
	Region string `yaml:"region"`
	// Version is the software version published in the metadata.
	Version string `yaml:"-"`
	// Seeds are gossip "host:port" addresses to join at start and re-join
	// every RejoinInterval. Empty means a single-node cluster until another
	// node joins us.
	Seeds []string `yaml:"seeds"`
	// SecretKey is the AES key (16, 24 or 32 bytes) that encrypts and
	// authenticates all gossip. It is required unless the bind address, the
	// advertise address and every seed are loopback. Nodes with a different
	// key cannot join: the error and the logs say "secret key mismatch".
	SecretKey Key `yaml:"secret_key" redact:"true"`
	// RejoinInterval is the period of the re-join of the seeds. Re-joining
	// heals a partition that lasted longer than GossipToTheDeadTime, after
	// which memberlist stops talking to the other side. Zero means
	// DefaultRejoinInterval; it is jittered by ±10%.
	RejoinInterval time.Duration `yaml:"rejoin_interval"`
	// MinMembers is the fewest alive members, this node included, that it
	// must see to count itself in the cluster: below it the node is
	// partitioned (Partitioned, and the edge's readiness fails), for example
	// 2 in a 3-node cluster so that a node cut off from both others leaves
	// DNS. Zero means 1: never partitioned, a lone node serves.
	MinMembers int `yaml:"min_members"`
	// JoinRetryMax caps the exponential backoff between the first join
	// attempts. Zero means DefaultJoinRetryMax.
	JoinRetryMax time.Duration `yaml:"-"`
	// ShieldRegion, when set, restricts owners to members of this region so
	// that misses from every region funnel through it. When no member of the
	// region is available, owners are chosen among all members.
	ShieldRegion string `yaml:"shield_region"`
	// PurgeTTL is how long a purge tombstone is kept and exchanged, counted
	// from Purge.At. Zero means DefaultPurgeTTL.
	PurgeTTL time.Duration `yaml:"-"`
	// Tombstones keeps the purges this node applied: it decides whether a
	// purge is new (OnPurge is called) and is the tombstone set exchanged
	// in push/pull state. The edge backs it with the cache's purge
	// tombstones (cache.Purges), so lookups and the exchange read one set
	// with one limit; it should keep tombstones for PurgeTTL. Nil means no
	// tombstones: purges are only delivered by message, a member that
	// missed one never learns of it, and OnPurge may see an ID more than
	// once.
	Tombstones TombstoneStore `yaml:"-"`
	// OnPurge is called once per purge ID this node learns about (once per
	// purge Tombstones.Record reports new), the local ones included, before Purge returns for a local purge, and never
	// after Close returned. It must not block for long (remote purges are
	// delivered on the gossip receive path) and must not call Purge,
	// PurgeWait or Close.
	OnPurge func(Purge) `yaml:"-"`
	// OnChange is called (asynchronously, coalesced) after members joined,
	// left, failed or changed metadata. It must not block for long.
	OnChange func() `yaml:"-"`
	// Logger receives cluster and memberlist logs (memberlist's with
	// source=memberlist). Nil means slog.Default().
	Logger *slog.Logger `yaml:"-"`

	// Timing knobs, mostly for tests. Zero means memberlist.DefaultLANConfig's
	// value, except DeadNodeReclaimTime (DefaultDeadNodeReclaimTime).
	ProbeInterval       time.Duration `yaml:"-"`
	ProbeTimeout        time.Duration `yaml:"-"`
	GossipInterval      time.Duration `yaml:"-"`
	PushPullInterval    time.Duration `yaml:"-"`
	GossipToTheDeadTime time.Duration `yaml:"-"`
	DeadNodeReclaimTime time.Duration `yaml:"-"`
	SuspicionMult       int           `yaml:"-"`
	// AdvertiseCheck is the period of the re-resolution of a host-name
	// AdvertiseAddr. Zero means DefaultAdvertiseCheck.
	AdvertiseCheck time.Duration `yaml:"-"`
	// TCPTimeout bounds gossip TCP dials and push/pull exchanges; Close may
	// wait this long for an in-flight join. Zero means memberlist's 10s.
	TCPTimeout time.Duration `yaml:"-"`

	// wrapTransport is a test hook that wraps the gossip transport (used to
	// simulate partitions). Nil in production.
	wrapTransport func(memberlist.NodeAwareTransport) memberlist.NodeAwareTransport
	// advertiseSource is a test hook that replaces the resolution of the
	// advertise address (and makes it dynamic, as for a host name).
	advertiseSource func() (netip.Addr, error)
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
	mlp        atomic.Pointer[memberlist.Memberlist] // replaced when the advertise address changes (advertise.go)
	mlGen      atomic.Uint64                         // generation of mlp; events of older ones are ignored
	mlLog      *memberlistLog                        // memberlist's logger, collapsing repeats
	queue      *memberlist.TransmitLimitedQueue
	meta       []byte // encoded node metadata, immutable
	name       string
	gossipAddr atomic.Pointer[string] // advertised gossip "ip:port"
	seeds      []string
	now        func() time.Time

	mu    sync.Mutex // guards peers, down
	peers map[string]*peer
	down  map[string]time.Time // MarkDown deadlines
	ring  atomic.Pointer[ring] // owner candidates, rebuilt under mu
	alive atomic.Int32         // alive members in peers, updated with ring

	pmu     sync.Mutex // guards waiters
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

	lmu    sync.Mutex // guards left, closed, mlShut (memberlist panics on Leave after Shutdown)
	left   bool
	closed bool
	mlShut bool // a failed address move left the memberlist shut down
	paused bool // Pause released the gossip port for an upgrade (handover.go)

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
		mlLog:     newMemberlistLog(cfg.Logger, cfg.now),
		queue:     &memberlist.TransmitLimitedQueue{RetransmitMult: 2},
		meta:      meta,
		name:      cfg.NodeName,
		now:       cfg.now,
		peers:     make(map[string]*peer),
		down:      make(map[string]time.Time),
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
	var adv netip.Addr
	if c.resolvesAdvertise() {
		if adv, err = c.resolveAdvertise(); err != nil {
			return nil, err
		}
	}
	ml, err := c.createMemberlist(adv, -1)
	if err != nil {
		return nil, err
	}
	c.setMemberlist(ml)
	for _, s := range cfg.Seeds {
		if s != c.GossipAddr() {
			c.seeds = append(c.seeds, s)
		}
	}
	if c.resolvesAdvertise() {
		c.wg.Add(1)
		go c.advertiseLoop()
	}
	c.wg.Add(4)
	go c.joinLoop()
	go c.gcLoop()
	go c.sendLoop()
	go c.notifyLoop()
	return c, nil
}

// Key is the gossip secret key. Its text form (YAML, environment) is
// base64; in Go it is the raw bytes, and a []byte can be assigned to it.
type Key []byte

// UnmarshalText decodes base64.
func (k *Key) UnmarshalText(text []byte) error {
	b, err := base64.StdEncoding.DecodeString(string(text))
	if err != nil {
		return fmt.Errorf("not base64: %w", err)
	}
	*k = b
	return nil
}

// DefaultConfig is the configuration New gives the zero fields that the
// edge's cluster block shows (the rest are timing knobs and callbacks).
func DefaultConfig() Config {
	return Config{BindAddr: DefaultBindAddr, RejoinInterval: DefaultRejoinInterval, MinMembers: 1}
}

// Validate checks cfg without filling defaults or requiring what only New
// needs (PeerAddr, NodeName), so a configuration can be checked before the
// node binds its listeners. When PeerAddr is set it counts in the loopback
// rule of SecretKey. Errors are *conf.FieldError values naming the yaml key
// (the Go field for fields not in YAML).
func (cfg *Config) Validate() error {
	bindAddr := cfg.BindAddr
	if bindAddr == "" {
		bindAddr = DefaultBindAddr
	}
	bind, err := parseAddrPort(bindAddr, true)
	if err != nil {
		return conf.Errorf("bind", "%v", err)
	}
	if cfg.AdvertiseAddr == "" {
		if bind.Addr().IsUnspecified() {
			return conf.Errorf("advertise", "required when bind %q is unspecified (0.0.0.0 or ::): the IP other members reach, or a host name (re-resolved, e.g. a container's service name)", bindAddr)
		}
	} else if _, err := parseAdvertise(cfg.AdvertiseAddr); err != nil && !isHostName(cfg.AdvertiseAddr) {
		return conf.Errorf("advertise", "want an IP address or a host name, optionally with :port: %v", err)
	}
	switch len(cfg.SecretKey) {
	case 0:
		if a := cfg.notLoopback(bind); a != "" {
			return conf.Errorf("secret_key", "required unless every cluster address is loopback (%q is not): base64 of 16, 24 or 32 random bytes, e.g. `head -c32 /dev/urandom | base64`", a)
		}
	case 16, 24, 32:
	default:
		return conf.Errorf("secret_key", "must be 16, 24 or 32 bytes (AES-128/192/256), got %d", len(cfg.SecretKey))
	}
	for _, d := range []struct {
		field string
		v     time.Duration
	}{{"rejoin_interval", cfg.RejoinInterval}, {"JoinRetryMax", cfg.JoinRetryMax}, {"PurgeTTL", cfg.PurgeTTL}, {"DeadNodeReclaimTime", cfg.DeadNodeReclaimTime}, {"AdvertiseCheck", cfg.AdvertiseCheck}} {
		if d.v < 0 {
			return conf.Errorf(d.field, "must not be negative, got %v", d.v)
		}
	}
	if cfg.MinMembers < 0 {
		return conf.Errorf("min_members", "must not be negative, got %d", cfg.MinMembers)
	}
	return nil
}

// fill validates and applies defaults. Errors wrap ErrInvalidConfig.
func (cfg *Config) fill() error {
	bad := func(field, format string, a ...any) error {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, conf.Errorf(field, format, a...))
	}
	if cfg.NodeName == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			return bad("NodeName", "empty and the host name is unknown: %v", err)
		}
		cfg.NodeName = h
	}
	if err := checkText(cfg.NodeName, maxNodeNameLen); err != nil {
		return bad("NodeName", "%q: %v", cfg.NodeName, err)
	}
	if cfg.PeerAddr == "" {
		return bad("PeerAddr", "required")
	}
	host, _, err := net.SplitHostPort(cfg.PeerAddr)
	if err != nil {
		return bad("PeerAddr", "want host:port, got %q", cfg.PeerAddr)
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsUnspecified() {
		return bad("PeerAddr", "%q is unspecified: other members could not reach it; advertise a routable address", cfg.PeerAddr)
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	if cfg.BindAddr == "" {
		cfg.BindAddr = DefaultBindAddr
	}
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{
		{&cfg.RejoinInterval, DefaultRejoinInterval}, {&cfg.JoinRetryMax, DefaultJoinRetryMax},
		{&cfg.PurgeTTL, DefaultPurgeTTL}, {&cfg.DeadNodeReclaimTime, DefaultDeadNodeReclaimTime},
		{&cfg.AdvertiseCheck, DefaultAdvertiseCheck},
	} {
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if cfg.MinMembers == 0 {
		cfg.MinMembers = 1
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

// notLoopback returns the first address (bind, advertise, PeerAddr, a
// seed) that can reach beyond this host, or "" when gossip can only ever
// reach this host: the one case where running without encryption is
// acceptable.
func (cfg *Config) notLoopback(bind netip.AddrPort) string {
	if !bind.Addr().IsLoopback() {
		return bind.String()
	}
	if cfg.AdvertiseAddr != "" {
		a, err := parseAdvertise(cfg.AdvertiseAddr)
		if err != nil || !a.Addr().IsLoopback() {
			return cfg.AdvertiseAddr
		}
	}
	all := append([]string(nil), cfg.Seeds...)
	if cfg.PeerAddr != "" {
		all = append(all, cfg.PeerAddr)
	}
	for _, s := range all {
		host, _, err := net.SplitHostPort(s)
		if err != nil {
			host = s
		}
		if host == "localhost" {
			continue
		}
		ip, err := netip.ParseAddr(host)
		if err != nil || !ip.IsLoopback() {
			return s
		}
	}
	return ""
}

func parseAddrPort(s string, allowEmptyHost bool) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q: %w", s, err)
	}
	if host == "" && allowEmptyHost {
		host = "0.0.0.0"
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q: host must be an IP address: %w", s, err)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q: bad port: %w", s, err)
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(p)), nil
}

// parseAdvertise accepts "ip" or "ip:port"; a zero port means the bind port.
func parseAdvertise(s string) (netip.AddrPort, error) {
	if ip, err := netip.ParseAddr(s); err == nil {
		return netip.AddrPortFrom(ip.Unmap(), 0), nil
	}
	return parseAddrPort(s, false)
}

// bindTransport binds the gossip transport, retrying the racy port-0 case.
func bindTransport(bind netip.AddrPort, mlLog *log.Logger) (*memberlist.NetTransport, error) {
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
	return nt, err
}

// createMemberlist binds the transport (retrying the racy port-0 case: the
// kernel picks the TCP port, which may then be taken for UDP) and creates the
// memberlist with our delegates. A valid adv replaces the advertised IP of
// the configuration (a resolved host name); port >= 0 replaces the bind
// port (a re-creation keeps the port it had).
func (c *Cluster) createMemberlist(adv netip.Addr, port int) (*memberlist.Memberlist, error) {
	cfg := c.cfg
	bind, _ := parseAddrPort(cfg.BindAddr, true)
	if port >= 0 {
		bind = netip.AddrPortFrom(bind.Addr(), uint16(port))
	}
	mlLog := c.mlLog.logger()
	nt, err := bindTransport(bind, mlLog)
	if err != nil {
		return nil, fmt.Errorf("cluster: bind gossip %s: %w", cfg.BindAddr, err)
	}
	port = nt.GetAutoBindPort()
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
		if a, err := parseAdvertise(cfg.AdvertiseAddr); err == nil {
			mc.AdvertiseAddr = a.Addr().String()
			if a.Port() != 0 {
				mc.AdvertisePort = int(a.Port())
			}
		} else if _, p, err := net.SplitHostPort(cfg.AdvertiseAddr); err == nil {
			if pn, _ := strconv.Atoi(p); pn != 0 { // a host name with a port
				mc.AdvertisePort = pn
			}
		}
	}
	if adv.IsValid() {
		mc.AdvertiseAddr = adv.String()
	}
	if len(cfg.SecretKey) > 0 {
		mc.SecretKey = cfg.SecretKey
	}
	mc.Logger = mlLog
	mc.Delegate = delegate{c}
	mc.Events = events{c, c.mlGen.Load()}
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
// It changes when a re-resolved advertise address changed (advertise.go).
func (c *Cluster) GossipAddr() string { return *c.gossipAddr.Load() }

// list is the current memberlist.
func (c *Cluster) list() *memberlist.Memberlist { return c.mlp.Load() }

// setMemberlist publishes ml and its advertised address.
func (c *Cluster) setMemberlist(ml *memberlist.Memberlist) {
	n := ml.LocalNode()
	addr := net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
	c.gossipAddr.Store(&addr)
	c.mlp.Store(ml)
}

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
	if c.mlShut {
		return nil
	}
	c.announceLeave()
	if err := c.list().Leave(timeout); err != nil {
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
	if !c.left && !c.mlShut {
		c.left = true
		c.announceLeave()
		if err := c.list().Leave(time.Second); err != nil {
			errs = append(errs, fmt.Errorf("cluster: leave: %w", err))
		}
	}
	c.closed = true
	c.lmu.Unlock()

	close(c.stop)
	if err := c.list().Shutdown(); err != nil {
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
		if err := c.list().SendBestEffort(&n, msg); err != nil {
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

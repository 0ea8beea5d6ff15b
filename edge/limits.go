package edge

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/valyala/fasthttp"
)

// Per-client limits (server.rate_limit, server.max_conns_per_ip). A client
// is the TCP peer's IP address: behind a load balancer every client shares
// its address, so exempt it (server.rate_limit.exempt) or leave the limits
// off there.

// clientKey is a client IP in 16 bytes (IPv4 in its IPv4-mapped form): a
// map key that costs no allocation to build.
type clientKey [16]byte

// keyOfIP builds the key of ip; ok is false for anything but a 4- or
// 16-byte address. No allocation (net.IP.To16 would allocate for the 4-byte
// form the kernel hands IPv4 peers in).
func keyOfIP(ip net.IP) (k clientKey, ok bool) {
	switch len(ip) {
	case net.IPv4len:
		k[10], k[11] = 0xff, 0xff
		copy(k[12:], ip)
		return k, true
	case net.IPv6len:
		copy(k[:], ip)
		return k, true
	}
	return k, false
}

// keyOfAddr is keyOfIP of a TCP peer address; ok is false for other kinds.
func keyOfAddr(a net.Addr) (clientKey, bool) {
	if ta, ok := a.(*net.TCPAddr); ok {
		return keyOfIP(ta.IP)
	}
	return clientKey{}, false
}

// limitShards splits per-client state so that concurrent clients rarely
// contend on one mutex.
const limitShards = 64

func shardOf(k clientKey) int {
	h := binary.LittleEndian.Uint64(k[:8]) ^ binary.LittleEndian.Uint64(k[8:])
	return int((h * 0x9E3779B97F4A7C15) >> (64 - 6)) // 6 bits: limitShards
}

// maxRateClients bounds the clients whose buckets are remembered at once
// (about 64 bytes each: 4 MiB in all). A full shard first forgets buckets
// that have refilled (they are equivalent to no bucket), then an arbitrary
// one: that client starts again with a full burst, which under a flood of
// distinct addresses is the lesser evil next to unbounded memory.
const maxRateClients = 1 << 16

// bucket is a token bucket: tokens available at time last (UnixNano).
type bucket struct {
	tokens float64
	last   int64
}

// rateLimiter is a token bucket per client IP: rate tokens a second, at
// most burst stored; a request takes one. Buckets live in a bounded,
// sharded map; refilled ones are dropped by sweep and on demand. Safe for
// concurrent use; allow does not allocate once a client's bucket exists.
type rateLimiter struct {
	rate, burst float64
	exempt      []netip.Prefix
	shards      clientTable[bucket] // the client's bucket; absent = full
}

// clientTable is per-client state in limitShards locked shards.
type clientTable[V any] [limitShards]clientShard[V]

type clientShard[V any] struct {
	mu sync.Mutex // guards m
	m  map[clientKey]V
	_  [40]byte // keep shards on separate cache lines
}

func (t *clientTable[V]) init() {
	for i := range t {
		t[i].m = make(map[clientKey]V)
	}
}

// len is the number of clients held.
func (t *clientTable[V]) len() int {
	n := 0
	for i := range t {
		s := &t[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

func newRateLimiter(c RateLimitConfig) *rateLimiter {
	l := &rateLimiter{rate: c.Rate, burst: float64(c.Burst)}
	for _, s := range c.Exempt {
		p, _ := parsePrefix(s) // validated by Config.Validate
		l.exempt = append(l.exempt, p)
	}
	l.shards.init()
	return l
}

// parsePrefix reads a CIDR ("10.0.0.0/8", "2001:db8::/32") or a single
// address (a /32 or /128).
func parsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func (l *rateLimiter) exempted(k clientKey) bool {
	a := netip.AddrFrom16(k).Unmap()
	for _, p := range l.exempt {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// allow takes a token from k's bucket at now (UnixNano). When none is left
// it reports how long until one is.
func (l *rateLimiter) allow(k clientKey, now int64) (ok bool, wait time.Duration) {
	if len(l.exempt) > 0 && l.exempted(k) {
		return true, 0
	}
	s := &l.shards[shardOf(k)]
	s.mu.Lock()
	b, found := s.m[k]
	if !found {
		if len(s.m) >= maxRateClients/limitShards {
			l.makeRoom(s, now)
		}
		b = bucket{tokens: l.burst, last: now}
	} else if now > b.last {
		b.tokens = math.Min(l.burst, b.tokens+float64(now-b.last)/1e9*l.rate)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		ok = true
	} else {
		wait = time.Duration((1 - b.tokens) / l.rate * 1e9)
	}
	s.m[k] = b
	s.mu.Unlock()
	return ok, wait
}

// makeRoom frees an eighth of a full shard (s.mu held): refilled buckets
// first, then arbitrary ones. Freeing a batch keeps a flood of new
// addresses at an amortized few steps each, not a shard scan each.
func (l *rateLimiter) makeRoom(s *clientShard[bucket], now int64) {
	want := maxRateClients / limitShards / 8
	freed := l.sweepShard(s, now)
	for k := range s.m {
		if freed >= want {
			return
		}
		delete(s.m, k)
		freed++
	}
}

// sweepShard drops the buckets that have refilled by now (s.mu held).
func (l *rateLimiter) sweepShard(s *clientShard[bucket], now int64) int {
	n := 0
	for k, b := range s.m {
		if b.tokens+float64(now-b.last)/1e9*l.rate >= l.burst {
			delete(s.m, k)
			n++
		}
	}
	return n
}

// sweep drops every refilled bucket; the node's maintenance loop calls it.
func (l *rateLimiter) sweep(now int64) int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += l.sweepShard(s, now)
		s.mu.Unlock()
	}
	return n
}

// clients is the number of buckets remembered.
func (l *rateLimiter) clients() int { return l.shards.len() }

// rateLimited answers 429 when the client has used its burst (RFC 6585
// §4), with Retry-After in whole seconds, rounded up (RFC 9110 §10.2.3), so
// a client that honours it finds a token. It reports whether it answered.
func rateLimited(l *rateLimiter, ctx *fasthttp.RequestCtx, now time.Time) bool {
	k, ok := keyOfIP(ctx.RemoteIP())
	if !ok {
		return false
	}
	allowed, wait := l.allow(k, now.UnixNano())
	if allowed {
		return false
	}
	secs := int64((wait + time.Second - 1) / time.Second)
	var num [20]byte
	ctx.Error("too many requests\n", fasthttp.StatusTooManyRequests)
	ctx.Response.Header.SetBytesV("Retry-After", strconv.AppendInt(num[:0], max(secs, 1), 10))
	return true
}

// connLimiter counts open connections per client IP. Entries are deleted
// when their count drops to zero, so the map holds at most one entry per
// open connection (bounded by server.concurrency). Safe for concurrent use.
type connLimiter struct {
	max     atomic.Int32       // server.max_conns_per_ip (a reload may change it)
	refused atomic.Uint64      // connections closed at accept for being over max
	shards  clientTable[int32] // open connections per client
}

func newConnLimiter(max int) *connLimiter {
	l := &connLimiter{}
	l.max.Store(int32(max))
	l.shards.init()
	return l
}

// acquire counts a new connection from k, unless k already has max.
func (l *connLimiter) acquire(k clientKey) bool {
	s := &l.shards[shardOf(k)]
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m[k] >= l.max.Load() {
		return false
	}
	s.m[k]++
	return true
}

func (l *connLimiter) release(k clientKey) {
	s := &l.shards[shardOf(k)]
	s.mu.Lock()
	if c := s.m[k]; c <= 1 {
		delete(s.m, k)
	} else {
		s.m[k] = c - 1
	}
	s.mu.Unlock()
}

// clients is the number of client IPs with open connections.
func (l *connLimiter) clients() int { return l.shards.len() }

// listener refuses, at accept time, connections from a client that already
// has max open: they are closed before a byte is read or a goroutine is
// spent on them (the client sees its connection closed or reset). The
// connection returned is the one accepted, unwrapped, so sendfile still
// sees a *net.TCPConn; the count is released by releaseConn when the
// server closes (or hijacks) it.
func (l *connLimiter) listener(ln net.Listener) net.Listener { return &limitListener{ln, l} }

type limitListener struct {
	net.Listener
	l *connLimiter
}

func (ln *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := ln.Listener.Accept()
		if err != nil {
			return nil, err
		}
		k, ok := keyOfAddr(c.RemoteAddr())
		if !ok || ln.l.acquire(k) {
			return c, nil
		}
		ln.l.refused.Add(1)
		c.Close()
	}
}

var errTooManyConns = errors.New("edge: too many connections from this client (server.max_conns_per_ip)")

// quicConnContext is the HTTP/3 transport's ConnContext hook: a QUIC
// connection counts against its client's address as a TCP one does, is
// refused over max (before its handshake), and gives its slot back when
// it ends, a failed handshake included (quic-go cancels ctx then). The
// address of a first packet is not validated: a spoofed one can hold a
// victim's slots for a handshake timeout, as a SYN flood can not (TCP
// completes the handshake before accept).
func (l *connLimiter) quicConnContext(ctx context.Context, ci *quic.ClientInfo) (context.Context, error) {
	ua, ok := ci.RemoteAddr.(*net.UDPAddr)
	if !ok {
		return ctx, nil
	}
	k, ok := keyOfIP(ua.IP)
	if !ok {
		return ctx, nil
	}
	if !l.acquire(k) {
		l.refused.Add(1)
		return nil, errTooManyConns
	}
	context.AfterFunc(ctx, func() { l.release(k) })
	return ctx, nil
}

// connState is the public servers' fasthttp ConnState hook: a connection's
// end gives its slot back.
func (l *connLimiter) connState(c net.Conn, st fasthttp.ConnState) {
	if st == fasthttp.StateClosed || st == fasthttp.StateHijacked {
		l.releaseConn(c)
	}
}

// releaseConn gives back the slot of c, a connection its listener
// accepted, once it is closed: connState does for the fasthttp servers'
// connections, the HTTP/2 fronts (h2.go) for theirs and for those closed
// before any server got them.
func (l *connLimiter) releaseConn(c net.Conn) {
	if k, ok := keyOfAddr(c.RemoteAddr()); ok {
		l.release(k)
	}
}

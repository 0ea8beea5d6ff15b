package edge

import (
	"sync/atomic"
)

// counters are the node's request figures; all fields are updated
// atomically from any goroutine.
type counters struct {
	requests                atomic.Uint64
	byProto                 [numProtos]atomic.Uint64 // requests by front: protoH1, protoH2, protoH3 (front_http.go)
	hits                    atomic.Uint64            // answered from cache, fresh or stale-while-revalidate
	misses                  atomic.Uint64            // needed an upstream fetch (miss, validation, pass)
	staleServed             atomic.Uint64            // stale answers (while revalidating or on origin error)
	passes                  atomic.Uint64            // fetched without sharing (uncacheable, hit-for-pass)
	fills                   atomic.Uint64            // shared fetches whose body was streamed into a flight
	coalesced               atomic.Uint64            // requests that waited on another's fetch
	originFetches           atomic.Uint64            // requests sent upstream
	originErrors            atomic.Uint64            // upstream fetches that failed
	originShortCircuited    atomic.Uint64            // origin fetches not sent: origin down (health check)
	revalidated             atomic.Uint64            // 304s that refreshed a stale entry
	backgroundRevalidations atomic.Uint64
	errors                  atomic.Uint64 // 5xx answered because of upstream failure
	panics                  atomic.Uint64
	rateLimited             atomic.Uint64 // answered 429 (server.rate_limit)
	bodiesTooLarge          atomic.Uint64 // answered 413 (server.max_request_body)
}

// Stats is the JSON document of GET /stats.
type Stats struct {
	Node     string `json:"node"`
	Entries  int64  `json:"entries"`
	Bytes    int64  `json:"bytes"`
	MaxBytes int64  `json:"max_bytes"`
	// OffheapObjects and OffheapBytes count the bodies kept in memory files
	// (cache.offheap_min_size), including evicted ones still being sent;
	// SendfileBytes is how much of them went out with sendfile(2);
	// OffheapLeaked counts bodies the garbage collector had to close (a
	// reference never released: a bug worth reporting if it is not 0).
	OffheapObjects int64  `json:"offheap_objects"`
	OffheapBytes   int64  `json:"offheap_bytes"`
	SendfileBytes  uint64 `json:"sendfile_bytes"`
	OffheapLeaked  uint64 `json:"offheap_leaked"`
	Requests       uint64 `json:"requests"`
	// RequestsH1, RequestsH2 and RequestsH3 split Requests by the
	// protocol the client spoke (HTTP/1.x, with or without TLS; HTTP/2;
	// HTTP/3): they add up to it.
	RequestsH1    uint64  `json:"requests_h1"`
	RequestsH2    uint64  `json:"requests_h2"`
	RequestsH3    uint64  `json:"requests_h3"`
	Hits          uint64  `json:"hits"`
	Misses        uint64  `json:"misses"`
	HitRatio      float64 `json:"hit_ratio"`
	StaleServed   uint64  `json:"stale_served"`
	Passes        uint64  `json:"passes"`
	OriginFetches uint64  `json:"origin_fetches"`
	OriginErrors  uint64  `json:"origin_errors"`
	// OriginUp is the origin's health (origin.health_check);
	// OriginShortCircuited counts fetches not sent because it was down;
	// OriginChecks / OriginCheckFailures count active checks,
	// OriginChecksKicked the checks run early because a real request failed
	// at the transport level, and OriginDowns the transitions to down.
	OriginUp                bool   `json:"origin_up"`
	OriginShortCircuited    uint64 `json:"origin_short_circuited"`
	OriginChecks            uint64 `json:"origin_checks"`
	OriginCheckFailures     uint64 `json:"origin_check_failures"`
	OriginChecksKicked      uint64 `json:"origin_checks_kicked"`
	OriginDowns             uint64 `json:"origin_downs"`
	CoalescedWaiters        uint64 `json:"coalesced_waiters"`
	InFlight                int    `json:"in_flight"`
	Revalidated             uint64 `json:"revalidated"`
	BackgroundRevalidations uint64 `json:"background_revalidations"`
	Errors                  uint64 `json:"errors"`
	// Panics counts handler and background panics recovered (each
	// answered 500 or logged): a bug worth reporting if it is not 0.
	Panics     uint64 `json:"panics"`
	Evicted    uint64 `json:"evicted"`
	Rejected   uint64 `json:"rejected"`
	Tombstones int    `json:"purge_tombstones"`
	Draining   bool   `json:"draining"`
	// Client limits: requests answered 429 by server.rate_limit and the
	// clients whose buckets are remembered; connections closed at accept
	// by server.max_conns_per_ip and the client IPs with connections open
	// (counted only while that cap is on); request bodies refused with 413
	// (server.max_request_body).
	RateLimited      uint64 `json:"rate_limited"`
	RateLimitClients int    `json:"rate_limit_clients"`
	ConnsRefused     uint64 `json:"conns_refused_per_ip"`
	ConnLimitClients int    `json:"conn_limit_clients"`
	BodiesTooLarge   uint64 `json:"request_bodies_too_large"`
	// Cluster figures (zero without a cluster).
	ClusterAlive        int    `json:"cluster_alive,omitempty"`
	PeerForwards        uint64 `json:"peer_forwards"`
	PeerForwardFailures uint64 `json:"peer_forward_failures"`
	ShieldHopsServed    uint64 `json:"shield_hops_served"`
	ShieldHopsRefused   uint64 `json:"shield_hops_refused"`
	// Warm restarts (cache.warm_keys; zero when off): keys in the hot-key
	// table, objects and bytes prefetched from peers (or, for a single
	// node's warm file, the origin), objects no peer had.
	HotKeys        int    `json:"hot_keys"`
	WarmPrefetched uint64 `json:"warm_prefetched"`
	WarmBytes      uint64 `json:"warm_bytes"`
	WarmNotOnPeers uint64 `json:"warm_not_on_peers"`
}

// Stats returns a snapshot of the node's figures.
func (n *Node) Stats() Stats {
	ss := n.pipe.store.Stats()
	s := Stats{
		Node:                    n.name,
		Entries:                 ss.Entries,
		Bytes:                   ss.Bytes,
		MaxBytes:                int64(n.pipe.conf().Cache.MaxBytes),
		Requests:                n.pipe.stats.requests.Load(),
		Hits:                    n.pipe.stats.hits.Load(),
		Misses:                  n.pipe.stats.misses.Load(),
		StaleServed:             n.pipe.stats.staleServed.Load(),
		Passes:                  n.pipe.stats.passes.Load(),
		OriginFetches:           n.pipe.stats.originFetches.Load(),
		OriginErrors:            n.pipe.stats.originErrors.Load(),
		CoalescedWaiters:        n.pipe.stats.coalesced.Load(),
		InFlight:                n.pipe.flights.Len(),
		Revalidated:             n.pipe.stats.revalidated.Load(),
		BackgroundRevalidations: n.pipe.stats.backgroundRevalidations.Load(),
		Errors:                  n.pipe.stats.errors.Load(),
		Panics:                  n.pipe.stats.panics.Load() + n.bg.panics.Load(),
		Evicted:                 ss.Evicted,
		Rejected:                ss.Rejected,
		Tombstones:              n.pipe.purges.Len(),
		Draining:                n.pipe.draining.Load(),
	}
	s.RequestsH1, s.RequestsH2, s.RequestsH3 = n.pipe.stats.byProto[protoIdxH1].Load(), n.pipe.stats.byProto[protoIdxH2].Load(), n.pipe.stats.byProto[protoIdxH3].Load()
	s.RateLimited, s.BodiesTooLarge = n.pipe.stats.rateLimited.Load(), n.pipe.stats.bodiesTooLarge.Load()
	st := n.pipe.set()
	if st.rate != nil {
		s.RateLimitClients = st.rate.clients()
	}
	if n.conns != nil {
		s.ConnsRefused, s.ConnLimitClients = n.conns.refused.Load(), n.conns.clients()
	}
	hs := st.health.State()
	s.OriginUp, s.OriginShortCircuited = hs.Up, n.pipe.stats.originShortCircuited.Load()
	s.OriginChecks, s.OriginCheckFailures, s.OriginDowns = hs.Checks, hs.CheckFailures, hs.Downs
	s.OriginChecksKicked = hs.Kicked
	bs := n.pipe.blobs.Stats()
	s.OffheapObjects, s.OffheapBytes, s.SendfileBytes, s.OffheapLeaked = bs.Files, bs.Bytes, bs.SendfileBytes, bs.Leaked
	if n.peers != nil {
		n.peers.addStats(&s)
	}
	n.addWarmStats(&s)
	if t := s.Hits + s.Misses; t > 0 {
		s.HitRatio = float64(s.Hits) / float64(t)
	}
	return s
}

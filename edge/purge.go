package edge

import (
	"context"
	"errors"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/edgeshield/edgeshield/cache"
	"github.com/edgeshield/edgeshield/cluster"
)

// purger applies purges: to this node's store, tombstones and hit-for-pass
// markers, and, in a cluster, to every member through the cluster (which
// calls applyCluster back on each member, this one included).
type purger struct {
	store  *cache.Store
	purges *cache.Purges
	hfp    *hitForPass
	now    func() time.Time
	log    *slog.Logger
	// cluster is nil without one; Start sets it before any listener serves
	// and it never changes after.
	cluster *cluster.Cluster
	// recent lists the last purges applied here, for the console.
	recent recentPurges
}

// PurgeResult is the /purge answer.
type PurgeResult struct {
	Kind  string `json:"kind"`
	Value string `json:"value"`
	Hard  bool   `json:"hard"`
	Found int    `json:"found"` // url purges: whether this node held the entry
	// With wait, in a cluster: members that confirmed applying it, and those
	// that did not before the wait expired.
	Confirmed []string `json:"confirmed,omitempty"`
	Missing   []string `json:"missing,omitempty"`
}

// Purge invalidates cached content, cluster-wide when the node is in a
// cluster. kind is "url" (an absolute URL or host/path: the entry and all its
// variants), "prefix" (every key starting with host/path-prefix) or "tag"
// (entries whose Surrogate-Key or Cache-Tag listed it). Soft purges mark
// entries stale so the next request revalidates (and stale-while-revalidate
// keeps clients fast); hard ones remove them. With wait > 0 in a cluster it
// returns once every alive member applied it, or wait expired, listing who
// confirmed.
func (n *Node) Purge(kind, value string, hard bool, wait time.Duration) (PurgeResult, error) {
	return n.purger.purge(kind, value, hard, wait)
}

func (p *purger) purge(kind, value string, hard bool, wait time.Duration) (PurgeResult, error) {
	res := PurgeResult{Kind: kind, Value: value, Hard: hard}
	var v []byte
	switch kind {
	case "url", "prefix":
		key, err := purgeKey(value)
		if err != nil {
			return res, err
		}
		v = key
	case "tag":
		v = []byte(value)
	default:
		return res, &ConfigError{Key: "kind", Msg: "want url, prefix or tag"}
	}
	now := p.now()
	if p.cluster == nil {
		found, err := p.apply(kind, v, hard, now)
		res.Found = found
		return res, err
	}
	if kind == "url" && p.store.Get(v) != nil {
		res.Found = 1
	}
	cp := cluster.Purge{Kind: kind, Value: string(v), Hard: hard, At: now}
	if wait <= 0 {
		return res, p.cluster.Purge(context.Background(), cp)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	confirmed, missing, err := p.cluster.PurgeWait(ctx, cp)
	res.Confirmed, res.Missing = confirmed, missing
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return res, err
	}
	return res, nil
}

// applyCluster is the cluster's OnPurge: every purge, local or remote,
// new or learned from a peer's tombstones on (re)join, lands here once,
// after clusterTombstones.Record stored its tombstone.
func (p *purger) applyCluster(cp cluster.Purge) {
	found, err := p.invalidate(cp.Kind, []byte(cp.Value), cp.Hard)
	if err != nil {
		p.log.Warn("cluster purge not applied", "kind", cp.Kind, "value", cp.Value, "err", err)
		return
	}
	p.recent.add(PurgeRecord{At: cp.At, Kind: cp.Kind, Value: cp.Value, Hard: cp.Hard, Found: found, Origin: cp.Origin})
}

// apply purges locally (without a cluster): the tombstone, then the
// entries. For url purges value is the cache key.
func (p *purger) apply(kind string, value []byte, hard bool, at time.Time) (int, error) {
	k, ok := purgeKinds[kind]
	if !ok {
		return 0, &ConfigError{Key: "kind", Msg: "want url, prefix or tag"}
	}
	p.purges.Add(k, value, hard, at)
	found, err := p.invalidate(kind, value, hard)
	if err == nil {
		p.recent.add(PurgeRecord{At: at, Kind: kind, Value: string(value), Hard: hard, Found: found})
	}
	return found, err
}

// invalidate acts on what the tombstone alone does not cover: the stored
// entry of a url purge and its hit-for-pass marker.
func (p *purger) invalidate(kind string, value []byte, hard bool) (int, error) {
	found := 0
	switch kind {
	case "url":
		if e := p.store.Get(value); e != nil {
			found = 1
			if hard {
				p.store.Delete(value)
			} else {
				e.Invalidate()
			}
		}
		// Variants live under their own keys: the tombstone covers them and
		// anything filling right now.
		p.hfp.forget(value)
	case "prefix", "tag":
	default:
		return 0, &ConfigError{Key: "kind", Msg: "want url, prefix or tag"}
	}
	return found, nil
}

var purgeKinds = map[string]cache.PurgeKind{
	cluster.KindURL: cache.PurgeURL, cluster.KindPrefix: cache.PurgePrefix, cluster.KindTag: cache.PurgeTag,
}

// clusterTombstones is the cluster's tombstone store: the cache's purge
// tombstones, which keep each purge's ID and origin for the cluster.
type clusterTombstones struct{ purges *cache.Purges }

func (s clusterTombstones) Record(t cluster.Tombstone) bool {
	k, ok := purgeKinds[t.Kind]
	if !ok {
		return false
	}
	return s.purges.Record(cache.Tombstone{Kind: k, Value: []byte(t.Value), Hard: t.Hard, At: t.At,
		ID: t.ID, Origin: t.Origin, WantAck: t.WantAck})
}

func (s clusterTombstones) Append(dst []cluster.Tombstone) []cluster.Tombstone {
	for _, t := range s.purges.Tombstones(nil) {
		dst = append(dst, cluster.Tombstone{WantAck: t.WantAck, Purge: cluster.Purge{
			ID: t.ID, Kind: t.Kind.String(), Value: string(t.Value), Hard: t.Hard, At: t.At, Origin: t.Origin}})
	}
	return dst
}

// purgeKey turns "http://Host/path?q" or "host/path?q" into a cache key. The
// path and query are taken as written and normalised like a request's
// (appendKeyTarget), so "/%62" purges what a request for "/b" stored, and
// "/a%2Fb" never purges "/a/b".
func purgeKey(v string) ([]byte, error) {
	if strings.Contains(v, "://") {
		u, err := url.Parse(v)
		if err != nil || u.Host == "" {
			return nil, &ConfigError{Key: "url", Msg: "want an absolute URL like https://example.com/path"}
		}
		raw := v
		if i := strings.IndexByte(raw, '#'); i >= 0 {
			raw = raw[:i] // a fragment is never sent in a request
		}
		return appendKeyTarget([]byte(strings.ToLower(u.Host)), []byte(raw), false), nil
	}
	host, path, ok := strings.Cut(v, "/")
	if !ok || host == "" {
		return nil, &ConfigError{Key: "url", Msg: "want an absolute URL like https://example.com/path"}
	}
	return appendKeyTarget([]byte(strings.ToLower(host)), []byte("/"+path), false), nil
}

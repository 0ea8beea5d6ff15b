package edge

// Live reload (SIGHUP, POST /reload): the node re-reads its configuration
// and applies every key that can change while it serves; the others are
// named in the answer and take effect at the next start (or binary
// upgrade). A configuration that does not load or validate is refused with
// its file:line error and the running one is kept.
//
// What a reload changes is swapped as one (pipeline.settings): a request
// sees the old settings or the new ones, never half of each. Parts whose
// keys did not change are kept (the origin's connections and health, the
// rate limiter's buckets, the access log's file); replaced parts are closed
// after replacedGrace, so that requests still using them finish.

import (
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/edgeshield/edgeshield/edge/certs"
	"github.com/valyala/fasthttp"
	"gopkg.in/yaml.v3"
)

// ReloadResult says what a reload did.
type ReloadResult struct {
	// Applied lists the changed keys now in effect.
	Applied []string `json:"applied"`
	// RestartNeeded lists the changed keys that take effect at the next
	// start; until then the running values stay (GET /config shows them).
	RestartNeeded []string `json:"restart_needed"`
}

// errNoReloadSource: the node was built without Options.LoadConfig.
var errNoReloadSource = errors.New("reload: this node has no configuration source (Options.LoadConfig)")

// liveKeys are the keys a reload applies to a running node: a key, or a
// block ending in ".". Every other key needs a restart: listeners,
// timeouts and sizes the servers were built with, the cluster, TLS, the
// admin listener and token, the node's name, the cache's codings, and in a
// cluster the tombstone TTL (its members must agree on it).
var liveKeys = []string{
	"origin.", // a new client and health check when any origin key changes
	"cache.max_bytes", "cache.max_object_size", "cache.key_ignore_query",
	"cache.store_set_cookie", "cache.targeted_field", "cache.max_stale_on_error",
	"cache.hit_for_pass", "cache.heuristic_fraction", "cache.max_heuristic",
	"cache.offheap_min_size",
	"server.rate_limit.", "server.max_conns_per_ip", "server.health_path",
	"server.drain_delay", "server.trusted_proxies",
	"log.level", "log.access", "log.access_format",
	"tls.names",       // acme and internal modes: new names are issued in the background
	"cache.purge_ttl", // without a cluster (see isLive)
}

// replacedGrace is how long a replaced origin client, health check or
// access log stays open for the requests that were using it.
const replacedGrace = 30 * time.Second

// reloader serialises reloads.
type reloader struct {
	mu   sync.Mutex
	load func() (Config, error) // Options.LoadConfig
}

// ReloadConfig re-reads the configuration from the node's source
// (Options.LoadConfig: the file, environment and flags it started with)
// and applies it (Reload). A source that fails (unreadable, invalid) is
// returned as is and nothing changes.
func (n *Node) ReloadConfig() (ReloadResult, error) {
	if n.reload.load == nil {
		return ReloadResult{}, errNoReloadSource
	}
	next, err := n.reload.load()
	if err != nil {
		return ReloadResult{}, err
	}
	return n.Reload(next)
}

// Reload applies next to the running node: the live keys now, the others
// listed as needing a restart. An invalid next changes nothing.
func (n *Node) Reload(next Config) (ReloadResult, error) {
	if err := next.Validate("", nil); err != nil {
		return ReloadResult{}, err
	}
	n.reload.mu.Lock()
	defer n.reload.mu.Unlock()
	prev := n.pipe.set()
	// Empty lists, never null, in the JSON answer.
	res := ReloadResult{Applied: []string{}, RestartNeeded: []string{}}
	// What will be in effect: next, with the restart keys kept.
	eff := next
	cur, nxt, effLeaves := configLeaves(&prev.cfg), configLeaves(&next), configLeaves(&eff)
	keys := make([]string, 0, len(cur))
	for k := range cur {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if reflect.DeepEqual(cur[k].Interface(), nxt[k].Interface()) {
			continue
		}
		if n.isLive(k, &prev.cfg, &next) {
			res.Applied = append(res.Applied, k)
			continue
		}
		res.RestartNeeded = append(res.RestartNeeded, k)
		effLeaves[k].Set(cur[k]) // keep the running value
	}
	if len(res.Applied) == 0 {
		return res, nil
	}
	namesChanged := slices.Contains(res.Applied, "tls.names")
	if namesChanged {
		if err := n.certs.SetNames(eff.TLS.Names); err != nil {
			return ReloadResult{}, &ConfigError{Key: "tls.names", Msg: err.Error()}
		}
	}
	st, err := n.pipe.newSettings(eff, prev)
	if err != nil {
		if namesChanged {
			n.certs.SetNames(prev.cfg.TLS.Names) // back to what runs
		}
		return ReloadResult{}, err
	}
	n.apply(prev, st)
	n.log.Info("configuration reloaded", "applied", res.Applied, "restart_needed", res.RestartNeeded)
	return res, nil
}

// isLive reports whether key, changing from cur to next, can be applied
// to the running node.
func (n *Node) isLive(key string, cur, next *Config) bool {
	switch key {
	case "server.max_conns_per_ip":
		// The limit changes live; turning the limiter on or off changes
		// the listeners, which a restart builds.
		return n.conns != nil && next.Server.MaxConnsPerIP > 0
	case "log.level":
		return n.level != nil
	case "cache.purge_ttl":
		// A cluster's members exchange tombstones for purge_ttl and must
		// agree on it: there, a rolling restart changes it.
		return n.peers == nil
	case "tls.names":
		return n.certs != nil && (cur.TLS.Mode == certs.ModeACME || cur.TLS.Mode == certs.ModeInternal)
	}
	for _, l := range liveKeys {
		if key == l || (strings.HasSuffix(l, ".") && strings.HasPrefix(key, l)) {
			return true
		}
	}
	return false
}

// apply makes st the pipeline's settings and updates the parts that are
// not in them; the parts st replaced close after replacedGrace.
func (n *Node) apply(prev, st *settings) {
	n.pipe.live.Store(st)
	if st.cfg.Cache.PurgeTTL != prev.cfg.Cache.PurgeTTL {
		n.pipe.purges.SetTTL(st.cfg.Cache.PurgeTTL.D())
	}
	if st.cfg.Cache.MaxBytes != prev.cfg.Cache.MaxBytes {
		n.pipe.store.SetMaxBytes(int64(st.cfg.Cache.MaxBytes))
	}
	if n.conns != nil && st.cfg.Server.MaxConnsPerIP > 0 {
		n.conns.max.Store(int32(st.cfg.Server.MaxConnsPerIP))
	}
	if n.level != nil {
		n.level.Set(logLevel(st.cfg.Log.Level))
	}
	var closers []func()
	if st.origin != prev.origin {
		closers = append(closers, prev.health.Close, prev.origin.Close)
	}
	if st.access != prev.access && prev.access != nil {
		closers = append(closers, func() { prev.access.Close() })
	}
	if len(closers) == 0 {
		return
	}
	started := n.bg.goBackground("close replaced parts", func() {
		t := time.NewTimer(replacedGrace)
		defer t.Stop()
		select {
		case <-t.C:
		case <-n.bg.stopping: // Shutdown: the last requests are done
		}
		for _, c := range closers {
			c()
		}
	})
	if !started { // shutting down: nothing uses them any more
		for _, c := range closers {
			c()
		}
	}
}

// configLeaves maps every dotted key of *c to its (settable) field.
func configLeaves(c *Config) map[string]reflect.Value {
	out := map[string]reflect.Value{}
	collectLeaves(reflect.ValueOf(c).Elem(), "", out)
	return out
}

// collectLeaves maps the dotted key of every leaf under v (a field that is
// not a nested block) to the field.
func collectLeaves(v reflect.Value, prefix string, out map[string]reflect.Value) {
	for _, f := range yamlFieldList(v.Type()) {
		fv := v.FieldByIndex(f.index)
		key := prefix + f.name
		if fv.Kind() == reflect.Struct && !implementsUnmarshaler(fv) {
			collectLeaves(fv, key+".", out)
			continue
		}
		out[key] = fv
	}
}

// RenderConfig is c as YAML, in the documented key order, with durations
// and sizes in their configuration spelling and secrets (fields tagged
// `redact:"true"`: admin.token, cluster.secret_key) replaced by
// "<redacted>" when set. GET /config serves it.
func RenderConfig(c Config) ([]byte, error) {
	node, err := renderBlock(reflect.ValueOf(&c).Elem())
	if err != nil {
		return nil, err
	}
	return yaml.Marshal(node)
}

func renderBlock(v reflect.Value) (*yaml.Node, error) {
	m := &yaml.Node{Kind: yaml.MappingNode}
	for _, f := range yamlFieldList(v.Type()) {
		fv := v.FieldByIndex(f.index)
		val, err := renderValue(fv, f.redact)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.name, err)
		}
		m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: f.name}, val)
	}
	return m, nil
}

func renderValue(v reflect.Value, redact bool) (*yaml.Node, error) {
	switch {
	case redact && !v.IsZero():
		return &yaml.Node{Kind: yaml.ScalarNode, Value: "<redacted>"}, nil
	case v.Kind() == reflect.Struct && !implementsUnmarshaler(v):
		return renderBlock(v)
	case v.Kind() == reflect.Pointer && v.Type().Elem().Kind() == reflect.Struct:
		if v.IsNil() {
			return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}, nil
		}
		return renderBlock(v.Elem())
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Struct:
		s := &yaml.Node{Kind: yaml.SequenceNode}
		for i := 0; i < v.Len(); i++ {
			item, err := renderBlock(v.Index(i))
			if err != nil {
				return nil, err
			}
			s.Content = append(s.Content, item)
		}
		return s, nil
	case v.Kind() == reflect.Int64:
		if s, ok := v.Interface().(fmt.Stringer); ok { // Duration, Size, time.Duration
			return &yaml.Node{Kind: yaml.ScalarNode, Value: s.String()}, nil
		}
	}
	n := &yaml.Node{}
	if err := n.Encode(v.Interface()); err != nil {
		return nil, err
	}
	return n, nil
}

// logLevel is the slog level of log.level.
func logLevel(s string) slog.Level {
	switch s {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// serveReload answers POST /reload: 200 with what was applied and what
// needs a restart; 400 with the file:line error when the configuration
// does not load (the running one is kept); 501 without a source.
func (a *admin) serveReload(ctx *fasthttp.RequestCtx) {
	if !ctx.IsPost() {
		ctx.Response.Header.Set("Allow", "POST")
		ctx.Error("use POST\n", fasthttp.StatusMethodNotAllowed)
		return
	}
	res, err := a.reload()
	switch {
	case errors.Is(err, errNoReloadSource):
		ctx.Error(err.Error()+"\n", fasthttp.StatusNotImplemented)
	case err != nil:
		writeJSON(ctx, fasthttp.StatusBadRequest, map[string]any{"error": err.Error(), "kept": "the running configuration"})
	default:
		writeJSON(ctx, fasthttp.StatusOK, res)
	}
}

// serveConfig answers GET /config: the configuration in effect as YAML,
// secrets redacted.
func (a *admin) serveConfig(ctx *fasthttp.RequestCtx) {
	if !ctx.IsGet() && !ctx.IsHead() {
		ctx.Response.Header.Set("Allow", "GET, HEAD")
		ctx.Error("use GET\n", fasthttp.StatusMethodNotAllowed)
		return
	}
	b, err := RenderConfig(a.config())
	if err != nil {
		ctx.Error("rendering the configuration: "+err.Error()+"\n", fasthttp.StatusInternalServerError)
		return
	}
	ctx.SetContentType("application/yaml; charset=utf-8")
	ctx.SetBody(b)
}

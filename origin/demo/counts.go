package demo

import (
	"encoding/json"

	"github.com/valyala/fasthttp"
)

// counters records requests per method and path. Guarded by Server.countMu.
// Values are pointers so that counting a path seen before is a map lookup
// with string(bytes), which does not allocate, rather than an assignment.
type counters struct {
	total    int64
	byPath   map[string]*int64
	byMethod map[string]map[string]*int64 // method → path → n
}

func newCounters() counters {
	return counters{byPath: make(map[string]*int64), byMethod: make(map[string]map[string]*int64)}
}

// CountsSnapshot is the JSON document served by /__origin/counts.
type CountsSnapshot struct {
	Total   int64                       `json:"total"`
	Paths   map[string]int64            `json:"paths"`
	Methods map[string]map[string]int64 `json:"methods"`
}

func (s *Server) count(method, path []byte) {
	s.countMu.Lock()
	defer s.countMu.Unlock()
	s.counts.total++
	incr(s.counts.byPath, path)
	m, ok := s.counts.byMethod[string(method)]
	if !ok {
		m = make(map[string]*int64)
		s.counts.byMethod[string(method)] = m
	}
	incr(m, path)
}

func incr(m map[string]*int64, key []byte) {
	if n, ok := m[string(key)]; ok {
		*n++
		return
	}
	n := int64(1)
	m[string(key)] = &n
}

func load(n *int64) int64 {
	if n == nil {
		return 0
	}
	return *n
}

// Count returns how many requests for path reached the content handler, over
// all methods, since New or the last reset. path is the decoded, normalised
// request path without the query ("/dyn/x", not "/dyn/x?size=1").
func (s *Server) Count(path string) int64 {
	s.countMu.Lock()
	defer s.countMu.Unlock()
	return load(s.counts.byPath[path])
}

// CountMethod is Count restricted to one method ("GET", "HEAD", "POST", …).
func (s *Server) CountMethod(method, path string) int64 {
	s.countMu.Lock()
	defer s.countMu.Unlock()
	return load(s.counts.byMethod[method][path])
}

// Counts returns a copy of the per-path counts (all methods summed).
func (s *Server) Counts() map[string]int64 {
	return s.Snapshot().Paths
}

// Snapshot returns a copy of every counter.
func (s *Server) Snapshot() CountsSnapshot {
	s.countMu.Lock()
	defer s.countMu.Unlock()
	return s.counts.snapshot()
}

// ResetCounts sets every counter to zero.
func (s *Server) ResetCounts() {
	s.takeCounts()
}

// takeCounts atomically returns the counters and zeroes them, so that a test
// reading and resetting over HTTP loses no request in between.
func (s *Server) takeCounts() CountsSnapshot {
	s.countMu.Lock()
	defer s.countMu.Unlock()
	snap := s.counts.snapshot()
	s.counts = newCounters()
	return snap
}

func (c *counters) snapshot() CountsSnapshot {
	snap := CountsSnapshot{
		Total:   c.total,
		Paths:   make(map[string]int64, len(c.byPath)),
		Methods: make(map[string]map[string]int64, len(c.byMethod)),
	}
	for p, n := range c.byPath {
		snap.Paths[p] = *n
	}
	for m, paths := range c.byMethod {
		cp := make(map[string]int64, len(paths))
		for p, n := range paths {
			cp[p] = *n
		}
		snap.Methods[m] = cp
	}
	return snap
}

// serveCounts answers /__origin/counts: GET/HEAD read, DELETE reads and resets.
func (s *Server) serveCounts(ctx *fasthttp.RequestCtx) {
	switch {
	case ctx.IsGet() || ctx.IsHead():
		writeJSON(ctx, s.Snapshot())
	case ctx.IsDelete():
		writeJSON(ctx, s.takeCounts())
	default:
		methodNotAllowed(ctx, "GET, HEAD, DELETE")
	}
}

// serveReset answers POST /__origin/reset: reads and resets.
func (s *Server) serveReset(ctx *fasthttp.RequestCtx) {
	if !ctx.IsPost() {
		methodNotAllowed(ctx, "POST")
		return
	}
	writeJSON(ctx, s.takeCounts())
}

// writeJSON writes v with Cache-Control: no-store, so that an edge in front
// of the origin never caches counters or echoes.
func writeJSON(ctx *fasthttp.RequestCtx, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		plainError(ctx, fasthttp.StatusInternalServerError, "cannot encode json")
		return
	}
	ctx.Response.Header.Set(fasthttp.HeaderCacheControl, "no-store")
	ctx.SetContentType("application/json")
	ctx.SetBody(append(b, '\n'))
}

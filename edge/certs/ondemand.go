package certs

import (
	"strings"
	"sync"
	"time"
)

// allowList matches names against exact entries and "*.suffix" patterns.
// A pattern matches exactly one extra left-most label, as a wildcard
// certificate would (RFC 6125 §6.4.3): "*.example.com" matches
// "a.example.com" but neither "example.com" nor "a.b.example.com".
type allowList struct {
	exact    map[string]bool
	suffixes map[string]bool // ".example.com" for "*.example.com"
}

func newAllowList(patterns []string) allowList {
	a := allowList{exact: map[string]bool{}, suffixes: map[string]bool{}}
	for _, p := range patterns {
		p = normalizeName(p)
		if rest, ok := strings.CutPrefix(p, "*."); ok {
			a.suffixes["."+rest] = true
		} else if p != "" {
			a.exact[p] = true
		}
	}
	return a
}

// match reports whether name (already normalized) is allowed.
func (a allowList) match(name string) bool {
	if name == "" {
		return false
	}
	if a.exact[name] {
		return true
	}
	dot := strings.IndexByte(name, '.')
	if dot <= 0 || strings.ContainsAny(name[:dot], "*") {
		return false
	}
	return a.suffixes[name[dot:]]
}

// rateLimiter admits at most limit events in any window of length
// interval (a sliding-window log: exact, and tiny for on-demand limits).
type rateLimiter struct {
	limit    int
	interval time.Duration
	now      func() time.Time

	mu     sync.Mutex  // guards events
	events []time.Time // admitted events inside the window, oldest first
}

func newRateLimiter(limit int, interval time.Duration, now func() time.Time) *rateLimiter {
	return &rateLimiter{limit: limit, interval: interval, now: now}
}

// full reports whether the window is full right now, without recording.
func (r *rateLimiter) full() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expireLocked(r.now())
	return len(r.events) >= r.limit
}

func (r *rateLimiter) expireLocked(now time.Time) {
	cut := 0
	for cut < len(r.events) && now.Sub(r.events[cut]) >= r.interval {
		cut++
	}
	r.events = r.events[cut:]
}

// allow records an event and reports true if it fits the limit.
func (r *rateLimiter) allow() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	r.expireLocked(now)
	if len(r.events) >= r.limit {
		return false
	}
	r.events = append(r.events, now)
	return true
}

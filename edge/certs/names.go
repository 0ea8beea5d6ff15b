package certs

import (
	"errors"
	"fmt"
	"slices"

	"github.com/caddyserver/certmagic"
)

// isStatic reports whether name is one of the names managed up front.
func (m *Manager) isStatic(name string) bool {
	p := m.staticNames.Load()
	return p != nil && (*p)[name]
}

// SetNames replaces the names managed up front (tls.names), as a
// configuration reload does: new names are ordered (acme) or issued
// (internal) in the background, as at start, and served once ready; names
// no longer listed stop being maintained and served (unless a manual
// certificate or on-demand covers them). Invalid names change nothing.
func (m *Manager) SetNames(names []string) error {
	switch m.cfg.Mode {
	case ModeACME, ModeInternal:
	default:
		return fmt.Errorf("%w: names are managed in acme and internal modes, not %q", ErrInvalidConfig, m.cfg.Mode)
	}
	next := m.cfg
	next.Names = normalizeNames(names)
	if err := next.validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	if m.closed.Load() {
		return errors.New("certs: manager closed")
	}
	m.namesMu.Lock()
	defer m.namesMu.Unlock()
	old := m.staticNames.Load()
	set := make(map[string]bool, len(next.Names))
	var added []string
	for _, n := range next.Names {
		set[n] = true
		if !(*old)[n] {
			added = append(added, n)
		}
	}
	var removed []certmagic.SubjectIssuer
	for n := range *old {
		if !set[n] {
			removed = append(removed, certmagic.SubjectIssuer{Subject: n})
		}
	}
	m.mu.Lock()
	for _, n := range added {
		m.state(n).source = m.cfg.Mode
	}
	for _, r := range removed {
		delete(m.states, r.Subject)
	}
	m.mu.Unlock()
	m.staticNames.Store(&set)
	if len(removed) > 0 {
		m.cache.RemoveManaged(removed)
	}
	if len(added) > 0 {
		slices.Sort(added)
		if err := m.static.ManageAsync(m.bg, added); err != nil {
			return fmt.Errorf("managing %v: %w", added, err)
		}
		m.log.Info("managing new names", "names", added)
	}
	return nil
}

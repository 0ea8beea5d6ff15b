package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

// acmeTLS1 is the ALPN protocol of the TLS-ALPN-01 challenge (RFC 8737 §6.2).
const acmeTLS1 = "acme-tls/1"

// maxTrackedNames bounds the status table against names that only ever
// produced errors (see noteError).
const maxTrackedNames = 4096

// manualTag marks certificates loaded from Config.Certificates in
// certmagic's cache, which does not expose whether it manages a cert.
const manualTag = "edgeshield:manual"

// Manager owns the certificates of one node. See the package doc for the
// concurrency contract.
type Manager struct {
	cfg Config
	log *slog.Logger

	cache       *certmagic.Cache      // nil in off mode
	static      *certmagic.Config     // Names, manual certificates, challenges
	onDemand    *certmagic.Config     // nil unless cfg.OnDemand != nil
	acme        *certmagic.ACMEIssuer // static's ACME issuer; nil outside acme mode
	ca          *internalCA           // nil outside internal mode
	allow       allowList
	limiter     *rateLimiter
	staticNames atomic.Pointer[map[string]bool] // cfg.Names as a set (SetNames replaces it)
	namesMu     sync.Mutex                      // serializes SetNames
	tlsConf     *tls.Config                     // template returned (cloned) by TLSConfig

	// bg is canceled by Close; it bounds background work (initial orders,
	// reloads). It is derived from New's ctx without its cancellation.
	bg     context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // background goroutines started by New
	closed atomic.Bool
	once   sync.Once

	reloadMu sync.Mutex // serializes manual certificate loads

	mu     sync.Mutex            // guards states and the fields of manual entries
	states map[string]*nameState // by certificate name
	manual []*manualCert         // one per cfg.Certificates entry
}

// nameState is what events told us about one name.
type nameState struct {
	source    string
	lastError string
}

// CertStatus describes one certificate name for the admin API (GET /tls);
// the JSON field names are the API's.
type CertStatus struct {
	// Name is the certificate name (a SAN), as configured or as seen.
	Name string `json:"name"`
	// Issuer is the common name of the certificate's issuer; "" while no
	// certificate is loaded.
	Issuer string `json:"issuer"`
	// NotAfter is the expiry of the served certificate (zero if none).
	NotAfter time.Time `json:"not_after"`
	// NextRenewal is when the renewal window opens, from
	// RenewalWindowRatio (an ACME server's ARI window may move it
	// earlier); zero for manual certificates.
	NextRenewal time.Time `json:"next_renewal"`
	// Managed is true for certificates this node obtains and renews.
	Managed bool `json:"managed"`
	// LastError is the last issuance or renewal error for the name, ""
	// after a success. The previous certificate keeps serving meanwhile.
	LastError string `json:"last_error"`
	// Source is "acme", "internal", "on-demand" or "manual".
	Source string `json:"source"`
}

// New validates cfg, fills defaults, loads manual certificates and starts
// background management of cfg.Names (orders run asynchronously: New does
// not wait for the CA). ctx bounds New's own work only; background work
// lasts until Close.
//
// Bind the public HTTP and TLS listeners before calling New: if an order
// reaches its challenge while nothing listens on HTTPPort or TLSPort,
// certmagic binds that port itself for the duration of the challenge.
//
// Manual certificates: an unreadable or invalid file is an error naming
// it (ErrCertFile); an expired certificate is an error too (ErrCertExpired),
// because starting a node that would serve it means an outage that looks
// like success.
func New(ctx context.Context, cfg Config) (*Manager, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	m := &Manager{
		cfg:    cfg,
		log:    cfg.Logger.With("component", "certs"),
		states: make(map[string]*nameState),
	}
	m.bg, m.cancel = context.WithCancel(context.WithoutCancel(ctx))
	if cfg.Mode == ModeOff {
		return m, nil
	}
	static := make(map[string]bool, len(cfg.Names))
	for _, n := range cfg.Names {
		static[n] = true
		m.state(n).source = cfg.Mode
	}
	m.staticNames.Store(&static)
	if err := m.setup(ctx); err != nil {
		m.Close()
		return nil, err
	}
	m.tlsConf = m.buildTLSConfig()
	if len(cfg.Names) > 0 {
		if err := m.static.ManageAsync(m.bg, cfg.Names); err != nil {
			m.Close()
			return nil, fmt.Errorf("managing %v: %w", cfg.Names, err)
		}
	}
	if len(m.manual) > 0 && cfg.ReloadInterval > 0 {
		m.wg.Add(1)
		go m.pollManual(cfg.ReloadInterval)
	}
	return m, nil
}

// setup builds the certmagic cache, configs and issuers, and loads manual
// certificates.
func (m *Manager) setup(ctx context.Context) error {
	cfg := m.cfg
	if err := os.MkdirAll(cfg.Storage, 0o700); err != nil {
		return fmt.Errorf("creating storage directory: %w", err)
	}
	storage := &certmagic.FileStorage{Path: cfg.Storage}
	zl := newZapLogger(cfg.Logger)
	m.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert:   m.configFor,
		RenewCheckInterval: cfg.RenewCheckInterval,
		Logger:             zl,
	})
	base := certmagic.Config{
		RenewalWindowRatio: cfg.RenewalWindowRatio,
		DefaultServerName:  cfg.DefaultServerName,
		Storage:            storage,
		Logger:             zl,
		// Without this, certmagic builds a "tls_get_certificate" event for
		// every handshake only for us to ignore it.
		ShouldEmitFunc: wantEvent,
	}
	static := base
	static.OnEvent = m.onEvent
	m.static = certmagic.New(m.cache, static)
	if cfg.OnDemand != nil {
		m.allow = newAllowList(cfg.OnDemand.Allow)
		m.limiter = newRateLimiter(cfg.OnDemand.RateLimit, cfg.OnDemand.Interval, time.Now)
		od := base
		od.OnEvent = m.onDemandEvent
		od.OnDemand = &certmagic.OnDemandConfig{DecisionFunc: m.decide}
		m.onDemand = certmagic.New(m.cache, od)
	}
	if err := m.setIssuers(ctx, storage, zl); err != nil {
		return err
	}
	return m.loadAllManual(ctx)
}

// setIssuers gives the certmagic configs their issuer: the ACME CA, or the
// internal CA kept in storage; manual certificates need none.
func (m *Manager) setIssuers(ctx context.Context, storage certmagic.Storage, zl *zap.Logger) error {
	cfg := m.cfg
	switch cfg.Mode {
	case ModeACME:
		roots, err := loadRoots(cfg.TrustedRoots)
		if err != nil {
			return err
		}
		tmpl := certmagic.ACMEIssuer{
			CA:                      cfg.CA,
			Email:                   cfg.Email,
			Agreed:                  cfg.AgreeTerms,
			DisableHTTPChallenge:    cfg.DisableHTTPChallenge,
			DisableTLSALPNChallenge: cfg.DisableTLSALPNChallenge,
			AltHTTPPort:             cfg.HTTPPort,
			AltTLSALPNPort:          cfg.TLSPort,
			TrustedRoots:            roots,
			Logger:                  zl,
		}
		m.acme = certmagic.NewACMEIssuer(m.static, tmpl)
		m.static.Issuers = []certmagic.Issuer{m.acme}
		if m.onDemand != nil {
			m.onDemand.Issuers = []certmagic.Issuer{certmagic.NewACMEIssuer(m.onDemand, tmpl)}
		}
	case ModeInternal:
		ca, err := loadOrCreateInternalCA(ctx, storage, cfg.InternalLifetime)
		if err != nil {
			return err
		}
		m.ca = ca
		m.static.Issuers = []certmagic.Issuer{ca}
		if m.onDemand != nil {
			m.onDemand.Issuers = []certmagic.Issuer{ca}
		}
	}
	return nil
}

// loadRoots builds the pool of extra roots trusted for the ACME server.
func loadRoots(files []string) (*x509.CertPool, error) {
	if len(files) == 0 {
		return nil, nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	for _, f := range files {
		pem, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("%w: reading trusted root %s: %w", ErrCertFile, f, err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: trusted root %s holds no PEM certificate", ErrCertFile, f)
		}
	}
	return pool, nil
}

// configFor tells certmagic's maintenance which config manages a cached
// certificate: on-demand certificates are renewed during handshakes (the
// on-demand config), everything else in the background.
func (m *Manager) configFor(cert certmagic.Certificate) (*certmagic.Config, error) {
	if m.onDemand == nil || cert.HasTag(manualTag) {
		return m.static, nil
	}
	for _, n := range cert.Names {
		if m.isStatic(n) {
			return m.static, nil
		}
	}
	return m.onDemand, nil
}

// buildTLSConfig returns the server template: TLS 1.2+ with AEAD suites
// and forward secrecy only, session tickets on (Go's default), and ALPN
// limited to what fasthttp speaks plus the TLS-ALPN-01 challenge.
func (m *Manager) buildTLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// TLS 1.2 only; TLS 1.3 suites are not configurable and all good.
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
		// Never "h2": fasthttp has no HTTP/2, and a client that negotiated
		// it would send a connection preface fasthttp cannot parse.
		NextProtos:     []string{"http/1.1", acmeTLS1},
		GetCertificate: m.getCertificate,
	}
}

// TLSConfig returns a new server *tls.Config for the public TLS listener
// (tls.NewListener(ln, m.TLSConfig())); the caller may modify it. Session
// tickets are on with Go's automatic key rotation, per returned config:
// use one config per listener, and expect tickets not to resume on other
// nodes (the keys are not shared across the cluster). It returns nil in
// off mode.
func (m *Manager) TLSConfig() *tls.Config {
	if m.tlsConf == nil {
		return nil
	}
	return m.tlsConf.Clone()
}

// getCertificate is the handshake entry point.
func (m *Manager) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if m.closed.Load() {
		return nil, ErrClosed
	}
	// A TLS-ALPN-01 validation offers exactly "acme-tls/1" (RFC 8737 §3);
	// certmagic answers it from memory or from shared storage.
	if len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == acmeTLS1 {
		return m.static.GetCertificate(hello)
	}
	name := normalizeName(hello.ServerName)
	cfg := m.static
	if name != "" && m.onDemand != nil && m.allow.match(name) && !m.servedStatically(name) {
		cfg = m.onDemand
	}
	cert, err := cfg.GetCertificate(hello)
	if err != nil {
		return nil, fmt.Errorf("%w %q: %w", ErrNoCertificate, name, err)
	}
	return cert, nil
}

// servedStatically reports whether name belongs to the static config: a
// configured name, or covered by a manual certificate.
func (m *Manager) servedStatically(name string) bool {
	if m.isStatic(name) {
		return true
	}
	for _, c := range m.cache.AllMatchingCertificates(name) {
		if c.HasTag(manualTag) {
			return true
		}
	}
	return false
}

// decide is the on-demand DecisionFunc: certmagic calls it before loading
// a certificate from storage or ordering one. The allow-list is checked
// here. The rate limit is charged in onDemandEvent, when an order is really
// placed, so that loading a certificate another node obtained never
// consumes it; but while the limit is exhausted, names with nothing in
// storage are refused here already, before certmagic's storage check and
// lock, which would otherwise cost disk writes for every refused handshake.
func (m *Manager) decide(ctx context.Context, name string) error {
	if m.closed.Load() {
		return ErrClosed
	}
	name = normalizeName(name)
	if !m.allow.match(name) {
		return fmt.Errorf("%w: %q", ErrNotAllowed, name)
	}
	if m.limiter.full() && !m.inStorage(ctx, name) {
		err := m.rateLimitError(name)
		m.noteError(name, "on-demand", err)
		return err
	}
	return nil
}

// inStorage reports whether storage holds a certificate for name from the
// on-demand issuer.
func (m *Manager) inStorage(ctx context.Context, name string) bool {
	if len(m.onDemand.Issuers) == 0 {
		return false
	}
	key := certmagic.StorageKeys.SiteCert(m.onDemand.Issuers[0].IssuerKey(), name)
	return m.onDemand.Storage.Exists(ctx, key)
}

func (m *Manager) rateLimitError(name string) error {
	return fmt.Errorf("%w: %q (limit %d per %v)", ErrRateLimited, name, m.cfg.OnDemand.RateLimit, m.cfg.OnDemand.Interval)
}

// onDemandEvent enforces the on-demand rate limit at the moment an order is
// about to be placed ("cert_obtaining" is emitted under the issuance lock,
// after storage was checked), then records status like onEvent.
func (m *Manager) onDemandEvent(ctx context.Context, event string, data map[string]any) error {
	if event == "cert_obtaining" {
		if renewal, _ := data["renewal"].(bool); !renewal && !m.limiter.allow() {
			name, _ := data["identifier"].(string)
			err := m.rateLimitError(name)
			m.noteError(name, "on-demand", err)
			// ErrNoRetry: certmagic would otherwise retry the order for
			// minutes while the client's handshake waits.
			return certmagic.ErrNoRetry{Err: err}
		}
	}
	return m.record(event, data, "on-demand")
}

// wantEvent selects the certmagic events that record and onDemandEvent use.
func wantEvent(event string) bool {
	switch event {
	case "cert_obtaining", "cert_obtained", "cert_failed", "cached_managed_cert":
		return true
	}
	return false
}

// onEvent records certmagic events of the static config.
func (m *Manager) onEvent(_ context.Context, event string, data map[string]any) error {
	return m.record(event, data, m.cfg.Mode)
}

func (m *Manager) record(event string, data map[string]any, source string) error {
	switch event {
	case "cert_obtained":
		name, _ := data["identifier"].(string)
		renewal, _ := data["renewal"].(bool)
		m.mu.Lock()
		st := m.state(name)
		st.lastError = ""
		st.source = source
		m.mu.Unlock()
		m.log.Info("certificate obtained", "name", name, "renewal", renewal, "issuer", data["issuer"])
	case "cert_failed":
		name, _ := data["identifier"].(string)
		err, _ := data["error"].(error)
		m.noteError(name, source, err)
	case "cached_managed_cert":
		sans, _ := data["sans"].([]string)
		m.mu.Lock()
		for _, n := range sans {
			if st := m.state(n); st.source == "" {
				st.source = source
			}
		}
		m.mu.Unlock()
	}
	return nil
}

func (m *Manager) noteError(name, source string, err error) {
	if err == nil {
		err = errors.New("unknown error")
	}
	m.mu.Lock()
	// An error alone does not add a name once the table is large: with a
	// wildcard allow-list, clients choose the names.
	if st := m.states[name]; st != nil || len(m.states) < maxTrackedNames {
		st = m.state(name)
		st.lastError = err.Error()
		if st.source == "" {
			st.source = source
		}
	}
	m.mu.Unlock()
	// The old certificate (if any) keeps serving; certmagic retries.
	m.log.Warn("certificate issuance failed", "name", name, "source", source, "error", err)
}

// state returns the entry for name, creating it. Callers hold m.mu, except
// New before the Manager is shared.
func (m *Manager) state(name string) *nameState {
	st := m.states[name]
	if st == nil {
		st = &nameState{}
		m.states[name] = st
	}
	return st
}

// Status reports every known name: configured names (even before their
// first certificate), on-demand names seen so far and manual certificates.
func (m *Manager) Status() []CertStatus {
	if m.cache == nil {
		return nil
	}
	m.mu.Lock()
	names := make(map[string]nameState, len(m.states))
	for n, st := range m.states {
		names[n] = *st
	}
	for _, mc := range m.manual {
		for _, n := range mc.names {
			if _, ok := names[n]; !ok {
				names[n] = nameState{source: ModeManual}
			}
		}
	}
	m.mu.Unlock()

	out := make([]CertStatus, 0, len(names))
	for name, st := range names {
		if name == "" {
			continue
		}
		cs := CertStatus{Name: name, LastError: st.lastError, Source: st.source, Managed: st.source != ModeManual}
		if c, ok := m.newest(name); ok {
			leaf := c.Leaf
			cs.Issuer = leaf.Issuer.CommonName
			cs.NotAfter = leaf.NotAfter
			if c.HasTag(manualTag) {
				cs.Managed, cs.Source = false, ModeManual
			} else {
				ratio := m.cfg.RenewalWindowRatio
				if ratio == 0 {
					ratio = certmagic.DefaultRenewalWindowRatio
				}
				life := leaf.NotAfter.Sub(leaf.NotBefore)
				cs.NextRenewal = leaf.NotAfter.Add(-time.Duration(float64(life) * ratio))
			}
		}
		out = append(out, cs)
	}
	slices.SortFunc(out, func(a, b CertStatus) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// newest returns the cached certificate for name that expires last.
func (m *Manager) newest(name string) (certmagic.Certificate, bool) {
	var best certmagic.Certificate
	found := false
	for _, c := range m.cache.AllMatchingCertificates(name) {
		if c.Leaf == nil {
			continue
		}
		if !found || c.Leaf.NotAfter.After(best.Leaf.NotAfter) {
			best, found = c, true
		}
	}
	return best, found
}

// ExportRoot writes the internal CA's root certificate as PEM, for clients
// to trust. It returns ErrNoInternalCA outside internal mode.
func (m *Manager) ExportRoot(w io.Writer) error {
	if m.ca == nil {
		return ErrNoInternalCA
	}
	if _, err := w.Write(m.ca.rootPEM); err != nil {
		return fmt.Errorf("writing internal CA root: %w", err)
	}
	return nil
}

// Close stops background work and waits for the goroutines New started.
// Orders already handed to certmagic's process-wide job queue are
// canceled through their context and end shortly after. Handshakes after
// Close fail with ErrClosed. Close is idempotent and always returns nil.
func (m *Manager) Close() error {
	m.once.Do(func() {
		m.closed.Store(true)
		m.cancel()
		m.wg.Wait()
		if m.cache != nil {
			m.cache.Stop()
		}
	})
	return nil
}

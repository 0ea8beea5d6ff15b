package certs

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/edgeshield/edgeshield/internal/conf"
)

// Modes of Config.Mode.
const (
	// ModeACME obtains and renews certificates from an ACME CA.
	ModeACME = "acme"
	// ModeInternal issues certificates from a CA that the node creates in
	// Storage on first use: for local development and offline tests.
	ModeInternal = "internal"
	// ModeManual serves only the certificate files in Config.Certificates.
	ModeManual = "manual"
	// ModeOff disables TLS: New returns a Manager without certificates.
	ModeOff = "off"
)

// Defaults applied by New to zero-valued fields.
const (
	// DefaultHTTPPort is the port ACME HTTP-01 validation reaches (RFC 8555 §8.3).
	DefaultHTTPPort = 80
	// DefaultTLSPort is the port TLS-ALPN-01 validation reaches (RFC 8737 §3).
	DefaultTLSPort = 443
	// DefaultOnDemandRateLimit is the number of on-demand orders allowed per
	// DefaultOnDemandInterval.
	DefaultOnDemandRateLimit = 10
	// DefaultOnDemandInterval is the window of the on-demand rate limit.
	DefaultOnDemandInterval = time.Minute
	// DefaultReloadInterval is how often manual certificate files are polled.
	DefaultReloadInterval = 30 * time.Second
	// DefaultInternalLifetime is the validity of internal-CA leaf certificates.
	DefaultInternalLifetime = 7 * 24 * time.Hour
	// LetsEncryptProduction is the ACME directory used when Config.CA is "".
	LetsEncryptProduction = "https://acme-v02.api.letsencrypt.org/directory"
)

// Sentinel errors, for errors.Is.
var (
	// ErrInvalidConfig wraps every configuration error returned by New.
	ErrInvalidConfig = errors.New("certs: invalid configuration")
	// ErrCertFile wraps errors reading or parsing a manual certificate or
	// key file; the message names the file.
	ErrCertFile = errors.New("certs: bad certificate file")
	// ErrCertExpired is returned when a manual certificate has expired.
	ErrCertExpired = errors.New("certs: certificate expired")
	// ErrNoCertificate is returned from the TLS handshake when no
	// certificate can be served for the requested name (or for a
	// handshake without SNI when no DefaultServerName is configured).
	ErrNoCertificate = errors.New("certs: no certificate for server name")
	// ErrNotAllowed is returned when on-demand issuance is refused because
	// the name is not on the allow-list.
	ErrNotAllowed = errors.New("certs: name not allowed for on-demand issuance")
	// ErrRateLimited is returned when an on-demand order is refused by the
	// rate limit.
	ErrRateLimited = errors.New("certs: on-demand issuance rate limited")
	// ErrNoInternalCA is returned by ExportRoot outside internal mode.
	ErrNoInternalCA = errors.New("certs: no internal CA (mode is not internal)")
	// ErrClosed is returned by operations on a closed Manager.
	ErrClosed = errors.New("certs: manager closed")
)

// Config configures a Manager. The zero value is ModeOff. The yaml keys are
// the edge's tls block (configs/tls.yaml); durations are time.Duration for
// Go callers, and the edge's loader reads "30s" into them.
type Config struct {
	// Mode is one of "acme", "internal", "manual" or "off" ("" = "off").
	// Manual Certificates may be combined with "acme" and "internal".
	Mode string `yaml:"mode"`

	// Names are managed up front (acme and internal modes): ordered from the
	// CA in the background at New if storage has no certificate yet, then
	// renewed in the background. Wildcards ("*.example.com") need a DNS-01
	// solver, which this package does not configure, so they are refused.
	Names []string `yaml:"names"`

	// Email is the ACME account contact (optional, recommended: the CA
	// writes there before certificates expire unrenewed).
	Email string `yaml:"email"`

	// CA is the ACME directory URL; "" = Let's Encrypt production.
	CA string `yaml:"ca"`

	// TrustedRoots are PEM files of extra roots to trust when talking to
	// the ACME server (a private CA, or Pebble in tests). nil = system roots.
	TrustedRoots []string `yaml:"trusted_roots"`

	// AgreeTerms must be true in acme mode: it states agreement with the
	// CA's subscriber agreement, which RFC 8555 §7.3 makes a precondition
	// of account creation.
	AgreeTerms bool `yaml:"agree_terms"`

	// Storage is the directory holding keys, certificates, the ACME
	// account, challenge tokens and locks. Required unless Mode is "off".
	// Nodes that share it (a shared volume) coordinate through its lock
	// files: one order per name for the cluster.
	Storage string `yaml:"storage"`

	// OnDemand enables issuance during the TLS handshake for names on its
	// allow-list (acme and internal modes). nil = off.
	OnDemand *OnDemand `yaml:"on_demand"`

	// Certificates are manual certificate/key file pairs. They are loaded
	// by New (an unreadable or invalid file, or an expired certificate, is
	// an error naming the file), reloaded by Reload, and polled every
	// ReloadInterval for changes.
	Certificates []CertFile `yaml:"certificates"`

	// HTTPPort and TLSPort are the public ports that ACME validation
	// reaches (0 = 80 and 443). Tests use alternate ports. TLSPort is also
	// the port RedirectHandler sends clients to.
	HTTPPort int `yaml:"http_port"`
	TLSPort  int `yaml:"tls_port"`

	// DisableHTTPChallenge and DisableTLSALPNChallenge turn off one ACME
	// challenge type each; at least one must stay enabled in acme mode.
	DisableHTTPChallenge    bool `yaml:"disable_http_challenge"`
	DisableTLSALPNChallenge bool `yaml:"disable_tls_alpn_challenge"`

	// RenewalWindowRatio is the fraction of a certificate's lifetime,
	// counted back from its expiry, in which renewal starts (certmagic's
	// ratio, 0 = certmagic's default of 1/3). Must be in [0, 1).
	RenewalWindowRatio float64 `yaml:"renewal_window_ratio"`

	// Logger receives certmagic's logs and ours. nil = slog.Default().
	Logger *slog.Logger `yaml:"-"`

	// DefaultServerName selects the certificate served to handshakes
	// without SNI (RFC 6066 §3 makes SNI optional). "" = such handshakes
	// fail, unless a certificate covers the local IP address.
	DefaultServerName string `yaml:"default_server_name"`

	// RenewCheckInterval is how often certmagic's maintenance checks
	// certificates for renewal (0 = certmagic's default, 10 minutes).
	// Tests with short-lived certificates lower it.
	RenewCheckInterval time.Duration `yaml:"renew_check_interval"`

	// ReloadInterval is how often manual certificate files are checked for
	// changes (size or modification time). 0 = DefaultReloadInterval;
	// negative disables polling (Reload still works).
	ReloadInterval time.Duration `yaml:"reload_interval"`

	// InternalLifetime is the validity of leaf certificates issued by the
	// internal CA. 0 = DefaultInternalLifetime.
	InternalLifetime time.Duration `yaml:"internal_lifetime"`
}

// OnDemand configures issuance at handshake time.
type OnDemand struct {
	// Allow lists the names that may be issued on demand: exact names and
	// "*.example.com" patterns, which match exactly one extra label (as a
	// wildcard certificate would, RFC 6125 §6.4.3). Required, non-empty:
	// on-demand issuance without an allow-list lets any client make the
	// node order certificates for names of its choosing.
	Allow []string `yaml:"allow"`

	// RateLimit is the number of on-demand orders allowed per Interval,
	// across all names (0 = DefaultOnDemandRateLimit). Renewals and
	// certificates already in storage do not count.
	RateLimit int `yaml:"rate_limit"`

	// Interval is the rate-limit window (0 = DefaultOnDemandInterval).
	Interval time.Duration `yaml:"interval"`
}

// CertFile is a manual certificate: PEM files of the chain (leaf first)
// and of its private key.
type CertFile struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// withDefaults returns a copy of cfg with zero values replaced and slices
// copied, so that the caller's Config is never aliased.
func (cfg Config) withDefaults() Config {
	if cfg.Mode == "" {
		cfg.Mode = ModeOff
	}
	cfg.Mode = strings.ToLower(cfg.Mode)
	if cfg.CA == "" {
		cfg.CA = LetsEncryptProduction
	}
	if cfg.HTTPPort == 0 {
		cfg.HTTPPort = DefaultHTTPPort
	}
	if cfg.TLSPort == 0 {
		cfg.TLSPort = DefaultTLSPort
	}
	if cfg.ReloadInterval == 0 {
		cfg.ReloadInterval = DefaultReloadInterval
	}
	if cfg.InternalLifetime == 0 {
		cfg.InternalLifetime = DefaultInternalLifetime
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Names = normalizeNames(cfg.Names)
	cfg.DefaultServerName = normalizeName(cfg.DefaultServerName)
	cfg.TrustedRoots = append([]string(nil), cfg.TrustedRoots...)
	cfg.Certificates = append([]CertFile(nil), cfg.Certificates...)
	if cfg.OnDemand != nil {
		od := *cfg.OnDemand
		od.Allow = normalizeNames(od.Allow)
		if od.RateLimit == 0 {
			od.RateLimit = DefaultOnDemandRateLimit
		}
		if od.Interval == 0 {
			od.Interval = DefaultOnDemandInterval
		}
		cfg.OnDemand = &od
	}
	return cfg
}

// DefaultConfig is the zero Config with its mode spelled out: zero fields
// mean New's defaults (the Default* constants).
func DefaultConfig() Config { return Config{Mode: ModeOff} }

// Validate checks cfg as New would, after New's defaults. Errors are
// *conf.FieldError values naming the yaml key; New wraps them in
// ErrInvalidConfig.
func (cfg Config) Validate() error { return cfg.withDefaults().validate() }

// validate checks a Config that went through withDefaults.
func (cfg Config) validate() error {
	switch cfg.Mode {
	case ModeOff:
		return nil
	case ModeACME, ModeInternal, ModeManual:
	default:
		return conf.Errorf("mode", "want acme, internal, manual or off, got mode %q", cfg.Mode)
	}
	if cfg.Storage == "" {
		return conf.Errorf("storage", "required in mode %q: a directory for keys, certificates and locks (shared by a cluster)", cfg.Mode)
	}
	if err := cfg.validateMode(); err != nil {
		return err
	}
	for i, n := range cfg.Names {
		if !validName(n) {
			return conf.Errorf(fmt.Sprintf("names[%d]", i), "name %q is not a valid host name", n)
		}
		if strings.HasPrefix(n, "*.") {
			return conf.Errorf(fmt.Sprintf("names[%d]", i), "name %q: wildcard certificates need DNS-01, which is not configured", n)
		}
	}
	for i, c := range cfg.Certificates {
		if c.Cert == "" || c.Key == "" {
			return conf.Errorf(fmt.Sprintf("certificates[%d]", i), "certificate entry needs both cert and key files (got cert=%q key=%q)", c.Cert, c.Key)
		}
	}
	if err := checkPort("http_port", cfg.HTTPPort); err != nil {
		return err
	}
	if err := checkPort("tls_port", cfg.TLSPort); err != nil {
		return err
	}
	return cfg.validateTimes()
}

// validateMode checks the rules of acme and manual modes.
func (cfg Config) validateMode() error {
	if cfg.Mode == ModeManual {
		if len(cfg.Certificates) == 0 {
			return conf.Errorf("certificates", "manual mode needs at least one certificate")
		}
		if len(cfg.Names) > 0 || cfg.OnDemand != nil {
			return conf.Errorf("mode", "manual mode cannot manage names or issue on demand (use acme or internal)")
		}
	}
	if cfg.Mode == ModeACME {
		if !cfg.AgreeTerms {
			return conf.Errorf("agree_terms", "acme mode needs agree_terms: the CA's subscriber agreement must be accepted (RFC 8555 §7.3)")
		}
		if cfg.DisableHTTPChallenge && cfg.DisableTLSALPNChallenge {
			return conf.Errorf("disable_tls_alpn_challenge", "both ACME challenges are disabled; no order could be validated")
		}
	}
	return nil
}

// validateTimes checks the renewal knobs and the on-demand block.
func (cfg Config) validateTimes() error {
	if cfg.RenewalWindowRatio < 0 || cfg.RenewalWindowRatio >= 1 {
		return conf.Errorf("renewal_window_ratio", "renewal window ratio %v: want 0 <= ratio < 1", cfg.RenewalWindowRatio)
	}
	if cfg.RenewCheckInterval < 0 {
		return conf.Errorf("renew_check_interval", "renew check interval %v is negative", cfg.RenewCheckInterval)
	}
	if cfg.InternalLifetime < time.Minute {
		return conf.Errorf("internal_lifetime", "internal lifetime %v: want at least 1m", cfg.InternalLifetime)
	}
	od := cfg.OnDemand
	if od == nil {
		return nil
	}
	if len(od.Allow) == 0 {
		return conf.Errorf("on_demand.allow", "on-demand issuance needs a non-empty allow-list")
	}
	for i, p := range od.Allow {
		if !validName(p) {
			return conf.Errorf(fmt.Sprintf("on_demand.allow[%d]", i), "on-demand allow pattern %q is not a host name or *.suffix", p)
		}
	}
	if od.RateLimit < 0 {
		return conf.Errorf("on_demand.rate_limit", "on-demand rate limit %d: must not be negative", od.RateLimit)
	}
	if od.Interval < 0 {
		return conf.Errorf("on_demand.interval", "on-demand interval %v: must not be negative", od.Interval)
	}
	return nil
}

func checkPort(field string, p int) error {
	if p < 1 || p > 65535 {
		return conf.Errorf(field, "%s %d out of range 1-65535", field, p)
	}
	return nil
}

// normalizeName lowercases and trims a host name and drops one trailing
// dot, the same normalization certmagic applies to SNI values.
func normalizeName(s string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(s)), ".")
}

func normalizeNames(in []string) []string {
	if len(in) == 0 {
		return nil
	}
	out := make([]string, 0, len(in))
	seen := make(map[string]bool, len(in))
	for _, s := range in {
		s = normalizeName(s)
		if s == "" || seen[s] {
			continue
		}
		seen[s] = true
		out = append(out, s)
	}
	return out
}

// validName accepts host names (LDH labels, RFC 1123 §2.1), IP addresses,
// and a leading "*." wildcard label.
func validName(s string) bool {
	if net.ParseIP(s) != nil {
		return true
	}
	s = strings.TrimPrefix(s, "*.")
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"
)

// manualCert is the loaded state of one Config.Certificates entry.
type manualCert struct {
	file     CertFile
	certPEM  []byte   // content currently served, to detect real changes
	keyPEM   []byte   //
	hash     string   // certmagic cache key of the served certificate
	names    []string // SANs of the served certificate
	stamp    fileStamp
	notAfter time.Time
}

// fileStamp is what the poller compares to notice a changed file pair.
type fileStamp struct {
	certSize, keySize int64
	certMod, keyMod   time.Time
}

// missingStamp stands for a pair that cannot be stat'ed, so that a missing
// file is reported once, not at every poll.
func missingStamp() fileStamp { return fileStamp{certSize: -1} }

func statPair(f CertFile) (fileStamp, error) {
	ci, err := os.Stat(f.Cert)
	if err != nil {
		return missingStamp(), err
	}
	ki, err := os.Stat(f.Key)
	if err != nil {
		return missingStamp(), err
	}
	return fileStamp{certSize: ci.Size(), keySize: ki.Size(), certMod: ci.ModTime(), keyMod: ki.ModTime()}, nil
}

// readPair reads and checks a certificate/key pair. Errors name the file.
func readPair(f CertFile, now time.Time) (certPEM, keyPEM []byte, leafNames []string, notAfter time.Time, err error) {
	certPEM, err = os.ReadFile(f.Cert)
	if err != nil {
		return nil, nil, nil, time.Time{}, fmt.Errorf("%w: reading certificate file %s: %w", ErrCertFile, f.Cert, err)
	}
	keyPEM, err = os.ReadFile(f.Key)
	if err != nil {
		return nil, nil, nil, time.Time{}, fmt.Errorf("%w: reading key file %s: %w", ErrCertFile, f.Key, err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// The pair may fail because of either file (or a mismatch), so
		// name both.
		return nil, nil, nil, time.Time{}, fmt.Errorf("%w: certificate %s with key %s: %w", ErrCertFile, f.Cert, f.Key, err)
	}
	leaf := pair.Leaf // populated by X509KeyPair since Go 1.23
	if now.After(leaf.NotAfter) {
		return nil, nil, nil, time.Time{}, fmt.Errorf("%w: %s expired at %s", ErrCertExpired, f.Cert, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	names := slices.Clone(leaf.DNSNames)
	for _, ip := range leaf.IPAddresses {
		names = append(names, ip.String())
	}
	for i := range names {
		names[i] = strings.ToLower(names[i])
	}
	return certPEM, keyPEM, names, leaf.NotAfter, nil
}

// loadAllManual loads every manual certificate at New; any error fails New.
func (m *Manager) loadAllManual(ctx context.Context) error {
	for _, f := range m.cfg.Certificates {
		mc := &manualCert{file: f}
		m.manual = append(m.manual, mc)
		if err := m.loadManual(ctx, mc); err != nil {
			return err
		}
	}
	return nil
}

// loadManual (re)loads mc from its files. On any error the previously
// loaded certificate keeps serving. It reports changed=false and no error
// when the files hold what is already served.
func (m *Manager) loadManual(ctx context.Context, mc *manualCert) error {
	m.reloadMu.Lock()
	defer m.reloadMu.Unlock()
	stamp, err := statPair(mc.file)
	m.mu.Lock()
	mc.stamp = stamp
	m.mu.Unlock()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrCertFile, err) // *PathError names the file
	}
	certPEM, keyPEM, names, notAfter, err := readPair(mc.file, time.Now())
	if err != nil {
		return err
	}
	if bytes.Equal(certPEM, mc.certPEM) && bytes.Equal(keyPEM, mc.keyPEM) {
		return nil
	}
	hash, err := m.static.CacheUnmanagedCertificatePEMBytes(ctx, certPEM, keyPEM, []string{manualTag})
	if err != nil {
		return fmt.Errorf("%w: caching %s: %w", ErrCertFile, mc.file.Cert, err)
	}
	m.mu.Lock()
	old := mc.hash
	mc.certPEM, mc.keyPEM, mc.hash, mc.names, mc.notAfter = certPEM, keyPEM, hash, names, notAfter
	stillUsed := false
	for _, other := range m.manual {
		if other.hash == old {
			stillUsed = true
		}
	}
	m.mu.Unlock()
	// The new certificate is in the cache before the old one leaves, so
	// no handshake in between finds neither.
	if old != "" && old != hash && !stillUsed {
		m.cache.Remove([]string{old})
	}
	if old != "" {
		m.log.Info("manual certificate reloaded", "cert", mc.file.Cert, "names", names, "not_after", notAfter)
	}
	return nil
}

// Reload re-reads every manual certificate file and serves the ones that
// changed. A file that fails to load keeps its previous certificate
// serving; the errors of all failed files are joined. The lead calls it on
// SIGHUP; the poller calls it for changed files.
func (m *Manager) Reload() error {
	if m.closed.Load() {
		return ErrClosed
	}
	var errs []error
	for _, mc := range m.manual {
		if err := m.loadManual(m.bg, mc); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// pollManual reloads manual certificates whose files changed (size or
// modification time), every interval, until Close.
func (m *Manager) pollManual(interval time.Duration) {
	defer m.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-m.bg.Done():
			return
		case <-t.C:
			m.reloadChanged()
		}
	}
}

func (m *Manager) reloadChanged() {
	for _, mc := range m.manual {
		st, _ := statPair(mc.file)
		m.mu.Lock()
		same := st == mc.stamp
		m.mu.Unlock()
		if same {
			continue
		}
		if err := m.loadManual(m.bg, mc); err != nil {
			// Logged once per change: loadManual recorded the new stamp.
			m.log.Error("manual certificate reload failed; previous certificate keeps serving", "cert", mc.file.Cert, "error", err)
		}
	}
}

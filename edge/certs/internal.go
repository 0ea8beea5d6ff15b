package certs

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"time"

	"github.com/caddyserver/certmagic"
)

// Storage keys of the internal CA. The CA lives in the shared storage so
// that every node of a cluster signs with the same root.
const (
	internalCALock    = "edgeshield_internal_ca"
	internalCACertKey = "edgeshield_internal_ca/root.crt"
	internalCAKeyKey  = "edgeshield_internal_ca/root.key"
	internalIssuerKey = "edgeshield-internal"
	internalRootLife  = 10 * 365 * 24 * time.Hour
)

// internalCA is a certmagic.Issuer that signs CSRs with a self-signed root
// kept in storage. Leaves are signed by the root directly: a development CA
// gains nothing from an intermediate, and a shorter chain is cheaper to
// serve.
type internalCA struct {
	root     *x509.Certificate
	rootPEM  []byte
	key      crypto.Signer
	lifetime time.Duration
	now      func() time.Time
}

var _ certmagic.Issuer = (*internalCA)(nil)

// loadOrCreateInternalCA loads the root from storage, creating it under the
// storage lock if no node has done so yet.
func loadOrCreateInternalCA(ctx context.Context, st certmagic.Storage, lifetime time.Duration) (*internalCA, error) {
	if err := st.Lock(ctx, internalCALock); err != nil {
		return nil, fmt.Errorf("locking internal CA: %w", err)
	}
	defer func() { _ = st.Unlock(context.WithoutCancel(ctx), internalCALock) }()

	certPEM, errC := st.Load(ctx, internalCACertKey)
	keyPEM, errK := st.Load(ctx, internalCAKeyKey)
	switch {
	case errC == nil && errK == nil:
	case errors.Is(errC, fs.ErrNotExist) && errors.Is(errK, fs.ErrNotExist):
		var err error
		certPEM, keyPEM, err = newRootCA(time.Now())
		if err != nil {
			return nil, err
		}
		if err := st.Store(ctx, internalCAKeyKey, keyPEM); err != nil {
			return nil, fmt.Errorf("storing internal CA key: %w", err)
		}
		if err := st.Store(ctx, internalCACertKey, certPEM); err != nil {
			return nil, fmt.Errorf("storing internal CA certificate: %w", err)
		}
	default:
		return nil, fmt.Errorf("loading internal CA: certificate: %v, key: %v", errC, errK)
	}
	return parseInternalCA(certPEM, keyPEM, lifetime)
}

func newRootCA(now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating internal CA key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "Edgeshield Internal Root CA " + serial.Text(16)[:8], Organization: []string{"Edgeshield"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(internalRootLife),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true, // signs leaves only (RFC 5280 §4.2.1.9)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("creating internal CA certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding internal CA key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

func parseInternalCA(certPEM, keyPEM []byte, lifetime time.Duration) (*internalCA, error) {
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, errors.New("internal CA in storage is not PEM")
	}
	root, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing internal CA certificate: %w", err)
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing internal CA key: %w", err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("internal CA key type %T cannot sign", k)
	}
	return &internalCA{root: root, rootPEM: certPEM, key: signer, lifetime: lifetime, now: time.Now}, nil
}

// IssuerKey implements certmagic.Issuer; it names the storage folder.
func (ca *internalCA) IssuerKey() string { return internalIssuerKey }

// Issue implements certmagic.Issuer.
func (ca *internalCA) Issue(_ context.Context, csr *x509.CertificateRequest) (*certmagic.IssuedCertificate, error) {
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("internal CA: bad CSR signature: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := ca.now()
	notAfter := now.Add(ca.lifetime)
	if notAfter.After(ca.root.NotAfter) {
		notAfter = ca.root.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: firstName(csr)},
		DNSNames:     csr.DNSNames,
		IPAddresses:  csr.IPAddresses,
		// Backdated a little so that clients with a slightly slow clock
		// accept a certificate issued a moment ago.
		NotBefore:   now.Add(-5 * time.Minute),
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.root, csr.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("internal CA: signing: %w", err)
	}
	return &certmagic.IssuedCertificate{
		Certificate: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
	}, nil
}

func firstName(csr *x509.CertificateRequest) string {
	if len(csr.DNSNames) > 0 {
		return csr.DNSNames[0]
	}
	if len(csr.IPAddresses) > 0 {
		return csr.IPAddresses[0].String()
	}
	return csr.Subject.CommonName
}

// randomSerial returns a positive 128-bit serial; RFC 5280 §4.1.2.2 allows
// up to 20 octets and CA/B rules ask for at least 64 random bits.
func randomSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("generating serial: %w", err)
	}
	return s.Add(s, big.NewInt(1)), nil
}

package imaptls

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"time"
)

// defaultSelfSignedNames are the names of a self-signed certificate when
// Options.SelfSignedNames is empty.
var defaultSelfSignedNames = []string{"localhost", "127.0.0.1", "::1"}

// selfSignedValidity is how long a self-signed certificate is valid; it
// is made anew at every start.
const selfSignedValidity = 365 * 24 * time.Hour

func (m *Manager) initSelfSigned(o Options) error {
	names := o.SelfSignedNames
	if len(names) == 0 {
		names = defaultSelfSignedNames
	}
	cert, err := selfSigned(names, time.Now())
	if err != nil {
		return err
	}
	m.cert.Store(cert)
	m.get = m.staticCert
	m.log.Info("tls: self-signed certificate (clients must be told to trust it, for example by its fingerprint)",
		"names", names, "not_after", cert.Leaf.NotAfter, "sha256", m.Fingerprint())
	return nil
}

// selfSigned makes an ECDSA P-256 certificate for names (DNS names or IP
// addresses), valid from an hour before now (clock skew) for a year.
func selfSigned(names []string, now time.Time) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("tls: self_signed: generating key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("tls: self_signed: serial number: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: names[0], Organization: []string{"imapguard self-signed"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(selfSignedValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("tls: self_signed: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("tls: self_signed: %w", err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// Package testcert makes throwaway certificates for tests: an in-memory
// certificate authority, leaf certificates it signs, self-signed
// certificates, and their PEM encoding. It is test support only; no
// production code imports it. Keys are ECDSA P-256 and certificates are
// valid from an hour ago for a day.
package testcert

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// CA is a certificate authority made in memory.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	PEM  []byte         // Cert in PEM
	Pool *x509.CertPool // trusts exactly Cert
}

// NewCA makes a self-signed CA with common name name.
func NewCA(name string) (*CA, error) { return newCA(nil, name) }

// Intermediate makes a CA with common name name signed by ca.
func (ca *CA) Intermediate(name string) (*CA, error) { return newCA(ca, name) }

func newCA(parent *CA, name string) (*CA, error) {
	tmpl := template(name)
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	tmpl.BasicConstraintsValid = true
	tmpl.IsCA = true
	cert, key, err := create(tmpl, parent)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{Cert: cert, Key: key, PEM: pemBlock("CERTIFICATE", cert.Raw), Pool: pool}, nil
}

// Leaf issues a certificate for names, usable by servers and clients: IP
// literals become IP subject alternative names, anything else DNS names;
// the common name is names[0]. The chain holds the leaf and ca's
// certificate.
func (ca *CA) Leaf(names ...string) (tls.Certificate, error) {
	return leaf(ca, names)
}

// SelfSigned makes a self-signed certificate for names (as Leaf) that
// is its own CA, so a pool holding it trusts it.
func SelfSigned(names ...string) (tls.Certificate, error) {
	return leaf(nil, names)
}

func leaf(ca *CA, names []string) (tls.Certificate, error) {
	if len(names) == 0 {
		return tls.Certificate{}, errors.New("testcert: no names")
	}
	tmpl := template(names[0])
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	if ca == nil {
		tmpl.KeyUsage |= x509.KeyUsageCertSign
		tmpl.BasicConstraintsValid = true
		tmpl.IsCA = true
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	cert, key, err := create(tmpl, ca)
	if err != nil {
		return tls.Certificate{}, err
	}
	chain := [][]byte{cert.Raw}
	if ca != nil {
		chain = append(chain, ca.Cert.Raw)
	}
	return tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: cert}, nil
}

func template(commonName string) *x509.Certificate {
	return &x509.Certificate{
		Subject:   pkix.Name{CommonName: commonName},
		NotBefore: time.Now().Add(-time.Hour),
		NotAfter:  time.Now().Add(24 * time.Hour),
	}
}

// create signs tmpl with a new key, by parent or else by itself.
func create(tmpl *x509.Certificate, parent *CA) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	if tmpl.SerialNumber, err = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 63)); err != nil {
		return nil, nil, err
	}
	issuer, signer := tmpl, crypto.Signer(key)
	if parent != nil {
		issuer, signer = parent.Cert, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, &key.PublicKey, signer)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

// EncodePEM returns cert's chain as CERTIFICATE blocks and its key as a
// PKCS #8 PRIVATE KEY block.
func EncodePEM(cert tls.Certificate) (certPEM, keyPEM []byte, err error) {
	for _, der := range cert.Certificate {
		certPEM = append(certPEM, pemBlock("CERTIFICATE", der)...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return nil, nil, err
	}
	return certPEM, pemBlock("PRIVATE KEY", keyDER), nil
}

// WritePEM writes cert as EncodePEM encodes it to dir/cert.pem (mode
// 0644) and dir/key.pem (mode 0600), replacing what is there, and
// returns their paths.
func WritePEM(dir string, cert tls.Certificate) (certFile, keyFile string, err error) {
	certPEM, keyPEM, err := EncodePEM(cert)
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

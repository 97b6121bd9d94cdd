package dovecot

// TLS: the certificate an instance presents, a client configuration
// that trusts it, and the greeting probe over plaintext or TLS.

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Dovecot's own certificate. Debian's dovecot-core links them to ssl-cert's
// "snakeoil" pair (self-signed, for the host name at installation), which
// is the fallback.
var defaultCerts = [][2]string{
	{"/etc/dovecot/private/dovecot.pem", "/etc/dovecot/private/dovecot.key"},
	{"/etc/ssl/certs/ssl-cert-snakeoil.pem", "/etc/ssl/private/ssl-cert-snakeoil.key"},
}

// DefaultCert returns the certificate and key Start uses for TLS when
// Options gives none: Dovecot's own /etc/dovecot/private/dovecot.pem and
// dovecot.key, else ssl-cert's snakeoil pair. It fails when neither pair
// exists or can be read; the keys are readable by root (and the ssl-cert
// group) only.
func DefaultCert() (certFile, keyFile string, err error) {
	var errs []error
	for _, p := range defaultCerts {
		if _, err := tls.LoadX509KeyPair(p[0], p[1]); err != nil {
			errs = append(errs, err)
			continue
		}
		return p[0], p[1], nil
	}
	return "", "", fmt.Errorf("no usable Dovecot certificate (pass Options.TLSCert and TLSKey): %w", errors.Join(errs...))
}

// tlsFiles checks the certificate and key (Dovecot's own when both are
// empty) and returns their paths and the certificates in PEM.
func tlsFiles(certFile, keyFile string) (string, string, []byte, error) {
	if (certFile == "") != (keyFile == "") {
		return "", "", nil, errors.New("TLSCert and TLSKey must be given together")
	}
	if certFile == "" {
		var err error
		if certFile, keyFile, err = DefaultCert(); err != nil {
			return "", "", nil, err
		}
	} else if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
		return "", "", nil, err
	}
	var paths []string
	for _, p := range []string{certFile, keyFile} {
		abs, err := filepath.Abs(p)
		if err != nil {
			return "", "", nil, err
		}
		if strings.ContainsAny(abs, "\r\n") {
			return "", "", nil, fmt.Errorf("unusable path %q", abs)
		}
		paths = append(paths, abs)
	}
	data, err := os.ReadFile(certFile)
	if err != nil {
		return "", "", nil, err
	}
	// Only the certificates: a combined file may hold the key as well.
	var certs []byte
	for {
		var b *pem.Block
		if b, data = pem.Decode(data); b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			certs = append(certs, pem.EncodeToMemory(b)...)
		}
	}
	return paths[0], paths[1], certs, nil
}

// ClientTLSConfig returns a client configuration that trusts exactly the
// certificates in certPEM (Instance.CertPEM), with ServerName set to a
// name the leaf certificate is valid for: its first DNS name, else its
// first IP address. Dovecot's own certificate is usually issued to the
// host name at installation time (here: "localhost"), not to 127.0.0.1.
func ClientTLSConfig(certPEM []byte) (*tls.Config, error) {
	pool := x509.NewCertPool()
	var leaf *x509.Certificate
	for rest := certPEM; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		pool.AddCert(cert)
		if leaf == nil {
			leaf = cert
		}
	}
	if leaf == nil {
		return nil, errors.New("dovecot: no certificate in PEM")
	}
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	switch {
	case len(leaf.DNSNames) > 0:
		cfg.ServerName = leaf.DNSNames[0]
	case len(leaf.IPAddresses) > 0:
		cfg.ServerName = leaf.IPAddresses[0].String()
	default:
		return nil, fmt.Errorf("dovecot: certificate %q names no host (no subject alternative names)", leaf.Subject)
	}
	return cfg, nil
}

// pinnedTLSConfig accepts exactly the leaf certificate of certPEM,
// whatever names it is issued to.
func pinnedTLSConfig(certPEM []byte) (*tls.Config, error) {
	b, _ := pem.Decode(certPEM)
	if b == nil {
		return nil, errors.New("no certificate in PEM")
	}
	want := b.Bytes
	return &tls.Config{
		InsecureSkipVerify: true, // replaced by the comparison below
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 || !bytes.Equal(cs.PeerCertificates[0].Raw, want) {
				return errors.New("dovecot presents another certificate than the configured one")
			}
			return nil
		},
	}, nil
}

// Greeting dials addr, over TLS with cfg if cfg is not nil, reads the
// IMAP greeting and says LOGOUT. All of it takes at most patience. It
// returns the greeting without CRLF and what the TLS handshake negotiated.
// The harness's readiness probes and the benchmark's use it.
func Greeting(addr string, cfg *tls.Config, patience time.Duration) (string, tls.ConnectionState, error) {
	var cs tls.ConnectionState
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", cs, err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(patience)); err != nil {
		return "", cs, err
	}
	if cfg != nil {
		tc := tls.Client(c, cfg)
		if err := tc.Handshake(); err != nil {
			return "", cs, fmt.Errorf("TLS handshake: %w", err)
		}
		c, cs = tc, tc.ConnectionState()
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", cs, err
	}
	_, _ = c.Write([]byte("ready LOGOUT\r\n"))
	return strings.TrimRight(line, "\r\n"), cs, nil
}

// readGreeting reads the greeting on addr, over TLS if cfg is not nil.
// Its patience is short, so that a foreign process on the port or a
// Dovecot that exits meanwhile is noticed quickly; a slow greeting is
// simply probed again.
func readGreeting(addr string, cfg *tls.Config) (string, error) {
	g, _, err := Greeting(addr, cfg, 2*time.Second)
	return g, err
}

package imaptls

import (
	"crypto/tls"
	"errors"
	"fmt"
)

// UpstreamOptions configure the TLS connection to the upstream server.
type UpstreamOptions struct {
	// ServerName is verified against the upstream's certificate (and sent
	// as SNI); "" leaves it to the dialler (crypto/tls then uses the host
	// it dials).
	ServerName string
	// CAFile is a PEM file of the CA certificates to trust instead of the
	// system roots; "" = the system roots.
	CAFile string
	// InsecureSkipVerify accepts any certificate from the upstream: only
	// for tests and loopback.
	InsecureSkipVerify bool
	// CertFile and KeyFile are an optional client certificate (PEM) to
	// present to the upstream; both or neither.
	CertFile, KeyFile string
}

// UpstreamConfig builds the *tls.Config for connecting to the upstream:
// TLS 1.2 or later, the system roots unless CAFile, ServerName, and the
// client certificate if set. Errors name the file at fault.
func UpstreamConfig(o UpstreamOptions) (*tls.Config, error) {
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         o.ServerName,
		InsecureSkipVerify: o.InsecureSkipVerify,
	}
	if o.CAFile != "" {
		pool, err := loadRoots(o.CAFile, false)
		if err != nil {
			return nil, fmt.Errorf("tls: upstream ca_file: %w", err)
		}
		cfg.RootCAs = pool
	}
	switch {
	case o.CertFile != "" && o.KeyFile != "":
		pair, err := loadPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls: upstream client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{*pair}
	case o.CertFile != "" || o.KeyFile != "":
		return nil, errors.New("tls: upstream client certificate needs both cert_file and key_file")
	}
	return cfg, nil
}

package imaptls

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
)

// FileCheckInterval is how often, at most, a handshake in mode "files"
// looks at the files' size and modification time and reloads them when
// either changed. Reload does it at once.
const FileCheckInterval = 5 * time.Second

// Manager serves the certificates of one mode. Its methods are safe for
// concurrent use. Create it with New; Close it when done.
type Manager struct {
	mode   string
	log    *slog.Logger
	protos []string // NextProtos
	get    func(*tls.ClientHelloInfo) (*tls.Certificate, error)

	// files and self_signed: the certificate every handshake gets.
	cert atomic.Pointer[tls.Certificate]

	// files
	files *fileSource

	// acme
	magic     *certmagic.Config
	cache     *certmagic.Cache
	mainName  string // Domains[0]: the certificate Fingerprint reports
	closeOnce sync.Once
}

// New prepares certificates for the mode. "off" returns (nil, nil). For
// acme without on_demand it obtains (or loads from storage) the
// certificates for Domains before returning, bounded by ctx; the errors
// name the domain and the CA's answer.
func New(ctx context.Context, o Options) (*Manager, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	m := &Manager{mode: o.mode(), log: log, protos: []string{ALPNProtocol}}
	switch m.mode {
	case ModeOff:
		return nil, nil
	case ModeFiles:
		if err := m.initFiles(o); err != nil {
			return nil, err
		}
	case ModeSelfSigned:
		if err := m.initSelfSigned(o); err != nil {
			return nil, err
		}
	case ModeACME:
		if err := m.initACME(ctx, o); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// ServerConfig returns a new *tls.Config for client connections: TLS 1.2
// or later, Go's default cipher suites, session tickets on, NextProtos
// {"imap"} (plus "acme-tls/1" in mode acme, for tls-alpn-01 challenges
// that reach this listener), and GetCertificate from the Manager, so a
// reload or renewal applies to the next handshake. The caller may change
// the copy it gets.
func (m *Manager) ServerConfig() *tls.Config {
	return serverConfig(m.get, m.protos)
}

// Reload re-reads cert_file and key_file (mode files). A pair that does
// not load keeps the certificate in use, and the error says which file is
// wrong and how. For the other modes it does nothing.
func (m *Manager) Reload() error {
	if m.files == nil {
		return nil
	}
	return m.files.reload(m, true)
}

// Fingerprint is the SHA-256 of the current leaf certificate, in
// upper-case hex pairs joined by colons (as `openssl x509 -fingerprint
// -sha256` prints it). In mode acme it is the certificate for the first of
// Domains, and "" while there is none (on demand, before the first
// handshake).
func (m *Manager) Fingerprint() string {
	if m.magic != nil {
		if m.mainName == "" {
			return ""
		}
		for _, c := range m.cache.AllMatchingCertificates(m.mainName) {
			if len(c.Certificate.Certificate) > 0 {
				return fingerprint(c.Certificate.Certificate[0])
			}
		}
		return ""
	}
	c := m.cert.Load()
	if c == nil || len(c.Certificate) == 0 {
		return ""
	}
	return fingerprint(c.Certificate[0])
}

// Close stops certmagic's background maintenance (renewals, OCSP) and
// waits for it; a renewal in progress is waited for too. Certificates
// already cached are still served. Close is idempotent; for the modes
// other than acme it does nothing.
func (m *Manager) Close() error {
	m.closeOnce.Do(func() {
		if m.cache != nil {
			m.cache.Stop()
		}
	})
	return nil
}

// staticCert serves the one certificate of modes files and self_signed.
func (m *Manager) staticCert(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return m.cert.Load(), nil
}

package imaptls

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// fileSource is mode "files": the two paths and what they looked like
// when last read, to notice a change without reading them.
type fileSource struct {
	certFile, keyFile string
	now               func() time.Time // injected for tests
	every             time.Duration

	next atomic.Int64 // UnixNano before which handshakes do not look

	mu    sync.Mutex // serialises reloads
	stamp fileStamp  // guarded by mu: the files as last read, or tried
}

// fileStamp is what a stat tells of both files; a missing file is the
// zero value, so that it compares equal until it changes.
type fileStamp struct {
	certMod, keyMod   time.Time
	certSize, keySize int64
}

func (m *Manager) initFiles(o Options) error {
	m.files = &fileSource{
		certFile: o.CertFile,
		keyFile:  o.KeyFile,
		now:      time.Now,
		every:    FileCheckInterval,
	}
	if err := m.files.reload(m, true); err != nil {
		return err
	}
	m.get = m.filesCert
	return nil
}

// filesCert is GetCertificate for mode files: it first looks whether the
// files changed, at most once per FileCheckInterval, on the handshake
// that comes due (two stat calls; a reload only when they differ).
func (m *Manager) filesCert(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	m.files.maybeCheck(m)
	return m.cert.Load(), nil
}

func (f *fileSource) maybeCheck(m *Manager) {
	now := f.now().UnixNano()
	next := f.next.Load()
	if now < next || !f.next.CompareAndSwap(next, now+int64(f.every)) {
		return // not due, or another handshake is checking
	}
	st := f.statFiles()
	f.mu.Lock()
	same := st == f.stamp
	f.mu.Unlock()
	if same {
		return
	}
	// The error is logged by reload; the certificate in use stays.
	_ = f.reload(m, false)
}

func (f *fileSource) statFiles() fileStamp {
	var st fileStamp
	if fi, err := os.Stat(f.certFile); err == nil {
		st.certMod, st.certSize = fi.ModTime(), fi.Size()
	}
	if fi, err := os.Stat(f.keyFile); err == nil {
		st.keyMod, st.keySize = fi.ModTime(), fi.Size()
	}
	return st
}

// reload reads both files and, if they make a good pair, serves them from
// the next handshake on. A bad pair keeps the certificate in use. The
// stamp is taken before reading and recorded even on failure, so that a
// broken pair is reported once per change, not on every check; a file
// that changes while being read differs from that stamp and is read again.
// explicit says Reload asked (the caller reports the error) rather than a
// handshake (reload logs it).
func (f *fileSource) reload(m *Manager, explicit bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stamp = f.statFiles()
	cert, err := loadPair(f.certFile, f.keyFile)
	if err != nil {
		err = fmt.Errorf("tls: %w", err)
		if m.cert.Load() != nil {
			err = fmt.Errorf("%w (keeping the certificate in use)", err)
		}
		if !explicit {
			m.log.Error("tls: reloading certificate files", "err", err)
		}
		return err
	}
	old := m.cert.Swap(cert)
	leaf := cert.Leaf
	fp := fingerprint(leaf.Raw)
	switch {
	case old == nil:
		m.log.Info("tls: certificate loaded", "cert_file", f.certFile, "names", certNames(leaf), "not_after", leaf.NotAfter, "sha256", fp)
	case !bytes.Equal(old.Certificate[0], leaf.Raw):
		m.log.Info("tls: certificate reloaded", "cert_file", f.certFile, "names", certNames(leaf), "not_after", leaf.NotAfter, "sha256", fp)
	}
	if now := f.now(); now.After(leaf.NotAfter) {
		m.log.Warn("tls: certificate has expired", "cert_file", f.certFile, "not_after", leaf.NotAfter)
	} else if now.Before(leaf.NotBefore) {
		m.log.Warn("tls: certificate is not valid yet", "cert_file", f.certFile, "not_before", leaf.NotBefore)
	}
	return nil
}

// loadPair reads a PEM certificate chain and its key, with errors that
// name the file at fault.
func loadPair(certFile, keyFile string) (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("cert_file: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("key_file: %w", err)
	}
	if !hasPEMBlock(certPEM, func(t string) bool { return t == "CERTIFICATE" }) {
		return nil, fmt.Errorf("cert_file %s: no PEM CERTIFICATE block", certFile)
	}
	if !hasPEMBlock(keyPEM, func(t string) bool { return strings.HasSuffix(t, "PRIVATE KEY") }) {
		return nil, fmt.Errorf("key_file %s: no PEM PRIVATE KEY block", keyFile)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("cert_file %s with key_file %s: %w", certFile, keyFile, err)
	}
	if pair.Leaf == nil { // filled in by X509KeyPair since Go 1.23
		if pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("cert_file %s: %w", certFile, err)
		}
	}
	return &pair, nil
}

func hasPEMBlock(data []byte, match func(blockType string) bool) bool {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return false
		}
		if match(b.Type) {
			return true
		}
	}
}

// certNames lists what a certificate is valid for, for logs.
func certNames(c *x509.Certificate) []string {
	names := append([]string(nil), c.DNSNames...)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 && c.Subject.CommonName != "" {
		names = append(names, c.Subject.CommonName)
	}
	return names
}

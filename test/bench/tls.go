package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/imapguard/imapguard/test/dovecot"
)

// tlsFiles is the certificate every TLS listener of the benchmark
// presents (Dovecot's imaps, imapguard's imaps, HAProxy's and nginx's
// ssl listeners): one ECDSA P-256 key, self-signed, for localhost,
// 127.0.0.1 and ::1. imapload does not verify it.
type tlsFiles struct {
	cert     string // PEM certificate
	key      string // PEM private key (PKCS #8)
	combined string // certificate then key, for HAProxy's "crt"
	certPEM  []byte
	sha256   string // fingerprint of the certificate (DER), hex
}

// wantTLS reports whether a selected workload runs over TLS.
func (h *harness) wantTLS() bool {
	for _, name := range h.opts.workloads {
		if w, ok := workloadByName(name); ok && w.tls {
			return true
		}
	}
	return false
}

// setupTLS generates the benchmark's certificate in h.dir/tls when a TLS
// workload is selected. A failure only skips the TLS workloads.
func (h *harness) setupTLS() {
	if !h.wantTLS() {
		return
	}
	f, err := writeTLSCert(filepath.Join(h.dir, "tls"), time.Now())
	if err != nil {
		h.tlsWhy = "generating the certificate failed: " + err.Error()
		return
	}
	h.tls = &f
	h.logf("TLS certificate: ECDSA P-256, self-signed, SHA-256 %s, in %s", f.sha256, filepath.Dir(f.cert))
}

// writeTLSCert writes a fresh self-signed ECDSA P-256 certificate and its
// key into dir.
func writeTLSCert(dir string, now time.Time) (tlsFiles, error) {
	var f tlsFiles
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return f, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return f, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return f, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "localhost", Organization: []string{"imapguard benchmark"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(30 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return f, err
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return f, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})
	f = tlsFiles{
		cert:     filepath.Join(dir, "cert.pem"),
		key:      filepath.Join(dir, "key.pem"),
		combined: filepath.Join(dir, "combined.pem"),
		certPEM:  certPEM,
	}
	sum := sha256.Sum256(der)
	f.sha256 = hex.EncodeToString(sum[:])
	// The servers read the files as the user that starts them (this
	// one); the key stays private to it.
	for _, w := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{f.cert, certPEM, 0o644},
		{f.key, keyPEM, 0o600},
		{f.combined, append(append([]byte(nil), certPEM...), keyPEM...), 0o600},
	} {
		if err := os.WriteFile(w.path, w.data, w.mode); err != nil {
			return tlsFiles{}, err
		}
	}
	if _, err := tls.LoadX509KeyPair(f.cert, f.key); err != nil {
		return tlsFiles{}, fmt.Errorf("the generated pair does not load: %w", err)
	}
	return f, nil
}

// tlsUpstreamReady reports whether Dovecot serves imaps, which every TLS
// target needs (directly, or as the plaintext upstream of a proxy that
// was started together with it).
func (h *harness) tlsUpstreamReady() bool {
	return h.tls != nil && h.dovecot != nil && h.dovecot.tlsAddr != ""
}

// tlsAddrFor returns the address a relay keeps for its TLS listener: the
// one it had (across restarts), else a new free port.
func tlsAddrFor(old string) (string, error) {
	if old != "" {
		return old, nil
	}
	port, err := freeLoopbackPort()
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("127.0.0.1:%d", port), nil
}

// clientTLSConfig is what imapload uses (cmd/imapload: implicit TLS, Go's
// defaults, no verification), so that a probe negotiates what the load
// generator negotiates.
func clientTLSConfig() *tls.Config {
	return &tls.Config{InsecureSkipVerify: true, ServerName: "127.0.0.1"} //nolint:gosec // loopback benchmark, as imapload
}

// describeTLS names what a handshake negotiated: "TLS 1.3
// TLS_AES_128_GCM_SHA256 X25519".
func describeTLS(cs tls.ConnectionState) string {
	s := tls.VersionName(cs.Version) + " " + tls.CipherSuiteName(cs.CipherSuite)
	if cs.CurveID != 0 {
		s += " " + cs.CurveID.String()
	}
	if cs.NegotiatedProtocol != "" {
		s += " ALPN " + cs.NegotiatedProtocol
	}
	return s
}

// smokeTestTLS logs in over imaps through every target once and notes
// what each negotiated; a target that cannot is skipped for the TLS
// workloads only.
func (h *harness) smokeTestTLS() {
	if !h.wantTLS() || h.tlsUnavailable() != "" {
		return
	}
	var negotiated []string
	for _, t := range h.targets {
		if t.skip != "" {
			continue
		}
		if t.tlsSkip == "" && t.tlsAddr == "" {
			t.tlsSkip = "no imaps listener"
		}
		if t.tlsSkip != "" {
			h.note("%s is skipped for the TLS workloads: %s", t.name, t.tlsSkip)
			continue
		}
		res, err := h.runLoad(h.loadArgs(mustWorkload("noop-tls"), t.tlsAddr, 300*time.Millisecond, 1), nil)
		if err == nil && (res.Ops == 0 || res.Errors > 0) {
			err = fmt.Errorf("%d operations, %d errors (%s)", res.Ops, res.Errors, res.FirstError)
		}
		if err != nil {
			t.tlsSkip = fmt.Sprintf("TLS smoke test failed: %v", err)
			h.note("%s is skipped for the TLS workloads: %s", t.name, t.tlsSkip)
			continue
		}
		if _, cs, err := dovecot.Greeting(t.tlsAddr, clientTLSConfig(), 3*time.Second); err == nil {
			negotiated = append(negotiated, t.name+": "+describeTLS(cs))
		}
	}
	if len(negotiated) > 0 {
		h.note("TLS as negotiated with imapload's client (Go crypto/tls defaults, ECDSA P-256 certificate): %s", strings.Join(negotiated, "; "))
	}
}

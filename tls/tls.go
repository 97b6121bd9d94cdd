// Package imaptls provides imapguard's TLS certificates: the server side
// (the *tls.Config that client connections are handshaken with, for
// implicit TLS and STARTTLS) and the upstream side (the *tls.Config for
// dialling the real IMAP server).
//
// The folder is tls/ but the package is named imaptls, because "tls" would
// collide with crypto/tls, which every importer also needs. The rule, used
// everywhere in imapguard: import it as
//
//	imaptls "github.com/imapguard/imapguard/tls"
//
// A Manager serves certificates in one of four modes:
//
//   - "off": no TLS; New returns a nil Manager.
//   - "files": a PEM certificate chain and key from disk. Reload re-reads
//     them (cmd wires it to SIGHUP), and handshakes notice changed files
//     on their own, at most once per FileCheckInterval.
//   - "acme": certificates from an ACME CA (Let's Encrypt by default)
//     through certmagic, obtained at start for Domains, or on demand at the
//     first handshake for names an allow-list or a permission URL admits.
//     Never for any other name.
//   - "self_signed": an ECDSA P-256 certificate made in memory at start,
//     valid for a year, for tests and trials; its SHA-256 fingerprint is
//     logged so a client can pin it.
//
// Every Manager hands out certificates through tls.Config.GetCertificate,
// so a reload or a renewal takes effect on the next handshake without a
// restart.
package imaptls

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"strings"
)

// Modes for Options.Mode.
const (
	ModeOff        = "off"
	ModeFiles      = "files"
	ModeACME       = "acme"
	ModeSelfSigned = "self_signed"
)

// ALPNProtocol is the ALPN protocol ID of IMAP over TLS, as listed in
// IANA's TLS ALPN Protocol IDs registry (reference RFC 2595).
const ALPNProtocol = "imap"

// serverConfig is the base of every server-side *tls.Config: TLS 1.2 or
// later (RFC 8996 deprecates 1.0 and 1.1), Go's default cipher suites (CipherSuites left
// nil on purpose: Go picks and orders them), session tickets on (the zero
// value of SessionTicketsDisabled).
func serverConfig(get func(*tls.ClientHelloInfo) (*tls.Certificate, error), protos []string) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: get,
		NextProtos:     append([]string(nil), protos...),
	}
}

// fingerprint formats the SHA-256 of a DER certificate the way
// `openssl x509 -fingerprint -sha256` does: upper-case hex pairs joined by
// colons.
func fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	h := strings.ToUpper(hex.EncodeToString(sum[:]))
	var b strings.Builder
	b.Grow(len(h) + len(h)/2)
	for i := 0; i < len(h); i += 2 {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(h[i : i+2])
	}
	return b.String()
}

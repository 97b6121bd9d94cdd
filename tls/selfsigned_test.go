package imaptls

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"slices"
	"testing"
	"time"
)

func newSelfSigned(t *testing.T, names ...string) *Manager {
	t.Helper()
	m, err := New(context.Background(), Options{Mode: ModeSelfSigned, SelfSignedNames: names})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// pinned trusts exactly the certificate with fingerprint fp, as a client
// pinning a self-signed certificate does.
func pinned(fp string) *tls.Config {
	return &tls.Config{
		InsecureSkipVerify: true, // replaced by the fingerprint check below
		VerifyConnection: func(cs tls.ConnectionState) error {
			if got := fingerprint(cs.PeerCertificates[0].Raw); got != fp {
				return errors.New("fingerprint " + got + " is not the pinned " + fp)
			}
			return nil
		},
	}
}

func TestSelfSigned(t *testing.T) {
	m := newSelfSigned(t)
	fp := m.Fingerprint()
	if len(fp) != 32*3-1 {
		t.Fatalf("Fingerprint() = %q; want 32 hex pairs joined by colons", fp)
	}
	addr := serveTLS(t, m.ServerConfig())

	client := pinned(fp)
	client.NextProtos = []string{"imap"}
	leaf, st := mustHandshake(t, addr, client)
	if got := st.NegotiatedProtocol; got != ALPNProtocol {
		t.Errorf("ALPN: got %q; want %q", got, ALPNProtocol)
	}
	if st.Version < tls.VersionTLS12 {
		t.Errorf("version: got %x; want TLS 1.2 or later", st.Version)
	}

	// The certificate: ECDSA P-256, the default names, about a year.
	if k, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		t.Errorf("key: got %T; want ECDSA P-256", leaf.PublicKey)
	}
	if got := certNames(leaf); !slices.Equal(got, []string{"localhost", "127.0.0.1", "::1"}) {
		t.Errorf("names: got %v; want [localhost 127.0.0.1 ::1]", got)
	}
	if d := time.Until(leaf.NotAfter); d < 364*24*time.Hour || d > 366*24*time.Hour {
		t.Errorf("valid for another %v; want about a year", d)
	}

	// Trusting the certificate itself verifies both its DNS name and IP.
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	for _, name := range []string{"localhost", "127.0.0.1"} {
		mustHandshake(t, addr, &tls.Config{RootCAs: pool, ServerName: name})
	}

	// A pin of another certificate fails.
	other := newSelfSigned(t).Fingerprint()
	if _, err := handshake(t, addr, pinned(other)); err == nil {
		t.Error("handshake pinned to another fingerprint: got nil error; want one")
	}
}

func TestSelfSignedNames(t *testing.T) {
	m := newSelfSigned(t, "mail.example.test", "192.0.2.1")
	addr := serveTLS(t, m.ServerConfig())
	leaf, _ := mustHandshake(t, addr, pinned(m.Fingerprint()))
	if got := certNames(leaf); !slices.Equal(got, []string{"mail.example.test", "192.0.2.1"}) {
		t.Errorf("names: got %v; want [mail.example.test 192.0.2.1]", got)
	}
}

// TestOldTLSRefused: every mode's ServerConfig refuses TLS 1.1 and older
// (RFC 8996).
func TestOldTLSRefused(t *testing.T) {
	m := newSelfSigned(t)
	addr := serveTLS(t, m.ServerConfig())
	for _, v := range []uint16{tls.VersionTLS10, tls.VersionTLS11} {
		client := pinned(m.Fingerprint())
		client.MinVersion, client.MaxVersion = v, v
		if st, err := handshake(t, addr, client); err == nil {
			t.Errorf("client limited to %s: handshake succeeded with %s; want a refusal",
				tls.VersionName(v), tls.VersionName(st.Version))
		}
	}
	// ALPN: a client that offers only another protocol is refused (crypto/tls
	// answers no_application_protocol); one that offers none is served.
	client := pinned(m.Fingerprint())
	client.NextProtos = []string{"h2"}
	if _, err := handshake(t, addr, client); err == nil {
		t.Error("client offering only ALPN h2: got nil error; want no_application_protocol")
	}
	_, st := mustHandshake(t, addr, pinned(m.Fingerprint()))
	if st.NegotiatedProtocol != "" {
		t.Errorf("client without ALPN: negotiated %q; want none", st.NegotiatedProtocol)
	}
}

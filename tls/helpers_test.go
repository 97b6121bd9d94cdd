package imaptls

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imapguard/imapguard/test/proxytest"
	"github.com/imapguard/imapguard/test/testcert"
)

// testCA is a throwaway certificate authority.
type testCA struct{ *testcert.CA }

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	return caOrFatal(t)(testcert.NewCA("imaptls test CA"))
}

// intermediate makes a CA signed by ca.
func (ca *testCA) intermediate(t *testing.T) *testCA {
	t.Helper()
	return caOrFatal(t)(ca.Intermediate("imaptls test intermediate"))
}

// caOrFatal turns a testcert constructor's result into a testCA, failing t on
// error.
func caOrFatal(t *testing.T) func(*testcert.CA, error) *testCA {
	return func(ca *testcert.CA, err error) *testCA {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return &testCA{ca}
	}
}

func (ca *testCA) pool() *x509.CertPool { return ca.Pool }

// issued is a certificate signed by a testCA, as DER and as PEM files'
// contents (the leaf alone, without the CA).
type issued struct {
	der             []byte
	certPEM, keyPEM []byte
}

// issue signs a certificate for names (DNS names or IPs) usable for
// servers and clients.
func (ca *testCA) issue(t *testing.T, names ...string) issued {
	t.Helper()
	cert, err := ca.Leaf(names...)
	if err != nil {
		t.Fatal(err)
	}
	der := cert.Certificate[0]
	certPEM, keyPEM, err := testcert.EncodePEM(tls.Certificate{Certificate: [][]byte{der}, PrivateKey: cert.PrivateKey})
	if err != nil {
		t.Fatal(err)
	}
	return issued{der: der, certPEM: certPEM, keyPEM: keyPEM}
}

func (c issued) tlsCert(t *testing.T) tls.Certificate {
	t.Helper()
	pair, err := tls.X509KeyPair(c.certPEM, c.keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return pair
}

// writeFile writes data to dir/name and returns the path.
func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// serveTLS accepts connections on a fresh 127.0.0.1 port and completes a
// TLS handshake on each with cfg, then closes it. It returns the address;
// cleanup closes the listener and waits for the handlers.
func serveTLS(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	return proxytest.StartFake(t, func(c *proxytest.FakeConn) {
		_ = c.StartTLS(cfg) // a refusal is the client's to see
	}).Addr
}

// handshake dials addr and completes a TLS handshake with cfg. It may run
// on any goroutine (it does not stop the test).
func handshake(t *testing.T, addr string, cfg *tls.Config) (tls.ConnectionState, error) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	tc := tls.Client(c, cfg)
	if err := tc.Handshake(); err != nil {
		return tls.ConnectionState{}, err
	}
	return tc.ConnectionState(), nil
}

// mustHandshake is handshake that fails the test on error and returns the
// server's leaf certificate.
func mustHandshake(t *testing.T, addr string, cfg *tls.Config) (*x509.Certificate, tls.ConnectionState) {
	t.Helper()
	st, err := handshake(t, addr, cfg)
	if err != nil {
		t.Fatalf("handshake with %s (server name %q): %v", addr, cfg.ServerName, err)
	}
	if len(st.PeerCertificates) == 0 {
		t.Fatal("no peer certificate")
	}
	return st.PeerCertificates[0], st
}

// writePair writes the certificate and key of c to dir/cert.pem and
// dir/key.pem.
func (c issued) writePair(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	return writeFile(t, dir, "cert.pem", c.certPEM), writeFile(t, dir, "key.pem", c.keyPEM)
}

// wantServed handshakes with addr and fails the test, saying what, unless
// the server presents want.
func wantServed(t *testing.T, addr string, client *tls.Config, want issued, what string) {
	t.Helper()
	if leaf, _ := mustHandshake(t, addr, client); !bytes.Equal(leaf.Raw, want.der) {
		t.Fatal(what)
	}
}

// wantErrorContaining fails the test unless err is an error whose text
// contains each of want.
func wantErrorContaining(t *testing.T, err error, want []string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got nil error; want one containing %q", want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
}

// errorsAs reports whether err holds a T (shorthand for table checks).
func errorsAs[T error](err error) bool {
	var target T
	return errors.As(err, &target)
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

package dovecot

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestConfig(t *testing.T) {
	c := conf{Dir: "/d", Port: 1143, InternalUser: "u", InternalGroup: "g", LoginUser: "u", NoChroot: true}
	plain, err := c.render()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"\nssl = no\n", "port = 1143\n", "inet_listener imaps {\n    port = 0\n  }", "disable_plaintext_auth = no\n"} {
		if !strings.Contains(string(plain), want) {
			t.Errorf("without TLS: no %q in\n%s", want, plain)
		}
	}

	c.TLS, c.TLSPort, c.CertFile, c.KeyFile = true, 1993, "/c/cert.pem", "/c/key.pem"
	c.Extra = "service imap {\n  process_limit = 5000\n}"
	withTLS, err := c.render()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"\nssl = yes\n", "ssl_cert = </c/cert.pem\n", "ssl_key = </c/key.pem\n", "port = 1993\n    ssl = yes\n", "disable_plaintext_auth = no\n"} {
		if !strings.Contains(string(withTLS), want) {
			t.Errorf("with TLS: no %q in\n%s", want, withTLS)
		}
	}
	if !strings.HasSuffix(string(withTLS), c.Extra+"\n") {
		t.Errorf("Extra is not at the end:\n%s", withTLS)
	}
}

func TestStartRejects(t *testing.T) {
	certFile, keyFile, _ := testCert(t)
	for name, opts := range map[string]Options{
		"user name with colon":    {Users: []User{{Username: "a:b", Password: "x"}}},
		"empty user name":         {Users: []User{{Password: "x"}}},
		"password with newline":   {Users: []User{{Username: "a", Password: "x\ny"}}},
		"certificate without TLS": {TLSCert: certFile, TLSKey: keyFile},
		"certificate without key": {TLS: true, TLSCert: certFile},
		"key is no key":           {TLS: true, TLSCert: certFile, TLSKey: certFile},
	} {
		if inst, err := Start(opts); err == nil {
			_ = inst.Stop()
			t.Errorf("%s: Start succeeded", name)
		}
	}
}

func TestTLSFilesAndClientConfig(t *testing.T) {
	_, keyFile, certPEM := testCert(t)
	// A combined file: the key must not end up in CertPEM.
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	combined := filepath.Join(t.TempDir(), "combined.pem")
	if err := os.WriteFile(combined, append(append([]byte{}, certPEM...), keyPEM...), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, got, err := tlsFiles(combined, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(certPEM) {
		t.Errorf("CertPEM of a combined file:\n%s", got)
	}

	cfg, err := ClientTLSConfig(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ServerName != "127.0.0.1" {
		t.Errorf("ServerName %q, want the certificate's IP address", cfg.ServerName)
	}
	if _, err := ClientTLSConfig(keyPEM); err == nil {
		t.Error("ClientTLSConfig accepted PEM without a certificate")
	}
}

// testCert writes a self-signed certificate for 127.0.0.1 only.
func testCert(t *testing.T) (certFile, keyFile string, certPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, certPEM
}

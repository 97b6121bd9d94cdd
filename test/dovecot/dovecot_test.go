package dovecot

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imapguard/imapguard/test/testcert"
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
	for _, want := range []string{"auth_failure_delay = 0\n", "login_trusted_networks = 127.0.0.0/8\n", "anvil-auth-penalty {\n    mode = 0\n"} {
		if !strings.Contains(string(withTLS), want) {
			t.Errorf("without AuthPenalty: no %q in\n%s", want, withTLS)
		}
	}
	if strings.Contains(string(withTLS), "haproxy") {
		t.Errorf("a haproxy setting without HAProxy:\n%s", withTLS)
	}

	c.AuthPenalty, c.TrustedNetworks, c.HAProxyPort = true, "127.0.0.1/32", 1144
	penalty, err := c.render()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"login_trusted_networks = 127.0.0.1/32\n", "haproxy_trusted_networks = 127.0.0.1/32\n", "port = 1144\n    haproxy = yes\n"} {
		if !strings.Contains(string(penalty), want) {
			t.Errorf("with AuthPenalty and HAProxy: no %q in\n%s", want, penalty)
		}
	}
	for _, unwanted := range []string{"auth_failure_delay =", "anvil-auth-penalty"} {
		if strings.Contains(string(penalty), unwanted) {
			t.Errorf("with AuthPenalty: %q in\n%s", unwanted, penalty)
		}
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
	cert, err := testcert.SelfSigned("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err = testcert.WritePEM(t.TempDir(), cert)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err = testcert.EncodePEM(cert)
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, certPEM
}

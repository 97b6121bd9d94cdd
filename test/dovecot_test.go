package test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imapguard/imapguard/test/dovecot"
	"github.com/imapguard/imapguard/test/proxytest"
	"github.com/imapguard/imapguard/test/testcert"
)

// dovecotUser is one account of the test Dovecot.
type dovecotUser = dovecot.User

// startDovecot starts a private Dovecot instance listening on 127.0.0.1 at a
// free port, with the given users (passwd-file passdb with {PLAIN} passwords,
// static userdb), maildir storage in a private temporary directory, and
// returns "127.0.0.1:PORT". See startDovecotWith.
func startDovecot(t *testing.T, users []dovecotUser) string {
	t.Helper()
	return startDovecotWith(t, dovecot.Options{Users: users}).Addr
}

// startDovecotTLS is startDovecot with TLS: addr offers STARTTLS, tlsAddr
// is the imaps listener (implicit TLS), and certPEM is the certificate
// Dovecot presents; dovecot.ClientTLSConfig(certPEM) trusts it. Plaintext
// logins work on both listeners.
//
// The certificate is Dovecot's own (dovecot.DefaultCert) when it can be
// read, as root; otherwise a self-signed one for localhost and 127.0.0.1
// generated for the test.
func startDovecotTLS(t *testing.T, users []dovecotUser) (addr, tlsAddr string, certPEM []byte) {
	t.Helper()
	opts := dovecot.Options{Users: users, TLS: true}
	if _, _, err := dovecot.DefaultCert(); err != nil {
		t.Logf("dovecot: using a generated certificate: %v", err)
		opts.TLSCert, opts.TLSKey, _ = writeTestCert(t)
	}
	inst := startDovecotWith(t, opts)
	return inst.Addr, inst.TLSAddr, inst.CertPEM
}

// dovecotSuite is what does not run without Dovecot 2.3.
const dovecotSuite = "Dovecot end-to-end suite"

// startDovecotWith starts Dovecot with opts and registers cleanup that stops
// it and waits for it to exit; if the test failed, Dovecot's log is attached
// to it.
//
// If Dovecot is not installed or is not version 2.3 the test is skipped,
// unless the CI environment variable is set, in which case it fails.
func startDovecotWith(t *testing.T, opts dovecot.Options) *dovecot.Instance {
	t.Helper()
	bin, err := dovecot.Binary()
	if err != nil {
		proxytest.Skip(t, dovecotSuite, "dovecot not installed: apt-get install dovecot-imapd, or set DOVECOT_BIN")
	}
	version, err := dovecot.Version(bin)
	if err != nil {
		t.Fatalf("dovecot: %v", err)
	}
	if !strings.HasPrefix(version, "2.3.") {
		// 2.4 renamed and restructured most settings used by the harness.
		proxytest.Skip(t, dovecotSuite, "the harness writes a Dovecot 2.3 configuration; "+bin+" is version "+version)
	}
	opts.Binary = bin
	inst, err := dovecot.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		err := inst.Stop()
		if err != nil {
			t.Error(err)
		}
		if err != nil || t.Failed() {
			t.Logf("dovecot log (%s):\n%s", inst.Dir, inst.Log())
		}
	})
	if inst.TLSAddr != "" {
		t.Logf("dovecot %s listening on %s, imaps on %s (dir %s)", inst.Version, inst.Addr, inst.TLSAddr, inst.Dir)
	} else {
		t.Logf("dovecot %s listening on %s (dir %s)", inst.Version, inst.Addr, inst.Dir)
	}
	return inst
}

// writeTestCert writes a self-signed ECDSA certificate for localhost and
// 127.0.0.1 and its key to a temporary directory.
func writeTestCert(t *testing.T) (certFile, keyFile string, certPEM []byte) {
	t.Helper()
	cert, err := testcert.SelfSigned("localhost", "127.0.0.1", "::1")
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = writeKeyPair(t, t.TempDir(), cert)
	if certPEM, err = os.ReadFile(certFile); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, certPEM
}

// TestDovecotHarness talks to the harness's Dovecot directly, without the
// proxy: what the other tests take for granted of it.
func TestDovecotHarness(t *testing.T) {
	t.Parallel()
	users := []dovecotUser{
		{Username: "alice", Password: "alice-secret"},
		{Username: "bob", Password: "bob-secret"},
	}
	addr := startDovecot(t, users)

	t.Run("login select append logout", func(t *testing.T) {
		c := proxytest.Dial(t, addr)
		t.Logf("greeting: %s", c.Greeting())
		before := proxytest.CapLine(c.OK("a0", "CAPABILITY"))
		t.Logf("capabilities before login: %s", before)
		if !strings.Contains(before, "AUTH=PLAIN") || !strings.Contains(before, "SASL-IR") {
			t.Errorf("capabilities before login lack AUTH=PLAIN or SASL-IR: %q", before)
		}
		if strings.Contains(before, "LOGINDISABLED") {
			t.Errorf("plaintext LOGIN is disabled: %q", before)
		}

		c.OK("a", "LOGIN alice alice-secret")
		t.Logf("capabilities after login: %s", proxytest.CapLine(c.OK("a1", "CAPABILITY")))
		if un := c.OK("b", "SELECT INBOX"); !slices.Contains(un, "* 0 EXISTS") {
			t.Errorf("fresh INBOX is not empty: %q", un)
		}

		msg := "From: alice@example.org\r\nTo: bob@example.org\r\nSubject: harness\r\n\r\nhello from the test harness\r\n"
		c.Send("c APPEND INBOX {" + strconv.Itoa(len(msg)) + "}\r\n")
		c.ExpectPrefix("+")
		c.Send(msg + "\r\n")
		untagged, tagged := c.Until("c")
		if !strings.HasPrefix(tagged, "c OK") {
			t.Fatalf("APPEND: got %q (untagged %q)", tagged, untagged)
		}
		if !slices.Contains(untagged, "* 1 EXISTS") {
			t.Errorf("APPEND to the selected INBOX reported no * 1 EXISTS: %q", untagged)
		}
		c.Logout("d")
	})

	t.Run("authenticate plain with SASL-IR", func(t *testing.T) {
		// Each user has their own maildir: alice's holds the message
		// appended above, bob's nothing.
		for _, u := range []struct{ user, pass, exists string }{
			{"alice", "alice-secret", "* 1 EXISTS"},
			{"bob", "bob-secret", "* 0 EXISTS"},
		} {
			c := proxytest.Dial(t, addr)
			c.Greeting()
			c.OK("e", "AUTHENTICATE PLAIN "+proxytest.SASLPlain(u.user, u.pass))
			if un := c.OK("f", "SELECT INBOX"); !slices.Contains(un, u.exists) {
				t.Errorf("%s's INBOX: no %q in %q", u.user, u.exists, un)
			}
			c.OK("g", "LOGOUT")
		}
	})

	t.Run("wrong password", func(t *testing.T) {
		// Repeated failures from the same IP must neither be refused nor
		// slowed down by Dovecot's auth penalty (2s, 4s, ... per failure).
		for i, creds := range []string{"alice wrong-password", "bob alice-secret", "nobody secret"} {
			c := proxytest.Dial(t, addr)
			c.Greeting()
			start := time.Now()
			_, tagged := c.Cmd("a", "LOGIN "+creds)
			elapsed := time.Since(start)
			if !strings.HasPrefix(tagged, "a NO") || !strings.Contains(tagged, "AUTHENTICATIONFAILED") {
				t.Errorf("LOGIN %s: got %q, want tagged NO [AUTHENTICATIONFAILED]", creds, tagged)
			}
			t.Logf("failed LOGIN #%d answered after %v: %s", i+1, elapsed.Round(time.Millisecond), tagged)
			// Without auth_failure_delay = 0 this takes 2s, with the
			// penalty 2.5s and more from the second failure on.
			if elapsed >= 2*time.Second {
				t.Errorf("failed LOGIN #%d took %v; auth failure delay or penalty not disabled?", i+1, elapsed)
			}
			c.OK("z", "LOGOUT")
		}
	})

	t.Run("tls", testDovecotHarnessTLS)
}

// testDovecotHarnessTLS checks the harness's TLS: STARTTLS on the plain
// listener and implicit TLS on the imaps listener, each verified against
// the certificate the harness returns, with plaintext logins still
// allowed. It runs with startDovecotTLS's certificate (Dovecot's own when
// it can be read) and with one given by the test.
func testDovecotHarnessTLS(t *testing.T) {
	t.Parallel()
	users := []dovecotUser{{Username: "alice", Password: "alice-secret"}}

	check := func(t *testing.T, addr, tlsAddr string, certPEM []byte) {
		cfg, err := dovecot.ClientTLSConfig(certPEM)
		if err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode(certPEM)
		if block == nil {
			t.Fatalf("no certificate in %q", certPEM)
		}
		t.Logf("certificate for %q", cfg.ServerName)
		// session logs in with a plaintext LOGIN, selects INBOX and logs
		// out.
		session := func(c *proxytest.Conn) {
			c.OK("l", "LOGIN alice alice-secret")
			c.OK("s", "SELECT INBOX")
			c.OK("o", "LOGOUT")
		}
		servedCert := func(cs tls.ConnectionState) {
			t.Helper()
			if len(cs.PeerCertificates) == 0 || !bytes.Equal(cs.PeerCertificates[0].Raw, block.Bytes) {
				t.Errorf("Dovecot presents another certificate than the one returned")
			}
			t.Logf("%s, %s", tls.VersionName(cs.Version), tls.CipherSuiteName(cs.CipherSuite))
		}

		t.Run("starttls", func(t *testing.T) {
			t.Parallel()
			c := proxytest.Dial(t, addr)
			c.Greeting()
			caps := proxytest.CapLine(c.OK("a", "CAPABILITY"))
			if !strings.Contains(caps, " STARTTLS") || strings.Contains(caps, "LOGINDISABLED") {
				t.Errorf("capabilities before STARTTLS: %q, want STARTTLS and no LOGINDISABLED", caps)
			}
			servedCert(c.StartTLS("b", cfg))
			if caps := proxytest.CapLine(c.OK("c", "CAPABILITY")); strings.Contains(caps, "STARTTLS") {
				t.Errorf("STARTTLS still offered after STARTTLS: %q", caps)
			}
			session(c)
		})

		t.Run("imaps", func(t *testing.T) {
			t.Parallel()
			c, cs := proxytest.DialTLS(t, tlsAddr, cfg)
			servedCert(cs)
			t.Logf("imaps greeting %s", c.Greeting())
			if caps := proxytest.CapLine(c.OK("a", "CAPABILITY")); strings.Contains(caps, "STARTTLS") || strings.Contains(caps, "LOGINDISABLED") {
				t.Errorf("capabilities on imaps: %q, want neither STARTTLS nor LOGINDISABLED", caps)
			}
			session(c)
		})

		t.Run("plaintext login", func(t *testing.T) {
			t.Parallel()
			c := proxytest.Dial(t, addr)
			c.Greeting()
			session(c)
		})

		t.Run("untrusted", func(t *testing.T) {
			t.Parallel()
			// Without the returned certificate the handshake must fail:
			// the check above really verifies.
			d := &net.Dialer{Timeout: proxytest.Timeout}
			c, err := tls.DialWithDialer(d, "tcp", tlsAddr, &tls.Config{ServerName: cfg.ServerName, RootCAs: x509.NewCertPool()})
			if err == nil {
				c.Close()
				t.Fatal("TLS handshake succeeded without trusting the certificate")
			}
		})
	}

	t.Run("startDovecotTLS", func(t *testing.T) {
		t.Parallel()
		addr, tlsAddr, certPEM := startDovecotTLS(t, users)
		if certFile, _, err := dovecot.DefaultCert(); err == nil {
			want, err := os.ReadFile(certFile)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(bytes.TrimSpace(certPEM), bytes.TrimSpace(want)) {
				t.Errorf("certPEM is not Dovecot's own %s:\n%s", certFile, certPEM)
			}
		}
		check(t, addr, tlsAddr, certPEM)
	})

	t.Run("caller certificate", func(t *testing.T) {
		t.Parallel()
		certFile, keyFile, certPEM := writeTestCert(t)
		inst := startDovecotWith(t, dovecot.Options{Users: users, TLS: true, TLSCert: certFile, TLSKey: keyFile})
		if !bytes.Equal(inst.CertPEM, certPEM) {
			t.Errorf("CertPEM is not the given certificate:\n%s", inst.CertPEM)
		}
		check(t, inst.Addr, inst.TLSAddr, inst.CertPEM)
	})
}

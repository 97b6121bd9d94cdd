package server_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/imapguard/imapguard/cmd/imapd/server"
	"github.com/imapguard/imapguard/test/proxytest"
	"github.com/imapguard/imapguard/test/testcert"
)

// selfSigned returns a server config with a self-signed certificate for
// 127.0.0.1 and a client config that trusts exactly it.
func selfSigned(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	cert, err := testcert.SelfSigned("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert.Leaf)
	server = &tls.Config{Certificates: []tls.Certificate{cert}}
	client = &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
	return server, client
}

func TestTLSOptions(t *testing.T) {
	if _, err := server.New(server.Options{TLSConfig: &tls.Config{}}); err == nil {
		t.Error("New with a TLSConfig without certificate succeeded, want error")
	}
	s, err := server.New(server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ServeTLS(ln); !errors.Is(err, server.ErrNoTLS) {
		t.Errorf("ServeTLS without TLSConfig = %v, want ErrNoTLS", err)
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("listener still open after a failed ServeTLS: Accept = %v", err)
	}
}

// TestTLSStartTLSAndImplicit serves one server with TLS and no
// InsecureAuth on both ports: the plaintext port offers STARTTLS and
// refuses login before it; both TLS paths log in and share mailboxes.
func TestTLSStartTLSAndImplicit(t *testing.T) {
	serverCfg, clientCfg := selfSigned(t)
	addr, tlsAddr := server.StartTLS(t, server.Options{
		Users:     []server.User{{Username: "alice", Password: "secret", Messages: 2}},
		TLSConfig: serverCfg,
	})

	// Plaintext: STARTTLS and LOGINDISABLED offered, login refused.
	rc := proxytest.Dial(t, addr)
	greeting := rc.Greeting()
	for _, want := range []string{" STARTTLS", " LOGINDISABLED"} {
		if !strings.Contains(greeting, want) {
			t.Errorf("plaintext greeting %q lacks %q", greeting, want)
		}
	}
	if strings.Contains(greeting, "AUTH=") {
		t.Errorf("plaintext greeting %q offers AUTH= before TLS", greeting)
	}
	if _, line := rc.Cmd("a", "LOGIN alice secret"); !strings.HasPrefix(line, "a NO [PRIVACYREQUIRED]") {
		t.Errorf("LOGIN before STARTTLS: %q, want NO [PRIVACYREQUIRED]", line)
	}

	// Implicit TLS: log in and append.
	ic, err := imapclient.DialTLS(tlsAddr, &imapclient.Options{TLSConfig: clientCfg})
	if err != nil {
		t.Fatalf("DialTLS: %v", err)
	}
	t.Cleanup(func() { ic.Close() })
	if caps := ic.Caps(); caps.Has(imap.CapStartTLS) || caps.Has(imap.CapLoginDisabled) {
		t.Errorf("capabilities on the imaps port: %v; want neither STARTTLS nor LOGINDISABLED", caps)
	}
	if err := ic.Login("alice", "secret").Wait(); err != nil {
		t.Fatalf("LOGIN over implicit TLS: %v", err)
	}
	msg := "Subject: over imaps\r\n\r\nhello\r\n"
	app := ic.Append("INBOX", int64(len(msg)), nil)
	if _, err := app.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	if err := app.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := app.Wait(); err != nil {
		t.Fatalf("APPEND over implicit TLS: %v", err)
	}
	if err := ic.Logout().Wait(); err != nil {
		t.Fatalf("LOGOUT: %v", err)
	}

	// STARTTLS: log in and see the appended message.
	sc, err := imapclient.DialStartTLS(addr, &imapclient.Options{TLSConfig: clientCfg})
	if err != nil {
		t.Fatalf("DialStartTLS: %v", err)
	}
	t.Cleanup(func() { sc.Close() })
	if caps := sc.Caps(); caps.Has(imap.CapStartTLS) || caps.Has(imap.CapLoginDisabled) || !caps.Has(imap.AuthCap("PLAIN")) {
		t.Errorf("capabilities after STARTTLS: %v; want AUTH=PLAIN and neither STARTTLS nor LOGINDISABLED", caps)
	}
	if err := sc.Login("alice", "secret").Wait(); err != nil {
		t.Fatalf("LOGIN after STARTTLS: %v", err)
	}
	data, err := sc.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatalf("SELECT: %v", err)
	}
	if data.NumMessages != 3 {
		t.Errorf("INBOX has %d messages after STARTTLS, want 3 (2 seeds + 1 appended over imaps)", data.NumMessages)
	}
	if err := sc.Logout().Wait(); err != nil {
		t.Fatalf("LOGOUT: %v", err)
	}

	// The imaps port does not answer a plaintext client in plaintext.
	pc := proxytest.Dial(t, tlsAddr).Client()
	pc.Send("a LOGIN alice secret\r\n")
	if data, _ := pc.ReadToEnd(); strings.Contains(string(data), "OK") {
		t.Errorf("imaps port answered a plaintext client with %q", data)
	}
}

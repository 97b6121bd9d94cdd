package server_test

// The bundled upstream on the wire, with the test kit's raw client:
// what imapguard and its tests rely on, byte for byte.

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/imapguard/imapguard/cmd/imapd/server"
	"github.com/imapguard/imapguard/test/proxytest"
)

// startDefault starts a server with alice (3 small seed messages) and
// bob (no messages), plaintext auth allowed.
func startDefault(t *testing.T) string {
	t.Helper()
	return proxytest.Imapd(t,
		server.User{Username: "alice", Password: "secret", Messages: 3},
		server.User{Username: "bob", Password: "hunter2"})
}

func TestRawProtocol(t *testing.T) {
	c := proxytest.Dial(t, startDefault(t))
	greeting := c.Greeting()
	for _, want := range []string{"* OK [CAPABILITY ", " IMAP4rev1", " IMAP4rev2", " SASL-IR", " AUTH=PLAIN"} {
		if !strings.Contains(greeting, want) {
			t.Errorf("greeting %q lacks %q", greeting, want)
		}
	}
	t.Logf("greeting: %s", greeting)
	t.Logf("before login: %s", capLine(t, c, "a1"))

	// AUTHENTICATE without SASL-IR: the server must send an empty
	// continuation request and then accept the response.
	c.Send("a2 AUTHENTICATE PLAIN\r\n")
	c.Expect("+ ")
	c.Send(proxytest.SASLPlain("alice", "secret") + "\r\n")
	if _, st := c.Until("a2"); !strings.HasPrefix(st, "a2 OK") {
		t.Fatalf("AUTHENTICATE PLAIN: %q", st)
	}

	after := capLine(t, c, "a3")
	t.Logf("after login: %s", after)
	for _, want := range []string{" IDLE", " MOVE", " UIDPLUS", " LITERAL+"} {
		if !strings.Contains(after, want) {
			t.Errorf("capabilities after login %q lack %q", after, want)
		}
	}

	// Non-synchronising literal larger than the 4096 bytes LITERAL- allows.
	msg := "Subject: big literal\r\n\r\n" + strings.Repeat("x", 8000) + "\r\n"
	c.Send(fmt.Sprintf("a4 APPEND INBOX {%d+}\r\n%s\r\n", len(msg), msg))
	if _, st := c.Until("a4"); !strings.HasPrefix(st, "a4 OK [APPENDUID ") {
		t.Fatalf("APPEND with LITERAL+: %q", st)
	}
	c.Logout("a5")
}

// capLine runs CAPABILITY and returns its * CAPABILITY line.
func capLine(t *testing.T, c *proxytest.Conn, tag string) string {
	t.Helper()
	l := proxytest.CapLine(c.OK(tag, "CAPABILITY"))
	if l == "" {
		t.Fatalf("CAPABILITY: no * CAPABILITY line")
	}
	return l
}

func TestRawWrongPassword(t *testing.T) {
	c := proxytest.Dial(t, startDefault(t))
	c.Greeting()
	c.Send(`a1 LOGIN alice "nope"` + "\r\n")
	c.Expect("a1 NO [AUTHENTICATIONFAILED] Authentication failed")
}

func TestRawAuthenticateErrors(t *testing.T) {
	addr := startDefault(t)
	b64 := proxytest.Base64
	for _, tc := range []struct{ cmd, want string }{
		{"AUTHENTICATE PLAIN " + b64("no separators"), "a BAD "},
		{"AUTHENTICATE PLAIN =", "a BAD "},
		{"AUTHENTICATE PLAIN " + b64("bob\x00alice\x00secret"), "a NO [AUTHORIZATIONFAILED] "},
		{"AUTHENTICATE PLAIN " + proxytest.SASLPlain("alice", "wrong"), "a NO [AUTHENTICATIONFAILED] "},
		{"AUTHENTICATE CRAM-MD5", "a NO "},
		{"AUTHENTICATE LOGIN", "a NO "},
	} {
		t.Run(tc.cmd, func(t *testing.T) {
			c := proxytest.Dial(t, addr)
			c.Greeting()
			c.Send("a " + tc.cmd + "\r\n")
			c.ExpectPrefix(tc.want)
			// The connection stays usable.
			c.OK("b", "LOGIN alice secret")
		})
	}
}

func TestServeCloseLifecycle(t *testing.T) {
	s, err := server.New(server.Options{})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if s.Addr() != nil {
		t.Errorf("Addr before Serve = %v, want nil", s.Addr())
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()

	// A completed greeting proves Serve is accepting.
	proxytest.Dial(t, ln.Addr().String()).Greeting()
	if got := s.Addr(); got == nil || got.String() != ln.Addr().String() {
		t.Errorf("Addr = %v, want %v", got, ln.Addr())
	}

	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Serve after Close = %v, want nil", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	if err := s.Serve(ln2); err != nil {
		t.Errorf("Serve on closed server = %v, want nil", err)
	}
}

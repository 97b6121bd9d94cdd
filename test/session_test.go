package test

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/test/proxytest"
)

// TestE2EClientSession drives a whole session with go-imap's client:
// login, SELECT, FETCH, a 5 MB APPEND (message literals are exempt from
// max_command_size), IDLE woken by a second session's APPEND, LOGOUT.
func TestE2EClientSession(t *testing.T) {
	t.Parallel()
	forEachUpstream(t, func(t *testing.T, up, user, pass string) {
		p := proxytest.Start(t, proxytest.Config{Upstream: up, Options: proxy.Options{MaxCommandSize: 10240}})

		exists := make(chan uint32, 64)
		c := dialGoIMAP(t, p.Addr, &imapclient.Options{
			UnilateralDataHandler: &imapclient.UnilateralDataHandler{
				Mailbox: func(d *imapclient.UnilateralDataMailbox) {
					if d.NumMessages != nil {
						select {
						case exists <- *d.NumMessages:
						default:
						}
					}
				},
			},
		})
		loginSelect(t, c, user, pass, 1)
		for cp := range c.Caps() {
			if u := strings.ToUpper(string(cp)); strings.HasPrefix(u, "COMPRESS=") || strings.HasPrefix(u, "AUTH=") || u == "STARTTLS" {
				t.Errorf("client sees capability %s after login", cp)
			}
		}

		// FETCH BODY[] of message 1 (a literal relayed to the client).
		if got := fetchBody(t, c, uidOf(t, c, nil, 1)); string(got) != seedMessage {
			t.Fatalf("fetch 1 BODY[]: got %q; want %q", got, seedMessage)
		}

		// A 5 MB APPEND. go-imap sends literals over 4096 bytes as
		// synchronizing ones, so this also goes through the proxy's
		// literal gate; the bytes stream through, far above
		// max_command_size.
		big := bigMessage(5<<20, "big-sync")
		uid := uidOf(t, c, appendMessage(t, c, big), 2)
		if got := fetchBody(t, c, uid); !bytes.Equal(got, big) {
			t.Fatalf("5 MB message read back differs: got %d bytes, want %d", len(got), len(big))
		}

		// IDLE, woken by another session's APPEND.
		for len(exists) > 0 {
			<-exists
		}
		idle, err := c.Idle()
		if err != nil {
			t.Fatalf("idle: %v", err)
		}
		c2 := dialGoIMAP(t, p.Addr, nil)
		if err := c2.Login(user, pass).Wait(); err != nil {
			t.Fatalf("second session: login: %v", err)
		}
		appendMessage(t, c2, []byte("From: other@example.org\r\nSubject: wake up\r\n\r\nnew mail\r\n"))
		// Dovecot notices a new maildir file by inotify at once, or by its
		// mailbox_idle_check_interval (30 s) at worst.
		deadline := time.After(45 * time.Second)
		for n := uint32(0); n < 3; {
			select {
			case n = <-exists:
			case <-deadline:
				t.Fatal("no * 3 EXISTS during IDLE")
			}
		}
		if err := idle.Close(); err != nil {
			t.Fatalf("idle close (DONE): %v", err)
		}
		if err := idle.Wait(); err != nil {
			t.Fatalf("idle: %v", err)
		}
		// The session goes on after IDLE.
		if err := c.Noop().Wait(); err != nil {
			t.Fatalf("noop after idle: %v", err)
		}
		if err := c2.Logout().Wait(); err != nil {
			t.Fatalf("second session: logout: %v", err)
		}
		if err := c.Logout().Wait(); err != nil {
			t.Fatalf("logout: %v", err)
		}
		select {
		case <-c.Closed():
		case <-time.After(proxytest.Timeout):
			t.Fatal("connection not closed after LOGOUT")
		}
		proxytest.WaitZero(t, p.Limiter)
	})
}

// TestE2EAppendNonSyncLiteral sends a 5 MB APPEND as a non-synchronizing
// literal (RFC 7888 LITERAL+, which both upstreams offer after login) in
// one stream with the command after it, and reads the message back.
func TestE2EAppendNonSyncLiteral(t *testing.T) {
	t.Parallel()
	forEachUpstream(t, func(t *testing.T, up, user, pass string) {
		p := proxytest.Start(t, proxytest.Config{Upstream: up, Options: proxy.Options{MaxCommandSize: 10240}})
		c := proxytest.Login(t, p.Addr, user, pass)
		big := bigMessage(5<<20, "big-nonsync")
		var b bytes.Buffer
		b.WriteString("a APPEND INBOX (\\Seen) {" + strconv.Itoa(len(big)) + "+}\r\n")
		b.Write(big)
		b.WriteString("\r\nb NOOP\r\n")
		// Write on another goroutine: the upstream may answer before all
		// is sent.
		w := c.Client()
		w.Timeout = 3 * proxytest.Timeout
		werr := make(chan error, 1)
		go func() { werr <- w.Send(b.String()) }()
		un, st := c.Until("a")
		if !strings.HasPrefix(st, "a OK") {
			t.Fatalf("APPEND: got %q (untagged %q)", st, un)
		}
		for _, l := range un {
			if strings.HasPrefix(l, "+") {
				t.Errorf("APPEND with {N+}: unexpected continuation %q", l)
			}
		}
		if _, st := c.Until("b"); !strings.HasPrefix(st, "b OK") {
			t.Fatalf("NOOP after APPEND: got %q", st)
		}
		if err := <-werr; err != nil {
			t.Fatal(err)
		}
		c.Logout("z")

		ic := dialGoIMAP(t, p.Addr, nil)
		loginSelect(t, ic, user, pass, -1)
		if got := fetchBody(t, ic, uidOf(t, ic, nil, 2)); !bytes.Equal(got, big) {
			t.Fatalf("5 MB message read back differs: got %d bytes, want %d", len(got), len(big))
		}
		if err := ic.Logout().Wait(); err != nil {
			t.Fatalf("logout: %v", err)
		}
		proxytest.WaitZero(t, p.Limiter)
	})
}

// TestE2ELiteralRejected: an upstream may refuse a synchronizing literal
// with a tagged NO instead of "+" (RFC 9051 §7.5); the client then does
// not send it, and its next command must reach the upstream as a command.
func TestE2ELiteralRejected(t *testing.T) {
	t.Parallel()
	forEachUpstream(t, func(t *testing.T, up, user, pass string) {
		p := proxytest.Start(t, proxytest.Config{Upstream: up})
		c := proxytest.Login(t, p.Addr, user, pass)
		msg := "Subject: x\r\n\r\nhello\r\n"
		c.Send("x APPEND nosuchbox {" + strconv.Itoa(len(msg)) + "}\r\n")
		switch l := c.Line(); {
		case strings.HasPrefix(l, "+"):
			// This upstream reads the literal before it looks at the
			// mailbox.
			c.Send(msg + "\r\n")
			if _, st := c.Until("x"); !strings.HasPrefix(st, "x NO") {
				t.Fatalf("APPEND to a missing mailbox: got %q; want x NO", st)
			}
		case strings.HasPrefix(l, "x NO"):
			t.Logf("upstream refused the literal: %q", l)
		default:
			t.Fatalf("APPEND: got %q; want + or x NO", l)
		}
		// What follows is a new command, relayed as such.
		c.OK("y", "NOOP")
		// And a literal after it goes through normally.
		c.Send("z APPEND INBOX {" + strconv.Itoa(len(msg)) + "}\r\n")
		c.ExpectPrefix("+")
		c.Send(msg + "\r\n")
		if un, st := c.Until("z"); !strings.HasPrefix(st, "z OK") {
			t.Fatalf("APPEND INBOX: got %q (untagged %q)", st, un)
		}
		c.SelectAndLogout("* 2 EXISTS")
		proxytest.WaitZero(t, p.Limiter)
	})
}

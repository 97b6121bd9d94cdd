// Package test holds imapguard's end-to-end tests: real sockets on
// loopback, the proxy in front of the bundled cmd/imapd upstream, a
// scripted one or a private Dovecot, driven by the raw client and the
// fakes of the test kit (test/proxytest), by go-imap's client and by
// programs nobody here wrote (curl, openssl). Files are named by feature;
// this one holds what several of them share. Synchronisation uses
// deadlines, channels and polled conditions; nothing sleeps for a guessed
// time.
package test

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/imapguard/imapguard/test/proxytest"
)

// The proxy's refusals, to the letter.
const (
	byeShutdown   = "* BYE [UNAVAILABLE] Server shutting down"
	noUnavailable = "NO [UNAVAILABLE] Mail server unavailable, try again later"
)

func byeMaxConns(n int) string {
	return fmt.Sprintf("* BYE [UNAVAILABLE] Too many connections (max_connections=%d)", n)
}

func byeEvicted(n int) string {
	return fmt.Sprintf("* BYE [UNAVAILABLE] Too many connections; closing the oldest unauthenticated one (max_connections=%d)", n)
}

func byeMaxPerIP(n int) string {
	return fmt.Sprintf("* BYE [UNAVAILABLE] Too many connections from your address (max_connections_per_ip=%d)", n)
}

func noMaxPerUser(tag string, n int) string {
	return fmt.Sprintf("%s NO [LIMIT] Too many connections for this user (max_connections_per_user=%d)", tag, n)
}

// byePreauth and byeIdle end a connection whose timeout ran out; d is the
// timeout as the configuration writes it ("1m").
func byePreauth(d string) string {
	return "* BYE Autologout; not authenticated in time (preauth_timeout=" + d + ")"
}

func byeIdle(d string) string { return "* BYE Autologout; idle for too long (idle_timeout=" + d + ")" }

// newGoIMAP runs go-imap's client over nc, after STARTTLS (with
// opts.TLSConfig) if starttls, and waits for the greeting.
func newGoIMAP(t *testing.T, nc net.Conn, opts *imapclient.Options, starttls bool) *imapclient.Client {
	t.Helper()
	var c *imapclient.Client
	if !starttls {
		c = imapclient.New(nc, opts)
	} else {
		var err error
		if c, err = imapclient.NewStartTLS(nc, opts); err != nil {
			t.Fatalf("imapclient STARTTLS: %v", err)
		}
	}
	t.Cleanup(func() { c.Close() })
	if err := c.WaitGreeting(); err != nil {
		t.Fatalf("greeting: %v", err)
	}
	return c
}

// dialGoIMAP connects go-imap's client to addr.
func dialGoIMAP(t *testing.T, addr string, opts *imapclient.Options) *imapclient.Client {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, proxytest.Timeout)
	if err != nil {
		t.Fatal(err)
	}
	return newGoIMAP(t, nc, opts, false)
}

// loginSelect logs go-imap's client in and selects INBOX, which must hold
// want messages (unless want is -1).
func loginSelect(t *testing.T, c *imapclient.Client, user, pass string, want int) {
	t.Helper()
	if err := c.Login(user, pass).Wait(); err != nil {
		t.Fatalf("login: %v", err)
	}
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatalf("select: %v", err)
	}
	if want >= 0 && sel.NumMessages != uint32(want) {
		t.Errorf("INBOX holds %d messages; want %d", sel.NumMessages, want)
	}
}

// appendMessage appends msg to INBOX.
func appendMessage(t *testing.T, c *imapclient.Client, msg []byte) *imap.AppendData {
	t.Helper()
	cmd := c.Append("INBOX", int64(len(msg)), nil)
	if _, err := cmd.Write(msg); err != nil {
		t.Fatalf("append: write: %v", err)
	}
	if err := cmd.Close(); err != nil {
		t.Fatalf("append: close: %v", err)
	}
	data, err := cmd.Wait()
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	return data
}

// fetchBody returns BODY[] of the message with uid (in the selected
// mailbox).
func fetchBody(t *testing.T, c *imapclient.Client, uid imap.UID) []byte {
	t.Helper()
	section := &imap.FetchItemBodySection{}
	msgs, err := c.Fetch(imap.UIDSetNum(uid), &imap.FetchOptions{
		UID:         true,
		BodySection: []*imap.FetchItemBodySection{section},
	}).Collect()
	if err != nil {
		t.Fatalf("fetch UID %d: %v", uid, err)
	}
	if len(msgs) != 1 {
		t.Fatalf("fetch UID %d: %d messages", uid, len(msgs))
	}
	return msgs[0].FindBodySection(section)
}

// uidOf returns the UID APPEND reported, or, without UIDPLUS, the UID of
// message seq.
func uidOf(t *testing.T, c *imapclient.Client, data *imap.AppendData, seq uint32) imap.UID {
	t.Helper()
	if data != nil && data.UID != 0 {
		return data.UID
	}
	msgs, err := c.Fetch(imap.SeqSetNum(seq), &imap.FetchOptions{UID: true}).Collect()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("fetch UID of %d: %v (%d messages)", seq, err, len(msgs))
	}
	return msgs[0].UID
}

// bigMessage returns a valid RFC 5322 message of at least size bytes
// with CRLF line ends and short lines, so that every upstream stores and
// returns it byte for byte.
func bigMessage(size int, subject string) []byte {
	var b bytes.Buffer
	b.Grow(size + 256)
	fmt.Fprintf(&b, "From: big@example.org\r\nTo: e2e@example.org\r\nSubject: %s\r\n", subject)
	b.WriteString("Message-ID: <" + subject + "@e2e.invalid>\r\nMIME-Version: 1.0\r\n")
	b.WriteString("Content-Type: text/plain; charset=us-ascii\r\n\r\n")
	for i := 0; b.Len() < size; i++ {
		fmt.Fprintf(&b, "%08d The quick brown fox jumps over the lazy dog {5+} ~{7} \"q\" \\ ( ) * %%\r\n", i)
	}
	return b.Bytes()
}

// wantLine fails the test unless got is want.
func wantLine(t *testing.T, what, got, want string) {
	t.Helper()
	if got != want {
		t.Fatalf("%s: got %q; want %q", what, got, want)
	}
}

// wantPrefix fails the test unless got starts with prefix.
func wantPrefix(t *testing.T, what, got, prefix string) {
	t.Helper()
	if !strings.HasPrefix(got, prefix) {
		t.Fatalf("%s: got %q; want a line starting %q", what, got, prefix)
	}
}

// loginSelected logs in as alice (password secret) and selects INBOX.
func loginSelected(t *testing.T, addr string) *proxytest.Conn {
	t.Helper()
	c := proxytest.Login(t, addr, "alice", "secret")
	c.OK("s", "SELECT INBOX")
	return c
}

package server

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
)

// startDefault starts a server with alice (3 small seed messages) and
// bob (no messages), plaintext auth allowed.
func startDefault(t *testing.T) string {
	t.Helper()
	return Start(t, Options{
		Users: []User{
			{Username: "alice", Password: "secret", Messages: 3},
			{Username: "bob", Password: "hunter2"},
		},
		InsecureAuth: true,
	})
}

// dial connects an imapclient to addr and closes it at cleanup.
func dial(t *testing.T, addr string) *imapclient.Client {
	t.Helper()
	c, err := imapclient.DialInsecure(addr, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func login(t *testing.T, addr, user, pass string) *imapclient.Client {
	t.Helper()
	c := dial(t, addr)
	if err := c.Login(user, pass).Wait(); err != nil {
		t.Fatalf("LOGIN %s: %v", user, err)
	}
	return c
}

func TestLogin(t *testing.T) {
	addr := startDefault(t)
	c := login(t, addr, "alice", "secret")
	caps := c.Caps()
	for _, want := range []imap.Cap{imap.CapIMAP4rev1, imap.CapIMAP4rev2, imap.CapIdle, imap.CapMove, imap.CapUIDPlus, imap.CapLiteralPlus} {
		if !caps.Has(want) {
			t.Errorf("capability %s missing after login: %v", want, caps)
		}
	}
	if err := c.Logout().Wait(); err != nil {
		t.Fatalf("LOGOUT: %v", err)
	}
}

func TestAuthenticatePlain(t *testing.T) {
	addr := startDefault(t)
	c := dial(t, addr)
	if err := c.Authenticate(sasl.NewPlainClient("", "alice", "secret")); err != nil {
		t.Fatalf("AUTHENTICATE PLAIN: %v", err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatalf("SELECT after AUTHENTICATE: %v", err)
	}
}

func TestWrongCredentials(t *testing.T) {
	addr := startDefault(t)
	cases := []struct{ name, user, pass string }{
		{"wrong password", "alice", "wrong"},
		{"unknown user", "mallory", "secret"},
		{"username case differs", "Alice", "secret"},
		{"other user's password", "bob", "secret"},
	}
	for _, tc := range cases {
		t.Run(tc.name+"/LOGIN", func(t *testing.T) {
			err := dial(t, addr).Login(tc.user, tc.pass).Wait()
			wantAuthFailed(t, err)
		})
		t.Run(tc.name+"/AUTHENTICATE", func(t *testing.T) {
			err := dial(t, addr).Authenticate(sasl.NewPlainClient("", tc.user, tc.pass))
			wantAuthFailed(t, err)
		})
	}
}

func wantAuthFailed(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		t.Fatal("login succeeded, want NO [AUTHENTICATIONFAILED]")
	}
	var imapErr *imap.Error
	if !errors.As(err, &imapErr) || imapErr.Type != imap.StatusResponseTypeNo ||
		!strings.Contains(err.Error(), "AUTHENTICATIONFAILED") {
		t.Fatalf("error = %v, want NO [AUTHENTICATIONFAILED]", err)
	}
}

func TestSelectAndFetch(t *testing.T) {
	addr := startDefault(t)
	c := login(t, addr, "alice", "secret")
	data, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatalf("SELECT: %v", err)
	}
	if data.NumMessages != 3 {
		t.Fatalf("SELECT INBOX: %d messages, want 3", data.NumMessages)
	}

	body := &imap.FetchItemBodySection{}
	msgs, err := c.Fetch(imap.SeqSetNum(2), &imap.FetchOptions{
		Envelope:    true,
		BodySection: []*imap.FetchItemBodySection{body},
	}).Collect()
	if err != nil {
		t.Fatalf("FETCH: %v", err)
	}
	if len(msgs) != 1 {
		t.Fatalf("FETCH returned %d messages, want 1", len(msgs))
	}
	if got := msgs[0].Envelope.Subject; got != "Seed message 2" {
		t.Errorf("Subject = %q, want %q", got, "Seed message 2")
	}
	want := append(seedHeader("alice", 0, 2), seedBody(0)...)
	if got := msgs[0].FindBodySection(body); !bytes.Equal(got, want) {
		t.Errorf("BODY[] =\n%s\nwant\n%s", got, want)
	}
}

func TestLargeSeedMessage(t *testing.T) {
	const size = 1 << 20
	addr := Start(t, Options{
		Users:        []User{{Username: "big", Password: "pw", Messages: 2, MessageSize: size}},
		InsecureAuth: true,
	})
	c := login(t, addr, "big", "pw")
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatalf("SELECT: %v", err)
	}
	body := &imap.FetchItemBodySection{Specifier: imap.PartSpecifierText, Peek: true}
	msgs, err := c.Fetch(imap.SeqSetNum(1, 2), &imap.FetchOptions{
		RFC822Size:  true,
		BodySection: []*imap.FetchItemBodySection{body},
	}).Collect()
	if err != nil {
		t.Fatalf("FETCH: %v", err)
	}
	for _, m := range msgs {
		got := m.FindBodySection(body)
		if len(got) < size || len(got) > size+len(seedPadLine) {
			t.Errorf("message %d: body is %d bytes, want about %d", m.SeqNum, len(got), size)
		}
		if m.RFC822Size <= int64(len(got)) {
			t.Errorf("message %d: RFC822.SIZE %d not larger than body %d", m.SeqNum, m.RFC822Size, len(got))
		}
	}
}

func TestAppend(t *testing.T) {
	addr := startDefault(t)
	c := login(t, addr, "alice", "secret")
	msg := "From: a@example.org\r\nTo: alice@example.org\r\nSubject: appended\r\n\r\nhello\r\n"
	cmd := c.Append("INBOX", int64(len(msg)), nil)
	if _, err := cmd.Write([]byte(msg)); err != nil {
		t.Fatalf("APPEND write: %v", err)
	}
	if err := cmd.Close(); err != nil {
		t.Fatalf("APPEND close: %v", err)
	}
	data, err := cmd.Wait()
	if err != nil {
		t.Fatalf("APPEND: %v", err)
	}
	if data.UID != 4 {
		t.Errorf("APPENDUID %d, want 4", data.UID)
	}
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatalf("SELECT: %v", err)
	}
	if sel.NumMessages != 4 {
		t.Errorf("INBOX has %d messages after APPEND, want 4", sel.NumMessages)
	}
}

func TestConcurrentSessions(t *testing.T) {
	const sessions = 25
	addr := startDefault(t)
	clients := make([]*imapclient.Client, sessions)
	for i := range clients {
		clients[i] = dial(t, addr)
	}

	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() {
			if err := sessionRoundTrip(c); err != nil {
				t.Errorf("session %d: %v", i, err)
			}
		})
	}
	wg.Wait()
}

// sessionRoundTrip logs in as alice, reads a message and stays logged in.
func sessionRoundTrip(c *imapclient.Client) error {
	if err := c.Login("alice", "secret").Wait(); err != nil {
		return fmt.Errorf("LOGIN: %w", err)
	}
	data, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		return fmt.Errorf("SELECT: %w", err)
	}
	if data.NumMessages != 3 {
		return fmt.Errorf("SELECT: %d messages, want 3", data.NumMessages)
	}
	body := &imap.FetchItemBodySection{Peek: true}
	msgs, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{
		BodySection: []*imap.FetchItemBodySection{body},
	}).Collect()
	if err != nil {
		return fmt.Errorf("FETCH: %w", err)
	}
	if len(msgs) != 1 || !bytes.Contains(msgs[0].FindBodySection(body), []byte("Subject: Seed message 1\r\n")) {
		return errors.New("FETCH: seed message 1 not returned")
	}
	return nil
}

func TestSecureAuthRequired(t *testing.T) {
	addr := Start(t, Options{Users: []User{{Username: "alice", Password: "secret"}}})
	c := dial(t, addr)
	if !c.Caps().Has(imap.CapLoginDisabled) {
		t.Errorf("LOGINDISABLED not advertised without InsecureAuth: %v", c.Caps())
	}
	err := c.Login("alice", "secret").Wait()
	if err == nil || !strings.Contains(err.Error(), "PRIVACYREQUIRED") {
		t.Fatalf("LOGIN without TLS: %v, want PRIVACYREQUIRED", err)
	}
}

func TestNewRejectsBadUsers(t *testing.T) {
	cases := map[string][]User{
		"empty username":   {{Username: "", Password: "x"}},
		"duplicate":        {{Username: "a", Password: "x"}, {Username: "a", Password: "y"}},
		"negative count":   {{Username: "a", Messages: -1}},
		"negative size":    {{Username: "a", MessageSize: -1}},
		"duplicate second": {{Username: "a"}, {Username: "b"}, {Username: "b"}},
	}
	for name, users := range cases {
		if _, err := New(Options{Users: users}); err == nil {
			t.Errorf("%s: New succeeded, want error", name)
		}
	}
}

func TestSeedMessageFormat(t *testing.T) {
	h := string(seedHeader("weird\r\nBcc: x@example.org", 4, 7))
	if strings.Count(h, "\r\n") != 9 || strings.Contains(h, "\r\nBcc:") {
		t.Errorf("username leaked raw into header:\n%s", h)
	}
	for _, want := range []string{"Subject: Seed message 7\r\n", "Message-ID: <seed.5.7@imapd.invalid>\r\n", "Date: Mon, 01 Jan 2024 09:06:00 +0000\r\n"} {
		if !strings.Contains(h, want) {
			t.Errorf("header lacks %q:\n%s", want, h)
		}
	}
	if got := recipient("carol@example.org"); got != "<carol@example.org>" {
		t.Errorf("recipient(address) = %q", got)
	}
	if got := seedBody(0); string(got) != seedIntro {
		t.Errorf("seedBody(0) = %q", got)
	}
	if got := len(seedBody(10_000_000)); got < 10_000_000 || got >= 10_000_000+len(seedPadLine) {
		t.Errorf("len(seedBody(10e6)) = %d", got)
	}
}

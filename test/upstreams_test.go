package test

// The tests named TestE2E... run the same body through the proxy against
// two upstreams, the bundled imapd (go-imap v2) and a private Dovecot:
// forEachUpstream gives each its accounts and its seed message.

import (
	"testing"

	"github.com/imapguard/imapguard/cmd/imapd/server"
	"github.com/imapguard/imapguard/test/proxytest"
)

// The main test account, present in both upstreams.
const (
	mainUser = "e2e"
	mainPass = "e2e-secret"
)

// extraUsers are accounts whose passwords need quoting, escaping or a
// literal to be sent at all. Both upstreams get them with exactly these
// passwords. (Dovecot's passwd-file cannot hold ':' or line breaks.)
var extraUsers = []dovecotUser{
	{Username: "spaceuser", Password: "pass word with spaces"},
	{Username: "quoteuser", Password: `pa"ss"word`},
	{Username: "bsuser", Password: `pa\ss\word`},
	{Username: "mixeduser", Password: ` a "b" \c\ d `},
	{Username: "utf8user", Password: "pässwörd-日本語-🔑"},
}

func extraPass(t *testing.T, user string) string {
	t.Helper()
	for _, u := range extraUsers {
		if u.Username == user {
			return u.Password
		}
	}
	t.Fatalf("no extra user %q", user)
	return ""
}

// seedMessage is appended to the main account's INBOX directly at the
// upstream, before any test body runs: it is message 1.
const seedMessage = "From: seed@example.org\r\n" +
	"To: e2e@example.org\r\n" +
	"Subject: e2e seed\r\n" +
	"Message-ID: <seed@e2e.invalid>\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: text/plain; charset=us-ascii\r\n" +
	"\r\n" +
	"Hello through imapguard.\r\n"

// forEachUpstream runs f as subtest "imapd" against the bundled upstream
// and as subtest "dovecot" against a private Dovecot (skipped when Dovecot
// is not installed, unless CI is set). Each subtest starts its own
// upstream with the main user (whose INBOX holds seedMessage) and the
// extra users.
func forEachUpstream(t *testing.T, f func(t *testing.T, up string, user, pass string)) {
	users := append([]dovecotUser{{Username: mainUser, Password: mainPass}}, extraUsers...)
	start := map[string]func(t *testing.T) string{
		"imapd": func(t *testing.T) string {
			var su []server.User
			for _, u := range users {
				su = append(su, server.User{Username: u.Username, Password: u.Password})
			}
			return proxytest.Imapd(t, su...)
		},
		"dovecot": func(t *testing.T) string { return startDovecot(t, users) },
	}
	for _, name := range []string{"imapd", "dovecot"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			up := start[name](t)
			seed(t, up)
			f(t, up, mainUser, mainPass)
		})
	}
}

// seed appends seedMessage to the main user's INBOX, talking to the
// upstream directly.
func seed(t *testing.T, up string) {
	t.Helper()
	c := dialGoIMAP(t, up, nil)
	if err := c.Login(mainUser, mainPass).Wait(); err != nil {
		t.Fatalf("seed: login at upstream: %v", err)
	}
	appendMessage(t, c, []byte(seedMessage))
	if err := c.Logout().Wait(); err != nil {
		t.Fatalf("seed: logout: %v", err)
	}
}

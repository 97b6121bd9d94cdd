package test

// The fail2ban filter shipped in cmd/imapguard/fail2ban (issue 11, item
// 8), run by fail2ban-regex over what a real imapguard logged.

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/imapguard/imapguard/test/proxytest"
)

// TestFail2banFilter runs imapguard (the binary, as a user runs it) with
// each log.format, fails logins from 127.0.0.2 and 127.0.0.3 (one with a
// user name that tries to forge another address), from a client behind a
// trusted PROXY balancer at 127.0.0.4, and logs in successfully from
// 127.0.0.5; fail2ban-regex with the shipped filter must find exactly the
// failures, with the clients' addresses, in that order. No password
// reaches the log.
func TestFail2banFilter(t *testing.T) {
	regex, err := proxytest.LookPath("fail2ban-regex")
	if err != nil {
		proxytest.Skip(t, "fail2ban filter test", "fail2ban-regex not found: apt-get install fail2ban")
	}
	filter, err := filepath.Abs("../cmd/imapguard/fail2ban/filter.d/imapguard.conf")
	if err != nil {
		t.Fatal(err)
	}
	const wrong = "Wr0ng-pass-f2b"
	upAddr := startIMAPD(t) // user demo, password demo
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			path := writeFile(t, "imapguard.toml", `[listen]
imap = "127.0.0.1:0"
proxy_protocol = true
trusted_proxies = ["127.0.0.4"]
[upstream]
address = "`+upAddr+`"
[log]
format = "`+format+`"
`)
			p := startImapguard(t, path)
			listening := regexp.MustCompile(`msg="imapguard listening" imap=(\S+)`)
			if format == "json" {
				listening = regexp.MustCompile(`"msg":"imapguard listening","imap":"([^"]+)"`)
			}
			addr := p.waitLog(listening)[1]

			fail := func(c *proxytest.Conn, tag, command string) {
				t.Helper()
				if _, st := c.Cmd(tag, command); !strings.HasPrefix(st, tag+" NO ") {
					t.Fatalf("%s: got %q; want NO", command, st)
				}
			}
			a := proxytest.DialFrom(t, "127.0.0.2", addr)
			a.Greeting()
			fail(a, "a1", "LOGIN demo "+wrong)
			fail(a, "a2", "LOGIN demo "+wrong)
			b := proxytest.DialFrom(t, "127.0.0.3", addr)
			b.Greeting()
			fail(b, "b1", "AUTHENTICATE PLAIN "+proxytest.SASLPlain("demo", wrong))
			fail(b, "b2", `LOGIN "x client=6.6.6.6:1 msg=\"authentication failed\" conn=1 client=6.6.6.7:1" `+wrong)
			c := proxytest.DialFrom(t, "127.0.0.4", addr)
			c.Send(string(header(t, 2, "[2001:db8::7]:40000", "[2001:db8::1]:143")))
			c.Greeting()
			fail(c, "c1", "LOGIN demo "+wrong)
			ok := proxytest.LoginFrom(t, "127.0.0.5", addr, "demo", "demo")
			ok.Logout("o1")
			if err := p.stop(); err != nil {
				t.Fatalf("imapguard exit: %v", err)
			}
			logs := p.output()
			if strings.Contains(logs, wrong) {
				t.Fatalf("the password is in the log:\n%s", logs)
			}
			logFile := writeFile(t, "imapguard.log", logs+"\n")

			out, err := exec.Command(regex, "--out", "ip", logFile, filter).CombinedOutput()
			if err != nil {
				t.Fatalf("fail2ban-regex: %v\n%s", err, out)
			}
			got := strings.Fields(string(out))
			want := []string{"127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.3", "2001:db8::7"}
			if !slices.Equal(got, want) {
				t.Errorf("fail2ban-regex found %q; want %q; the log:\n%s", got, want, logs)
			}
		})
	}
}

package main

// The tests of who, kick and settings run the commands against a real
// admin API (proxy/admin) in front of fake sessions, which record what
// the commands asked for; that the proxy then closes the right
// connections is the admin API's test and test/'s.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imapguard/imapguard/config"
	"github.com/imapguard/imapguard/proxy"
	"github.com/imapguard/imapguard/proxy/admin"
	"github.com/imapguard/imapguard/test/proxytest"
)

const cliToken = "cli-test-token-0123456789"

// sessions stands for the proxy behind the admin API: it answers every
// match with conns (or err) and records what it was asked.
type sessions struct {
	conns []proxy.ConnInfo
	err   error

	mu      sync.Mutex
	matches []proxy.Match
	reasons []string // of kicks
}

func (s *sessions) Select(m proxy.Match) ([]proxy.ConnInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.matches = append(s.matches, m)
	return s.conns, s.err
}

func (s *sessions) Kick(m proxy.Match, reason string) ([]proxy.ConnInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.matches = append(s.matches, m)
	s.reasons = append(s.reasons, reason)
	return s.conns, s.err
}

func (s *sessions) Listening() []string                 { return []string{"127.0.0.1:1143"} }
func (s *sessions) CheckUpstream(context.Context) error { return nil }

// asked returns the matches and kick reasons recorded so far.
func (s *sessions) asked() ([]proxy.Match, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]proxy.Match(nil), s.matches...), append([]string(nil), s.reasons...)
}

// startAPI serves the admin API, with token if not "", in front of s and
// the default settings, and returns its URL.
func startAPI(t *testing.T, token string, s *sessions) string {
	t.Helper()
	api := admin.New(admin.Options{Token: token, Sessions: s, Listeners: 1,
		Settings: func() []admin.Setting { return adminSettings(config.Default()) }})
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(func() {
		srv.Close()
		api.Shutdown(context.Background())
	})
	return srv.URL
}

// runCLI runs imapguard with args and returns its exit code and output.
func runCLI(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// newConns returns two connections, as fake sessions answer every match:
// alice's, authenticated for 1h2m3s, and one before login.
func newConns() []proxy.ConnInfo {
	since := time.Now().Add(-(time.Hour + 2*time.Minute + 3*time.Second))
	return []proxy.ConnInfo{
		{ID: 7, Client: "127.0.0.2:50001", Listener: "127.0.0.1:1143", User: "alice", Authenticated: true, Since: since,
			BytesToUpstream: 1229, BytesToClient: 3 << 20},
		{ID: 12, Client: "[2001:db8::1]:50002", Listener: "127.0.0.1:1143", Since: since, TLS: true},
	}
}

// The tables who and kick print, as regular expressions: of newConns
// (whose age may have gone on by a second) and of no connections.
var (
	connsTable = strings.ReplaceAll(regexp.QuoteMeta(""+
		"ID  USER   CLIENT               STATE          TLS  SINCE   UP       DOWN\n"+
		"7   alice  127.0.0.2:50001      authenticated  no   1h2m3s  1.2 KiB  3.0 MiB\n"+
		"12  -      [2001:db8::1]:50002  preauth        yes  1h2m3s  0 B      0 B\n"), "1h2m3s", "1h2m[34]s")
	emptyTable = regexp.QuoteMeta("ID  USER  CLIENT  STATE  TLS  SINCE  UP  DOWN\n")
)

// command is one run of a command against an admin API (with token, if
// not "") in front of sessions that answer with conns or err.
type command struct {
	name   string
	token  string // the API's
	env    string // $IMAPGUARD_ADMIN_TOKEN
	args   []string
	conns  []proxy.ConnInfo
	err    error
	match  *proxy.Match // if not nil, what the command must have asked for
	reason string       // what a kick must have said, after the API's sanitizing
	code   int
	stdout string // a regular expression for all of it
	stderr string // a regular expression for all of it
}

func (c command) run(t *testing.T) {
	t.Setenv(tokenEnv, c.env)
	s := &sessions{conns: c.conns, err: c.err}
	url := startAPI(t, c.token, s)
	code, stdout, stderr := runCLI(append(c.args, "-admin", url)...)
	if code != c.code {
		t.Errorf("got exit %d; want %d (stderr %q)", code, c.code, stderr)
	}
	if !regexp.MustCompile(`^` + c.stdout + `$`).MatchString(stdout) {
		t.Errorf("got stdout:\n%s\nwant:\n%s", stdout, c.stdout)
	}
	if !regexp.MustCompile(`^` + c.stderr + `$`).MatchString(stderr) {
		t.Errorf("got stderr %q; want %q", stderr, c.stderr)
	}
	matches, reasons := s.asked()
	if c.match != nil && (len(matches) != 1 || matches[0] != *c.match) {
		t.Errorf("got matches %+v; want %+v", matches, *c.match)
	}
	if c.args[0] == "kick" && c.match != nil && (len(reasons) != 1 || reasons[0] != c.reason) {
		t.Errorf("got kick reasons %q; want %q", reasons, c.reason)
	}
}

func TestWho(t *testing.T) {
	apiErr := errors.New(`bad address "nonsense"`)
	for _, c := range []command{
		{name: "all", args: []string{"who"}, conns: newConns(), match: &proxy.Match{},
			stdout: connsTable + "2 connections\n"},
		{name: "user", args: []string{"who", "-user", "ALICE"}, conns: newConns(), match: &proxy.Match{User: "ALICE"},
			stdout: connsTable + "2 connections\n"},
		{name: "prefix", args: []string{"who", "-address", "127.0.0.0/30"}, conns: newConns(), match: &proxy.Match{Address: "127.0.0.0/30"},
			stdout: connsTable + "2 connections\n"},
		{name: "user and address", args: []string{"who", "-address", "127.0.0.2", "-user", "alice"}, conns: newConns(),
			match: &proxy.Match{User: "alice", Address: "127.0.0.2"}, stdout: connsTable + "2 connections\n"},
		{name: "none", args: []string{"who", "-user", "carol"}, match: &proxy.Match{User: "carol"},
			stdout: emptyTable + "0 connections\n"},
		{name: "API error", args: []string{"who", "-address", "nonsense"}, err: apiErr, match: &proxy.Match{Address: "nonsense"},
			code: 1, stderr: regexp.QuoteMeta(`imapguard: bad address "nonsense"` + "\n")},
	} {
		t.Run(c.name, c.run)
	}
}

func TestKick(t *testing.T) {
	for _, c := range []command{
		{name: "nobody", args: []string{"kick", "carol"}, match: &proxy.Match{User: "carol"},
			stdout: "no matching connections\n"},
		{name: "user", args: []string{"kick", "alice"}, conns: newConns(), match: &proxy.Match{User: "alice"},
			stdout: "kicked 2 connections\n" + connsTable},
		{name: "reason after the user", args: []string{"kick", "alice", "-reason", "Maintenance\r\nuntil 18:00"}, conns: newConns(),
			match: &proxy.Match{User: "alice"}, reason: "Maintenance until 18:00", stdout: "kicked 2 connections\n" + connsTable},
		{name: "user flag", args: []string{"kick", "-user", "bob", "-reason", "Bye"}, conns: newConns()[:1],
			match: &proxy.Match{User: "bob"}, reason: "Bye", stdout: "kicked 1 connection\nID  USER (?s:.*)"},
		{name: "address", args: []string{"kick", "-address", "127.0.0.3"}, match: &proxy.Match{Address: "127.0.0.3"},
			stdout: "no matching connections\n"},
		{name: "API error", args: []string{"kick", "-address", "nonsense"}, err: errors.New("bad address"),
			code: 1, stderr: "imapguard: bad address\n"},
	} {
		t.Run(c.name, c.run)
	}
}

// TestJSON: -json prints the API's answer.
func TestJSON(t *testing.T) {
	for _, args := range [][]string{{"who", "-json"}, {"kick", "-json", "alice"}} {
		t.Run(args[0], func(t *testing.T) {
			t.Setenv(tokenEnv, "")
			url := startAPI(t, "", &sessions{conns: newConns()})
			code, out, errOut := runCLI(append(args, "-admin", url)...)
			var answer struct{ Count int } // SessionList and KickResult
			if code != 0 || json.Unmarshal([]byte(out), &answer) != nil || answer.Count != 2 {
				t.Fatalf("got exit %d, stdout %q, stderr %q; want the JSON of 2 connections", code, out, errOut)
			}
		})
	}
}

func TestSettings(t *testing.T) {
	t.Setenv(tokenEnv, "")
	url := startAPI(t, "", &sessions{})
	var want bytes.Buffer
	if err := config.Default().WriteSettings(&want); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCLI("settings", "-admin", url)
	if code != 0 || out != want.String() {
		t.Fatalf("settings: exit %d, stderr %q, stdout:\n%s\nwant (as -check):\n%s", code, errOut, out, want.String())
	}
	code, out, _ = runCLI("settings", "-admin", url, "-json")
	var list admin.SettingList
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list.Settings) != len(config.Default().Settings()) {
		t.Fatalf("settings -json: exit %d, %q", code, out)
	}
}

// TestAdminToken: the token comes from -token, else the environment, and
// the API's refusals become one line each.
func TestAdminToken(t *testing.T) {
	const (
		wrong   = "wrong-token-wrong-token"
		wants   = `imapguard: the admin API wants a token \(admin.token; -token or IMAPGUARD_ADMIN_TOKEN\)\n`
		refused = `imapguard: the admin API refused the token \(admin.token; -token or IMAPGUARD_ADMIN_TOKEN\)\n`
	)
	for _, c := range []command{
		{name: "who without", args: []string{"who"}, code: 1, stderr: wants},
		{name: "settings without", args: []string{"settings"}, code: 1, stderr: wants},
		{name: "kick without", args: []string{"kick", "alice"}, code: 1, stderr: wants},
		{name: "wrong flag", args: []string{"who", "-token", wrong}, code: 1, stderr: refused},
		{name: "flag", args: []string{"who", "-token", cliToken}, stdout: emptyTable + "0 connections\n"},
		{name: "environment", env: cliToken, args: []string{"who"}, stdout: emptyTable + "0 connections\n"},
		{name: "flag wins", env: cliToken, args: []string{"who", "-token", wrong}, code: 1, stderr: refused},
	} {
		c.token = cliToken
		t.Run(c.name, c.run)
	}
}

// TestAdminConfig: -config gives the address (a listener on all
// addresses is reached on loopback) and the token.
func TestAdminConfig(t *testing.T) {
	t.Setenv(tokenEnv, "")
	url := startAPI(t, cliToken, &sessions{})
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(url, "http://"))
	dir := t.TempDir()
	for _, tt := range []struct {
		name   string
		file   string // "": none written
		code   int
		stdout string // a regular expression for all of it
		stderr string // a regular expression for all of it
	}{
		{"listen and token", "[admin]\nlisten = \":" + port + "\"\ntoken = \"" + cliToken + "\"\n", 0, emptyTable + "0 connections\n", ""},
		{"no admin API", "[admin]\nlisten = \"\"\n", 2, "", `imapguard: .*/no admin API.toml has no admin API \(admin.listen is empty\); give -admin URL\n`},
		{"missing", "", 2, "", `imapguard: open .*/missing.toml: no such file or directory\n`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, tt.name+".toml")
			if tt.file != "" {
				if err := os.WriteFile(path, []byte(tt.file), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			code, out, errOut := runCLI("who", "-config", path)
			if code != tt.code || !regexp.MustCompile(`^`+tt.stdout+`$`).MatchString(out) || !regexp.MustCompile(`^`+tt.stderr+`$`).MatchString(errOut) {
				t.Fatalf("got exit %d, stdout %q, stderr %q; want exit %d, stdout %s, stderr %s", code, out, errOut, tt.code, tt.stdout, tt.stderr)
			}
		})
	}
}

func TestAdminEndpoint(t *testing.T) {
	t.Setenv(tokenEnv, "")
	for _, tc := range []struct {
		name      string
		flags     adminFlags
		env       string
		base, tok string
	}{
		{"demo", adminFlags{}, "", "http://127.0.0.1:8143", ""},
		{"admin URL", adminFlags{url: "http://192.0.2.1:9000/"}, "", "http://192.0.2.1:9000", ""},
		{"bare host:port", adminFlags{url: "[::1]:9000"}, "", "http://[::1]:9000", ""},
		{"env token", adminFlags{}, "from-env", "http://127.0.0.1:8143", "from-env"},
		{"flag token wins", adminFlags{token: "from-flag"}, "from-env", "http://127.0.0.1:8143", "from-flag"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(tokenEnv, tc.env)
			base, tok, err := tc.flags.endpoint()
			if err != nil || base != tc.base || tok != tc.tok {
				t.Fatalf("got %q, %q, %v; want %q, %q", base, tok, err, tc.base, tc.tok)
			}
		})
	}
	if _, _, err := (&adminFlags{url: "ftp://x"}).endpoint(); err == nil {
		t.Fatal("-admin ftp://x accepted")
	}
}

func TestListenURL(t *testing.T) {
	for _, tc := range []struct{ listen, want string }{
		{"127.0.0.1:8143", "http://127.0.0.1:8143"},
		{":8143", "http://127.0.0.1:8143"},
		{"0.0.0.0:8143", "http://127.0.0.1:8143"},
		{"[::]:8143", "http://[::1]:8143"},
		{"[::1]:8143", "http://[::1]:8143"},
		{"admin.example.com:8143", "http://admin.example.com:8143"},
	} {
		if got, err := listenURL(tc.listen); err != nil || got != tc.want {
			t.Errorf("listenURL(%q) = %q, %v; want %q", tc.listen, got, err, tc.want)
		}
	}
}

func TestAdminUnreachable(t *testing.T) {
	t.Setenv(tokenEnv, "")
	url := "http://" + proxytest.ClosedAddr(t)
	code, out, errOut := runCLI("who", "-admin", url)
	if code != 1 || out != "" || !strings.HasPrefix(errOut, "imapguard: admin API at "+url+": ") || !strings.Contains(errOut, "refused") {
		t.Fatalf("who against a closed port: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestAdminUsage(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		msg  string
	}{
		{"kick without match", []string{"kick"}, "kick needs a USER"},
		{"kick blank user", []string{"kick", " "}, "kick needs a USER"},
		{"kick two users", []string{"kick", "alice", "bob"}, "unexpected argument"},
		{"kick user twice", []string{"kick", "-user", "alice", "bob"}, "two users"},
		{"who argument", []string{"who", "alice"}, "unexpected argument"},
		{"settings argument", []string{"settings", "x"}, "unexpected argument"},
		{"unknown flag", []string{"who", "-bogus"}, "flag provided but not defined"},
		{"kick flag on who", []string{"who", "-reason", "x"}, "flag provided but not defined"},
		{"bad timeout", []string{"settings", "-timeout", "0s"}, "-timeout must be positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCLI(tc.args...)
			if code != 2 || out != "" || !strings.Contains(errOut, tc.msg) || !strings.Contains(errOut, "usage: imapguard "+tc.args[0]) {
				t.Fatalf("exit %d, stdout %q, stderr:\n%s\nwant exit 2, %q and the usage", code, out, errOut, tc.msg)
			}
		})
	}
}

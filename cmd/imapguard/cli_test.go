package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/imapguard/imapguard/cmd/imapd/server"
	"github.com/imapguard/imapguard/config"
	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/proxy/admin"
	"github.com/imapguard/imapguard/test/proxytest"
)

const cliToken = "cli-test-token-0123456789"

// adminEnv is a running proxy with its admin API on 127.0.0.1:0, in
// front of the bundled upstream (alice/secret, bob/hunter2).
type adminEnv struct {
	proxy   string // the proxy's address
	url     string // the admin API's base URL
	limiter *limits.Limiter
}

// startAdminEnv starts the upstream, the proxy and the admin API (with
// token, if not ""), all shut down by cleanup, which also checks that
// the limiter's counts went back to zero.
func startAdminEnv(t *testing.T, token string) *adminEnv {
	t.Helper()
	up := server.Start(t, server.Options{InsecureAuth: true, Users: []server.User{
		{Username: "alice", Password: "secret", Messages: 2},
		{Username: "bob", Password: "hunter2", Messages: 1},
	}})
	p := proxytest.Start(t, proxytest.Config{Upstream: up})
	aln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	adm := admin.New(admin.Options{Token: token, Sessions: p.Server, Listeners: 1, Settings: func() []admin.Setting { return adminSettings(config.Default()) }})
	served := make(chan error, 1)
	go func() { served <- adm.Serve(aln) }()
	// Runs before the proxy's cleanup, which checks the counts.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := adm.Shutdown(ctx); err != nil {
			t.Errorf("admin shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("admin serve: %v", err)
		}
	})
	return &adminEnv{proxy: p.Addr, url: "http://" + aln.Addr().String(), limiter: p.Limiter}
}

var waitZero = proxytest.WaitZero

// imapConn is a logged-in raw IMAP client.
type imapConn struct {
	nc net.Conn
	br *bufio.Reader
}

// loginFrom connects from the local address src and logs in.
func loginFrom(t *testing.T, src, addr, user, pass string) *imapConn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	c := &imapConn{nc: nc, br: bufio.NewReader(nc)}
	c.readLine(t) // greeting
	if _, err := nc.Write([]byte("l1 LOGIN " + user + " " + pass + "\r\n")); err != nil {
		t.Fatal(err)
	}
	for {
		l := c.readLine(t)
		if strings.HasPrefix(l, "l1 ") {
			if !strings.HasPrefix(l, "l1 OK") {
				t.Fatalf("login %s: %q", user, l)
			}
			return c
		}
	}
}

func (c *imapConn) readLine(t *testing.T) string {
	t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	l, err := c.br.ReadString('\n')
	if err != nil {
		t.Fatalf("reading: %v (got %q)", err, l)
	}
	return strings.TrimRight(l, "\r\n")
}

// wantBye checks that the next line is bye, then EOF.
func (c *imapConn) wantBye(t *testing.T, bye string) {
	t.Helper()
	if l := c.readLine(t); l != bye {
		t.Fatalf("got %q; want %q", l, bye)
	}
	if l, err := c.br.ReadString('\n'); err == nil {
		t.Fatalf("got %q after BYE; want EOF", l)
	} else if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		t.Fatal("connection still open after BYE")
	}
}

// runCLI runs imapguard with args and returns its exit code and output.
func runCLI(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// tableRows splits a who table into header, rows of fields and footer.
func tableRows(t *testing.T, out string) (header []string, rows [][]string, footer string) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) < 2 {
		t.Fatalf("output %q; want a header and a footer", out)
	}
	header = strings.Fields(lines[0])
	for _, l := range lines[1 : len(lines)-1] {
		rows = append(rows, strings.Fields(l))
	}
	return header, rows, lines[len(lines)-1]
}

var wantHeader = []string{"ID", "USER", "CLIENT", "STATE", "TLS", "SINCE", "UP", "DOWN"}

func TestWho(t *testing.T) {
	t.Setenv(tokenEnv, "")
	e := startAdminEnv(t, "")
	loginFrom(t, "127.0.0.2", e.proxy, "alice", "secret")

	code, out, errOut := runCLI("who", "-admin", e.url)
	if code != 0 {
		t.Fatalf("who: exit %d, stderr %q", code, errOut)
	}
	header, rows, footer := tableRows(t, out)
	if strings.Join(header, " ") != strings.Join(wantHeader, " ") {
		t.Fatalf("header %q; want %q", header, wantHeader)
	}
	if len(rows) != 1 || footer != "1 connection" {
		t.Fatalf("who:\n%s\nwant one row and \"1 connection\"", out)
	}
	// The bytes columns are "N B" or "N.N KiB": two fields each.
	row := rows[0]
	if len(row) != 10 {
		t.Fatalf("row %q; want 10 fields", row)
	}
	for i, re := range []string{`^\d+$`, `^alice$`, `^127\.0\.0\.2:\d+$`, `^authenticated$`, `^no$`, `^(\d+h)?(\d+m)?\d+s$`, `^\d+(\.\d)?$`, `^(B|KiB)$`, `^\d+(\.\d)?$`, `^(B|KiB)$`} {
		if !regexp.MustCompile(re).MatchString(row[i]) {
			t.Errorf("field %d of %q is %q; want %s", i, row, row[i], re)
		}
	}
	// Columns line up: each header starts where its values start.
	lines := strings.Split(out, "\n")
	for _, col := range []string{"CLIENT", "STATE", "SINCE"} {
		if i := strings.Index(lines[0], col); i < 0 || i >= len(lines[1]) || lines[1][i-1] != ' ' || lines[1][i] == ' ' {
			t.Errorf("column %s is not aligned:\n%s", col, out)
		}
	}

	for _, tc := range []struct {
		name string
		args []string
		rows int
	}{
		{"user", []string{"-user", "ALICE"}, 1},
		{"other user", []string{"-user", "bob"}, 0},
		{"address", []string{"-address", "127.0.0.2"}, 1},
		{"prefix", []string{"-address", "127.0.0.0/30"}, 1},
		{"other address", []string{"-address", "127.0.0.9"}, 0},
		{"both", []string{"-user", "alice", "-address", "127.0.0.2"}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCLI(append([]string{"who", "-admin", e.url}, tc.args...)...)
			if code != 0 {
				t.Fatalf("exit %d, stderr %q", code, errOut)
			}
			header, rows, footer := tableRows(t, out)
			if len(header) != len(wantHeader) || len(rows) != tc.rows || footer != plural(tc.rows, "connection") {
				t.Fatalf("got\n%s\nwant %d rows", out, tc.rows)
			}
		})
	}

	code, out, errOut = runCLI("who", "-admin", e.url, "-address", "nonsense")
	if code != 1 || out != "" || !strings.HasPrefix(errOut, "imapguard: ") || !strings.Contains(errOut, `"nonsense"`) {
		t.Fatalf("who -address nonsense: exit %d, stdout %q, stderr %q; want exit 1 and the API's error", code, out, errOut)
	}

	code, out, _ = runCLI("who", "-json", "-admin", e.url)
	var list admin.SessionList
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || list.Count != 1 || list.Sessions[0].User != "alice" {
		t.Fatalf("who -json: exit %d, %q", code, out)
	}
}

func TestKick(t *testing.T) {
	t.Setenv(tokenEnv, "")
	e := startAdminEnv(t, "")
	alice := loginFrom(t, "127.0.0.2", e.proxy, "alice", "secret")
	bob := loginFrom(t, "127.0.0.3", e.proxy, "bob", "hunter2")

	code, out, errOut := runCLI("kick", "-admin", e.url, "carol")
	if code != 0 || out != "no matching connections\n" {
		t.Fatalf("kick carol: exit %d, stdout %q, stderr %q", code, out, errOut)
	}

	code, out, errOut = runCLI("kick", "-admin", e.url, "alice")
	if code != 0 {
		t.Fatalf("kick alice: exit %d, stderr %q", code, errOut)
	}
	first, table, _ := strings.Cut(out, "\n")
	if first != "kicked 1 connection" {
		t.Fatalf("kick alice: %q; want \"kicked 1 connection\" first", out)
	}
	lines := strings.Split(strings.TrimSuffix(table, "\n"), "\n")
	if len(lines) != 2 || strings.Join(strings.Fields(lines[0]), " ") != strings.Join(wantHeader, " ") ||
		!strings.Contains(lines[1], " alice ") || !strings.Contains(lines[1], " 127.0.0.2:") {
		t.Fatalf("kick alice table:\n%s", table)
	}
	alice.wantBye(t, "* BYE [UNAVAILABLE] Session closed by the administrator")

	// Flags after the user, and -json.
	code, out, errOut = runCLI("kick", "-admin", e.url, "-address", "127.0.0.3", "-json", "-reason", "Maintenance\r\nuntil 18:00")
	var res admin.KickResult
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || res.Count != 1 || res.Kicked[0].User != "bob" {
		t.Fatalf("kick -address -json: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	bob.wantBye(t, "* BYE [UNAVAILABLE] Maintenance until 18:00")
	waitZero(t, e.limiter)

	c := loginFrom(t, "127.0.0.4", e.proxy, "bob", "hunter2")
	if code, out, errOut := runCLI("kick", "bob", "-admin", e.url, "-reason", "Bye"); code != 0 || !strings.HasPrefix(out, "kicked 1 connection\n") {
		t.Fatalf("kick bob -reason: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	c.wantBye(t, "* BYE [UNAVAILABLE] Bye")

	// A connection leaves the proxy's registry just after its socket
	// closes (proxy conn.finish), so the client's EOF may come first: ask
	// until the list is empty. Each question is a round trip, which paces
	// the loop.
	for deadline := time.Now().Add(10 * time.Second); ; {
		code, out, _ = runCLI("who", "-admin", e.url)
		_, rows, footer := tableRows(t, out)
		if code == 0 && len(rows) == 0 && footer == "0 connections" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("who after the kicks: exit %d\n%s", code, out)
		}
	}
}

func TestSettings(t *testing.T) {
	t.Setenv(tokenEnv, "")
	e := startAdminEnv(t, "")
	var want bytes.Buffer
	if err := config.Default().WriteSettings(&want); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCLI("settings", "-admin", e.url)
	if code != 0 || out != want.String() {
		t.Fatalf("settings: exit %d, stderr %q, stdout:\n%s\nwant (as -check):\n%s", code, errOut, out, want.String())
	}
	code, out, _ = runCLI("settings", "-admin", e.url, "-json")
	var list admin.SettingList
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list.Settings) != len(config.Default().Settings()) {
		t.Fatalf("settings -json: exit %d, %q", code, out)
	}
}

func TestAdminToken(t *testing.T) {
	t.Setenv(tokenEnv, "")
	e := startAdminEnv(t, cliToken)
	const wantMsg = "imapguard: the admin API wants a token (admin.token; -token or IMAPGUARD_ADMIN_TOKEN)\n"
	for _, cmd := range []string{"who", "settings"} {
		if code, out, errOut := runCLI(cmd, "-admin", e.url); code != 1 || out != "" || errOut != wantMsg {
			t.Fatalf("%s without token: exit %d, stdout %q, stderr %q; want exit 1 and %q", cmd, code, out, errOut, wantMsg)
		}
	}
	if code, _, errOut := runCLI("kick", "-admin", e.url, "alice"); code != 1 || errOut != wantMsg {
		t.Fatalf("kick without token: exit %d, stderr %q", code, errOut)
	}
	if code, _, errOut := runCLI("who", "-admin", e.url, "-token", "wrong-token-wrong-token"); code != 1 || !strings.Contains(errOut, "refused the token") {
		t.Fatalf("who with a wrong token: exit %d, stderr %q", code, errOut)
	}
	if code, out, errOut := runCLI("who", "-admin", e.url, "-token", cliToken); code != 0 || !strings.HasSuffix(out, "0 connections\n") {
		t.Fatalf("who -token: exit %d, stdout %q, stderr %q", code, out, errOut)
	}

	t.Setenv(tokenEnv, cliToken)
	if code, out, errOut := runCLI("who", "-admin", e.url); code != 0 || !strings.HasSuffix(out, "0 connections\n") {
		t.Fatalf("who with $%s: exit %d, stdout %q, stderr %q", tokenEnv, code, out, errOut)
	}
	// The flag wins over the environment.
	if code, _, errOut := runCLI("who", "-admin", e.url, "-token", "wrong-token-wrong-token"); code != 1 || !strings.Contains(errOut, "refused the token") {
		t.Fatalf("who -token wrong with $%s right: exit %d, stderr %q", tokenEnv, code, errOut)
	}
}

// TestAdminConfig: -config gives the address (all-addresses host reached
// on loopback) and the token.
func TestAdminConfig(t *testing.T) {
	t.Setenv(tokenEnv, "")
	e := startAdminEnv(t, cliToken)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(e.url, "http://"))
	path := filepath.Join(t.TempDir(), "imapguard.toml")
	cfg := "[admin]\nlisten = \":" + port + "\"\ntoken = \"" + cliToken + "\"\n"
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := runCLI("who", "-config", path); code != 0 || !strings.HasSuffix(out, "0 connections\n") {
		t.Fatalf("who -config: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if code, _, errOut := runCLI("who", "-config", filepath.Join(t.TempDir(), "missing.toml")); code != 1 || !strings.HasPrefix(errOut, "imapguard: ") {
		t.Fatalf("who -config missing: exit %d, stderr %q", code, errOut)
	}
	none := filepath.Join(t.TempDir(), "none.toml")
	if err := os.WriteFile(none, []byte("[admin]\nlisten = \"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := runCLI("who", "-config", none); code != 1 || !strings.Contains(errOut, "admin.listen is empty") {
		t.Fatalf("who -config without admin.listen: exit %d, stderr %q", code, errOut)
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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ln.Close()
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

func TestHumanBytes(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{
		{0, "0 B"}, {1023, "1023 B"}, {1024, "1.0 KiB"}, {1229, "1.2 KiB"},
		{1024*1024 - 1, "1.0 MiB"}, {3 << 30, "3.0 GiB"},
	} {
		if got := humanBytes(tc.n); got != tc.want {
			t.Errorf("humanBytes(%d) = %q; want %q", tc.n, got, tc.want)
		}
	}
	if got := formatAge(3723.4); got != "1h2m3s" {
		t.Errorf("formatAge(3723.4) = %q; want 1h2m3s", got)
	}
}

// hostile is a user name that tries to retitle the window, clear the
// screen and colour what follows: C0 controls (ESC, BEL, tab, CR, LF),
// DEL and a C1 control (U+009B, CSI to some terminals). Through the
// commands it must read as wantHostile.
const (
	hostile     = "\x1b]0;pwned\x07\x1b[2Jmallory\u009b31m\x7f\tx\r\n"
	wantHostile = "?]0;pwned??[2Jmallory?31m??x??"
)

// fakeAPI serves answers on 127.0.0.1:0 as an admin API would that
// passes on what IMAP clients chose, or a server that is not the admin
// API at all: path (with the query) → status and body.
func fakeAPI(t *testing.T, answers map[string]func() (int, []byte)) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		answer, ok := answers[r.URL.RequestURI()]
		if !ok {
			http.NotFound(w, r)
			return
		}
		status, body := answer()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// jsonAnswer is a 200 answer of v as encoding/json writes it: C0
// controls escaped, DEL and C1 controls raw.
func jsonAnswer(t *testing.T, status int, v any) func() (int, []byte) {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return func() (int, []byte) { return status, b }
}

// wantPrintable fails if out has a control character other than LF.
func wantPrintable(t *testing.T, what, out string) {
	t.Helper()
	for i, r := range out {
		if _, n := utf8.DecodeRuneInString(out[i:]); (unicode.IsControl(r) && r != '\n') || (r == utf8.RuneError && n == 1) {
			t.Fatalf("%s: %q at byte %d of %q; want no control characters", what, r, i, out)
		}
	}
}

// TestHostileAnswers: strings from the API reach the terminal with their
// control characters replaced, in tables, settings, errors and -json.
func TestHostileAnswers(t *testing.T) {
	t.Setenv(tokenEnv, "")
	sess := admin.Session{ID: 7, Client: "127.0.0.1:1\x1b[1A", User: hostile, State: "authenticated\t\x1b[8m", TLS: true}
	base := fakeAPI(t, map[string]func() (int, []byte){
		"/sessions":        jsonAnswer(t, 200, admin.SessionList{Count: 1, Sessions: []admin.Session{sess}}),
		"/sessions?user=x": jsonAnswer(t, 400, admin.ErrorBody{Error: "no user \x1b[31mx\u009b"}),
		"/sessions/kick":   jsonAnswer(t, 200, admin.KickResult{Count: 1, Kicked: []admin.Session{sess}}),
		"/settings": jsonAnswer(t, 200, admin.SettingList{Settings: []admin.Setting{
			{Name: "upstream.address", Value: "\x1b[31mred\u0085"}, {Name: "a\x1bb", Value: "v"}, {Name: "tls.email"},
		}}),
	})
	wantRow := "7   " + wantHostile + "  127.0.0.1:1?[1A  authenticated??[8m  yes"

	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"who", []string{"who"}, []string{wantRow}},
		{"kick", []string{"kick", "mallory"}, []string{"kicked 1 connection\n", wantRow}},
		{"settings", []string{"settings"}, []string{
			"upstream.address : ?[31mred?\na?b              : v\ntls.email        :\n"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCLI(append(tc.args, "-admin", base)...)
			if code != 0 {
				t.Fatalf("exit %d, stderr %q", code, errOut)
			}
			wantPrintable(t, tc.name, out)
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("got\n%s\nwant it to contain %q", out, w)
				}
			}
		})
	}

	code, out, errOut := runCLI("who", "-admin", base, "-user", "x")
	if want := "imapguard: no user ?[31mx?\n"; code != 1 || out != "" || errOut != want {
		t.Fatalf("who -user x: exit %d, stdout %q, stderr %q; want exit 1 and %q", code, out, errOut, want)
	}

	// -json prints the same JSON, with DEL and C1 escaped.
	code, out, errOut = runCLI("who", "-admin", base, "-json")
	if code != 0 {
		t.Fatalf("who -json: exit %d, stderr %q", code, errOut)
	}
	wantPrintable(t, "who -json", out)
	var list admin.SessionList
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.Sessions) != 1 || list.Sessions[0].User != hostile {
		t.Fatalf("who -json: %q (%v); want the same JSON", out, err)
	}
	if !strings.Contains(out, `mallory\u009b31m\u007f\tx\r\n"`) {
		t.Errorf("who -json: %s; want DEL and U+009B escaped", out)
	}
}

// TestTerminalJSON: -json escapes what JSON lets stand raw in strings
// and refuses what is not JSON.
func TestTerminalJSON(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"plain", `{"user":"alice"}` + "\n", `{"user":"alice"}` + "\n"},
		{"non-ASCII", `{"user":"jürgen"}`, `{"user":"jürgen"}`},
		{"white space", "{\t\"a\" :\r\n[1] }\n", "{\t\"a\" :\r\n[1] }\n"},
		{"DEL and C1", "{\"u\":\"a\x7fb\u0085c\u009b\"}", `{"u":"a\u007fb\u0085c\u009b"}`},
		{"after a backslash", "{\"u\":\"\\\\\u009b\"}", `{"u":"\\\u009b"}`},
		{"not UTF-8", "{\"u\":\"a\x9b[31m\xc2\"}", `{"u":"a\ufffd[31m\ufffd"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := terminalJSON([]byte(tc.in))
			if err != nil || string(got) != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
			var a, b any
			if json.Unmarshal([]byte(tc.in), &a) != nil || json.Unmarshal(got, &b) != nil || !reflect.DeepEqual(a, b) {
				t.Fatalf("%q decodes to %v; want %v, as the input", got, b, a)
			}
		})
	}
	for _, in := range []string{"\x1b[2J", "{\"u\":\"\x1b[2J\"}", "{}\x1b[2J", "<html>", ""} {
		if got, err := terminalJSON([]byte(in)); err == nil {
			t.Errorf("terminalJSON(%q) = %q; want an error", in, got)
		}
	}

	base := fakeAPI(t, map[string]func() (int, []byte){
		"/settings": func() (int, []byte) { return 200, []byte("\x1b]0;pwned\x07") },
	})
	code, out, errOut := runCLI("settings", "-admin", base, "-json")
	if code != 1 || out != "" || !strings.Contains(errOut, "not JSON") {
		t.Fatalf("settings -json with a non-JSON answer: exit %d, stdout %q, stderr %q; want exit 1 and not JSON", code, out, errOut)
	}
	wantPrintable(t, "stderr", errOut)
}

// TestAnswerLimit: an answer over the limit is an error, not a read
// without end.
func TestAnswerLimit(t *testing.T) {
	t.Setenv(tokenEnv, "")
	body := []byte(`{"count":0,"sessions":[` + strings.Repeat(" ", 2<<10) + `]}`)
	base := fakeAPI(t, map[string]func() (int, []byte){
		"/sessions": func() (int, []byte) { return 200, body },
	})
	c, err := (&adminFlags{url: base, timeout: 10 * time.Second}).client()
	if err != nil {
		t.Fatal(err)
	}
	if c.maxAnswer != maxAnswerBytes || maxAnswerBytes != 64<<20 {
		t.Fatalf("maxAnswer %d; want 64 MiB", c.maxAnswer)
	}
	for _, tc := range []struct {
		limit int64
		err   string
	}{
		{int64(len(body)), ""},
		{int64(len(body)) - 1, "admin API at " + base + ": the answer is larger than 2.0 KiB; gave up"},
		{1 << 10, "admin API at " + base + ": the answer is larger than 1.0 KiB; gave up"},
	} {
		c.maxAnswer = tc.limit
		var out bytes.Buffer
		err := c.who(&out, "", "", false)
		if tc.err == "" && err != nil {
			t.Errorf("limit %d for %d bytes: %v; want no error", tc.limit, len(body), err)
		}
		if tc.err != "" && (err == nil || err.Error() != tc.err) {
			t.Errorf("limit %d for %d bytes: %v; want %s", tc.limit, len(body), err, tc.err)
		}
	}
}

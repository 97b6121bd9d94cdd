package test

import (
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imapguard/imapguard/test/proxytest"
)

// runBinary runs imapguard with args and returns its exit code, stdout
// and stderr.
func runBinary(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(binary(t, "imapguard"), args...)
	cmd.Env = binaryEnv()
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("imapguard %q: %v", args, err)
	}
	return code, out.String(), errOut.String()
}

// TestCLIVersion: -version and the version subcommand print the version,
// the commit and the Go version, and exit 0.
func TestCLIVersion(t *testing.T) {
	t.Parallel()
	re := regexp.MustCompile(`^imapguard \S+ \(commit \S+, ` + regexp.QuoteMeta(runtime.Version()) + `\)\n$`)
	for _, args := range [][]string{{"-version"}, {"--version"}, {"version"}} {
		code, out, errOut := runBinary(t, args...)
		if code != 0 || !re.MatchString(out) || errOut != "" {
			t.Errorf("imapguard %s: got exit %d, stdout %q, stderr %q; want 0 and a line matching %s", args, code, out, errOut, re)
		}
	}
}

// TestCLIHelp: -h, --help and help exit 0 and list every subcommand and
// the main flags on stdout; a bad flag or argument exits 2.
func TestCLIHelp(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"-h"}, {"--help"}, {"-help"}, {"help"}} {
		code, out, _ := runBinary(t, args...)
		if code != 0 {
			t.Errorf("imapguard %s: got exit %d; want 0", args, code)
		}
		for _, want := range []string{"who ", "kick ", "settings ", "penalties ", "reload ", "backends ", "version ", "-config", "-check", "-version", "Exit codes"} {
			if !strings.Contains(out, want) {
				t.Errorf("imapguard %s: the help lacks %q:\n%s", args, want, out)
			}
		}
	}
	for _, args := range [][]string{{"-nonsense"}, {"stray"}, {"version", "x"}} {
		code, out, errOut := runBinary(t, args...)
		if code != 2 || out != "" || errOut == "" {
			t.Errorf("imapguard %s: got exit %d, stdout %q, stderr %q; want exit 2 and a message on stderr", args, code, out, errOut)
		}
	}
}

// TestCLINoConfig: without -config, imapguard says on one line that it
// serves the embedded demo configuration on loopback, and how to give a
// file.
func TestCLINoConfig(t *testing.T) {
	// The demo configuration listens on fixed loopback ports, which
	// another test or a make run may hold: only the line is checked, and
	// it comes before any listener.
	p := startImapguardArgs(t)
	p.waitLog(regexp.MustCompile(`level=INFO msg=".*embedded demo configuration.*loopback.*-config FILE`))
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.wait() // 0, or 1 when a demo port was taken: either way the line came first
}

// TestCLICheckFiles: -check loads the files start would load and reports
// each problem with the file and the key, exit 2; what passes starts.
func TestCLICheckFiles(t *testing.T) {
	t.Parallel()
	pki := newTestCA(t, "check")
	dirA, dirB := t.TempDir(), t.TempDir()
	certA, keyA := writeKeyPair(t, dirA, pki.leaf("127.0.0.1"))
	_, keyB := writeKeyPair(t, dirB, pki.leaf("127.0.0.1"))
	notPEM := writeFile(t, "not-a-ca.pem", "this is no certificate\n")
	tokenFile := writeFile(t, "admin-token", "0123456789abcdef0123\n")
	files := func(cert, key string) string {
		return "[listen]\nimap = \"\"\nimaps = \"127.0.0.1:0\"\n[tls]\nmode = \"files\"\ncert_file = \"" + cert + "\"\nkey_file = \"" + key + "\"\n"
	}
	routeMap := func(m string) string {
		return "[upstream]\nroute = \"map\"\nmap_file = \"" + writeFile(t, "users.map", m) + "\"\n" +
			"[[upstream.backend]]\nname = \"mail1\"\naddress = \"127.0.0.1:2143\"\n"
	}
	for _, tt := range []struct {
		name, file string
		want       string // a regular expression; "": passes
	}{
		{"good files", files(certA, keyA), ""},
		{"route map", routeMap("alice mail1\n* 127.0.0.1:2143\n"), ""},
		{"route map unknown backend", routeMap("alice mail2\n"), `upstream\.map_file: .*users\.map: user "alice": no backend "mail2"`},
		{"route map bad line", routeMap("alice\n"), `upstream\.map_file: .*users\.map: line 1: want "user backend", got 1 fields`},
		{"route map missing", "[upstream]\nroute = \"map\"\nmap_file = \"/nonexistent.map\"\n[[upstream.backend]]\naddress = \"127.0.0.1:2143\"\n",
			`upstream\.map_file: open /nonexistent\.map: no such file`},
		{"no cert", files("/nonexistent.pem", keyA), `tls\.cert_file: open /nonexistent\.pem: no such file or directory`},
		{"no key", files(certA, "/nonexistent-key.pem"), `tls\.key_file: open /nonexistent-key\.pem: no such file or directory`},
		{"mismatched key", files(certA, keyB), `tls\.cert_file and tls\.key_file: .*private key does not match public key`},
		{"missing ca", "[upstream]\ntls = \"implicit\"\nca_file = \"/nonexistent-ca.pem\"\n", `upstream\.ca_file: open /nonexistent-ca\.pem: no such file`},
		{"bad ca", "[upstream]\ntls = \"implicit\"\nca_file = \"" + notPEM + "\"\n", `upstream\.ca_file: .*not-a-ca\.pem: no PEM CERTIFICATE found`},
		{"client cert", "[upstream]\ntls = \"implicit\"\ncert_file = \"" + certA + "\"\nkey_file = \"" + keyB + "\"\n", `upstream\.cert_file and upstream\.key_file: `},
		// A path under a regular file cannot be created, even by root.
		{"storage", "[tls]\nmode = \"acme\"\ndomains = [\"mail.example.com\"]\nstorage = \"/etc/hostname/certmagic\"\n",
			`tls\.storage: /etc/hostname/certmagic cannot be created: /etc/hostname is not a directory`},
		{"storage to create", "[tls]\nmode = \"acme\"\ndomains = [\"mail.example.com\"]\nstorage = \"" + filepath.Join(t.TempDir(), "a", "b") + "\"\n", ""},
		{"listen host", "[listen]\nimap = \"nonexistent.invalid:1143\"\n", `listen\.imap: .*nonexistent\.invalid`},
		{"admin token file", "[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"" + tokenFile + "\"\n", ""},
		{"missing token file", "[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"/nonexistent-token\"\n", `admin\.token_file: open /nonexistent-token: no such file`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := writeFile(t, "imapguard.toml", tt.file)
			code, out, errOut := runBinary(t, "-config", path, "-check")
			if tt.want == "" {
				if code != 0 || !strings.Contains(out, "limits.max_connections") {
					t.Errorf("got exit %d, stderr %q; want 0 and the settings", code, errOut)
				}
				return
			}
			re := regexp.MustCompile(`(?m)^(imapguard: )?` + regexp.QuoteMeta(path) + `: ` + tt.want)
			if code != 2 || out != "" || !re.MatchString(errOut) {
				t.Errorf("got exit %d, stdout %q, stderr %q; want exit 2 and %s", code, out, errOut, re)
			}
			// A start fails alike, before it listens.
			p := startImapguard(t, path)
			if err := p.wait(); err == nil || !re.MatchString(p.output()) {
				t.Errorf("start: got %v, stderr %q; want exit 2 and %s", err, p.output(), re)
			} else if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
				t.Errorf("start: got %v; want exit status 2", err)
			}
		})
	}
	// What passes -check starts.
	p := startImapguard(t, writeFile(t, "imapguard.toml", files(certA, keyA)))
	p.waitLog(regexp.MustCompile(`msg="imapguard listening" imaps=(\S+)`))
	// A file that does not exist is a configuration error.
	if code, _, _ := runBinary(t, "-config", filepath.Join(t.TempDir(), "missing.toml"), "-check"); code != 2 {
		t.Errorf("a missing file: got exit %d; want 2", code)
	}
	if _, err := os.Stat("/etc/hostname/certmagic"); err == nil {
		t.Errorf("-check created /etc/hostname/certmagic")
	}
}

// TestCLIReloadMore runs imapguard with its admin token in a file and
// reloads, by SIGHUP, by POST /reload and by imapguard reload: [log]
// applies (debug lines appear after), each reload writes one line naming
// the changed keys, a rotated token file replaces the token, and a bad
// file changes nothing.
func TestCLIReloadMore(t *testing.T) {
	t.Parallel()
	const first, second = "first-admin-token-0123456789", "second-admin-token-0123456789"
	upAddr := startIMAPD(t)
	tokenFile := writeFile(t, "admin-token", first+"\n")
	cfg := func(level, extra string) string {
		return "[listen]\nimap = \"127.0.0.1:0\"\n[upstream]\naddress = \"" + upAddr + "\"\n[limits]\nauth_failure_delay = \"10ms\"\n" + extra +
			"[log]\nlevel = \"" + level + "\"\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"" + tokenFile + "\"\n"
	}
	path := writeFile(t, "imapguard.toml", cfg("info", ""))
	p := startImapguard(t, path)
	addr := p.waitLog(listeningRe)[1]
	base := p.waitLog(adminRe)[1]
	seen := &seenTexts{t: t, texts: map[string][]string{}}
	failThenLogin := func() {
		t.Helper()
		c := proxytest.Dial(t, addr)
		c.Greeting()
		c.Cmd("a", "LOGIN demo wrong")
		if _, st := c.Cmd("b", "LOGIN demo demo"); !strings.HasPrefix(st, "b OK") {
			t.Fatalf("login: %q", st)
		}
		c.Logout("o")
	}
	failThenLogin()
	if strings.Contains(p.output(), "delaying login") {
		t.Fatalf("a debug line at level info:\n%s", p.output())
	}

	// SIGHUP: level debug.
	writeTo(t, path, cfg("debug", ""))
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLog(regexp.MustCompile(`level=INFO msg="configuration reloaded" source=SIGHUP file=\S+ changed=log.level$`))
	failThenLogin()
	p.waitLog(regexp.MustCompile(`level=DEBUG msg="delaying login"`))

	// POST /reload after the token file was rotated: the request carries
	// the token in force; the answer names the changed keys.
	writeTo(t, tokenFile, second+"\n")
	writeTo(t, path, cfg("debug", "max_connections = 50\n"))
	code, body := httpPost(t, base+"/reload", first)
	if code != http.StatusOK || string(body) != `{"file":"`+path+`","changed":["limits.max_connections","admin.token_file"],"restart_needed":[]}`+"\n" {
		t.Errorf("POST /reload: got %d %s", code, body)
	}
	p.waitLog(regexp.MustCompile(`msg="configuration reloaded" source="admin API" file=\S+ changed="limits.max_connections, admin.token_file"$`))
	if code, _ := httpDo(t, seen, http.MethodGet, base+"/settings", first); code != http.StatusUnauthorized {
		t.Errorf("the old token after the rotation: got %d; want 401", code)
	}
	if code, _ := httpDo(t, seen, http.MethodGet, base+"/settings", second); code != http.StatusOK {
		t.Errorf("the new token after the rotation: got %d; want 200", code)
	}

	// imapguard reload: a restart key, then a bad file.
	writeTo(t, path, strings.Replace(cfg("debug", "max_connections = 50\n"), "127.0.0.1:0", "127.0.0.1:1", 1))
	code2, out, errOut := runBinary(t, "reload", "-config", path, "-admin", base)
	if code2 != 0 || out != "reloaded "+path+"\nchanged: none\nchanged, but take effect only after a restart: listen.imap\n" {
		t.Errorf("imapguard reload: got exit %d, stdout %q, stderr %q", code2, out, errOut)
	}
	p.waitLog(regexp.MustCompile(`level=WARN msg="reload: these changed keys take effect only after a restart" source="admin API" keys=listen.imap$`))
	writeTo(t, path, cfg("debug", "max_connections = 0\n"))
	// With -config the command reads the file first and stops there;
	// without, the running proxy finds the problem.
	code2, out, errOut = runBinary(t, "reload", "-config", path, "-admin", base)
	if code2 != 2 || out != "" || !strings.Contains(errOut, path+":7: limits.max_connections: 0 is out of range") {
		t.Errorf("imapguard reload -config of a bad file: got exit %d, stdout %q, stderr %q; want 2 and the problem", code2, out, errOut)
	}
	code2, out, errOut = runBinary(t, "reload", "-admin", base, "-token", second)
	if code2 != 1 || out != "" || !strings.Contains(errOut, "nothing changed\n  "+path+":7: limits.max_connections: 0 is out of range") {
		t.Errorf("imapguard reload of a bad file: got exit %d, stdout %q, stderr %q; want 1 and the problem", code2, out, errOut)
	}
	if code, body := httpPost(t, base+"/reload", second); code != http.StatusUnprocessableEntity || !strings.Contains(string(body), `"problems":["`+path+`:7: limits.max_connections`) {
		t.Errorf("POST /reload of a bad file: got %d %s; want 422 and the problem", code, body)
	}
	// Still serving, with the caps in force.
	c := proxytest.Login(t, addr, "demo", "demo")
	c.Logout("o")
	if err := p.stop(); err != nil {
		t.Errorf("imapguard after SIGTERM: %v", err)
	}
	seen.add("imapguard stderr", []byte(p.output()))
	seen.checkSecrets(first, second)
	if n := strings.Count(p.output(), `msg=setting `); n > 0 {
		t.Errorf("%d lines per setting in the log", n)
	}
}

func writeTo(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// httpPost sends POST {} with the JSON type and the token.
func httpPost(t *testing.T, url, token string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

package main

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imapguard/imapguard/config"
	"github.com/imapguard/imapguard/proxy/admin"
	"github.com/imapguard/imapguard/test/proxytest"
)

// TestReloadLogAndToken runs reload with files that change [log], the
// admin token (inline, then from admin.token_file, then the file's
// contents) and keys that need a restart: each reload writes one INFO
// line naming the applied keys and one WARN line naming the others, the
// level and format apply at once to derived loggers, and the admin API
// takes the new token and refuses the old.
func TestReloadLogAndToken(t *testing.T) {
	upstream := proxytest.Imapd(t)
	dir := t.TempDir()
	path, tokenFile := filepath.Join(dir, "imapguard.toml"), filepath.Join(dir, "admin-token")
	const first, second, third = "first-token-0123456789", "second-token-0123456789", "third-token-0123456789"
	write := func(file, doc string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	base := "[listen]\nimap = \"127.0.0.1:0\"\n[upstream]\naddress = \"" + upstream + "\"\n"
	write(path, base+"[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \""+first+"\"\n")
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	p := proxytest.Start(t, proxytest.Config{Upstream: upstream, Limits: limitOptions(cfg)})
	var logs proxytest.Buffer
	ls := newLogSwitch(cfg.Log, &logs)
	log := ls.Logger()
	derived := log.With("component", "x") // made before the reloads, as the proxy's are
	api := admin.New(admin.Options{Token: first, Sessions: p.Server})
	st := &reloadState{logs: ls, api: api, token: first}
	status := func(token string) int {
		req := httptest.NewRequest(http.MethodGet, "/settings", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		rec := httptest.NewRecorder()
		api.Handler().ServeHTTP(rec, req)
		return rec.Code
	}
	// step reloads and returns the lines it wrote.
	step := func(doc string) []string {
		t.Helper()
		write(path, doc)
		n := len(logs.String())
		var err error
		if cfg, _, err = reload(cfg, path, p.Limiter, p.Server, nil, nil, log, st, "test"); err != nil {
			t.Fatalf("reload: %v", err)
		}
		return strings.Split(strings.TrimSuffix(logs.String()[n:], "\n"), "\n")
	}

	derived.Debug("before")
	lines := step(base + "[limits]\nmax_connections = 7\n[log]\nlevel = \"debug\"\n[admin]\nlisten = \"127.0.0.1:1\"\ntoken = \"" + second + "\"\n")
	if len(lines) != 2 || !strings.Contains(lines[1], `level=INFO msg="configuration reloaded" source=test file=`+path+` changed="limits.max_connections, log.level, admin.token"`) ||
		!strings.Contains(lines[0], `level=WARN msg="reload: these changed keys take effect only after a restart" source=test keys=admin.listen`) {
		t.Errorf("got the lines\n%s\nwant one WARN line with admin.listen, then one INFO line with the changed keys", strings.Join(lines, "\n"))
	}
	if strings.Contains(logs.String(), first) || strings.Contains(logs.String(), second) {
		t.Errorf("a token is in the log:\n%s", logs.String())
	}
	derived.Debug("after")
	if s := logs.String(); strings.Contains(s, "msg=before") || !strings.Contains(s, "level=DEBUG msg=after component=x") {
		t.Errorf("log.level debug did not apply at once to a derived logger:\n%s", s)
	}
	if cfg.Admin.Listen != "127.0.0.1:0" || cfg.Limits.MaxConnections != 7 {
		t.Errorf("the configuration in force: admin.listen %q, max_connections %d; want the old listen, the new cap", cfg.Admin.Listen, cfg.Limits.MaxConnections)
	}
	if a, b := status(first), status(second); a != http.StatusUnauthorized || b != http.StatusOK {
		t.Errorf("after the token changed: old token %d, new token %d; want 401, 200", a, b)
	}

	// The token from a file, then a new token in the same file; the
	// format to JSON.
	write(tokenFile, third+"\n")
	lines = step(base + "[limits]\nmax_connections = 7\n[log]\nlevel = \"debug\"\nformat = \"json\"\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"" + tokenFile + "\"\n")
	if len(lines) != 1 || !strings.Contains(lines[0], `changed="log.format, admin.token, admin.token_file"`) {
		t.Errorf("got the lines\n%s\nwant one INFO line naming log.format, admin.token, admin.token_file", strings.Join(lines, "\n"))
	}
	derived.Info("json now")
	if !strings.Contains(logs.String(), `"msg":"json now","component":"x"}`) {
		t.Errorf("log.format json did not apply to a derived logger:\n%s", logs.String())
	}
	if a, b := status(second), status(third); a != http.StatusUnauthorized || b != http.StatusOK {
		t.Errorf("token_file: old token %d, the file's %d; want 401, 200", a, b)
	}
	write(tokenFile, first+"\n")
	lines = step(base + "[limits]\nmax_connections = 7\n[log]\nlevel = \"debug\"\nformat = \"json\"\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"" + tokenFile + "\"\n")
	if len(lines) != 1 || !strings.Contains(lines[0], `"msg":"configuration reloaded","source":"test","file":"`+path+`","changed":"admin.token_file"}`) {
		t.Errorf("got the lines\n%s\nwant one JSON line naming admin.token_file", strings.Join(lines, "\n"))
	}
	if a, b := status(third), status(first); a != http.StatusUnauthorized || b != http.StatusOK {
		t.Errorf("rotated token_file: old token %d, the file's new one %d; want 401, 200", a, b)
	}

	// An unreadable token file is a bad file: nothing changes.
	old := cfg
	os.Remove(tokenFile)
	write(path, base+"[limits]\nmax_connections = 9\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \""+tokenFile+"\"\n")
	got, _, err := reload(cfg, path, p.Limiter, p.Server, nil, nil, log, st, "test")
	if re, ok := err.(*admin.ReloadError); !ok || got != old || !strings.Contains(re.Error(), "admin.token_file: open ") {
		t.Errorf("a missing token file: got %v; want a ReloadError naming admin.token_file and the old configuration", err)
	}
	if p.Limiter.Options().MaxConnections != 7 || status(first) != http.StatusOK {
		t.Errorf("a failed reload changed something")
	}
	if s := logs.String(); strings.Count(s, `"msg":"setting"`)+strings.Count(s, "msg=setting") > 0 {
		t.Errorf("a reload wrote a line per setting:\n%s", s)
	}
}

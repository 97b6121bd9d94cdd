package main

import (
	"bufio"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/imapguard/imapguard/cmd/imapd/server"
)

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "imapd.toml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestParseArgsDefaults(t *testing.T) {
	cfg, err := parseArgs(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := []server.User{{Username: "demo", Password: "demo", Messages: 10}}
	if cfg.listen != defaultListen || len(cfg.users) != 1 || cfg.users[0] != want[0] {
		t.Fatalf("defaults = %+v", cfg)
	}
}

func TestParseArgsConfigAndFlags(t *testing.T) {
	path := writeConfig(t, `
listen = "127.0.0.1:9999"

[[user]]
username = "alice"
password = "secret"
messages = 2
message_size = 4096
`)
	cfg, err := parseArgs([]string{"-config", path, "-user", "bob:pa:ss", "-messages", "3"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := []server.User{
		{Username: "alice", Password: "secret", Messages: 2, MessageSize: 4096},
		{Username: "bob", Password: "pa:ss", Messages: 3},
	}
	if cfg.listen != "127.0.0.1:9999" || len(cfg.users) != 2 || cfg.users[0] != want[0] || cfg.users[1] != want[1] {
		t.Fatalf("config = %+v, want listen 127.0.0.1:9999 users %+v", cfg, want)
	}

	cfg, err = parseArgs([]string{"-config", path, "-listen", "127.0.0.1:0"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.listen != "127.0.0.1:0" {
		t.Errorf("-listen did not override config: %q", cfg.listen)
	}
}

func TestParseArgsErrors(t *testing.T) {
	unknown := writeConfig(t, "[[user]]\nusername = \"a\"\npasword = \"typo\"\n")
	cases := map[string][]string{
		"unknown config key": {"-config", unknown},
		"missing config":     {"-config", filepath.Join(t.TempDir(), "nope.toml")},
		"user without colon": {"-user", "alice"},
		"negative messages":  {"-messages", "-1"},
		"stray argument":     {"extra"},
	}
	for name, args := range cases {
		if _, err := parseArgs(args, io.Discard); err == nil {
			t.Errorf("%s: parseArgs(%q) succeeded, want error", name, args)
		}
	}
	_, err := parseArgs([]string{"-config", unknown}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "user.pasword") {
		t.Errorf("unknown key error = %v, want it to name user.pasword", err)
	}
}

func TestRun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-listen", "127.0.0.1:0", "-user", "u:p", "-messages", "2"}, pw, io.Discard)
		pw.Close()
	}()

	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("reading address line: %v", err)
	}
	addr, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "imapd listening on ")
	if !ok || strings.HasSuffix(addr, ":0") {
		t.Fatalf("stdout line = %q", line)
	}

	c, err := imapclient.DialInsecure(addr, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	if err := c.Login("u", "p").Wait(); err != nil {
		t.Fatalf("LOGIN: %v", err)
	}
	data, err := c.Select("INBOX", nil).Wait()
	if err != nil || data.NumMessages != 2 {
		t.Fatalf("SELECT = %+v, %v; want 2 messages", data, err)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run = %v, want nil after cancel", err)
	}
	if rest, _ := io.ReadAll(pr); len(rest) != 0 {
		t.Errorf("extra stdout output: %q", rest)
	}
}

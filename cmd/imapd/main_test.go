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
	want := []server.User{{Username: "demo", Password: "demo", Token: "demo-token", Messages: 10}}
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
	unknown := writeConfig(t, "[[user]]\nusername = \"a\"\npasword = \"typo\"\n[[user]]\nusernam = \"b\"\n")
	wrongType := writeConfig(t, "[[user]]\nusername = \"a\"\nmessages = \"ten\"\n")
	syntax := writeConfig(t, "listen =\n")
	missing := filepath.Join(t.TempDir(), "nope.toml")
	for _, tt := range []struct {
		name string
		args []string
		want string // a part of the error
	}{
		{"unknown config keys", []string{"-config", unknown}, "config " + unknown + ": unknown keys: user.pasword, user.usernam"},
		{"wrong type", []string{"-config", wrongType}, "config " + wrongType + ":3:12: "},
		{"syntax error", []string{"-config", syntax}, "config " + syntax + ":1:9: "},
		{"missing config", []string{"-config", missing}, "config " + missing + ": open "},
		{"user without colon", []string{"-user", "alice"}, "want name:password"},
		{"negative messages", []string{"-messages", "-1"}, "-messages must not be negative, got -1"},
		{"stray argument", []string{"extra"}, `unexpected arguments: ["extra"]`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseArgs(tt.args, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v; want an error containing %q", err, tt.want)
			}
		})
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

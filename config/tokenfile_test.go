package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadToken reads admin.token_file: the trailing newline trimmed, the
// token's rules applied, errors naming the key and never the token.
func TestReadToken(t *testing.T) {
	dir := t.TempDir()
	const token = "0123456789abcdef0123"
	for _, tt := range []struct {
		name, content string // content "-": no file
		want, err     string
	}{
		{"newline", token + "\n", token, ""},
		{"crlf", token + "\r\n", token, ""},
		{"bare", token, token, ""},
		{"missing", "-", "", "admin.token_file: open "},
		{"empty", "\n", "", "is empty"},
		{"short", "short-token\n", "", "it is 11 characters long"},
		{"two lines", token + "\n\n", "", "not printable ASCII"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, tt.name)
			if tt.content != "-" {
				if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			got, err := Admin{TokenFile: path}.ReadToken()
			switch {
			case tt.err == "" && (err != nil || got != tt.want):
				t.Errorf("got %q, %v; want %q", got, err, tt.want)
			case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
				t.Errorf("got %q, %v; want an error containing %q", got, err, tt.err)
			case err != nil && strings.Contains(err.Error(), "0123456789"):
				t.Errorf("the error quotes the token: %v", err)
			}
		})
	}
	if got, err := (Admin{Token: token}).ReadToken(); got != token || err != nil {
		t.Errorf("inline token: got %q, %v", got, err)
	}
}

// TestChangedKeys names the keys that differ, an array of tables once by
// its name, and a secret without its value.
func TestChangedKeys(t *testing.T) {
	parse := func(doc string) *Config {
		t.Helper()
		c, err := Parse("x.toml", []byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a := parse("[limits]\nmax_connections = 10\n[admin]\ntoken = \"0123456789abcdef0123\"\n")
	b := parse("[limits]\nmax_connections = 10\nidle_timeout = \"1h\"\n[[limits.override]]\nusers = [\"a\"]\nmax_connections_per_user = 3\n" +
		"[[limits.override]]\nusers = [\"b\"]\nmax_connections_per_user = 4\n[log]\nlevel = \"debug\"\n[admin]\ntoken = \"0123456789abcdef0124\"\n")
	got := strings.Join(ChangedKeys(a, b), ", ")
	if want := "limits.idle_timeout, limits.override, log.level, admin.token"; got != want {
		t.Errorf("got %q; want %q", got, want)
	}
	if got := ChangedKeys(b, b); len(got) != 0 {
		t.Errorf("the same configuration: got %q; want none", got)
	}
	if got := strings.Join(ChangedKeys(b, a), ", "); got != "limits.idle_timeout, limits.override, log.level, admin.token" {
		t.Errorf("back: got %q", got)
	}
}

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

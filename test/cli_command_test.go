package test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
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
		for _, want := range []string{"who ", "kick ", "settings ", "penalties ", "reload ", "version ", "-config", "-check", "-version", "Exit codes"} {
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
	for _, tt := range []struct {
		name, file string
		want       string // a regular expression; "": passes
	}{
		{"good files", files(certA, keyA), ""},
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

package main

import (
	"strings"
	"testing"
)

// TestUsage: help asked for is on stdout with exit 0, for imapguard and
// each command; a bad flag is exit 2 with the message on stderr.
func TestUsage(t *testing.T) {
	for _, tt := range []struct {
		args   []string
		code   int
		stdout string // a substring; "" wants none
		stderr string // a substring; "" wants none
	}{
		{[]string{"-h"}, 0, "  reload     make a running imapguard re-read", ""},
		{[]string{"--help"}, 0, "Exit codes: 0 done, 1 failure at run time, 2 bad arguments or configuration.", ""},
		{[]string{"help"}, 0, "  who        list the live connections", ""},
		{[]string{"-bogus"}, 2, "", "flag provided but not defined: -bogus\nimapguard -h lists the commands and flags\n"},
		{[]string{"-config"}, 2, "", "flag needs an argument: -config"},
		{[]string{"extra"}, 2, "", `imapguard: unexpected argument "extra"`},
		{[]string{"-version"}, 0, "imapguard ", ""},
		{[]string{"version"}, 0, " (commit ", ""},
		{[]string{"version", "x"}, 2, "", `unexpected argument "x"`},
		{[]string{"who", "-h"}, 0, "usage: imapguard who", ""},
		{[]string{"reload", "--help"}, 0, "usage: imapguard reload [flags]", ""},
		{[]string{"kick", "-reason", "-h", "alice", "-admin", "http://127.0.0.1:1", "-timeout", "0s"}, 2, "", "-timeout must be positive"},
		{[]string{"settings", "-bogus"}, 2, "", "usage: imapguard settings"},
		{[]string{"-config", "/nonexistent/imapguard.toml", "-check"}, 2, "", "open /nonexistent/imapguard.toml"},
	} {
		code, out, errOut := runCLI(tt.args...)
		if code != tt.code || (tt.stdout == "") != (out == "") || !strings.Contains(out, tt.stdout) ||
			(tt.stderr == "") != (errOut == "") || !strings.Contains(errOut, tt.stderr) {
			t.Errorf("imapguard %q: got exit %d, stdout %q, stderr %q; want exit %d, stdout with %q, stderr with %q",
				tt.args, code, out, errOut, tt.code, tt.stdout, tt.stderr)
		}
	}
}

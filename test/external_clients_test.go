package test

// Clients nobody here wrote, through the proxy with TLS: curl and
// openssl s_client.

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/imapguard/imapguard/test/proxytest"
)

// tool finds an external program, skipping the test without it (failing
// in CI); Debian's package of the same name installs it.
func tool(t *testing.T, name string) string {
	t.Helper()
	path, err := proxytest.LookPath(name)
	if err != nil {
		proxytest.Skip(t, name+" client tests", name+" not installed: apt-get install "+name)
	}
	return path
}

// runTool runs a command with a timeout and returns its exit code, stdout
// and stderr.
func runTool(t *testing.T, stdin string, name string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*proxytest.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.WaitDelay = time.Second
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %q: timed out; stdout %q, stderr %q", name, args, out.String(), errb.String())
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("%s: %v", name, err)
	}
	return code, out.String(), errb.String()
}

func TestTLSCurl(t *testing.T) {
	curl := tool(t, "curl")
	ca := newTestCA(t, "proxy CA")
	p := startTLSProxy(t, ca, proxytest.Config{})
	caFile := ca.caFile()
	_, port, _ := net.SplitHostPort(p.Addr)
	_, tlsPort, _ := net.SplitHostPort(p.TLSAddr)

	for _, tc := range []struct{ name, url string }{
		{"STARTTLS", "imap://127.0.0.1:" + port + "/"},
		{"imaps", "imaps://127.0.0.1:" + tlsPort + "/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := runTool(t, "", curl, "--silent", "--show-error", "--ssl-reqd",
				"--max-time", "15", "--cacert", caFile, "--user", "alice:secret", tc.url)
			if code != 0 {
				t.Fatalf("curl %s: exit %d; stdout %q, stderr %q", tc.url, code, out, errs)
			}
			if !strings.Contains(out, "* LIST ") || !strings.Contains(out, "INBOX") {
				t.Errorf("curl %s: output %q does not list INBOX", tc.url, out)
			}
			t.Logf("curl %s:\n%s", tc.url, out)
			proxytest.WaitZero(t, p.Limiter)
		})
	}
	t.Run("unknown CA", func(t *testing.T) {
		// Without --cacert curl trusts the system CAs only: the handshake
		// fails with 60 (peer certificate cannot be authenticated).
		code, out, errs := runTool(t, "", curl, "--silent", "--show-error", "--max-time", "15",
			"--user", "alice:secret", "imaps://127.0.0.1:"+tlsPort+"/")
		if code != 60 {
			t.Errorf("curl without the CA: exit %d; want 60 (stdout %q, stderr %q)", code, out, errs)
		}
		proxytest.WaitZero(t, p.Limiter)
	})
}

func TestTLSOpenSSL(t *testing.T) {
	openssl := tool(t, "openssl")
	ca := newTestCA(t, "proxy CA")
	p := startTLSProxy(t, ca, proxytest.Config{})
	caFile := ca.caFile()
	script := "a LOGIN alice secret\r\nb SELECT INBOX\r\nc LOGOUT\r\n"

	for _, tc := range []struct {
		name string
		args []string
	}{
		{"STARTTLS", []string{"-starttls", "imap", "-connect", p.Addr}},
		{"imaps", []string{"-connect", p.TLSAddr, "-alpn", "imap"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"s_client"}, tc.args...)
			args = append(args, "-CAfile", caFile, "-verify_return_error", "-verify_ip", "127.0.0.1", "-quiet")
			code, out, errs := runTool(t, script, openssl, args...)
			if code != 0 {
				t.Fatalf("openssl %q: exit %d; stdout %q, stderr %q", args, code, out, errs)
			}
			for _, want := range []string{"a OK [CAPABILITY ", "* 3 EXISTS", "b OK ", "* BYE", "c OK LOGOUT"} {
				if !strings.Contains(out, want) {
					t.Errorf("openssl %s: output lacks %q:\n%s", tc.name, want, out)
				}
			}
			t.Logf("openssl s_client %s:\n%s", tc.name, out)
			proxytest.WaitZero(t, p.Limiter)
		})
	}
}

package test

import (
	"bufio"
	"crypto/tls"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imapguard/imapguard/test/testcert"
)

// buildOnce builds the binaries once per test run.
var buildOnce = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "imapguard-bin")
	if err != nil {
		return "", err
	}
	out, err := exec.Command("go", "build", "-race", "-o", dir+"/", "../cmd/imapguard", "../cmd/imapd").CombinedOutput()
	if err != nil {
		return "", &buildError{out: string(out), err: err}
	}
	return dir, nil
})

type buildError struct {
	out string
	err error
}

func (e *buildError) Error() string { return e.err.Error() + ": " + e.out }

func binary(t *testing.T, name string) string {
	t.Helper()
	dir, err := buildOnce()
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	return filepath.Join(dir, name)
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCLICheck(t *testing.T) {
	bin := binary(t, "imapguard")
	t.Run("defaults", func(t *testing.T) {
		out, err := exec.Command(bin, "-check").Output()
		if err != nil {
			t.Fatalf("-check: %v", err)
		}
		for _, want := range []string{
			"limits.max_connections          : 2147483647",
			"limits.max_connections_per_ip   : 2147483647",
			"limits.max_connections_per_user : 16",
			"limits.max_command_size         : 10240",
			"limits.preauth_timeout          : 1m",
			"limits.idle_timeout             : 30m",
		} {
			if !strings.Contains(string(out), want+"\n") {
				t.Errorf("-check output lacks %q:\n%s", want, out)
			}
		}
	})
	t.Run("file", func(t *testing.T) {
		p := writeFile(t, "g.toml", "[limits]\nmax_connections_per_user = 4\nidle_timeout = \"45m\"\n")
		out, err := exec.Command(bin, "-config", p, "-check").Output()
		if err != nil {
			t.Fatalf("-check: %v", err)
		}
		if !strings.Contains(string(out), "limits.max_connections_per_user : 4\n") ||
			!strings.Contains(string(out), "limits.idle_timeout             : 45m\n") {
			t.Errorf("got %s; want the file's values", out)
		}
	})
	t.Run("bad", func(t *testing.T) {
		p := writeFile(t, "bad.toml", "[limits]\nmax_command_size = 100\nmax_conections = 3\n")
		cmd := exec.Command(bin, "-config", p, "-check")
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("exit 0 on a bad file; output %s", out)
		}
		for _, want := range []string{
			"bad.toml:2: limits.max_command_size: 100 is out of range (valid 1024 .. 1048576)",
			"bad.toml:3: unknown key limits.max_conections",
		} {
			if !strings.Contains(string(out), want) {
				t.Errorf("got %s; want it to contain %q", out, want)
			}
		}
	})
}

// startIMAPD runs the bundled upstream binary and returns its address.
func startIMAPD(t *testing.T) string {
	t.Helper()
	imapd := exec.Command(binary(t, "imapd"), "-listen", "127.0.0.1:0")
	stdout, err := imapd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := imapd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { imapd.Process.Kill(); imapd.Wait() })
	first, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("imapd: %v", err)
	}
	return strings.TrimSpace(strings.TrimPrefix(first, "imapd listening on "))
}

// proxyProcess is imapguard run as a user runs it.
type proxyProcess struct {
	t     *testing.T
	cmd   *exec.Cmd
	lines chan string
}

// startImapguard runs bin/imapguard with the configuration file path; its
// cleanup stops it with SIGTERM and checks it exits cleanly.
func startImapguard(t *testing.T, path string) *proxyProcess {
	t.Helper()
	cmd := exec.Command(binary(t, "imapguard"), "-config", path)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proxyProcess{t: t, cmd: cmd, lines: make(chan string, 100)}
	exited := make(chan error, 1)
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("imapguard exit: %v", err)
			}
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			t.Errorf("imapguard did not exit on SIGTERM")
		}
	})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
		exited <- cmd.Wait()
	}()
	return p
}

// waitLog waits for a log line matching re and returns its submatches.
func (p *proxyProcess) waitLog(re *regexp.Regexp) []string {
	p.t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				p.t.Fatalf("imapguard exited before logging %v", re)
			}
			if m := re.FindStringSubmatch(l); m != nil {
				return m
			}
		case <-timeout:
			p.t.Fatalf("no log line matching %v", re)
		}
	}
}

// TestCLIReload runs both binaries as a user would and lowers
// max_connections with SIGHUP, without a restart.
func TestCLIReload(t *testing.T) {
	upAddr := startIMAPD(t)
	cfg := func(maxConns int) string {
		return "[listen]\nimap = \"127.0.0.1:0\"\n[upstream]\naddress = \"" + upAddr + "\"\n[limits]\nmax_connections = " +
			strconv.Itoa(maxConns) + "\n"
	}
	path := writeFile(t, "imapguard.toml", cfg(100))
	proxy := startImapguard(t, path)
	addr := proxy.waitLog(regexp.MustCompile(`msg="imapguard listening" imap=(\S+)`))[1]

	a := login(t, addr, "demo", "demo")
	b := dialRaw(t, addr)
	if g := b.greeting(); !strings.HasPrefix(g, "* OK") {
		t.Fatalf("greeting %q", g)
	}
	b.nc.Close()

	if err := os.WriteFile(path, []byte(cfg(1)), 0o600); err != nil {
		t.Fatal(err)
	}
	proxy.cmd.Process.Signal(syscall.SIGHUP)
	proxy.waitLog(regexp.MustCompile(`configuration reloaded`))

	c := dialRaw(t, addr)
	if got, want := c.greeting(), "* BYE [UNAVAILABLE] Too many connections (max_connections=1)"; got != want {
		t.Fatalf("after reload: got %q; want %q", got, want)
	}
	c.expectClosed()
	// The session opened before the reload is still served.
	if _, st := a.cmd("n", "NOOP"); !strings.HasPrefix(st, "n OK") {
		t.Fatalf("NOOP after reload: %q", st)
	}
}

// writeKeyPair writes cert's chain and key as PEM files dir/cert.pem and
// dir/key.pem.
func writeKeyPair(t *testing.T, dir string, cert tls.Certificate) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile, err := testcert.WritePEM(dir, cert)
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// TestCLICertReload runs imapguard with tls.mode = "files" and replaces
// the certificate: after SIGHUP new handshakes get the new one, without
// a restart, and a session opened before goes on.
func TestCLICertReload(t *testing.T) {
	pki := newTLSPKI(t, "reload")
	first, second := pki.leaf("127.0.0.1"), pki.leaf("127.0.0.1")
	dir := t.TempDir()
	certFile, keyFile := writeKeyPair(t, dir, first)
	path := writeFile(t, "imapguard.toml", "[listen]\nimap = \"\"\nimaps = \"127.0.0.1:0\"\n[upstream]\naddress = \""+
		startIMAPD(t)+"\"\n[tls]\nmode = \"files\"\ncert_file = \""+certFile+"\"\nkey_file = \""+keyFile+"\"\n")
	proxy := startImapguard(t, path)
	addr := proxy.waitLog(regexp.MustCompile(`msg="imapguard listening" imaps=(\S+)`))[1]

	serial := func() string {
		t.Helper()
		c, st := tlsDialRaw(t, addr, pki.clientConfig())
		if g := c.greeting(); !strings.HasPrefix(g, "* OK") {
			t.Fatalf("greeting %q", g)
		}
		return st.PeerCertificates[0].SerialNumber.String()
	}
	if got, want := serial(), first.Leaf.SerialNumber.String(); got != want {
		t.Fatalf("serial before reload: got %s; want %s", got, want)
	}
	old, _ := tlsDialRaw(t, addr, pki.clientConfig())
	old.greeting()
	if _, st := old.cmd("l", "LOGIN demo demo"); !strings.HasPrefix(st, "l OK") {
		t.Fatalf("login: %q", st)
	}

	writeKeyPair(t, dir, second)
	proxy.cmd.Process.Signal(syscall.SIGHUP)
	proxy.waitLog(regexp.MustCompile(`configuration reloaded`))
	if got, want := serial(), second.Leaf.SerialNumber.String(); got != want {
		t.Fatalf("serial after SIGHUP: got %s; want %s", got, want)
	}
	if _, st := old.cmd("n", "NOOP"); !strings.HasPrefix(st, "n OK") {
		t.Fatalf("NOOP on the session opened before the reload: %q", st)
	}
}

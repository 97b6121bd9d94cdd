package test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/imapguard/imapguard/test/testcert"
)

// binDir is where buildOnce put the binaries, removed by TestMain.
var binDir string

// buildOnce builds the binaries once per test run.
var buildOnce = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "imapguard-bin")
	if err != nil {
		return "", err
	}
	binDir = dir
	out, err := exec.Command("go", "build", "-race", "-o", dir+"/", "../cmd/imapguard", "../cmd/imapd").CombinedOutput()
	if err != nil {
		return "", &buildError{out: string(out), err: err}
	}
	return dir, nil
})

// TestMain removes the binaries' folder after the run.
func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

type buildError struct {
	out string
	err error
}

func (e *buildError) Error() string { return e.err.Error() + ": " + e.out }

// binaryEnv is the environment to run the binaries in: the test's,
// without OpenTelemetry variables (OTEL_*, which would override the
// configuration files' [telemetry]), and, since the binaries are built
// with -race, with GORACE atexit_sleep_ms=0: the race runtime otherwise
// sleeps a second before exiting.
func binaryEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OTEL_") {
			env = append(env, kv)
		}
	}
	return append(env, "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
}

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

// startIMAPD runs the bundled upstream binary with args (such as -user
// name:password; with none it has the user demo, password demo) and
// returns its address.
func startIMAPD(t *testing.T, args ...string) string {
	t.Helper()
	imapd := exec.Command(binary(t, "imapd"), append([]string{"-listen", "127.0.0.1:0"}, args...)...)
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

// proxyProcess is imapguard run as a user runs it. It keeps every line
// imapguard wrote to stderr and everything it wrote to stdout.
type proxyProcess struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdout lockedBuffer
	exited chan struct{} // closed when imapguard has exited; then exitErr is set

	exitErr error
	waited  atomic.Bool // the test checked the exit itself (wait, stop)

	mu     sync.Mutex
	stderr []string      // every line read so far
	next   int           // the first line waitLog has not looked at
	eof    bool          // stderr ended
	wake   chan struct{} // closed and replaced when a line arrives or stderr ends
}

// lockedBuffer is a bytes.Buffer safe for concurrent Write and String.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startImapguard runs bin/imapguard with the configuration file path; its
// cleanup stops it with SIGTERM and checks it exits cleanly, unless the
// test already waited for the exit.
func startImapguard(t *testing.T, path string) *proxyProcess {
	t.Helper()
	cmd := exec.Command(binary(t, "imapguard"), "-config", path)
	cmd.Env = binaryEnv()
	p := &proxyProcess{t: t, cmd: cmd, exited: make(chan struct{}), wake: make(chan struct{})}
	cmd.Stdout = &p.stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.waited.Load() {
			return
		}
		if err := p.stop(); err != nil {
			t.Errorf("imapguard exit: %v", err)
		}
	})
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.stderr = append(p.stderr, sc.Text())
			close(p.wake)
			p.wake = make(chan struct{})
			p.mu.Unlock()
		}
		p.mu.Lock()
		p.eof = true
		close(p.wake)
		p.mu.Unlock()
		p.exitErr = cmd.Wait() // after stderr's EOF, as exec.Cmd.StderrPipe requires
		close(p.exited)
	}()
	return p
}

// waitLog waits for a log line matching re, after the lines an earlier
// waitLog matched, and returns its submatches.
func (p *proxyProcess) waitLog(re *regexp.Regexp) []string {
	p.t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		p.mu.Lock()
		for p.next < len(p.stderr) {
			l := p.stderr[p.next]
			p.next++
			if m := re.FindStringSubmatch(l); m != nil {
				p.mu.Unlock()
				return m
			}
		}
		eof, wake := p.eof, p.wake
		p.mu.Unlock()
		if eof {
			p.t.Fatalf("imapguard exited before logging %v", re)
		}
		select {
		case <-wake:
		case <-timeout:
			p.t.Fatalf("no log line matching %v", re)
		}
	}
}

// output returns every line imapguard wrote to stderr so far.
func (p *proxyProcess) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.stderr, "\n")
}

// wait waits for imapguard to exit and returns its exit error (nil for
// status 0); the cleanup then no longer checks the exit.
func (p *proxyProcess) wait() error {
	p.t.Helper()
	p.waited.Store(true)
	select {
	case <-p.exited:
		return p.exitErr
	case <-time.After(20 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
		return errors.New("imapguard did not exit within 20s")
	}
}

// stop sends SIGTERM and waits for the exit, as wait does.
func (p *proxyProcess) stop() error {
	p.t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM) // fails only if it already exited
	return p.wait()
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

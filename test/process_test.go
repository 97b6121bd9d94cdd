package test

// The binaries run as a user runs them: imapguard and imapd are built
// once per test run (with -race) and started as processes.

import (
	"bufio"
	"crypto/tls"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/imapguard/imapguard/test/proxytest"
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
	stdout proxytest.Buffer
	exited chan struct{} // closed when imapguard has exited; then exitErr is set

	exitErr error
	waited  atomic.Bool // the test checked the exit itself (wait, stop)

	mu     sync.Mutex
	stderr []string      // every line read so far
	next   int           // the first line waitLog has not looked at
	eof    bool          // stderr ended
	wake   chan struct{} // closed and replaced when a line arrives or stderr ends
}

// startImapguard runs bin/imapguard with the configuration file path; its
// cleanup stops it with SIGTERM and checks it exits cleanly, unless the
// test already waited for the exit.
func startImapguard(t *testing.T, path string) *proxyProcess {
	t.Helper()
	return startImapguardArgs(t, "-config", path)
}

// startImapguardArgs is startImapguard with any arguments.
func startImapguardArgs(t *testing.T, args ...string) *proxyProcess {
	t.Helper()
	cmd := exec.Command(binary(t, "imapguard"), args...)
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

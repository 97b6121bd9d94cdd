package test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imapguard/imapguard/test/proxytest"
)

func TestCLICheck(t *testing.T) {
	bin := binary(t, "imapguard")
	t.Run("defaults", func(t *testing.T) {
		out, err := exec.Command(bin, "-check").Output()
		if err != nil {
			t.Fatalf("-check: %v", err)
		}
		for _, want := range [][2]string{
			{"limits.max_connections", "2147483647"},
			{"limits.max_connections_per_ip", "2147483647"},
			{"limits.max_connections_per_user", "16"},
			{"limits.max_command_size", "10240"},
			{"limits.preauth_timeout", "1m"},
			{"limits.idle_timeout", "30m"},
		} {
			if !hasSetting(out, want[0], want[1]) {
				t.Errorf("-check output lacks %s : %s:\n%s", want[0], want[1], out)
			}
		}
	})
	t.Run("file", func(t *testing.T) {
		p := writeFile(t, "g.toml", "[limits]\nmax_connections_per_user = 4\nidle_timeout = \"45m\"\n")
		out, err := exec.Command(bin, "-config", p, "-check").Output()
		if err != nil {
			t.Fatalf("-check: %v", err)
		}
		if !hasSetting(out, "limits.max_connections_per_user", "4") || !hasSetting(out, "limits.idle_timeout", "45m") {
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

// hasSetting reports whether -check's output has the line of the setting
// name with value, however wide the names are padded.
func hasSetting(out []byte, name, value string) bool {
	return regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` +: ` + regexp.QuoteMeta(value) + `$`).Match(out)
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

	a := proxytest.Login(t, addr, "demo", "demo")
	b := proxytest.Dial(t, addr)
	b.Greeting()
	b.Close()

	if err := os.WriteFile(path, []byte(cfg(1)), 0o600); err != nil {
		t.Fatal(err)
	}
	proxy.cmd.Process.Signal(syscall.SIGHUP)
	proxy.waitLog(regexp.MustCompile(`configuration reloaded`))

	c := proxytest.Dial(t, addr)
	if got, want := c.Line(), "* BYE [UNAVAILABLE] Too many connections (max_connections=1)"; got != want {
		t.Fatalf("after reload: got %q; want %q", got, want)
	}
	c.ExpectClosed()
	// The session opened before the reload is still served.
	if _, st := a.Cmd("n", "NOOP"); !strings.HasPrefix(st, "n OK") {
		t.Fatalf("NOOP after reload: %q", st)
	}
}

// TestCLICertReload runs imapguard with tls.mode = "files" and replaces
// the certificate: after SIGHUP new handshakes get the new one, without
// a restart, and a session opened before goes on.
func TestCLICertReload(t *testing.T) {
	pki := newTestCA(t, "reload")
	first, second := pki.leaf("127.0.0.1"), pki.leaf("127.0.0.1")
	dir := t.TempDir()
	certFile, keyFile := writeKeyPair(t, dir, first)
	path := writeFile(t, "imapguard.toml", "[listen]\nimap = \"\"\nimaps = \"127.0.0.1:0\"\n[upstream]\naddress = \""+
		startIMAPD(t)+"\"\n[tls]\nmode = \"files\"\ncert_file = \""+certFile+"\"\nkey_file = \""+keyFile+"\"\n")
	proxy := startImapguard(t, path)
	addr := proxy.waitLog(regexp.MustCompile(`msg="imapguard listening" imaps=(\S+)`))[1]

	serial := func() string {
		t.Helper()
		c, st := proxytest.DialTLS(t, addr, pki.clientConfig())
		c.Greeting()
		return st.PeerCertificates[0].SerialNumber.String()
	}
	if got, want := serial(), first.Leaf.SerialNumber.String(); got != want {
		t.Fatalf("serial before reload: got %s; want %s", got, want)
	}
	old, _ := proxytest.DialTLS(t, addr, pki.clientConfig())
	old.Greeting()
	if _, st := old.Cmd("l", "LOGIN demo demo"); !strings.HasPrefix(st, "l OK") {
		t.Fatalf("login: %q", st)
	}

	writeKeyPair(t, dir, second)
	proxy.cmd.Process.Signal(syscall.SIGHUP)
	proxy.waitLog(regexp.MustCompile(`configuration reloaded`))
	if got, want := serial(), second.Leaf.SerialNumber.String(); got != want {
		t.Fatalf("serial after SIGHUP: got %s; want %s", got, want)
	}
	if _, st := old.Cmd("n", "NOOP"); !strings.HasPrefix(st, "n OK") {
		t.Fatalf("NOOP on the session opened before the reload: %q", st)
	}
}

// TestCLIAdminPublicListen checks that imapguard refuses an admin API on
// a non-loopback address without a token, and serves one with a token.
func TestCLIAdminPublicListen(t *testing.T) {
	t.Parallel()
	cfg := func(token string) string {
		s := "[listen]\nimap = \"127.0.0.1:0\"\n[upstream]\naddress = \"127.0.0.1:1\"\n[admin]\nlisten = \"0.0.0.0:0\"\n"
		if token != "" {
			s += "token = \"" + token + "\"\n"
		}
		return s
	}
	t.Run("without token", func(t *testing.T) {
		p := startImapguard(t, writeFile(t, "imapguard.toml", cfg("")))
		err := p.wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() == 0 {
			t.Fatalf("exit: got %v; want a non-zero exit status", err)
		}
		out := p.output()
		if !strings.Contains(out, "admin.listen") || !strings.Contains(out, "admin.token") {
			t.Errorf("stderr: got\n%s\nwant a message naming admin.listen and admin.token", out)
		}
	})
	t.Run("with token", func(t *testing.T) {
		p := startImapguard(t, writeFile(t, "imapguard.toml", cfg(adminToken)))
		m := p.waitLog(adminRe)
		if m[2] != "true" {
			t.Errorf("admin API listening token=%s; want true", m[2])
		}
		_, port, err := net.SplitHostPort(strings.TrimPrefix(m[1], "http://"))
		if err != nil {
			t.Fatal(err)
		}
		seen := &seenTexts{t: t, texts: map[string][]string{}}
		base := "http://127.0.0.1:" + port
		if code, _ := httpDo(t, seen, http.MethodGet, base+"/healthz", ""); code != http.StatusOK {
			t.Errorf("GET /healthz: got status %d; want 200", code)
		}
		if code, _ := httpDo(t, seen, http.MethodGet, base+"/sessions", ""); code != http.StatusUnauthorized {
			t.Errorf("GET /sessions without token: got status %d; want 401", code)
		}
		if err := p.stop(); err != nil {
			t.Errorf("imapguard after SIGTERM: %v; want exit status 0", err)
		}
		seen.add("imapguard stderr", []byte(p.output()))
		seen.checkSecrets(adminToken)
	})
}

// TestCLITracesStdout checks traces = "stdout": each span is a JSON line
// on imapguard's stdout, and no password is among them.
func TestCLITracesStdout(t *testing.T) {
	t.Parallel()
	upstream := startIMAPD(t, "-user", watchedUser+":"+watchedPass)
	p := startImapguard(t, writeFile(t, "imapguard.toml", "[listen]\nimap = \"127.0.0.1:0\"\n[upstream]\naddress = \""+
		upstream+"\"\n[telemetry]\ntraces = \"stdout\"\n"))
	addr := p.waitLog(listeningRe)[1]
	c := proxytest.Login(t, addr, watchedUser, watchedPass)
	c.Logout("o")
	if err := p.stop(); err != nil {
		t.Fatalf("imapguard after SIGTERM: %v; want exit status 0", err)
	}
	out := p.stdout.String()
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var span struct{ Name string }
		if err := json.Unmarshal([]byte(line), &span); err != nil {
			t.Fatalf("stdout line %q: %v", line, err)
		}
		names = append(names, span.Name)
	}
	for _, want := range []string{"imapguard.connection", "imap.authenticate", "upstream.login", "imap.session"} {
		found := false
		for _, n := range names {
			found = found || n == want
		}
		if !found {
			t.Errorf("spans on stdout: got %q; want %s among them", names, want)
		}
	}
	seen := &seenTexts{t: t, texts: map[string][]string{"imapguard stdout": {out}, "imapguard stderr": {p.output()}}}
	seen.checkSecrets(watchedPass)
}

// TestCLIShutdownWithStuckClient: SIGTERM while a client has stopped
// reading in the middle of a FETCH. The proxy cannot reach a response
// boundary to say BYE, closes that connection when its grace runs out,
// and exits 0: a graceful stop that had to cut a straggler is
// still the stop that was asked for (systemd must not count it as a
// failure). SIGINT (Ctrl-C in a terminal) is the same stop.
func TestCLIShutdownWithStuckClient(t *testing.T) {
	t.Parallel() // it waits out the BYE grace
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			t.Parallel()
			shutdownWithStuckClient(t, sig)
		})
	}
}

func shutdownWithStuckClient(t *testing.T, sig syscall.Signal) {
	upAddr := startIMAPD(t)
	path := writeFile(t, "imapguard.toml", "[listen]\nimap = \"127.0.0.1:0\"\n[upstream]\naddress = \""+upAddr+"\"\n")
	p := startImapguard(t, path)
	addr := p.waitLog(regexp.MustCompile(`msg="imapguard listening" imap=(\S+)`))[1]

	// A small receive buffer, so that a few MiB do not fit in the
	// sockets' buffers.
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.(*net.TCPConn).SetReadBuffer(4096)
	nc.SetDeadline(time.Now().Add(proxytest.Timeout))
	br := bufio.NewReader(nc)
	// until reads up to the tagged answer to tag, or a line holding stop.
	until := func(tag, stop string) string {
		t.Helper()
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("reading: %v", err)
			}
			if strings.HasPrefix(l, tag+" ") || (stop != "" && strings.Contains(l, stop)) {
				return l
			}
		}
	}
	msg := "Subject: big\r\n\r\n" + strings.Repeat("0123456789abcdef\r\n", 4<<16) // 4.5 MiB
	fmt.Fprintf(nc, "l LOGIN demo demo\r\na APPEND INBOX {%d+}\r\n%s\r\ns SELECT INBOX\r\n", len(msg), msg)
	wantPrefix(t, "SELECT", until("s", ""), "s OK")
	fmt.Fprintf(nc, "f FETCH * BODY.PEEK[]\r\n")
	// The response has begun; the client reads no more of it.
	until("f", "FETCH")
	p.cmd.Process.Signal(sig)
	if err := p.wait(); err != nil {
		t.Fatalf("imapguard exit after %v: %v; want status 0\n%s", sig, err, p.output())
	}
	// Closed when its BYE could not get out: the only session's turn in
	// the drain is at once, and the BYE grace (10s) runs out before
	// shutdown.drain_timeout (30s).
	if !strings.Contains(p.output(), `outcome="proxy shutdown"`) {
		t.Errorf("no summary line for the stuck connection:\n%s", p.output())
	}
}

package test

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imapguard/imapguard/proxy/admin"
	"github.com/imapguard/imapguard/test/proxytest"
)

// drainProcess runs imapguard with an admin API on loopback and the
// [shutdown] keys given, in front of the bundled cmd/imapd, with three
// sessions of demo (the first and last in IDLE) and one client that has
// not logged in. It returns the process, the admin API's URL, the
// sessions in the order they logged in, and the pre-auth client.
func drainProcess(t *testing.T, drainTimeout, spread string) (*proxyProcess, string, []*proxytest.Conn, *proxytest.Conn) {
	t.Helper()
	p, _, base, sessions, pre := drainProcessFile(t, drainTimeout, spread)
	return p, base, sessions, pre
}

// drainConfig is drainProcess's configuration file.
func drainConfig(upstream, drainTimeout, spread string) string {
	return "[listen]\nimap = \"127.0.0.1:0\"\n[upstream]\naddress = \"" + upstream +
		"\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[shutdown]\ndrain_timeout = \"" + drainTimeout +
		"\"\ndisconnect_spread = \"" + spread + "\"\n"
}

// drainProcessFile is drainProcess that also returns the configuration
// file's path.
func drainProcessFile(t *testing.T, drainTimeout, spread string) (*proxyProcess, string, string, []*proxytest.Conn, *proxytest.Conn) {
	t.Helper()
	path := writeFile(t, "imapguard.toml", drainConfig(startIMAPD(t), drainTimeout, spread))
	p := startImapguard(t, path)
	addr := p.waitLog(listeningRe)[1]
	base := p.waitLog(adminRe)[1]
	var sessions []*proxytest.Conn
	for i, src := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"} {
		c := proxytest.LoginFrom(t, src, addr, "demo", "demo")
		if i != 1 {
			c.Idle("i")
		} else {
			c.OK("n", "NOOP")
		}
		sessions = append(sessions, c)
	}
	pre := proxytest.DialFrom(t, "127.0.0.5", addr)
	pre.Greeting()
	pre.Cmd("n", "NOOP")
	return p, path, base, sessions, pre
}

// readyz returns the status and body of GET /readyz.
func readyz(t *testing.T, base string) (int, admin.Readiness) {
	t.Helper()
	c := http.Client{Timeout: proxytest.Timeout}
	resp, err := c.Get(base + "/readyz")
	if err != nil {
		t.Fatalf("GET /readyz: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var r admin.Readiness
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("GET /readyz: %s: %v", b, err)
	}
	return resp.StatusCode, r
}

// byeTimes reads each session's next line on its own goroutine and
// returns, on the channel, when each got "* BYE [UNAVAILABLE] Server
// shutting down" (in the order of sessions), or fails the test.
func byeTimes(t *testing.T, sessions []*proxytest.Conn) <-chan []time.Time {
	out := make(chan []time.Time, 1)
	type arrival struct {
		i    int
		at   time.Time
		line string
		err  error
	}
	arrivals := make(chan arrival, len(sessions))
	for i, s := range sessions {
		go func() {
			l, err := s.Client().Line()
			arrivals <- arrival{i, time.Now(), l, err}
		}()
	}
	go func() {
		times := make([]time.Time, len(sessions))
		for range sessions {
			a := <-arrivals
			if a.err != nil || a.line != byeShutdown {
				t.Errorf("session %d: got %q, %v; want %q", a.i, a.line, a.err, byeShutdown)
			}
			times[a.i] = a.at
		}
		out <- times
	}()
	return out
}

// TestCLIDrain (issue 12): SIGTERM drains and exits 0; imapguard drain
// (POST /drain) drains and leaves the process up, not ready, until
// SIGTERM; a second SIGTERM during a drain closes everything at once.
func TestCLIDrain(t *testing.T) {
	t.Parallel()
	t.Run("SIGTERM", func(t *testing.T) {
		t.Parallel()
		// Three sessions over 3s: BYEs at 0s, 1s and 2s. The spread comes
		// from a SIGHUP: the file started with "0s".
		p, path, base, sessions, pre := drainProcessFile(t, "20s", "0s")
		upstream := regexp.MustCompile(`address = "([^"]+)"`).FindStringSubmatch(readFile(t, path))[1]
		if err := os.WriteFile(path, []byte(drainConfig(upstream, "20s", "3s")), 0o600); err != nil {
			t.Fatal(err)
		}
		p.cmd.Process.Signal(syscall.SIGHUP)
		p.waitLog(regexp.MustCompile(`configuration reloaded`))
		byes := byeTimes(t, sessions)
		p.cmd.Process.Signal(syscall.SIGTERM)
		// Not ready while the sessions are still being told (the last
		// one's turn is 2s away); ready until the signal arrives.
		var status int
		var r admin.Readiness
		if !proxytest.Eventually(func() bool {
			status, r = readyz(t, base)
			return status == http.StatusServiceUnavailable
		}) || !r.Draining {
			t.Errorf("GET /readyz during the drain: got %d %+v; want 503, draining", status, r)
		}
		pre.ExpectBye(byeShutdown) // at once
		times := <-byes
		for i := 1; i < len(times); i++ {
			if times[i].Before(times[i-1]) {
				t.Errorf("session %d got its BYE before session %d: the order is by age", i, i-1)
			}
		}
		// 2s apart in theory; not all in one go, however slow the machine.
		if d := times[2].Sub(times[0]); d < 750*time.Millisecond {
			t.Errorf("first and last BYE %v apart; want them spread over disconnect_spread (2s between the slots)", d)
		}
		if err := p.wait(); err != nil {
			t.Fatalf("exit after SIGTERM: %v; want status 0\n%s", err, p.output())
		}
		out := p.output()
		for _, want := range []string{"draining:", "drained:", `outcome="proxy shutdown"`} {
			if !strings.Contains(out, want) {
				t.Errorf("log lacks %q:\n%s", want, out)
			}
		}
	})
	t.Run("imapguard drain", func(t *testing.T) {
		t.Parallel()
		p, base, sessions, pre := drainProcess(t, "20s", "1s")
		byes := byeTimes(t, sessions)
		out, err := exec.Command(binary(t, "imapguard"), "drain", "-admin", base, "-wait").CombinedOutput()
		if err != nil {
			t.Fatalf("imapguard drain -wait: %v\n%s", err, out)
		}
		for _, want := range []string{"drain started: 4 connections open", "drained: no connection left"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("imapguard drain said %q; want %q", out, want)
			}
		}
		pre.ExpectBye(byeShutdown)
		<-byes
		// The process stays up, not ready; a second drain is a no-op.
		if status, r := readyz(t, base); status != http.StatusServiceUnavailable || !r.Draining {
			t.Errorf("GET /readyz after the drain: got %d %+v; want 503, draining", status, r)
		}
		out, err = exec.Command(binary(t, "imapguard"), "drain", "-admin", base).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "already draining: 0 connections open") {
			t.Errorf("second imapguard drain: %v, %q; want already draining", err, out)
		}
		if err := p.stop(); err != nil {
			t.Fatalf("exit after SIGTERM: %v; want status 0\n%s", err, p.output())
		}
	})
	t.Run("second SIGTERM", func(t *testing.T) {
		t.Parallel()
		// The last sessions' turns are 20s and 40s away.
		p, _, sessions, _ := drainProcess(t, "1m", "1m")
		p.cmd.Process.Signal(syscall.SIGTERM)
		sessions[0].ExpectBye(byeShutdown)
		p.waitLog(regexp.MustCompile(`msg="draining:`))
		p.cmd.Process.Signal(syscall.SIGTERM)
		for _, s := range sessions[1:] {
			s.ExpectEnd() // the BYE, or not, and the close: now, not in 20s
		}
		if err := p.wait(); err != nil {
			t.Fatalf("exit after a second SIGTERM: %v; want status 0\n%s", err, p.output())
		}
		if !strings.Contains(p.output(), "second signal during the drain") {
			t.Errorf("log lacks the hard stop:\n%s", p.output())
		}
	})
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

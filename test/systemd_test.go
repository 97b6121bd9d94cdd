package test

// Packaging (issue 12 item 1): the systemd unit passes systemd-analyze,
// the binary speaks sd_notify to a fake $NOTIFY_SOCKET, the example
// configuration parses, and make install puts each file in its place.

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imapguard/imapguard/config"
	"github.com/imapguard/imapguard/test/proxytest"
)

const (
	unitFile    = "../cmd/imapguard/systemd/imapguard.service"
	exampleFile = "../cmd/imapguard/systemd/imapguard.toml"
)

// TestSystemdUnitVerify checks the shipped unit with systemd-analyze
// verify (which also wants ExecStart's binary to exist: a copy of the
// unit runs the binary the tests built) and its hardening with
// systemd-analyze security: an exposure of at most 2.0 of 10, "OK".
func TestSystemdUnitVerify(t *testing.T) {
	analyze, err := proxytest.LookPath("systemd-analyze")
	if err != nil {
		proxytest.Skip(t, "systemd unit test", "systemd-analyze not found: apt-get install systemd")
	}
	unit, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Type=notify", "User=imapguard", "StateDirectory=imapguard", "AmbientCapabilities=CAP_NET_BIND_SERVICE",
		"CapabilityBoundingSet=CAP_NET_BIND_SERVICE", "ExecReload=/bin/kill -HUP $MAINPID", "ProtectSystem=strict",
		"ProtectHome=yes", "PrivateTmp=yes", "NoNewPrivileges=yes", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
		"SystemCallFilter=@system-service", "Restart=on-failure",
		"ExecStart=/usr/local/bin/imapguard -config /etc/imapguard/imapguard.toml",
	} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(want) + `$`).Match(unit) {
			t.Errorf("the unit lacks the line %s", want)
		}
	}
	if m := regexp.MustCompile(`(?m)^LimitNOFILE=(\d+)$`).FindSubmatch(unit); m == nil || len(m[1]) < 6 {
		t.Errorf("LimitNOFILE: got %q; want at least 100000 (two descriptors per session)", m)
	}
	// The unit's name is that of the file: imapguard.service.
	copyPath := filepath.Join(t.TempDir(), "imapguard.service")
	bin := binary(t, "imapguard")
	if err := os.WriteFile(copyPath, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/imapguard", bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	// verify exits 0 on unknown keys and bad values, which it only
	// prints: any output is a failure.
	out, err := exec.Command(analyze, "verify", copyPath).CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	out, err = exec.Command(analyze, "security", "--offline=true", "--threshold=20", copyPath).CombinedOutput()
	if err != nil {
		t.Errorf("systemd-analyze security (exposure above 2.0): %v\n%s", err, out)
	}
}

// TestSystemdExampleConfig parses the example configuration as the
// service would load it.
func TestSystemdExampleConfig(t *testing.T) {
	c, err := config.Load(exampleFile)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.TLS.Storage, "/var/lib/imapguard"; got != want {
		t.Errorf("tls.storage: got %q; want %q (the unit's StateDirectory)", got, want)
	}
}

// notifySocket listens on a unixgram socket as systemd does for a
// Type=notify service and points NOTIFY_SOCKET at it, which the
// binaries' environment inherits (binaryEnv).
func notifySocket(t *testing.T) *net.UnixConn {
	t.Helper()
	name := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", name)
	return c
}

// nextNotify reads the next notification and returns its assignments.
func nextNotify(t *testing.T, c *net.UnixConn) map[string]string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no notification: %v", err)
	}
	m := map[string]string{}
	for _, l := range strings.Split(strings.TrimSuffix(string(buf[:n]), "\n"), "\n") {
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			t.Fatalf("notification %q: line %q is not KEY=VALUE", buf[:n], l)
		}
		m[k] = v
	}
	return m
}

// TestSystemdNotify runs imapguard as systemd runs a Type=notify service:
// READY=1 once it serves (the listener accepts a client when READY=1 is
// read), RELOADING=1 with MONOTONIC_USEC and then READY=1 again around
// SIGHUP, STOPPING=1 on SIGTERM, then a clean exit.
func TestSystemdNotify(t *testing.T) {
	notify := notifySocket(t)
	upAddr := startIMAPD(t)
	path := writeFile(t, "imapguard.toml", "[listen]\nimap = \"127.0.0.1:0\"\n[upstream]\naddress = \""+upAddr+"\"\n[admin]\nlisten = \"127.0.0.1:0\"\n")
	proxy := startImapguard(t, path)

	// The status names the address bound: the listener accepts a client
	// as soon as READY=1 is read.
	ready := nextNotify(t, notify)
	m := regexp.MustCompile(`^Serving on (127\.0\.0\.1:[1-9][0-9]*) in front of ` + regexp.QuoteMeta(upAddr) + `$`).FindStringSubmatch(ready["STATUS"])
	if ready["READY"] != "1" || m == nil {
		t.Fatalf("first notification: got %v; want READY=1 and STATUS=Serving on 127.0.0.1:PORT in front of %s", ready, upAddr)
	}
	c := proxytest.Dial(t, m[1])
	wantPrefix(t, "greeting", c.Line(), "* OK ")
	c.Close()
	if addr := proxy.waitLog(regexp.MustCompile(`msg="imapguard listening" imap=(\S+)`))[1]; addr != m[1] {
		t.Errorf("STATUS names %s; the log %s", m[1], addr)
	}

	proxy.cmd.Process.Signal(syscall.SIGHUP)
	reloading := nextNotify(t, notify)
	if reloading["RELOADING"] != "1" || !regexp.MustCompile(`^[1-9][0-9]*$`).MatchString(reloading["MONOTONIC_USEC"]) {
		t.Fatalf("after SIGHUP: got %v; want RELOADING=1 and MONOTONIC_USEC", reloading)
	}
	if got := nextNotify(t, notify); got["READY"] != "1" {
		t.Fatalf("after the reload: got %v; want READY=1", got)
	}
	proxy.waitLog(regexp.MustCompile(`configuration reloaded`))

	proxy.cmd.Process.Signal(syscall.SIGTERM)
	if got := nextNotify(t, notify); got["STOPPING"] != "1" {
		t.Fatalf("after SIGTERM: got %v; want STOPPING=1", got)
	}
	if err := proxy.wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v; want 0", err)
	}
}

// makeEnv is the environment to run make in: the test's, without what
// an outer make (make test) passes down to its children, whose jobserver
// descriptors a test's child does not inherit.
func makeEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k != "MAKEFLAGS" && k != "MFLAGS" && k != "MAKELEVEL" {
			env = append(env, kv)
		}
	}
	return env
}

// TestMakeInstall runs make install into a DESTDIR twice, with another
// PREFIX: the binary, the unit (its paths rewritten), the example
// configuration and the reference land there and nowhere else, and the
// second run keeps the configuration the operator edited.
func TestMakeInstall(t *testing.T) {
	mk, err := proxytest.LookPath("make")
	if err != nil {
		proxytest.Skip(t, "make install test", "make not found: apt-get install make")
	}
	dest, bin := t.TempDir(), t.TempDir()
	install := func() {
		t.Helper()
		cmd := exec.Command(mk, "-s", "-C", "..", "install", "DESTDIR="+dest, "BIN="+bin, "PREFIX=/usr")
		cmd.Env = makeEnv()
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make install: %v\n%s", err, out)
		}
	}
	install()
	var files []string
	err = filepath.Walk(dest, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			rel, _ := filepath.Rel(dest, p)
			files = append(files, "/"+rel+" "+fi.Mode().String())
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(files)
	want := []string{
		"/etc/imapguard/imapguard.toml -rw-r--r--",
		"/usr/bin/imapguard -rwxr-xr-x",
		"/usr/lib/systemd/system/imapguard.service -rw-r--r--",
		"/usr/share/doc/imapguard/default.toml -rw-r--r--",
		"/usr/share/doc/imapguard/imapguard.toml -rw-r--r--",
	}
	if !slices.Equal(files, want) {
		t.Fatalf("installed:\n%s\nwant:\n%s", strings.Join(files, "\n"), strings.Join(want, "\n"))
	}
	unit, err := os.ReadFile(filepath.Join(dest, "usr/lib/systemd/system/imapguard.service"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), "\nExecStart=/usr/bin/imapguard -config /etc/imapguard/imapguard.toml\n") ||
		strings.Contains(string(unit), "/usr/local/bin") {
		t.Errorf("installed unit's ExecStart not rewritten for PREFIX=/usr:\n%s", unit)
	}
	// The binary runs (-check on the embedded configuration; the
	// installed example's ACME storage does not exist here), and the
	// installed example is the shipped one.
	if out, err := exec.Command(filepath.Join(dest, "usr/bin/imapguard"), "-check").CombinedOutput(); err != nil {
		t.Errorf("installed binary -check: %v\n%s", err, out)
	}
	for _, p := range []string{"etc/imapguard/imapguard.toml", "usr/share/doc/imapguard/imapguard.toml"} {
		got, _ := os.ReadFile(filepath.Join(dest, p))
		if shipped, _ := os.ReadFile(exampleFile); string(got) != string(shipped) {
			t.Errorf("/%s is not %s", p, exampleFile)
		}
	}

	conf := filepath.Join(dest, "etc/imapguard/imapguard.toml")
	edited := "[upstream]\naddress = \"192.0.2.1:143\"\n"
	if err := os.WriteFile(conf, []byte(edited), 0o640); err != nil {
		t.Fatal(err)
	}
	install()
	if got, _ := os.ReadFile(conf); string(got) != edited {
		t.Errorf("second make install overwrote the configuration: got %q; want %q", got, edited)
	}
}

// TestMakeDeb builds the .deb and checks its files, its control data and
// that its postinst creates the imapguard user (with stand-ins for
// getent, useradd and systemctl, so that the test changes nothing on the machine).
func TestMakeDeb(t *testing.T) {
	mk, err := proxytest.LookPath("make")
	if err != nil {
		proxytest.Skip(t, "make deb test", "make not found: apt-get install make")
	}
	dpkgDeb, err := proxytest.LookPath("dpkg-deb")
	if err != nil {
		proxytest.Skip(t, "make deb test", "dpkg-deb not found: apt-get install dpkg")
	}
	bin := t.TempDir()
	cmd := exec.Command(mk, "-s", "-C", "..", "deb", "BIN="+bin, "DEB_VERSION=1.2.3")
	cmd.Env = makeEnv()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make deb: %v\n%s", err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(bin, "imapguard_1.2.3_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("make deb made %v; want one imapguard_1.2.3_ARCH.deb", debs)
	}
	out, err := exec.Command(dpkgDeb, "--contents", debs[0]).Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"-rwxr-xr-x root/root .* ./usr/bin/imapguard",
		"-rw-r--r-- root/root .* ./usr/lib/systemd/system/imapguard.service",
		"-rw-r--r-- root/root .* ./etc/imapguard/imapguard.toml",
	} {
		if !regexp.MustCompile(`(?m)^` + want + `$`).Match(out) {
			t.Errorf("the .deb lacks %s:\n%s", want, out)
		}
	}
	ctl := t.TempDir()
	if out, err := exec.Command(dpkgDeb, "--control", debs[0], ctl).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb --control: %v\n%s", err, out)
	}
	if got, _ := os.ReadFile(filepath.Join(ctl, "conffiles")); string(got) != "/etc/imapguard/imapguard.toml\n" {
		t.Errorf("conffiles: got %q; want the configuration", got)
	}
	if got, _ := os.ReadFile(filepath.Join(ctl, "control")); !strings.Contains(string(got), "\nVersion: 1.2.3\n") {
		t.Errorf("control:\n%s\nwant Version: 1.2.3", got)
	}

	// postinst configure with no imapguard user: useradd is called once,
	// for a system user with its own group and no login.
	fake := t.TempDir()
	calls := filepath.Join(fake, "calls")
	for name, script := range map[string]string{
		"getent":  "#!/bin/sh\nexit 2\n",
		"useradd": "#!/bin/sh\necho \"useradd $*\" >> " + calls + "\n",
		// Where systemd runs, postinst calls systemctl: a no-op here.
		"systemctl": "#!/bin/sh\nexit 0\n",
	} {
		if err := os.WriteFile(filepath.Join(fake, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd = exec.Command("/bin/sh", filepath.Join(ctl, "postinst"), "configure")
	cmd.Env = append(os.Environ(), "PATH="+fake+":/usr/bin:/bin")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("postinst configure: %v\n%s", err, out)
	}
	got, _ := os.ReadFile(calls)
	if want := "useradd --system --user-group --home-dir /var/lib/imapguard --no-create-home --shell /usr/sbin/nologin --comment imapguard IMAP proxy imapguard\n"; string(got) != want {
		t.Errorf("postinst ran %q; want %q", got, want)
	}
}

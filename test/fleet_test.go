package test

import (
	"fmt"
	"net"
	"net/url"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/imapguard/imapguard/test/proxytest"
	"github.com/imapguard/imapguard/test/redistest"
)

// TestFleetWhoKickProcesses: two imapguard processes sharing one Redis
// ([cluster] store = "redis"): imapguard who against either lists both
// instances' sessions with the instance holding each, and imapguard kick
// asked of one closes a session held by the other, whose client gets
// the BYE (issue 13, "fleet who and kick across two proxies").
func TestFleetWhoKickProcesses(t *testing.T) {
	rs := redistest.Start(t)
	upAddr := startIMAPD(t, "-user", "alice:secret", "-user", "bob:hunter2")
	conf := func(id string) string {
		return clusterConfig(upAddr, rs.URL(), id, "local") + "[admin]\nlisten = \"127.0.0.1:0\"\n"
	}
	start := func(id string) (imap, api string) {
		p := startImapguard(t, writeFile(t, id+".toml", conf(id)))
		imap = p.waitLog(listeningRE)[1]
		api = p.waitLog(adminRe)[1]
		return imap, api
	}
	imapA, apiA := start("proxy-a")
	imapB, apiB := start("proxy-b")

	bob := proxytest.LoginFrom(t, "127.0.0.2", imapA, "bob", "hunter2")
	alice := proxytest.LoginFrom(t, "127.0.0.3", imapB, "alice", "secret")

	row := func(instance, user, client string) *regexp.Regexp {
		return regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(instance) + `\s+\S+\s+` + user + `\s+` +
			regexp.QuoteMeta(client) + `\S*\s+authenticated\s`)
	}
	for _, api := range []string{apiA, apiB} {
		code, out, errOut := runBinary(t, "who", "-admin", api)
		if code != 0 {
			t.Fatalf("who -admin %s: exit %d: %s", api, code, errOut)
		}
		if !strings.HasPrefix(out, "INSTANCE") || !row("proxy-a", "bob", "127.0.0.2").MatchString(out) ||
			!row("proxy-b", "alice", "127.0.0.3").MatchString(out) || !strings.Contains(out, "2 connections across the fleet") {
			t.Errorf("who -admin %s:\n%s\nwant bob on proxy-a and alice on proxy-b, 2 across the fleet", api, out)
		}
	}

	code, out, errOut := runBinary(t, "kick", "-admin", apiA, "carol")
	if code != 0 || out != "no matching connections across the fleet\n" {
		t.Errorf("kick carol: exit %d, %q, %q; want no matching connections", code, out, errOut)
	}
	code, out, errOut = runBinary(t, "kick", "-admin", apiA, "-reason", "Moving you", "alice")
	if code != 0 || !strings.HasPrefix(out, "kicked 1 connection across the fleet\n") || !row("proxy-b", "alice", "127.0.0.3").MatchString(out) {
		t.Fatalf("kick alice via proxy-a: exit %d:\n%s%s\nwant alice kicked on proxy-b", code, out, errOut)
	}
	alice.ExpectBye("* BYE [UNAVAILABLE] Moving you")
	proxytest.WaitFor(t, "alice gone from the fleet", func() bool {
		_, out, _ := runBinary(t, "who", "-admin", apiA)
		return strings.Contains(out, "1 connection across the fleet")
	})
	if _, st := bob.Cmd("n1", "NOOP"); !strings.HasPrefix(st, "n1 OK") {
		t.Fatalf("bob after the kick: %q", st)
	}

	// Redis gone: each lists and kicks its own, and says so.
	rs.Stop()
	_, out, _ = runBinary(t, "who", "-admin", apiB)
	if !strings.Contains(out, "0 connections across the fleet") || !strings.Contains(out, "note: cluster store unreachable: this instance's sessions only") {
		t.Errorf("who on proxy-b without Redis:\n%s", out)
	}
	code, out, _ = runBinary(t, "kick", "-admin", apiA, "bob")
	if code != 0 || !row("proxy-a", "bob", "127.0.0.2").MatchString(out) || !strings.Contains(out, "note: cluster store unreachable: kicked on this instance only") {
		t.Errorf("kick bob on proxy-a without Redis: exit %d:\n%s", code, out)
	}
	bob.ExpectBye("* BYE [UNAVAILABLE] Session closed by the administrator")
}

// TestFleetHAProxyExample checks the HAProxy front of the README's
// "Running a fleet" (config/testdata/fleet/haproxy.cfg) with haproxy -c.
func TestFleetHAProxyExample(t *testing.T) {
	bin, err := proxytest.LookPath("haproxy")
	if err != nil {
		proxytest.Skip(t, "HAProxy example", "haproxy not found: apt-get install haproxy")
	}
	out, err := exec.Command(bin, "-c", "-f", filepath.Join("..", "config", "testdata", "fleet", "haproxy.cfg")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Configuration file is valid") {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
}

// TestFleetBehindHAProxy runs the README's fleet front for real, on
// loopback: HAProxy sends PROXY v2 headers to two imapguard processes
// sharing a Redis and checks their /readyz; clients logged in through
// HAProxy from 127.0.0.2 and 127.0.0.3 are listed by imapguard who on
// either proxy with their own addresses.
func TestFleetBehindHAProxy(t *testing.T) {
	bin, err := proxytest.LookPath("haproxy")
	if err != nil {
		proxytest.Skip(t, "HAProxy example", "haproxy not found: apt-get install haproxy")
	}
	rs := redistest.Start(t)
	upAddr := startIMAPD(t, "-user", "alice:secret", "-user", "bob:hunter2")
	type proc struct{ imap, api string }
	var procs []proc
	for _, id := range []string{"proxy-a", "proxy-b"} {
		conf := clusterConfig(upAddr, rs.URL(), id, "local") + "[admin]\nlisten = \"127.0.0.1:0\"\n"
		conf = strings.Replace(conf, "[listen]\n", "[listen]\nproxy_protocol = true\ntrusted_proxies = [\"127.0.0.1\"]\n", 1)
		p := startImapguard(t, writeFile(t, id+".toml", conf))
		procs = append(procs, proc{p.waitLog(listeningRE)[1], p.waitLog(adminRe)[1]})
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	front := ln.Addr().String()
	ln.Close() // HAProxy binds it; a race with another process is unlikely on loopback
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "global\n    maxconn 100\ndefaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n"+
		"frontend imap\n    bind %s\n    default_backend imapguard_imap\nbackend imapguard_imap\n    balance roundrobin\n    option httpchk GET /readyz\n", front)
	for i, p := range procs {
		u, err := url.Parse(p.api)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&cfg, "    server proxy-%c %s send-proxy-v2 check port %s inter 200ms\n", 'a'+i, p.imap, u.Port())
	}
	hcfg := writeFile(t, "haproxy.cfg", cfg.String())
	if out, err := exec.Command(bin, "-c", "-f", hcfg).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	hp := exec.Command(bin, "-db", "-f", hcfg)
	var hlog proxytest.Buffer
	hp.Stdout, hp.Stderr = &hlog, &hlog
	if err := hp.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hp.Process.Kill(); hp.Wait() })
	proxytest.WaitFor(t, "HAProxy listening", func() bool {
		c, err := net.Dial("tcp", front)
		if err == nil {
			c.Close()
		}
		return err == nil
	})

	// Round robin spreads the clients (the probe above took a turn too):
	// log in until both proxies hold one, each from its own address.
	var srcs []string
	onA, onB := regexp.MustCompile(`(?m)^proxy-a\s`), regexp.MustCompile(`(?m)^proxy-b\s`)
	both := func(out string) bool { return onA.MatchString(out) && onB.MatchString(out) }
	for i := 2; len(srcs) < 6; i++ { // both() needs two sessions at least
		src := fmt.Sprintf("127.0.0.%d", i)
		proxytest.LoginFrom(t, src, front, "alice", "secret")
		srcs = append(srcs, src)
		if _, out, _ := runBinary(t, "who", "-admin", procs[0].api); both(out) {
			break
		}
	}
	for _, p := range procs {
		_, out, _ := runBinary(t, "who", "-admin", p.api)
		ok := both(out) && strings.Contains(out, fmt.Sprintf("%d connections across the fleet", len(srcs)))
		for _, src := range srcs {
			ok = ok && regexp.MustCompile(`(?m)^proxy-[ab]\s+\S+\s+alice\s+`+regexp.QuoteMeta(src)+`[\s:]`).MatchString(out)
		}
		if !ok {
			t.Errorf("who -admin %s:\n%s\nwant alice from each of %v, on both proxies\nHAProxy:\n%s", p.api, out, srcs, hlog.String())
		}
	}
	// The checks of /readyz (every 200 ms, down after 3 failures) kept
	// both proxies up all along.
	if l := hlog.String(); strings.Contains(l, " is DOWN") {
		t.Errorf("HAProxy took a proxy out:\n%s", l)
	}
}

package main

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/imapguard/imapguard/config"
	"github.com/imapguard/imapguard/limits"
	"github.com/imapguard/imapguard/test/proxytest"
)

// TestReloadCaps runs SIGHUP's reload with a file that changes
// max_connections_per_user_ip, the overrides and the exempt networks
// while sessions are open: lowering closes none and refuses the next
// login; an override raises it again at once; a bad file changes nothing.
func TestReloadCaps(t *testing.T) {
	upstream := proxytest.Imapd(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "imapguard.toml")
	write := func(limitsTOML string) {
		t.Helper()
		doc := fmt.Sprintf("[upstream]\naddress = %q\n\n[limits]\n%s", upstream, limitsTOML)
		if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("max_connections_per_user_ip = 3\n")
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	p := proxytest.Start(t, proxytest.Config{Upstream: upstream, Limits: limitOptions(cfg)})
	var logs proxytest.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))

	var open []*proxytest.Conn
	for range 2 {
		open = append(open, proxytest.LoginFrom(t, "127.0.0.2", p.Addr, "alice", "secret"))
	}
	login := func(src, tag string) string {
		t.Helper()
		c := proxytest.DialFrom(t, src, p.Addr)
		c.Greeting()
		_, st := c.Cmd(tag, "LOGIN alice secret")
		return st
	}

	write("max_connections_per_user_ip = 1\nexempt_networks = [\"127.0.0.3\"]\n")
	cfg, _, _ = reload(cfg, path, p.Limiter, p.Server, nil, nil, log, nil, "test")
	if got := p.Limiter.Options().MaxConnectionsPerUserIP; got != 1 {
		t.Fatalf("after reload: got max_connections_per_user_ip %d; want 1\n%s", got, logs.String())
	}
	for _, o := range open {
		o.OK("n", "NOOP")
	}
	want := "l NO [LIMIT] Too many connections for this user from your address (max_connections_per_user_ip=1)"
	if st := login("127.0.0.2", "l"); st != want {
		t.Errorf("login from 127.0.0.2 after lowering: got %q; want %q", st, want)
	}
	if !p.Limiter.Exempt(netip.MustParseAddr("127.0.0.3")) {
		t.Errorf("got 127.0.0.3 not exempt after reload; want exempt")
	}
	for range 2 {
		if st := login("127.0.0.3", "l"); !strings.HasPrefix(st, "l OK ") {
			t.Errorf("login from the exempt 127.0.0.3: got %q; want OK", st)
		}
	}

	write("max_connections_per_user_ip = 1\n\n[[limits.override]]\nusers = [\"ALICE\"]\nmax_connections_per_user_ip = 4\n")
	cfg, _, _ = reload(cfg, path, p.Limiter, p.Server, nil, nil, log, nil, "test")
	if st := login("127.0.0.2", "l"); !strings.HasPrefix(st, "l OK ") {
		t.Errorf("login after the override: got %q; want OK", st)
	}
	if !strings.Contains(logs.String(), `msg="configuration reloaded" source=test file=`+path+` changed="limits.exempt_networks, limits.override"`+"\n") {
		t.Errorf("the reload's line does not name the override:\n%s", logs.String())
	}

	// A bad file changes nothing.
	write("max_connections_per_user_ip = 1\n\n[[limits.override]]\nusers = [\"alice\"]\n")
	if got, _, err := reload(cfg, path, p.Limiter, p.Server, nil, nil, log, nil, "test"); got != cfg || err == nil {
		t.Errorf("a bad file replaced the configuration, or reload returned no error (%v)", err)
	}
	if !strings.Contains(logs.String(), "limits.override[1]: sets none of") {
		t.Errorf("the bad file's problem was not logged:\n%s", logs.String())
	}
	if o := p.Limiter.Options(); len(o.Overrides) != 1 || o.Overrides[0].MaxConnectionsPerUserIP != 4 {
		t.Errorf("after a bad file: got overrides %+v; want the previous one", o.Overrides)
	}
	proxytest.WaitCounts(t, p.Limiter, "sessions open", func(c limits.Counts) bool { return c.Sessions == 5 })
}

// TestClusterKeysNeedRestart: the store is made once, at start, so every
// [cluster] key waits for a restart, and the configuration in force keeps
// the old values.
func TestClusterKeysNeedRestart(t *testing.T) {
	for _, k := range []string{"cluster.store", "cluster.redis_url", "cluster.instance_id", "cluster.lease_ttl", "cluster.redis_failure"} {
		if !needsRestart(k, false) {
			t.Errorf("needsRestart(%q) = false; want true", k)
		}
	}
	old, cfg := config.Default(), config.Default()
	cfg.Cluster.LeaseTTL = config.Duration(5 * time.Second)
	keepRestartKeys(old, cfg)
	if !reflect.DeepEqual(cfg.Cluster, old.Cluster) {
		t.Errorf("after keepRestartKeys: %+v; want the old [cluster]", cfg.Cluster)
	}
}

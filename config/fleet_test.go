package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFleetExample parses the worked two-proxy, three-backend, one-Redis
// example of the README's "Running a fleet" (testdata/fleet), and checks
// that the two proxies' files differ only in instance_id and the
// addresses they listen on.
func TestFleetExample(t *testing.T) {
	var cfgs []*Config
	for _, name := range []string{"proxy-a.toml", "proxy-b.toml"} {
		data, err := os.ReadFile(filepath.Join("testdata", "fleet", name))
		if err != nil {
			t.Fatal(err)
		}
		c, err := Parse(name, data)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if c.Upstream.Route != "hash" || len(c.Upstream.Backend) != 3 || c.Cluster.Store != "redis" ||
			c.Cluster.RedisURL == "" || !c.Listen.ProxyProtocol || len(c.Listen.TrustedProxies) == 0 || c.Admin.Listen == "" {
			t.Errorf("%s: route %q, %d backends, store %q, redis_url %q, proxy_protocol %v, trusted_proxies %v, admin.listen %q; "+
				"want hash over 3 backends, redis, PROXY protocol from the balancer, an admin API for /readyz",
				name, c.Upstream.Route, len(c.Upstream.Backend), c.Cluster.Store, c.Cluster.RedisURL,
				c.Listen.ProxyProtocol, c.Listen.TrustedProxies, c.Admin.Listen)
		}
		cfgs = append(cfgs, c)
	}
	a, b := cfgs[0], cfgs[1]
	if a.Cluster.InstanceID == b.Cluster.InstanceID {
		t.Errorf("both proxies have instance_id %q; each needs its own", a.Cluster.InstanceID)
	}
	var sa, sb strings.Builder
	if err := a.WriteSettings(&sa); err != nil {
		t.Fatal(err)
	}
	if err := b.WriteSettings(&sb); err != nil {
		t.Fatal(err)
	}
	la, lb := strings.Split(sa.String(), "\n"), strings.Split(sb.String(), "\n")
	if len(la) != len(lb) {
		t.Fatalf("the settings have %d and %d lines", len(la), len(lb))
	}
	for i := range la {
		if la[i] == lb[i] {
			continue
		}
		key, _, _ := strings.Cut(strings.TrimSpace(la[i]), " ")
		switch key {
		case "listen.imap", "listen.imaps", "cluster.instance_id", "admin.listen":
		default:
			t.Errorf("the proxies differ in %q and %q; want only instance_id and the listen addresses", la[i], lb[i])
		}
	}
}

// TestFleetReadmeExcerpt parses the excerpt of proxy-a.toml that the
// README's "Running a fleet" shows, so that it stays a valid file.
func TestFleetReadmeExcerpt(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(data), "\n## Running a fleet\n")
	if !ok {
		t.Fatal(`README.md has no "## Running a fleet" section`)
	}
	_, block, ok := strings.Cut(section, "```toml\n")
	if ok {
		block, _, ok = strings.Cut(block, "```")
	}
	if !ok {
		t.Fatal(`"Running a fleet" has no toml block`)
	}
	c, err := Parse("README.md", []byte(block))
	if err != nil {
		t.Fatalf("the README's fleet excerpt: %v", err)
	}
	if c.Cluster.Store != "redis" || c.Upstream.Route != "hash" || !c.Listen.ProxyProtocol {
		t.Errorf("the README's fleet excerpt: store %q, route %q, proxy_protocol %v", c.Cluster.Store, c.Upstream.Route, c.Listen.ProxyProtocol)
	}
}

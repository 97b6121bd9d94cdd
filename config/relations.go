package config

import (
	"cmp"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// A relation is a problem with keys that depend on each other, such as
// tls.mode "files" without tls.cert_file. Each key's own value is valid.
type relation struct {
	// key is the key the problem is reported for, at its line. It is
	// always one that differs from its default, so a file that has the
	// problem has the key.
	key string
	msg string
	// deps are the keys whose values the relation reads, key among them.
	// A relation is not reported when one of them is itself invalid: its
	// value is then the default, not what the file says.
	deps []string
}

// dependsOnAny reports whether r reads one of the keys in failed.
func (r relation) dependsOnAny(failed map[string]bool) bool {
	for _, k := range r.deps {
		if failed[k] {
			return true
		}
	}
	return false
}

// relations returns what is wrong with c's keys together, in the order of
// the keys.
func relations(c *Config) []relation {
	var out []relation
	add := func(key, msg string, deps ...string) {
		out = append(out, relation{key: key, msg: msg, deps: append([]string{key}, deps...)})
	}
	l, u, t := &c.Listen, &c.Upstream, &c.TLS

	if l.IMAP == "" && l.IMAPS == "" {
		add("listen.imap", "is empty and so is listen.imaps, which leaves no listener; set at least one of them", "listen.imaps")
	}
	if l.ProxyProtocol && len(l.TrustedProxies) == 0 {
		add("listen.proxy_protocol", "is true but listen.trusted_proxies is empty, which would believe no balancer (set the balancers' addresses)", "listen.trusted_proxies")
	}
	if l.IMAPS != "" && t.Mode == "off" {
		add("listen.imaps", `implicit TLS needs a certificate, but tls.mode is "off"`, "tls.mode")
	}

	if u.TLS == "none" {
		for _, k := range []struct {
			key string
			set bool
		}{
			{"upstream.server_name", u.ServerName != ""},
			{"upstream.ca_file", u.CAFile != ""},
			{"upstream.insecure_skip_verify", u.InsecureSkipVerify},
			{"upstream.cert_file", u.CertFile != ""},
			{"upstream.key_file", u.KeyFile != ""},
		} {
			if k.set {
				add(k.key, `only allowed with upstream.tls "starttls" or "implicit", not "none"`, "upstream.tls")
			}
		}
	} else {
		switch {
		case u.CertFile != "" && u.KeyFile == "":
			add("upstream.cert_file", "requires upstream.key_file as well", "upstream.key_file")
		case u.CertFile == "" && u.KeyFile != "":
			add("upstream.key_file", "requires upstream.cert_file as well", "upstream.cert_file")
		}
	}

	switch {
	case u.Route == "single" && len(u.Backend) > 0:
		add("upstream.backend", `is set, but upstream.route is "single", which uses upstream.address only; set route = "hash" or "map"`, "upstream.route")
	case u.Route != "single" && len(u.Backend) == 0:
		add("upstream.route", "is "+strconv.Quote(u.Route)+" but there is no [[upstream.backend]] entry", "upstream.backend")
	}
	switch {
	case u.Route == "map" && u.MapFile == "":
		add("upstream.route", `"map" requires upstream.map_file`, "upstream.map_file")
	case u.Route != "map" && u.MapFile != "":
		add("upstream.map_file", `only allowed with upstream.route "map", not `+strconv.Quote(u.Route), "upstream.route")
	}
	names := map[string]bool{}
	for _, b := range u.Backend {
		name := cmp.Or(b.Name, b.Address)
		if name != "" && names[name] {
			add("upstream.backend", "has two entries named "+strconv.Quote(name)+" (a name, or an address without one, must be unique)")
			break
		}
		names[name] = true
	}

	mode := strconv.Quote(t.Mode)
	for _, f := range []struct{ key, value string }{
		{"tls.cert_file", t.CertFile},
		{"tls.key_file", t.KeyFile},
	} {
		switch {
		case t.Mode == "files" && f.value == "":
			add("tls.mode", `"files" requires `+f.key, f.key)
		case t.Mode != "files" && f.value != "":
			add(f.key, `only allowed with tls.mode "files", not `+mode, "tls.mode")
		}
	}
	if t.Mode == "acme" && len(t.Domains) == 0 && !t.OnDemand {
		add("tls.mode", `"acme" requires tls.domains, or tls.on_demand`, "tls.domains", "tls.on_demand")
	}
	if t.OnDemand {
		if t.Mode != "acme" {
			add("tls.on_demand", `only allowed with tls.mode "acme", not `+mode, "tls.mode")
		} else if len(t.OnDemandDomains) == 0 && t.OnDemandPermissionURL == "" {
			add("tls.on_demand", "requires tls.on_demand_domains or tls.on_demand_permission_url, so that clients cannot have certificates obtained for any name they send",
				"tls.on_demand_domains", "tls.on_demand_permission_url", "tls.mode")
		}
	}

	if a := &c.Admin; a.Listen != "" && a.Token == "" && a.TokenFile == "" && !IsLoopbackListen(a.Listen) {
		add("admin.listen", "listens on a non-loopback address, which needs admin.token or admin.token_file", "admin.token", "admin.token_file")
	}
	if a := &c.Admin; a.Token != "" && a.TokenFile != "" {
		add("admin.token_file", "is set and so is admin.token; give the token one way, not both", "admin.token")
	}
	// Reported at the key the file changed: a short drain_timeout with
	// the default spread is the timeout's problem.
	if cl := &c.Cluster; cl.Store == "redis" {
		if cl.RedisURL == "" && len(cl.RedisSentinel) == 0 {
			add("cluster.store", `is "redis" but neither cluster.redis_url nor cluster.redis_sentinel is set`, "cluster.redis_url")
		}
		if len(cl.RedisSentinel) > 0 && cl.RedisMaster == "" {
			add("cluster.redis_sentinel", "needs cluster.redis_master, the master's name", "cluster.redis_master")
		}
	}
	if d := &c.Shutdown; d.DisconnectSpread > d.DrainTimeout {
		if d.DisconnectSpread == Default().Shutdown.DisconnectSpread {
			add("shutdown.drain_timeout", "is shorter than shutdown.disconnect_spread ("+d.DisconnectSpread.String()+"), which would close the last sessions before their BYE", "shutdown.disconnect_spread")
		} else {
			add("shutdown.disconnect_spread", "is longer than shutdown.drain_timeout ("+d.DrainTimeout.String()+"), which would close the last sessions before their BYE", "shutdown.drain_timeout")
		}
	}
	return out
}

// IsLoopbackListen reports whether the listen address addr (host:port, as
// admin.listen) accepts connections only from the machine itself: its
// host is an IP address in 127.0.0.0/8 (also IPv4-mapped), ::1, or the
// name "localhost". An empty host (":8143") listens on all addresses and
// any other name may resolve to anything, so neither is loopback; nor is
// an addr that is not host:port. The admin API requires admin.token
// unless this holds, at start by Parse and at run time by its server.
func IsLoopbackListen(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

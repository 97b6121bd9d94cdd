package config

import (
	"errors"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

func TestWriteSettings(t *testing.T) {
	var b strings.Builder
	if err := Default().WriteSettings(&b); err != nil {
		t.Fatal(err)
	}
	want := `listen.imap                        : 127.0.0.1:1143
listen.imaps                       :
listen.proxy_protocol              : false
listen.trusted_proxies             :
upstream.address                   : 127.0.0.1:2143
upstream.connect_timeout           : 5s
upstream.login_timeout             : 30s
upstream.tls                       : none
upstream.server_name               :
upstream.ca_file                   :
upstream.insecure_skip_verify      : false
upstream.cert_file                 :
upstream.key_file                  :
upstream.forward_client            : id
upstream.route                     : single
upstream.map_file                  :
upstream.health_interval           : 5s
upstream.unhealthy_after           : 3
upstream.healthy_after             : 2
tls.mode                           : off
tls.cert_file                      :
tls.key_file                       :
tls.domains                        :
tls.email                          :
tls.ca                             :
tls.ca_root                        :
tls.storage                        :
tls.http_challenge_port            : 0
tls.tls_alpn_challenge_port        : 0
tls.on_demand                      : false
tls.on_demand_domains              :
tls.on_demand_permission_url       :
tls.self_signed_names              :
tls.allow_plaintext_auth           : true
limits.max_connections             : 2147483647
limits.evict_unauthenticated       : true
limits.max_connections_per_ip      : 2147483647
limits.max_connections_per_user    : 16
limits.ipv6_prefix_length          : 64
limits.max_command_size            : 10240
limits.preauth_timeout             : 1m
limits.idle_timeout                : 30m
limits.max_bad_commands            : 3
limits.max_auth_failures           : 3
limits.max_connections_per_user_ip : 0
limits.max_connection_rate_per_ip  : 0.0
limits.exempt_networks             :
limits.auth_failure_window         : 10m
limits.max_auth_failures_per_ip    : 10
limits.max_auth_failures_per_user  : 30
limits.auth_failure_block          : 15m
limits.auth_failure_delay          : 2s
limits.auth_tracking_entries       : 100000
log.level                          : info
log.format                         : text
telemetry.traces                   : none
telemetry.metrics                  : none
telemetry.otlp_endpoint            :
telemetry.otlp_protocol            :
telemetry.otlp_insecure            : false
telemetry.sample_ratio             : 1.0
telemetry.metrics_interval         : 1m
telemetry.metrics_listen           :
telemetry.record_user              : false
admin.listen                       :
admin.token                        :
admin.token_file                   :
shutdown.drain_timeout             : 30s
shutdown.disconnect_spread         : 10s
cluster.store                      : local
cluster.redis_url                  :
cluster.redis_sentinel             :
cluster.redis_master               :
cluster.instance_id                :
cluster.lease_ttl                  : 30s
cluster.redis_failure              : local
performance.relay                  : auto
performance.event_loops            : 0
performance.upstream_keepalive     : 0s
`
	if got := b.String(); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestWriteSettingsError(t *testing.T) {
	if err := Default().WriteSettings(failWriter{}); err == nil || err.Error() != "disk full" {
		t.Errorf("got %v; want disk full", err)
	}
}

func setting(c *Config, name string) string {
	for _, s := range c.Settings() {
		if s.Name == name {
			return s.Value
		}
	}
	return "(absent)"
}

func TestPlaintextAuthAllowed(t *testing.T) {
	for _, tt := range []struct {
		doc  string
		want bool
	}{
		{``, true},
		{`tls.allow_plaintext_auth = false`, true},
		{`tls.allow_plaintext_auth = true`, true},
		{`tls.mode = "self_signed"`, false},
		{"tls.mode = \"self_signed\"\ntls.allow_plaintext_auth = false", false},
		{"tls.mode = \"self_signed\"\ntls.allow_plaintext_auth = true", true},
	} {
		c, err := Parse("x.toml", []byte(tt.doc))
		if err != nil {
			t.Fatal(err)
		}
		if got := c.TLS.PlaintextAuthAllowed(); got != tt.want {
			t.Errorf("%q: got %v; want %v", tt.doc, got, tt.want)
		}
		if got, want := setting(c, "tls.allow_plaintext_auth"), strconv.FormatBool(tt.want); got != want {
			t.Errorf("%q: got setting %s; want %s", tt.doc, got, want)
		}
	}
}

// TestSecretRedacted checks that admin.token appears in no output: not in
// Settings, not in WriteSettings, not in a message about it.
func TestSecretRedacted(t *testing.T) {
	const token = "s3cr3t-T0KEN-0123456789"
	c, err := Parse("x.toml", []byte("[admin]\nlisten = \":8143\"\ntoken = \""+token+"\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Admin.Token != token {
		t.Errorf("got token %q; want %q", c.Admin.Token, token)
	}
	if got := setting(c, "admin.token"); got != Redacted {
		t.Errorf("got admin.token = %q; want %q", got, Redacted)
	}
	for _, effective := range []bool{true, false} {
		for _, s := range c.settings(effective) {
			if strings.Contains(s.Value, token) {
				t.Errorf("settings(%v): got %s = %q; want no token", effective, s.Name, s.Value)
			}
		}
	}
	var b strings.Builder
	if err := c.WriteSettings(&b); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), token) || !regexp.MustCompile(`(?m)^admin\.token +: `+regexp.QuoteMeta(Redacted)+`$`).MatchString(b.String()) {
		t.Errorf("got:\n%s\nwant admin.token redacted", b.String())
	}

	// An empty token is shown as empty, not as redacted.
	if got := setting(Default(), "admin.token"); got != "" {
		t.Errorf("got default admin.token = %q; want empty", got)
	}

	// Messages about an invalid token do not quote it.
	for _, bad := range []string{token[:10], token + " x", strings.Repeat(token, 20)} {
		_, err := Parse("x.toml", []byte(`admin.token = "`+bad+`"`))
		if err == nil || strings.Contains(err.Error(), bad[:10]) {
			t.Errorf("got %v; want an error without the token", err)
		}
		c := Default()
		c.Admin.Token = bad
		if err := c.Validate(); err == nil || strings.Contains(err.Error(), bad[:10]) {
			t.Errorf("Validate: got %v; want an error without the token", err)
		}
	}
}

// TestRedisURLRedacted: cluster.redis_url may hold a password; it is
// shown redacted, and a message about a bad one does not quote it.
func TestRedisURLRedacted(t *testing.T) {
	const pw = "hunter2-REDIS-pw"
	c, err := Parse("x.toml", []byte("[cluster]\nstore = \"redis\"\nredis_url = \"redis://:"+pw+"@127.0.0.1:6379/0\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := setting(c, "cluster.redis_url"); got != Redacted {
		t.Errorf("got cluster.redis_url = %q; want %q", got, Redacted)
	}
	var b strings.Builder
	if err := c.WriteSettings(&b); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), pw) {
		t.Errorf("WriteSettings shows the password:\n%s", b.String())
	}
	for _, bad := range []string{"http://:" + pw + "@h:1", "redis://:" + pw + "@/x", "redis://:" + pw + "@h:1/%zz"} {
		_, err := Parse("x.toml", []byte("cluster.redis_url = \""+bad+"\""))
		if err == nil || strings.Contains(err.Error(), pw) {
			t.Errorf("%q: got %v; want an error without the password", bad, err)
		}
	}
}

package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// rules holds the valid values of every key; the other facts about a key
// are on its field (see Config).
var rules = map[string]rule{
	"listen.imap":  address{allowPort0: true, allowEmpty: true},
	"listen.imaps": address{allowPort0: true, allowEmpty: true},

	"listen.proxy_protocol":  boolean{},
	"listen.trusted_proxies": networks{},

	"upstream.address":              address{requireHost: true},
	"upstream.connect_timeout":      durationRange{100 * time.Millisecond, 5 * time.Minute},
	"upstream.login_timeout":        durationRange{time.Second, 5 * time.Minute},
	"upstream.tls":                  oneOf{"none", "starttls", "implicit"},
	"upstream.server_name":          hostName{ip: true},
	"upstream.ca_file":              path{},
	"upstream.insecure_skip_verify": boolean{},
	"upstream.cert_file":            path{},
	"upstream.key_file":             path{},
	"upstream.forward_client":       oneOf{"none", "id", "proxy_v1", "proxy_v2"},
	"upstream.route":                oneOf{"single", "hash", "map"},
	"upstream.map_file":             path{},
	"upstream.health_interval":      durationRange{100 * time.Millisecond, time.Hour},
	"upstream.unhealthy_after":      intRange{1, 100},
	"upstream.healthy_after":        intRange{1, 100},

	"upstream.backend.name":                 backendName{},
	"upstream.backend.address":              address{requireHost: true, allowEmpty: true},
	"upstream.backend.weight":               intRange{0, 1000},
	"upstream.backend.tls":                  oneOf{"", "none", "starttls", "implicit"},
	"upstream.backend.server_name":          hostName{ip: true},
	"upstream.backend.ca_file":              path{},
	"upstream.backend.insecure_skip_verify": boolean{},
	"upstream.backend.cert_file":            path{},
	"upstream.backend.key_file":             path{},

	"tls.mode":                     oneOf{"off", "files", "acme", "self_signed"},
	"tls.cert_file":                path{},
	"tls.key_file":                 path{},
	"tls.domains":                  hostNames{},
	"tls.email":                    email{},
	"tls.ca":                       webURL{"https"},
	"tls.ca_root":                  path{},
	"tls.storage":                  path{},
	"tls.http_challenge_port":      intRange{0, 65535},
	"tls.tls_alpn_challenge_port":  intRange{0, 65535},
	"tls.on_demand":                boolean{},
	"tls.on_demand_domains":        hostNames{wildcard: true},
	"tls.on_demand_permission_url": webURL{"http", "https"},
	"tls.self_signed_names":        hostNames{wildcard: true, ip: true},
	"tls.allow_plaintext_auth":     boolean{},

	"limits.max_connections":             intRange{1, math.MaxInt32},
	"limits.evict_unauthenticated":       boolean{},
	"limits.max_connections_per_ip":      intRange{1, math.MaxInt32},
	"limits.max_connections_per_user":    intRange{1, math.MaxInt32},
	"limits.ipv6_prefix_length":          intRange{32, 128},
	"limits.max_command_size":            intRange{1024, 1 << 20},
	"limits.preauth_timeout":             durationRange{30 * time.Second, time.Hour},
	"limits.idle_timeout":                durationRange{30 * time.Second, 24 * time.Hour},
	"limits.max_bad_commands":            intRange{1, 100},
	"limits.max_auth_failures":           intRange{1, 100},
	"limits.max_connections_per_user_ip": intRange{0, math.MaxInt32},
	"limits.max_connection_rate_per_ip":  floatRange{0, maxRate},
	"limits.exempt_networks":             networks{},
	"limits.auth_failure_window":         durationRange{0, 7 * 24 * time.Hour},
	"limits.max_auth_failures_per_ip":    intRange{0, 100000},
	"limits.max_auth_failures_per_user":  intRange{0, 100000},
	"limits.auth_failure_block":          durationRange{time.Second, 7 * 24 * time.Hour},
	"limits.auth_failure_delay":          durationRange{0, 15 * time.Second}, // at most limits.MaxAuthFailureDelay
	"limits.auth_tracking_entries":       intRange{100, 10000000},

	"limits.override.users":                       userNames{},
	"limits.override.networks":                    networks{},
	"limits.override.max_connections_per_ip":      intRange{0, math.MaxInt32},
	"limits.override.max_connections_per_user":    intRange{0, math.MaxInt32},
	"limits.override.max_connections_per_user_ip": intRange{0, math.MaxInt32},
	"limits.override.max_connection_rate_per_ip":  floatRange{0, maxRate},

	"log.level":  oneOf{"debug", "info", "warn", "error"},
	"log.format": oneOf{"text", "json"},

	"telemetry.traces":           oneOf{"none", "stdout", "otlp"},
	"telemetry.metrics":          oneOf{"none", "otlp"},
	"telemetry.otlp_endpoint":    endpoint{},
	"telemetry.otlp_protocol":    oneOf{"", "grpc", "http/protobuf"},
	"telemetry.otlp_insecure":    boolean{},
	"telemetry.sample_ratio":     floatRange{0, 1},
	"telemetry.metrics_interval": durationRange{time.Second, time.Hour},
	"telemetry.metrics_listen":   address{allowPort0: true, allowEmpty: true},
	"telemetry.record_user":      boolean{},

	"admin.listen": address{allowPort0: true, allowEmpty: true},
	"admin.token":  secret{min: 16, max: 256},

	"shutdown.drain_timeout":     durationRange{time.Second, time.Hour},
	"shutdown.disconnect_spread": durationRange{0, time.Hour},

	"admin.token_file": path{},

	"cluster.store":          oneOf{"local", "redis"},
	"cluster.redis_url":      redisURL{},
	"cluster.redis_sentinel": addresses{},
	"cluster.redis_master":   hostName{},
	"cluster.instance_id":    hostName{ip: true},
	"cluster.lease_ttl":      durationRange{time.Second, time.Hour},
	"cluster.redis_failure":  oneOf{"local", "deny"},

	"performance.relay":              oneOf{"auto", "loop", "goroutines"},
	"performance.event_loops":        intRange{0, 256},
	"performance.upstream_keepalive": durationRange{0, 2 * time.Hour},
}

// maxRate bounds max_connection_rate_per_ip, in connections per second
// from one address: beyond it the cap means nothing.
const maxRate = 1_000_000

// A rule converts a value decoded from TOML into the Go type of its field
// and says what is wrong with it.
type rule interface {
	// convert turns raw, a value as go-toml decodes it into an interface
	// (string, int64, float64, bool, map, slice, date or time), into the
	// field's Go type. It returns what is wrong instead, if anything.
	convert(raw any) (v any, problem string)
	// check returns what is wrong with v, a value of the field's Go type,
	// or "".
	check(v any) string
	// valid describes the valid values.
	valid() string
}

// intRange is an int field with inclusive bounds.
type intRange struct{ min, max int64 }

func (r intRange) convert(raw any) (any, string) {
	n, ok := raw.(int64)
	if !ok {
		return nil, "want an integer, got " + describe(raw)
	}
	if msg := r.checkInt(n); msg != "" {
		return nil, msg
	}
	return int(n), ""
}

func (r intRange) check(v any) string { return r.checkInt(int64(v.(int))) }

func (r intRange) checkInt(n int64) string {
	if n < r.min || n > r.max {
		return strconv.FormatInt(n, 10) + " is out of range"
	}
	return ""
}

func (r intRange) valid() string { return fmt.Sprintf("%d .. %d", r.min, r.max) }

// floatRange is a float64 field with inclusive bounds. An integer is
// accepted too: TOML has no implicit conversion, but a person writing
// sample_ratio = 1 means 1.0.
type floatRange struct{ min, max float64 }

func (r floatRange) convert(raw any) (any, string) {
	var x float64
	switch n := raw.(type) {
	case float64:
		x = n
	case int64:
		x = float64(n)
	default:
		return nil, "want a number, got " + describe(raw)
	}
	if msg := r.check(x); msg != "" {
		return nil, msg
	}
	return x, ""
}

func (r floatRange) check(v any) string {
	x := v.(float64)
	if !(x >= r.min && x <= r.max) { // NaN is out of every range
		return formatFloat(x) + " is out of range"
	}
	return ""
}

func (r floatRange) valid() string { return formatFloat(r.min) + " .. " + formatFloat(r.max) }

// durationRange is a Duration field with inclusive bounds.
type durationRange struct{ min, max time.Duration }

func (r durationRange) convert(raw any) (any, string) {
	s, ok := raw.(string)
	if !ok {
		return nil, `want a string such as "30s", got ` + describe(raw)
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return nil, "invalid duration " + quote(s) + `, write a number and a unit such as "90s", "5m" or "1h30m"`
	}
	if msg := r.check(Duration(d)); msg != "" {
		return nil, msg
	}
	return Duration(d), ""
}

func (r durationRange) check(v any) string {
	d := v.(Duration)
	if time.Duration(d) < r.min || time.Duration(d) > r.max {
		return d.String() + " is out of range"
	}
	return ""
}

func (r durationRange) valid() string {
	return Duration(r.min).String() + " .. " + Duration(r.max).String()
}

// oneOf is a string field with a fixed set of values.
type oneOf []string

func (r oneOf) convert(raw any) (any, string) { return convertString(r, raw) }

func (r oneOf) check(v any) string {
	s := v.(string)
	for _, x := range r {
		if s == x {
			return ""
		}
	}
	return "unknown value " + quote(s)
}

// valid lists the values; an empty one is written as "or empty" at the end.
func (r oneOf) valid() string {
	var values []string
	empty := false
	for _, x := range r {
		if x == "" {
			empty = true
			continue
		}
		values = append(values, x)
	}
	v := strings.Join(values, ", ")
	if empty {
		v += ", or empty"
	}
	return v
}

// boolean is a bool field.
type boolean struct{}

func (boolean) convert(raw any) (any, string) {
	b, ok := raw.(bool)
	if !ok {
		return nil, "want true or false, got " + describe(raw)
	}
	return b, ""
}

func (boolean) check(any) string { return "" }

func (boolean) valid() string { return "true, false" }

package config

import (
	"strings"
	"testing"
)

// TestBounds writes each key alone at its lowest and highest valid value,
// and one step past each bound.
func TestBounds(t *testing.T) {
	tests := []struct {
		key              string
		min, max         string // valid, as written in TOML
		below, above     string // invalid, as written in TOML; "" if none
		wantMin, wantMax string // value as Settings prints it
		valid            string
	}{
		{"listen.imap", `":0"`, `"[::1]:65535"`, ``, `":65536"`, ":0", "[::1]:65535", "host:port, host may be empty, port 0 .. 65535, or empty"},
		{"listen.imaps", `":0"`, `"[::1]:65535"`, ``, `":65536"`, ":0", "[::1]:65535", "host:port, host may be empty, port 0 .. 65535, or empty"},
		{"upstream.address", `"h:1"`, `"h:65535"`, `"h:0"`, `"h:65536"`, "h:1", "h:65535", "host:port, port 1 .. 65535"},
		{"upstream.connect_timeout", `"100ms"`, `"5m"`, `"99999999ns"`, `"300000000001ns"`, "100ms", "5m", "100ms .. 5m"},
		{"upstream.login_timeout", `"1s"`, `"5m"`, `"999999999ns"`, `"300000000001ns"`, "1s", "5m", "1s .. 5m"},
		{"tls.http_challenge_port", `0`, `65535`, `-1`, `65536`, "0", "65535", "0 .. 65535"},
		{"tls.tls_alpn_challenge_port", `0`, `65535`, `-1`, `65536`, "0", "65535", "0 .. 65535"},
		{"limits.max_connections", `1`, `2147483647`, `0`, `2147483648`, "1", "2147483647", "1 .. 2147483647"},
		{"limits.max_connections_per_ip", `1`, `2147483647`, `0`, `2147483648`, "1", "2147483647", "1 .. 2147483647"},
		{"limits.max_connections_per_user", `1`, `2147483647`, `0`, `2147483648`, "1", "2147483647", "1 .. 2147483647"},
		{"limits.ipv6_prefix_length", `32`, `128`, `31`, `129`, "32", "128", "32 .. 128"},
		{"limits.max_command_size", `1024`, `1048576`, `1023`, `1048577`, "1024", "1048576", "1024 .. 1048576"},
		{"limits.preauth_timeout", `"30s"`, `"1h"`, `"29999999999ns"`, `"3600000000001ns"`, "30s", "1h", "30s .. 1h"},
		{"limits.idle_timeout", `"30s"`, `"24h"`, `"29999999999ns"`, `"86400000000001ns"`, "30s", "24h", "30s .. 24h"},
		{"limits.max_bad_commands", `1`, `100`, `0`, `101`, "1", "100", "1 .. 100"},
		{"limits.max_auth_failures", `1`, `100`, `0`, `101`, "1", "100", "1 .. 100"},
		{"telemetry.otlp_endpoint", `"h:1"`, `"https://h:65535"`, `"h:0"`, `"http://h:65536"`, "h:1", "https://h:65535", "host:port, port 1 .. 65535, an http:// or https:// URL, or empty"},
		{"telemetry.sample_ratio", `0`, `1.0`, `-0.1`, `1.5`, "0.0", "1.0", "0.0 .. 1.0"},
		{"telemetry.metrics_interval", `"1s"`, `"1h"`, `"999999999ns"`, `"3600000000001ns"`, "1s", "1h", "1s .. 1h"},
		{"telemetry.metrics_listen", `":0"`, `"[::1]:65535"`, ``, `":65536"`, ":0", "[::1]:65535", "host:port, host may be empty, port 0 .. 65535, or empty"},
		{"admin.listen", `":0"`, `"[::1]:65535"`, ``, `":65536"`, ":0", "[::1]:65535", "host:port, host may be empty, port 0 .. 65535, or empty"},
		{"admin.token", `"` + strings.Repeat("x", 16) + `"`, `"` + strings.Repeat("~", 256) + `"`, `"` + strings.Repeat("x", 15) + `"`, `"` + strings.Repeat("!", 257) + `"`, Redacted, Redacted, "16 .. 256 printable ASCII characters without spaces, or empty"},
	}
	// What a key needs besides itself, written after it.
	context := map[string]string{
		"listen.imaps": `tls.mode = "self_signed"` + "\n",
		"admin.listen": `admin.token = "0123456789abcdef"` + "\n",
	}
	for _, tt := range tests {
		for _, c := range []struct {
			name, value, want string
			ok                bool
		}{
			{"min", tt.min, tt.wantMin, true},
			{"max", tt.max, tt.wantMax, true},
			{"below", tt.below, "", false},
			{"above", tt.above, "", false},
		} {
			if c.value == "" {
				continue
			}
			t.Run(tt.key+"/"+c.name, func(t *testing.T) {
				doc := "# comment\n" + tt.key + " = " + c.value + "\n" + context[tt.key]
				cfg, err := Parse("t.toml", []byte(doc))
				if c.ok {
					if err != nil {
						t.Fatalf("got error %v; want none", err)
					}
					if got := setting(cfg, tt.key); got != c.want {
						t.Errorf("got %s = %s; want %s", tt.key, got, c.want)
					}
					return
				}
				if err == nil {
					t.Fatalf("got no error; want one")
				}
				prefix := "t.toml:2: " + tt.key + ": "
				suffix := " (valid " + tt.valid + ")"
				if got := err.Error(); !strings.HasPrefix(got, prefix) || !strings.HasSuffix(got, suffix) || strings.Contains(got, "\n") {
					t.Errorf("got %q; want one line %q...%q", got, prefix, suffix)
				}
			})
		}
	}
}

// TestSampleRatio checks that sample_ratio takes integers and floats in
// 0 .. 1, and what -check prints for them.
func TestSampleRatio(t *testing.T) {
	for _, tt := range []struct {
		value   string // as written in TOML
		want    float64
		setting string
		ok      bool
	}{
		{"0", 0, "0.0", true},
		{"0.0", 0, "0.0", true},
		{"0.25", 0.25, "0.25", true},
		{"1", 1, "1.0", true},
		{"1.0", 1, "1.0", true},
		{"1e0", 1, "1.0", true},
		{"-0.0", 0, "-0.0", true},
		{"0.000001", 0.000001, "0.000001", true},
		{"-0.1", 0, "", false},
		{"1.5", 0, "", false},
		{"-1", 0, "", false},
	} {
		t.Run(tt.value, func(t *testing.T) {
			c, err := Parse("x.toml", []byte("telemetry.sample_ratio = "+tt.value))
			if !tt.ok {
				want := "x.toml:1: telemetry.sample_ratio: " + tt.value + " is out of range (valid 0.0 .. 1.0)"
				if tt.value == "-1" {
					want = "x.toml:1: telemetry.sample_ratio: -1.0 is out of range (valid 0.0 .. 1.0)"
				}
				if err == nil || err.Error() != want {
					t.Errorf("got %v; want %s", err, want)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v; want none", err)
			}
			if c.Telemetry.SampleRatio != tt.want {
				t.Errorf("got %v; want %v", c.Telemetry.SampleRatio, tt.want)
			}
			if got := setting(c, "telemetry.sample_ratio"); got != tt.setting {
				t.Errorf("got setting %s; want %s", got, tt.setting)
			}
			// What -check prints parses back to the same value.
			back, err := Parse("y.toml", []byte("telemetry.sample_ratio = "+tt.setting))
			if err != nil || back.Telemetry.SampleRatio != tt.want {
				t.Errorf("got %v, %v parsing %s back; want %v, nil", back.Telemetry.SampleRatio, err, tt.setting, tt.want)
			}
		})
	}
}

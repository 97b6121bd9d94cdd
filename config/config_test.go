package config

import (
	"bytes"
	"errors"
	"flag"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// TestGolden parses testdata/good/*.toml, comparing the WriteSettings
// output with the .golden file, and testdata/bad/*.toml, comparing the
// error text with the .golden file.
func TestGolden(t *testing.T) {
	for _, dir := range []string{"good", "bad"} {
		files, err := filepath.Glob(filepath.Join("testdata", dir, "*.toml"))
		if err != nil {
			t.Fatal(err)
		}
		if len(files) == 0 {
			t.Fatalf("no files in testdata/%s", dir)
		}
		for _, file := range files {
			t.Run(dir+"/"+filepath.Base(file), func(t *testing.T) {
				data, err := os.ReadFile(file)
				if err != nil {
					t.Fatal(err)
				}
				c, err := Parse(filepath.Base(file), data)
				var got string
				switch dir {
				case "good":
					if err != nil {
						t.Fatalf("got error:\n%v\nwant none", err)
					}
					var b strings.Builder
					if err := c.WriteSettings(&b); err != nil {
						t.Fatal(err)
					}
					got = b.String()
				case "bad":
					if err == nil {
						t.Fatalf("got no error; want one")
					}
					if c != nil {
						t.Errorf("got a Config with the error; want nil")
					}
					got = err.Error() + "\n"
				}
				golden := strings.TrimSuffix(file, ".toml") + ".golden"
				if *update {
					if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
						t.Fatal(err)
					}
					return
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatalf("%v (run go test -update to create it)", err)
				}
				if got != string(want) {
					t.Errorf("got:\n%s\nwant:\n%s", got, want)
				}
			})
		}
	}
}

func TestDefaultTOML(t *testing.T) {
	c, err := Parse("default.toml", DefaultTOML)
	if err != nil {
		t.Fatalf("got error %v; want none", err)
	}
	if want := Default(); !reflect.DeepEqual(c, want) {
		t.Errorf("got %+v; want %+v", *c, *want)
	}
	// Every key is written out, and with the value of its field, so that
	// the file documents the defaults exactly. (That is the value -check
	// prints, except for tls.allow_plaintext_auth, whose default depends
	// on tls.mode; see TestPlaintextAuthAllowed.)
	idx, err := indexDocument("default.toml", DefaultTOML)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(DefaultTOML), "\n")
	for _, s := range Default().settings(false) {
		info, ok := idx.first[s.Name]
		if !ok {
			t.Errorf("key %s: got absent; want present", s.Name)
			continue
		}
		name := s.Name[strings.LastIndexByte(s.Name, '.')+1:]
		var want string
		switch info.kind {
		case "string":
			want = name + ` = "` + s.Value + `"`
		case "array":
			var elems []string
			if s.Value != "" {
				elems = strings.Split(s.Value, ", ")
			}
			for i, e := range elems {
				elems[i] = `"` + e + `"`
			}
			want = name + " = [" + strings.Join(elems, ", ") + "]"
		default:
			want = name + " = " + s.Value
		}
		if got := lines[info.line-1]; got != want {
			t.Errorf("line %d: got %q; want %q", info.line, got, want)
		}
		if info.line < 2 || !strings.HasPrefix(lines[info.line-2], "# ") {
			t.Errorf("key %s: got no comment above; want one", s.Name)
		}
	}
}

func TestDefaultValid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Errorf("got %v; want nil", err)
	}
}

func TestSettingsOrder(t *testing.T) {
	want := []string{
		"listen.imap",
		"listen.imaps",
		"upstream.address",
		"upstream.connect_timeout",
		"upstream.login_timeout",
		"upstream.tls",
		"upstream.server_name",
		"upstream.ca_file",
		"upstream.insecure_skip_verify",
		"upstream.cert_file",
		"upstream.key_file",
		"tls.mode",
		"tls.cert_file",
		"tls.key_file",
		"tls.domains",
		"tls.email",
		"tls.ca",
		"tls.ca_root",
		"tls.storage",
		"tls.http_challenge_port",
		"tls.tls_alpn_challenge_port",
		"tls.on_demand",
		"tls.on_demand_domains",
		"tls.on_demand_permission_url",
		"tls.self_signed_names",
		"tls.allow_plaintext_auth",
		"limits.max_connections",
		"limits.max_connections_per_ip",
		"limits.max_connections_per_user",
		"limits.ipv6_prefix_length",
		"limits.max_command_size",
		"limits.preauth_timeout",
		"limits.idle_timeout",
		"limits.max_bad_commands",
		"limits.max_auth_failures",
		"log.level",
		"log.format",
		"telemetry.traces",
		"telemetry.metrics",
		"telemetry.otlp_endpoint",
		"telemetry.otlp_protocol",
		"telemetry.otlp_insecure",
		"telemetry.sample_ratio",
		"telemetry.metrics_interval",
		"telemetry.metrics_listen",
		"telemetry.record_user",
		"admin.listen",
		"admin.token",
	}
	var got []string
	for _, s := range Default().Settings() {
		got = append(got, s.Name)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q; want %q", got, want)
	}
}

func TestWriteSettings(t *testing.T) {
	var b strings.Builder
	if err := Default().WriteSettings(&b); err != nil {
		t.Fatal(err)
	}
	want := `listen.imap                     : 127.0.0.1:1143
listen.imaps                    :
upstream.address                : 127.0.0.1:2143
upstream.connect_timeout        : 5s
upstream.login_timeout          : 30s
upstream.tls                    : none
upstream.server_name            :
upstream.ca_file                :
upstream.insecure_skip_verify   : false
upstream.cert_file              :
upstream.key_file               :
tls.mode                        : off
tls.cert_file                   :
tls.key_file                    :
tls.domains                     :
tls.email                       :
tls.ca                          :
tls.ca_root                     :
tls.storage                     :
tls.http_challenge_port         : 0
tls.tls_alpn_challenge_port     : 0
tls.on_demand                   : false
tls.on_demand_domains           :
tls.on_demand_permission_url    :
tls.self_signed_names           :
tls.allow_plaintext_auth        : true
limits.max_connections          : 2147483647
limits.max_connections_per_ip   : 2147483647
limits.max_connections_per_user : 16
limits.ipv6_prefix_length       : 64
limits.max_command_size         : 10240
limits.preauth_timeout          : 1m
limits.idle_timeout             : 30m
limits.max_bad_commands         : 3
limits.max_auth_failures        : 3
log.level                       : info
log.format                      : text
telemetry.traces                : none
telemetry.metrics               : none
telemetry.otlp_endpoint         :
telemetry.otlp_protocol         :
telemetry.otlp_insecure         : false
telemetry.sample_ratio          : 1.0
telemetry.metrics_interval      : 1m
telemetry.metrics_listen        :
telemetry.record_user           : false
admin.listen                    :
admin.token                     :
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

func setting(c *Config, name string) string {
	for _, s := range c.Settings() {
		if s.Name == name {
			return s.Value
		}
	}
	return "(absent)"
}

func TestParseMessages(t *testing.T) {
	tests := []struct {
		name, doc, want string
	}{
		{"bad duration", `limits.idle_timeout = "5 minutes"`,
			`x.toml:1: limits.idle_timeout: invalid duration "5 minutes", write a number and a unit such as "90s", "5m" or "1h30m" (valid 30s .. 24h)`},
		{"negative duration", `limits.idle_timeout = "-1s"`,
			`x.toml:1: limits.idle_timeout: -1s is out of range (valid 30s .. 24h)`},
		{"number for duration", `limits.idle_timeout = 30`,
			`x.toml:1: limits.idle_timeout: want a string such as "30s", got integer 30 (valid 30s .. 24h)`},
		{"float for int", `limits.max_connections = 1e3`,
			`x.toml:1: limits.max_connections: want an integer, got float 1000 (valid 1 .. 2147483647)`},
		{"negative int", `limits.max_connections = -1`,
			`x.toml:1: limits.max_connections: -1 is out of range (valid 1 .. 2147483647)`},
		{"huge int", `limits.max_connections = 9223372036854775807`,
			`x.toml:1: limits.max_connections: 9223372036854775807 is out of range (valid 1 .. 2147483647)`},
		{"long string", `log.level = "` + strings.Repeat("x", 100) + `"`,
			`x.toml:1: log.level: unknown value "` + strings.Repeat("x", 37) + `..." (valid debug, info, warn, error)`},
		{"control characters in key", `"a\nb" = 1`,
			`x.toml:1: unknown key "a\nb"`},
		{"control characters in value", `log.level = "a\u001b[31m"`,
			`x.toml:1: log.level: unknown value "a\x1b[31m" (valid debug, info, warn, error)`},
		{"unknown key in inline table", `upstream = { address = "h:1", bogus = 1 }`,
			`x.toml:1: unknown key upstream.bogus`},
		{"unknown key in unknown table", "[a]\nb = 1",
			`x.toml:1: unknown table a`},
		{"unknown dotted key", "a.b = 1",
			`x.toml:1: unknown key a.b`},
		{"table for leaf, dotted", "limits.max_connections.x = 1",
			`x.toml:1: limits.max_connections: want an integer, got table (valid 1 .. 2147483647)`},
		{"two problems on one line, in column order", `limits = { max_connections = 0, bogus = 1 }`,
			"x.toml:1: limits.max_connections: 0 is out of range (valid 1 .. 2147483647)\n" +
				"x.toml:1: unknown key limits.bogus"},
		{"string for table", `log = "debug"`,
			`x.toml:1: log: must be a table, got string`},
		{"inline table for table", `log = { level = "debug" }`, ``},
		{"empty host allowed for listen", `listen.imap = ":143"`, ``},
		{"upstream port 0", `upstream.address = "h:0"`,
			`x.toml:1: upstream.address: "h:0": port 0 is out of range (valid host:port, port 1 .. 65535)`},
		{"port with sign", `upstream.address = "h:+1"`,
			`x.toml:1: upstream.address: "h:+1": port "+1" is not a number (valid host:port, port 1 .. 65535)`},
		{"too many colons", `upstream.address = "::1:143"`,
			`x.toml:1: upstream.address: "::1:143": too many colons in address (valid host:port, port 1 .. 65535)`},
		{"syntax error at end", `limits.max_connections =`,
			`x.toml:1:24: invalid TOML: expected value, not end of input`},
		{"imaps only", "listen = { imap = \"\", imaps = \":993\" }\ntls.mode = \"self_signed\"", ``},
		{"no listener, both written", `listen = { imap = "", imaps = "" }`,
			`x.toml:1: listen.imap: is empty and so is listen.imaps, which leaves no listener; set at least one of them`},
		{"imaps without tls", `listen.imaps = ":993"`,
			`x.toml:1: listen.imaps: implicit TLS needs a certificate, but tls.mode is "off"`},
		{"imaps bad and tls off", `listen.imaps = "993"`,
			`x.toml:1: listen.imaps: "993": missing port in address (valid host:port, host may be empty, port 0 .. 65535, or empty)`},
		{"files complete", `tls = { mode = "files", cert_file = "c.pem", key_file = "k.pem" }`, ``},
		{"files without key", `tls = { mode = "files", cert_file = "c.pem" }`,
			`x.toml:1: tls.mode: "files" requires tls.key_file`},
		{"key file with mode off", `tls.key_file = "k.pem"`,
			`x.toml:1: tls.key_file: only allowed with tls.mode "files", not "off"`},
		{"empty cert file with mode off", `tls.cert_file = ""`, ``},
		{"acme with domains", `tls = { mode = "acme", domains = ["mail.example.com"] }`, ``},
		{"acme without domains", `tls.mode = "acme"`,
			`x.toml:1: tls.mode: "acme" requires tls.domains, or tls.on_demand`},
		{"acme with invalid domains", `tls = { mode = "acme", domains = ["a b"] }`,
			`x.toml:1: tls.domains: "a b" is not a valid DNS name: it contains " "; only letters, digits, hyphens and dots are allowed (valid DNS names)`},
		{"on demand with domains", `tls = { mode = "acme", on_demand = true, on_demand_domains = ["*.example.com"] }`, ``},
		{"on demand with url", `tls = { mode = "acme", on_demand = true, on_demand_permission_url = "http://localhost:9000/ok" }`, ``},
		{"on demand unrestricted", `tls = { mode = "acme", on_demand = true }`,
			`x.toml:1: tls.on_demand: requires tls.on_demand_domains or tls.on_demand_permission_url, so that clients cannot have certificates obtained for any name they send`},
		{"on demand with mode off", "tls.on_demand = true\ntls.on_demand_domains = [\"*.example.com\"]",
			`x.toml:1: tls.on_demand: only allowed with tls.mode "acme", not "off"`},
		{"on demand false", `tls.on_demand = false`, ``},
		{"on demand domains without on demand", `tls.on_demand_domains = ["example.com"]`, ``},
		{"ca https", `tls.ca = "HTTPS://ca.example.com:14000/dir"`, ``},
		{"ca http", `tls.ca = "http://ca.example.com/dir"`,
			`x.toml:1: tls.ca: "http://ca.example.com/dir" does not start with https:// (valid an https:// URL, or empty)`},
		{"ca opaque", `tls.ca = "https:ca.example.com"`,
			`x.toml:1: tls.ca: "https:ca.example.com" does not start with https:// (valid an https:// URL, or empty)`},
		{"ca relative", `tls.ca = "ca.example.com/dir"`,
			`x.toml:1: tls.ca: "ca.example.com/dir" does not start with https:// (valid an https:// URL, or empty)`},
		{"ca no host", `tls.ca = "https://:443/dir"`,
			`x.toml:1: tls.ca: "https://:443/dir": host is missing (valid an https:// URL, or empty)`},
		{"ca unparsable", `tls.ca = "https://a b/"`,
			`x.toml:1: tls.ca: "https://a b/" is not a URL (valid an https:// URL, or empty)`},
		{"email", `tls.email = "postmaster@example.com"`, ``},
		{"email with space", `tls.email = "post master@example.com"`,
			`x.toml:1: tls.email: "post master@example.com" is not an e-mail address such as admin@example.com (valid an e-mail address, or empty)`},
		{"path with newline", `tls.storage = "/var/lib/\n"`,
			`x.toml:1: tls.storage: "/var/lib/\n" contains control characters (valid a path, or empty)`},
		{"domains empty string", `tls.domains = [""]`,
			`x.toml:1: tls.domains: "" is not a valid DNS name: it is empty (valid DNS names)`},
		{"domains not an array", `tls.domains = { a = 1 }`,
			`x.toml:1: tls.domains: want an array of strings, got table (valid DNS names)`},
		{"allow plaintext auth", `tls = { mode = "files", cert_file = "c", key_file = "k", allow_plaintext_auth = true }`, ``},
		{"upstream tls with all keys", `upstream = { tls = "implicit", server_name = "192.0.2.1", ca_file = "ca.pem", insecure_skip_verify = true, cert_file = "c.pem", key_file = "k.pem" }`, ``},
		{"upstream key without cert", `upstream = { tls = "starttls", key_file = "k.pem" }`,
			`x.toml:1: upstream.key_file: requires upstream.cert_file as well`},
		{"upstream insecure false with tls none", `upstream.insecure_skip_verify = false`, ``},
		{"upstream server name with tls none", `upstream.server_name = "imap.example.com"`,
			`x.toml:1: upstream.server_name: only allowed with upstream.tls "starttls" or "implicit", not "none"`},
		{"upstream server name and bad tls", "upstream.tls = \"tls\"\nupstream.server_name = \"imap.example.com\"",
			`x.toml:1: upstream.tls: unknown value "tls" (valid none, starttls, implicit)`},
		{"two relations on one line, in column order", `tls = { on_demand = true, cert_file = "c.pem" }`,
			"x.toml:1: tls.on_demand: only allowed with tls.mode \"acme\", not \"off\"\n" +
				"x.toml:1: tls.cert_file: only allowed with tls.mode \"files\", not \"off\""},
		{"traces otlp", `telemetry = { traces = "otlp", metrics = "otlp", otlp_protocol = "grpc", otlp_insecure = true }`, ``},
		{"traces unknown", `telemetry.traces = "jaeger"`,
			`x.toml:1: telemetry.traces: unknown value "jaeger" (valid none, stdout, otlp)`},
		{"metrics stdout", `telemetry.metrics = "stdout"`,
			`x.toml:1: telemetry.metrics: unknown value "stdout" (valid none, otlp)`},
		{"protocol empty", `telemetry.otlp_protocol = ""`, ``},
		{"protocol http", `telemetry.otlp_protocol = "http"`,
			`x.toml:1: telemetry.otlp_protocol: unknown value "http" (valid grpc, http/protobuf, or empty)`},
		{"endpoint empty", `telemetry.otlp_endpoint = ""`, ``},
		{"endpoint host port", `telemetry.otlp_endpoint = "otel-collector:4317"`, ``},
		{"endpoint ipv6", `telemetry.otlp_endpoint = "[::1]:4317"`, ``},
		{"endpoint url", `telemetry.otlp_endpoint = "https://otel.example.com"`, ``},
		{"endpoint url with path", `telemetry.otlp_endpoint = "http://127.0.0.1:4318/otlp"`, ``},
		{"endpoint without port", `telemetry.otlp_endpoint = "otel-collector"`,
			`x.toml:1: telemetry.otlp_endpoint: "otel-collector": missing port in address (valid host:port, port 1 .. 65535, an http:// or https:// URL, or empty)`},
		{"endpoint without host", `telemetry.otlp_endpoint = ":4317"`,
			`x.toml:1: telemetry.otlp_endpoint: ":4317": host is missing (valid host:port, port 1 .. 65535, an http:// or https:// URL, or empty)`},
		{"endpoint grpc scheme", `telemetry.otlp_endpoint = "grpc://otel:4317"`,
			`x.toml:1: telemetry.otlp_endpoint: "grpc://otel:4317" does not start with http:// or https:// (valid host:port, port 1 .. 65535, an http:// or https:// URL, or empty)`},
		{"endpoint url without host", `telemetry.otlp_endpoint = "http:///v1"`,
			`x.toml:1: telemetry.otlp_endpoint: "http:///v1": host is missing (valid host:port, port 1 .. 65535, an http:// or https:// URL, or empty)`},
		{"endpoint url port 0", `telemetry.otlp_endpoint = "http://otel:0"`,
			`x.toml:1: telemetry.otlp_endpoint: "http://otel:0": port 0 is out of range (valid host:port, port 1 .. 65535, an http:// or https:// URL, or empty)`},
		{"endpoint number", `telemetry.otlp_endpoint = 4317`,
			`x.toml:1: telemetry.otlp_endpoint: want a string, got integer 4317 (valid host:port, port 1 .. 65535, an http:// or https:// URL, or empty)`},
		{"insecure string", `telemetry.otlp_insecure = "yes"`,
			`x.toml:1: telemetry.otlp_insecure: want true or false, got string "yes" (valid true, false)`},
		{"sample ratio string", `telemetry.sample_ratio = "0.5"`,
			`x.toml:1: telemetry.sample_ratio: want a number, got string "0.5" (valid 0.0 .. 1.0)`},
		{"sample ratio nan", `telemetry.sample_ratio = nan`,
			`x.toml:1: telemetry.sample_ratio: nan is out of range (valid 0.0 .. 1.0)`},
		{"sample ratio inf", `telemetry.sample_ratio = +inf`,
			`x.toml:1: telemetry.sample_ratio: inf is out of range (valid 0.0 .. 1.0)`},
		{"sample ratio integer 2", `telemetry.sample_ratio = 2`,
			`x.toml:1: telemetry.sample_ratio: 2.0 is out of range (valid 0.0 .. 1.0)`},
		{"sample ratio exponent", `telemetry.sample_ratio = 1e-3`, ``},
		{"metrics interval number", `telemetry.metrics_interval = 60`,
			`x.toml:1: telemetry.metrics_interval: want a string such as "30s", got integer 60 (valid 1s .. 1h)`},
		{"metrics listen without port", `telemetry.metrics_listen = "127.0.0.1"`,
			`x.toml:1: telemetry.metrics_listen: "127.0.0.1": missing port in address (valid host:port, host may be empty, port 0 .. 65535, or empty)`},
		{"metrics listen on all addresses", `telemetry.metrics_listen = ":9143"`, ``},
		{"record user", `telemetry.record_user = true`, ``},
		{"admin listen without port", `admin.listen = "localhost"`,
			`x.toml:1: admin.listen: "localhost": missing port in address (valid host:port, host may be empty, port 0 .. 65535, or empty)`},
		{"admin listen bad, no token", "admin.listen = \"0.0.0.0:x\"",
			`x.toml:1: admin.listen: "0.0.0.0:x": port "x" is not a number (valid host:port, host may be empty, port 0 .. 65535, or empty)`},
		{"admin non-loopback, token bad", "admin.listen = \":8143\"\nadmin.token = \"short\"",
			`x.toml:2: admin.token: it is 5 characters long (valid 16 .. 256 printable ASCII characters without spaces, or empty)`},
		{"admin token with space", `admin.token = "0123456789 abcdef"`,
			`x.toml:1: admin.token: the character at byte 11 is not printable ASCII or is a space (valid 16 .. 256 printable ASCII characters without spaces, or empty)`},
		{"admin token non-ASCII", `admin.token = "0123456789abcdéf"`,
			`x.toml:1: admin.token: the character at byte 15 is not printable ASCII or is a space (valid 16 .. 256 printable ASCII characters without spaces, or empty)`},
		{"admin token number", `admin.token = 12345678901234567`,
			`x.toml:1: admin.token: want a string, got integer (valid 16 .. 256 printable ASCII characters without spaces, or empty)`},
		{"admin token empty", `admin.token = ""`, ``},
		{"admin token without listen", `admin.token = "0123456789abcdef"`, ``},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("x.toml", []byte(tt.doc))
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tt.want {
				t.Errorf("got %q; want %q", got, tt.want)
			}
		})
	}
}

func TestParseBOMAndCRLF(t *testing.T) {
	doc := "\uFEFF[limits]\r\nmax_connections = 7\r\n\r\n[log]\r\nlevel = \"debug\"\r\nbogus = 1\r\n"
	_, err := Parse("w.toml", []byte(doc))
	if want := "w.toml:6: unknown key log.bogus"; err == nil || err.Error() != want {
		t.Fatalf("got %v; want %s", err, want)
	}
	doc = strings.Replace(doc, "bogus = 1\r\n", "", 1)
	c, err := Parse("w.toml", []byte(doc))
	if err != nil {
		t.Fatalf("got %v; want no error", err)
	}
	if c.Limits.MaxConnections != 7 || c.Log.Level != "debug" {
		t.Errorf("got %d, %q; want 7, debug", c.Limits.MaxConnections, c.Log.Level)
	}
}

// TestParseLongKey checks that a very long dotted key is handled in
// reasonable time.
func TestParseLongKey(t *testing.T) {
	key := strings.Repeat("limits.", 100000) + "x"
	_, err := Parse("x.toml", []byte(key+" = 1"))
	want := "x.toml:1: unknown key " + strings.Repeat("limits.", 13) + "limits..."
	if err == nil || err.Error() != want {
		t.Errorf("got %.200v; want %s", err, want)
	}
}

func TestParseEmptyName(t *testing.T) {
	_, err := Parse("", []byte("a = 1"))
	if want := "config:1: unknown key a"; err == nil || err.Error() != want {
		t.Errorf("got %v; want %s", err, want)
	}
}

// TestParseUnwrap checks that the problems of a file are separate errors.
func TestParseUnwrap(t *testing.T) {
	_, err := Parse("x.toml", []byte("a = 1\nb = 2\nlimits.max_connections = 0\n"))
	u, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("got %T; want an error joining others", err)
	}
	if got := len(u.Unwrap()); got != 3 {
		t.Errorf("got %d errors; want 3", got)
	}
}

func TestLoad(t *testing.T) {
	path := filepath.Join("testdata", "good", "partial.toml")
	c, err := Load(path)
	if err != nil {
		t.Fatalf("got %v; want no error", err)
	}
	if got, want := c.Upstream.Address, "mail.internal:143"; got != want {
		t.Errorf("got %q; want %q", got, want)
	}

	path = filepath.Join("testdata", "bad", "unknown_key.toml")
	_, err = Load(path)
	if want := path + ":7: unknown key limits.max_conections"; err == nil || err.Error() != want {
		t.Errorf("got %v; want %s", err, want)
	}

	path = filepath.Join(t.TempDir(), "missing.toml")
	_, err = Load(path)
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Errorf("got %v; want a not-exist error naming %s", err, path)
	}
}

func TestValidate(t *testing.T) {
	c := Default()
	c.Limits.MaxConnections = 0
	c.Upstream.LoginTimeout = Duration(time.Hour)
	c.Log.Format = "xml"
	c.Telemetry.SampleRatio = 2
	c.Telemetry.MetricsInterval = 0
	want := "upstream.login_timeout: 1h is out of range (valid 1s .. 5m)\n" +
		"limits.max_connections: 0 is out of range (valid 1 .. 2147483647)\n" +
		`log.format: unknown value "xml" (valid text, json)` + "\n" +
		"telemetry.sample_ratio: 2.0 is out of range (valid 0.0 .. 1.0)\n" +
		"telemetry.metrics_interval: 0s is out of range (valid 1s .. 1h)"
	if err := c.Validate(); err == nil || err.Error() != want {
		t.Errorf("got %v; want %s", err, want)
	}

	// Keys that depend on each other, after all single keys; none that
	// depends on an invalid key.
	c = Default()
	c.Listen.IMAP = ""
	c.TLS.Mode = "files"
	c.TLS.KeyFile = "k.pem"
	c.TLS.Domains = []string{"mail.example.com", "-bad.example.com"}
	c.TLS.OnDemand = true
	c.Upstream.InsecureSkipVerify = true
	want = `tls.domains: "-bad.example.com" is not a valid DNS name: a label starts or ends with a hyphen (valid DNS names)` + "\n" +
		"listen.imap: is empty and so is listen.imaps, which leaves no listener; set at least one of them\n" +
		`upstream.insecure_skip_verify: only allowed with upstream.tls "starttls" or "implicit", not "none"` + "\n" +
		`tls.mode: "files" requires tls.cert_file` + "\n" +
		`tls.on_demand: only allowed with tls.mode "acme", not "files"`
	if err := c.Validate(); err == nil || err.Error() != want {
		t.Errorf("got %v; want %s", err, want)
	}
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

func TestCheckHostName(t *testing.T) {
	long := strings.Repeat("a", 63)
	tests := []struct {
		name         string
		ip, wildcard bool
		want         string // "" if valid, else the reason after the colon
	}{
		{"mail.example.com", false, false, ""},
		{"MAIL.Example.COM", false, false, ""},
		{"localhost", false, false, ""},
		{"xn--bcher-kva.example", false, false, ""},
		{"a-b.c-d.example", false, false, ""},
		{"1password.example", false, false, ""},
		{long + ".example", false, false, ""},
		{long + "a.example", false, false, "a label is longer than 63 characters"},
		{strings.Repeat(long+".", 3) + strings.Repeat("a", 61), false, false, ""},
		{strings.Repeat(long+".", 3) + strings.Repeat("a", 62), false, false, "it is longer than 253 characters"},
		{"", false, false, "it is empty"},
		{"example.com.", false, false, "it ends with a dot"},
		{".example.com", false, false, "it has an empty label"},
		{"a..example", false, false, "it has an empty label"},
		{"-a.example", false, false, "a label starts or ends with a hyphen"},
		{"a-.example", false, false, "a label starts or ends with a hyphen"},
		{"a.123", false, false, "the last label is all digits"},
		{"192.0.2.999", false, false, "the last label is all digits"},
		{"192.0.2.1", false, false, "is an IP address, not a DNS name"},
		{"::1", false, false, "is an IP address, not a DNS name"},
		{"192.0.2.1", true, false, ""},
		{"2001:db8::1", true, false, ""},
		{"[::1]", true, false, `it contains "["; only letters, digits, hyphens and dots are allowed`},
		{"*.example.com", false, false, "wildcards are not allowed here"},
		{"*.example.com", false, true, ""},
		{"*", false, true, `a wildcard needs at least two labels after "*."`},
		{"*.com", false, true, `a wildcard needs at least two labels after "*."`},
		{"*.*.example.com", false, true, `a wildcard "*" may only be the whole first label`},
		{"*mail.example.com", false, true, `it contains "*"; only letters, digits, hyphens and dots are allowed`},
		{"mail.exämple.com", false, false, "it contains non-ASCII characters; write international names in their ASCII form (xn--...)"},
		{"a\x00b.example", true, true, `it contains "\x00"; only letters, digits, hyphens and dots are allowed`},
	}
	for _, tt := range tests {
		got := checkHostName(tt.name, tt.ip, tt.wildcard)
		if tt.want == "" {
			if got != "" {
				t.Errorf("%q: got %q; want valid", tt.name, got)
			}
			continue
		}
		if !strings.HasSuffix(got, tt.want) || !strings.HasPrefix(got, quote(tt.name)+" is ") {
			t.Errorf("%q: got %q; want %q...%q", tt.name, got, quote(tt.name)+" is ", tt.want)
		}
	}
}

func TestDuration(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"},
		{time.Hour, "1h"},
		{24 * time.Hour, "24h"},
		{90 * time.Minute, "90m"},
		{30 * time.Minute, "30m"},
		{60 * time.Second, "1m"},
		{90 * time.Second, "90s"},
		{5 * time.Second, "5s"},
		{1500 * time.Millisecond, "1.5s"},
		{100 * time.Millisecond, "100ms"},
		{time.Nanosecond, "1ns"},
		{-time.Hour, "-1h"},
		{-90 * time.Second, "-90s"},
		{time.Hour + time.Nanosecond, "1h0m0.000000001s"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			d := Duration(tt.d)
			if got := d.String(); got != tt.want {
				t.Errorf("got %q; want %q", got, tt.want)
			}
			text, err := d.MarshalText()
			if err != nil || string(text) != tt.want {
				t.Errorf("got %q, %v; want %q, nil", text, err, tt.want)
			}
			var back Duration
			if err := back.UnmarshalText(text); err != nil || back != d {
				t.Errorf("got %v, %v; want %v, nil", back, err, d)
			}
		})
	}
	var d Duration
	if err := d.UnmarshalText([]byte("5 minutes")); err == nil {
		t.Errorf("got no error; want one")
	}
}

// TestFieldDocs checks that every key's doc comment, which the README
// copies, states the default and the valid values that the code enforces.
func TestFieldDocs(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "config.go", nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	docs := map[string]string{} // "Limits.MaxConnections" -> doc
	ast.Inspect(f, func(n ast.Node) bool {
		ts, ok := n.(*ast.TypeSpec)
		if !ok {
			return true
		}
		st, ok := ts.Type.(*ast.StructType)
		if !ok {
			return false
		}
		for _, field := range st.Fields.List {
			for _, name := range field.Names {
				docs[ts.Name.Name+"."+name.Name] = field.Doc.Text()
			}
		}
		return false
	})
	ct := reflect.TypeFor[Config]()
	defaults := Default().settings(false)
	for i, l := range schema.leaves {
		section := ct.Field(l.index[0])
		field := section.Type.Field(l.index[1])
		doc := docs[section.Type.Name()+"."+field.Name]
		t.Run(l.key, func(t *testing.T) {
			doc = strings.Join(strings.Fields(doc), " ")
			value := defaults[i].Value
			switch {
			case value == "" && field.Type.Kind() == reflect.Slice:
				value = "[]"
			case value == "":
				value = `""`
			}
			want := "Default: " + value
			if !strings.Contains(doc, want+".") && !strings.Contains(doc, want+" (") {
				t.Errorf("got doc %q; want it to contain %q", doc, want+".")
			}
			if want := "Valid: " + l.rule.valid() + "."; !strings.Contains(doc, want) {
				t.Errorf("got doc %q; want it to contain %q", doc, want)
			}
		})
	}
	for _, name := range []string{"Config.Listen", "Config.Upstream", "Config.TLS", "Config.Limits", "Config.Log", "Config.Telemetry", "Config.Admin"} {
		if docs[name] == "" {
			t.Errorf("%s: got no doc; want one", name)
		}
	}
}

// FuzzParse checks that Parse never panics, that what it accepts is valid,
// and that every line of an error names the file.
func FuzzParse(f *testing.F) {
	f.Add(DefaultTOML)
	f.Add([]byte(`tls = { mode = "acme", on_demand = true, on_demand_domains = ["*.xn--a.b"], self_signed_names = ["::ffff:1.2.3.4"] }`))
	f.Add([]byte("listen.imap = \"\"\nupstream = { tls = \"none\", server_name = \"h\" }\ntls.domains = [\"a\", \"A\", 1]"))
	f.Add([]byte("telemetry = { sample_ratio = -0.0, otlp_endpoint = \"https://[::1]:4318/x\" }\nadmin = { listen = \"[::ffff:127.0.0.1]:0\", token = \"\" }"))
	for _, dir := range []string{"good", "bad"} {
		files, _ := filepath.Glob(filepath.Join("testdata", dir, "*.toml"))
		for _, file := range files {
			data, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.toml", data)
		if err != nil {
			if c != nil {
				t.Errorf("got a Config and error %v; want only the error", err)
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, "fuzz.toml:") {
					t.Errorf("got error line %q; want it to start with fuzz.toml:", line)
				}
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Errorf("Parse accepted %q, which is invalid: %v", data, err)
		}
		var b bytes.Buffer
		if err := c.WriteSettings(&b); err != nil {
			t.Error(err)
		}
	})
}

func TestDemoTOML(t *testing.T) {
	c, err := Parse("demo.toml", DemoTOML)
	if err != nil {
		t.Fatalf("demo.toml: %v", err)
	}
	if c.TLS.Mode != "self_signed" || c.Listen.IMAPS == "" || c.TLS.PlaintextAuthAllowed() {
		t.Errorf("demo: got mode %q, imaps %q, plaintext auth %v; want self_signed, an imaps listener, no plaintext login",
			c.TLS.Mode, c.Listen.IMAPS, c.TLS.PlaintextAuthAllowed())
	}
	if c.Telemetry.MetricsListen != "127.0.0.1:9143" || c.Admin.Listen != "127.0.0.1:8143" || c.Admin.Token != "" {
		t.Errorf("demo: got metrics_listen %q, admin.listen %q, admin.token set %v; want 127.0.0.1:9143, 127.0.0.1:8143, no token",
			c.Telemetry.MetricsListen, c.Admin.Listen, c.Admin.Token != "")
	}
}

func TestTelemetryAdminDefaults(t *testing.T) {
	c := Default()
	wantTelemetry := Telemetry{
		Traces:          "none",
		Metrics:         "none",
		OTLPEndpoint:    "",
		OTLPProtocol:    "",
		OTLPInsecure:    false,
		SampleRatio:     1,
		MetricsInterval: Duration(60 * time.Second),
		MetricsListen:   "",
		RecordUser:      false,
	}
	if c.Telemetry != wantTelemetry {
		t.Errorf("got %+v; want %+v", c.Telemetry, wantTelemetry)
	}
	if want := (Admin{}); c.Admin != want {
		t.Errorf("got %+v; want %+v", c.Admin, want)
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

// TestAdminListenToken checks that the admin API needs a token unless it
// listens on loopback only.
func TestAdminListenToken(t *testing.T) {
	const token = "0123456789abcdef"
	for _, tt := range []struct {
		listen   string
		loopback bool
	}{
		{"localhost:8143", true},
		{"127.0.0.1:8143", true},
		{"127.1.2.3:8143", true},
		{"[::1]:8143", true},
		{"[::ffff:127.0.0.1]:8143", true},
		{":8143", false},
		{"0.0.0.0:8143", false},
		{"[::]:8143", false},
		{"192.0.2.1:8143", false},
		{"mail.example.com:8143", false},
		{"localhost.example.com:8143", false},
	} {
		t.Run(tt.listen, func(t *testing.T) {
			doc := `admin.listen = "` + tt.listen + `"`
			_, err := Parse("x.toml", []byte(doc))
			switch {
			case tt.loopback && err != nil:
				t.Errorf("without token: got %v; want no error", err)
			case !tt.loopback:
				want := "x.toml:1: admin.listen: listens on a non-loopback address, which needs admin.token"
				if err == nil || err.Error() != want {
					t.Errorf("without token: got %v; want %s", err, want)
				}
			}
			c, err := Parse("x.toml", []byte(doc+"\nadmin.token = \""+token+"\""))
			if err != nil {
				t.Fatalf("with token: got %v; want no error", err)
			}
			if c.Admin.Listen != tt.listen || c.Admin.Token != token {
				t.Errorf("got %q, %q; want %q, %q", c.Admin.Listen, c.Admin.Token, tt.listen, token)
			}

			c = Default()
			c.Admin.Listen = tt.listen
			err = c.Validate()
			if want := "admin.listen: listens on a non-loopback address, which needs admin.token"; tt.loopback && err != nil || !tt.loopback && (err == nil || err.Error() != want) {
				t.Errorf("Validate: got %v; want loopback %v", err, tt.loopback)
			}
		})
	}
}

func TestIsLoopbackListen(t *testing.T) {
	for _, tt := range []struct {
		addr string
		want bool
	}{
		{"127.0.0.1:8143", true},
		{"127.0.0.1:0", true},
		{"127.255.255.254:1", true},
		{"[::1]:8143", true},
		{"[::1%lo]:8143", true},
		{"[::ffff:127.0.0.1]:8143", true},
		{"localhost:8143", true},
		{"LocalHost:8143", true},
		{":8143", false},
		{"0.0.0.0:8143", false},
		{"[::]:8143", false},
		{"128.0.0.1:8143", false},
		{"10.0.0.1:8143", false},
		{"[::2]:8143", false},
		{"mail.example.com:8143", false},
		{"localhost.:8143", false},
		{"localhost.example.com:8143", false},
		{"127.0.0.1", false},
		{"localhost", false},
		{"", false},
	} {
		if got := IsLoopbackListen(tt.addr); got != tt.want {
			t.Errorf("IsLoopbackListen(%q): got %v; want %v", tt.addr, got, tt.want)
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
	if strings.Contains(b.String(), token) || !strings.Contains(b.String(), "admin.token                     : "+Redacted+"\n") {
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

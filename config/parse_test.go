package config

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

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

package config

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

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
				want := "x.toml:1: admin.listen: listens on a non-loopback address, which needs admin.token or admin.token_file"
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
			if want := "admin.listen: listens on a non-loopback address, which needs admin.token or admin.token_file"; tt.loopback && err != nil || !tt.loopback && (err == nil || err.Error() != want) {
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

// TestValidateOverrides checks the keys of [[limits.override]] entries
// and the entries as a whole in a Config built in code.
func TestValidateOverrides(t *testing.T) {
	c := Default()
	c.Limits.ExemptNetworks = []string{"192.0.2.1", "10.0.0.0/8"}
	c.Limits.Override = []Override{
		{Users: []string{"archive@example.com"}, MaxConnectionsPerUser: 50},
		{Networks: []string{"2001:db8::1/32"}, MaxConnectionsPerIP: 5},
		{MaxConnectionsPerUser: 5},
		{Users: []string{"a"}, Networks: []string{"192.0.2.0/24"}, MaxConnectionRatePerIP: 2},
	}
	want := `limits.override[2].networks: "2001:db8::1/32" has bits set after the /32 prefix; the network is "2001:db8::/32" (valid IP networks such as "192.0.2.0/24" or "2001:db8::/32", or single addresses)` + "\n" +
		"limits.override[3]: has neither users nor networks, so it would apply to no one\n" +
		"limits.override[4]: has users, but max_connections_per_ip and max_connection_rate_per_ip are checked before the user is known; set them in an entry with networks only"
	if err := c.Validate(); err == nil || err.Error() != want {
		t.Errorf("got %v; want %s", err, want)
	}
	c.Limits.Override = c.Limits.Override[:1]
	if err := c.Validate(); err != nil {
		t.Errorf("got %v; want nil", err)
	}
}

// TestParseOverrides checks what the entries decode to.
func TestParseOverrides(t *testing.T) {
	c, err := Parse("x.toml", []byte(`
[limits]
exempt_networks = ["192.0.2.10", "2001:db8::/48"]

[[limits.override]]
users = ["Archive@example.com"]
max_connections_per_user = 50

[[limits.override]]
networks = ["198.51.100.0/24"]
max_connections_per_ip = 500
max_connection_rate_per_ip = 2.5
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []Override{
		{Users: []string{"Archive@example.com"}, MaxConnectionsPerUser: 50},
		{Networks: []string{"198.51.100.0/24"}, MaxConnectionsPerIP: 500, MaxConnectionRatePerIP: 2.5},
	}
	if !reflect.DeepEqual(c.Limits.Override, want) {
		t.Errorf("got %+v; want %+v", c.Limits.Override, want)
	}
	if got := c.Limits.ExemptNetworks; !reflect.DeepEqual(got, []string{"192.0.2.10", "2001:db8::/48"}) {
		t.Errorf("got exempt_networks %q", got)
	}
	for _, tt := range []struct {
		in   string
		want string
	}{
		{"192.0.2.10", "192.0.2.10/32"},
		{"2001:db8::1", "2001:db8::1/128"},
		{"10.0.0.0/8", "10.0.0.0/8"},
	} {
		p, err := ParseNetwork(tt.in)
		if err != nil || p.String() != tt.want {
			t.Errorf("ParseNetwork(%q): got %v, %v; want %s", tt.in, p, err, tt.want)
		}
	}
}

package config

import (
	"net/netip"
	"strings"
	"testing"
)

// TestTrustedProxies: listen.trusted_proxies takes networks and bare
// addresses, and Prefixes parses them as the proxy matches peers.
func TestTrustedProxies(t *testing.T) {
	for _, tt := range []struct {
		name, value string
		want        []netip.Prefix // nil: invalid
	}{
		{"cidr4", `"10.0.0.0/8"`, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}},
		{"bare4", `"192.0.2.7"`, []netip.Prefix{netip.MustParsePrefix("192.0.2.7/32")}},
		{"bare6", `"2001:db8::1"`, []netip.Prefix{netip.MustParsePrefix("2001:db8::1/128")}},
		{"cidr6", `"2001:db8::/64"`, []netip.Prefix{netip.MustParsePrefix("2001:db8::/64")}},
		{"host bits", `"10.1.2.3/8"`, nil}, // more likely a mistake than meant
		{"mapped", `"::ffff:10.0.0.0/104"`, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}},
		{"mapped bare", `"::ffff:192.0.2.7"`, []netip.Prefix{netip.MustParsePrefix("192.0.2.7/32")}},
		{"several", `"10.0.0.0/8", "127.0.0.2"`, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("127.0.0.2/32")}},
		{"too long", `"10.0.0.0/33"`, nil},
		{"name", `"balancer.example.com"`, nil},
		{"zone", `"fe80::1%eth0"`, nil},
		{"mapped too short", `"::ffff:0:0/90"`, nil},
		{"empty string", `""`, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			doc := "[listen]\nproxy_protocol = true\ntrusted_proxies = [" + tt.value + "]\n"
			c, err := Parse("x.toml", []byte(doc))
			if tt.want == nil {
				if err == nil || !strings.Contains(err.Error(), "listen.trusted_proxies: ") {
					t.Fatalf("got %v; want an error for listen.trusted_proxies", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("got %v; want no error", err)
			}
			got, err := Prefixes(c.Listen.TrustedProxies)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %v; want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("got %v; want %v", got, tt.want)
				}
			}
		})
	}
}

// TestProxyProtocolNeedsTrustedProxies: an empty trusted_proxies with
// proxy_protocol is an error, never "trust every peer"; the list alone is
// allowed (it is used once proxy_protocol is on).
func TestProxyProtocolNeedsTrustedProxies(t *testing.T) {
	want := "x.toml:2: listen.proxy_protocol: is true but listen.trusted_proxies is empty"
	for _, doc := range []string{
		"[listen]\nproxy_protocol = true\n",
		"[listen]\nproxy_protocol = true\ntrusted_proxies = []\n",
	} {
		if _, err := Parse("x.toml", []byte(doc)); err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%q: got %v; want %s...", doc, err, want)
		}
	}
	if _, err := Parse("x.toml", []byte("[listen]\ntrusted_proxies = [\"10.0.0.1\"]\n")); err != nil {
		t.Errorf("trusted_proxies without proxy_protocol: got %v; want no error", err)
	}
}

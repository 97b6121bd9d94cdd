package imaptls

import (
	"context"
	"testing"
)

func TestOptionsValidate(t *testing.T) {
	tests := []struct {
		name string
		o    Options
		want []string // substrings of the error; none: valid
	}{
		{"off", Options{Mode: "off"}, nil},
		{"empty mode is off", Options{}, nil},
		{"unknown mode", Options{Mode: "letsencrypt"}, []string{`unknown mode "letsencrypt"`}},
		{"files without both", Options{Mode: "files"}, []string{"cert_file", "key_file"}},
		{"files without key", Options{Mode: "files", CertFile: "c.pem"}, []string{"needs key_file"}},
		{"acme without domains", Options{Mode: "acme"}, []string{`mode "acme" needs domains`}},
		{"acme with domains", Options{Mode: "acme", Domains: []string{"mail.example.com"}}, nil},
		{"acme IP", Options{Mode: "acme", Domains: []string{"2001:db8::1"}}, nil},
		{"acme bad domain", Options{Mode: "acme", Domains: []string{"https://mail.example.com"}}, []string{"not a domain name"}},
		{"on demand without allow-list", Options{Mode: "acme", OnDemand: true}, []string{"on_demand needs on_demand_domains or on_demand_permission_url"}},
		{"on demand allow-list", Options{Mode: "acme", OnDemand: true, OnDemandDomains: []string{"*.example.com"}}, nil},
		{"on demand domains", Options{Mode: "acme", OnDemand: true, Domains: []string{"mail.example.com"}}, nil},
		{"on demand URL", Options{Mode: "acme", OnDemand: true, OnDemandPermissionURL: "http://127.0.0.1:5555/ask"}, nil},
		{"on demand bad URL", Options{Mode: "acme", OnDemand: true, OnDemandPermissionURL: "127.0.0.1:5555/ask"}, []string{"on_demand_permission_url"}},
		{"on demand bad wildcard", Options{Mode: "acme", OnDemand: true, OnDemandDomains: []string{"a.*.example.com"}}, []string{"on_demand_domains"}},
		{"acme bad CA", Options{Mode: "acme", Domains: []string{"a.example"}, CA: "acme-v02.api.letsencrypt.org"}, []string{"ACME directory URL"}},
		{"acme bad port", Options{Mode: "acme", Domains: []string{"a.example"}, HTTPChallengePort: 70000}, []string{"http_challenge_port: 70000 is out of range"}},
		{"several problems at once", Options{Mode: "acme", OnDemand: true, HTTPChallengePort: -1, TLSALPNChallengePort: 65536},
			[]string{"on_demand needs", "http_challenge_port", "tls_alpn_challenge_port"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.o.validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("got %v; want no error", err)
				}
				return
			}
			wantErrorContaining(t, err, tt.want)
		})
	}
}

func TestNewOff(t *testing.T) {
	for _, mode := range []string{"", "off"} {
		m, err := New(context.Background(), Options{Mode: mode})
		if m != nil || err != nil {
			t.Errorf("New(mode %q) = %v, %v; want nil, nil", mode, m, err)
		}
	}
	if _, err := New(context.Background(), Options{Mode: "bogus"}); err == nil {
		t.Error("New(mode bogus): got nil error; want one")
	}
}

func TestDecider(t *testing.T) {
	d, err := newDecider(Options{Domains: []string{"Mail.Example.com."}, OnDemandDomains: []string{"*.users.example.com", "b.example.com"}}, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	for name, allowed := range map[string]bool{
		"mail.example.com":          true,
		"MAIL.example.com.":         true,
		"b.example.com":             true,
		"alice.users.example.com":   true,
		"users.example.com":         false,
		"x.alice.users.example.com": false,
		"c.example.com":             false,
		"127.0.0.1":                 false,
	} {
		err := d.decide(context.Background(), name)
		if got := err == nil; got != allowed {
			t.Errorf("decide(%q): allowed %v (%v); want %v", name, got, err, allowed)
		}
	}
}

package imaptls

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
)

// Options configure a Manager. Fields that belong to another mode than
// Mode are ignored.
type Options struct {
	// Mode is "off" (or ""), "files", "acme" or "self_signed".
	Mode string

	// files: the PEM certificate (leaf first, then the intermediates)
	// and its PEM private key. Both required.
	CertFile, KeyFile string

	// acme (certmagic):

	// Domains get certificates at start (New waits for them). With
	// OnDemand they are instead allowed for on-demand issuance, like
	// OnDemandDomains. The first one is also served to clients that send
	// no SNI, or an SNI that matches no certificate (not with OnDemand).
	Domains []string
	// Email is the ACME account's contact address; "" registers an
	// account without one.
	Email string
	// CA is the ACME directory URL; "" = Let's Encrypt production.
	CA string
	// CARoot is a PEM file with the root(s) of a private CA, trusted (in
	// addition to the system roots) for the ACME server's HTTPS.
	CARoot string
	// Storage is certmagic's file storage directory (account key,
	// certificates, locks); "" = certmagic's default,
	// $XDG_DATA_HOME/certmagic or else $HOME/.local/share/certmagic.
	Storage string
	// HTTPChallengePort and TLSALPNChallengePort are the ports the proxy
	// listens on, only while a challenge is being solved, for http-01 and
	// tls-alpn-01; 0 = the standard 80 and 443. The CA always connects to
	// 80 and 443: another port needs a forward from those.
	HTTPChallengePort, TLSALPNChallengePort int
	// ChallengeHost is the host (address, no port) those listeners bind;
	// "" = every interface.
	ChallengeHost string
	// OnDemand obtains certificates during the first handshake that asks
	// for a name (SNI), for names in OnDemandDomains (and Domains), or
	// that OnDemandPermissionURL allows. One of the two is required: never
	// a certificate for just any name.
	OnDemand bool
	// OnDemandDomains is the allow-list: exact names, or "*.example.com"
	// for any single label under example.com.
	OnDemandDomains []string
	// OnDemandPermissionURL is asked GET URL?domain=NAME for a name not on
	// the allow-list; 200 allows it, any other answer or an error refuses
	// it (like Caddy's on_demand_tls "ask").
	OnDemandPermissionURL string

	// self_signed: DNS names and IP addresses in the certificate; default
	// localhost, 127.0.0.1 and ::1.
	SelfSignedNames []string

	// Logger receives the Manager's logs, certmagic's included; nil
	// discards them.
	Logger *slog.Logger
}

// validate returns every problem with o at once. mode is o.Mode with ""
// read as "off".
func (o *Options) validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("tls: "+format, args...))
	}
	switch o.mode() {
	case ModeOff:
	case ModeSelfSigned:
		for _, n := range o.SelfSignedNames {
			if strings.TrimSpace(n) == "" {
				bad("self_signed_names: empty name")
			}
		}
	case ModeFiles:
		if o.CertFile == "" {
			bad(`mode "files" needs cert_file (PEM certificate chain)`)
		}
		if o.KeyFile == "" {
			bad(`mode "files" needs key_file (PEM private key)`)
		}
	case ModeACME:
		if len(o.Domains) == 0 && !o.OnDemand {
			bad(`mode "acme" needs domains (or on_demand with on_demand_domains or on_demand_permission_url)`)
		}
		for _, d := range o.Domains {
			if err := checkName(d, false); err != nil {
				bad("domains: %v", err)
			}
		}
		if o.OnDemand {
			if len(o.OnDemandDomains) == 0 && len(o.Domains) == 0 && o.OnDemandPermissionURL == "" {
				bad("on_demand needs on_demand_domains or on_demand_permission_url: certificates are never issued for just any name")
			}
			for _, d := range o.OnDemandDomains {
				if err := checkName(d, true); err != nil {
					bad("on_demand_domains: %v", err)
				}
			}
			if o.OnDemandPermissionURL != "" {
				u, err := url.Parse(o.OnDemandPermissionURL)
				switch {
				case err != nil:
					bad("on_demand_permission_url: %v", err)
				case u.Scheme != "http" && u.Scheme != "https", u.Host == "":
					bad("on_demand_permission_url %q: want an http:// or https:// URL", o.OnDemandPermissionURL)
				}
			}
		}
		if o.CA != "" {
			u, err := url.Parse(o.CA)
			switch {
			case err != nil:
				bad("ca: %v", err)
			case u.Scheme != "https" && u.Scheme != "http", u.Host == "":
				bad("ca %q: want the ACME directory URL (https://...)", o.CA)
			}
		}
		for _, p := range []struct {
			key  string
			port int
		}{{"http_challenge_port", o.HTTPChallengePort}, {"tls_alpn_challenge_port", o.TLSALPNChallengePort}} {
			if p.port < 0 || p.port > 65535 {
				bad("%s: %d is out of range (valid 0 .. 65535, 0 = standard)", p.key, p.port)
			}
		}
	default:
		bad(`unknown mode %q (valid: "off", "files", "acme", "self_signed")`, o.Mode)
	}
	return errors.Join(errs...)
}

func (o *Options) mode() string {
	if o.Mode == "" {
		return ModeOff
	}
	return o.Mode
}

// checkName rejects names certmagic could not get a certificate for in any
// case; wildcard allows a leading "*." (on-demand allow-list patterns).
func checkName(name string, wildcard bool) error {
	n := name
	if wildcard {
		n = strings.TrimPrefix(n, "*.")
	}
	switch {
	case n == "":
		return fmt.Errorf("empty name %q", name)
	case !wildcard && net.ParseIP(n) != nil:
		return nil
	case strings.ContainsAny(n, " \t/:@*?#"):
		return fmt.Errorf("%q is not a domain name", name)
	}
	return nil
}

// normalizeName lower-cases a DNS name and drops a trailing dot, as
// certmagic does with SNI before it asks the DecisionFunc.
func normalizeName(name string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(name)), ".")
}

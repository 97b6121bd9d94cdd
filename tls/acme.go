package imaptls

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
)

// tlsALPNProtocol is the ALPN ID of the tls-alpn-01 challenge (RFC 8737
// §6.2); certmagic answers handshakes that offer only it with the
// challenge certificate.
const tlsALPNProtocol = "acme-tls/1"

// permissionTimeout bounds one request to OnDemandPermissionURL; the
// handshake that asked waits for it.
const permissionTimeout = 10 * time.Second

// initACME sets up certmagic with a cache and config of our own (not
// certmagic's package-level Default, so Close can stop what we started and
// nothing leaks into other users of certmagic in the process).
func (m *Manager) initACME(ctx context.Context, o Options) error {
	zl := newZapLogger(m.log.Handler())

	var roots *x509.CertPool
	if o.CARoot != "" {
		var err error
		if roots, err = loadRoots(o.CARoot, true); err != nil {
			return fmt.Errorf("tls: ca_root: %w", err)
		}
	}

	// The cache asks GetConfigForCert which config maintains a certificate
	// (renewals); it is ours, which exists only once the cache does.
	var current atomic.Pointer[certmagic.Config]
	cache := certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) { return current.Load(), nil },
		Logger:           zl,
	})

	tmpl := certmagic.Config{Logger: zl}
	if o.Storage != "" {
		tmpl.Storage = &certmagic.FileStorage{Path: o.Storage}
	}
	if len(o.Domains) > 0 {
		m.mainName = normalizeName(o.Domains[0])
		// IMAP clients that send no SNI get the first domain's certificate.
		tmpl.DefaultServerName = m.mainName
	}
	if o.OnDemand {
		d, err := newDecider(o, m.log)
		if err != nil {
			cache.Stop()
			return err
		}
		// Always a DecisionFunc: with neither it nor certmagic's own
		// allow-list, certmagic would issue for any SNI at all.
		tmpl.OnDemand = &certmagic.OnDemandConfig{DecisionFunc: d.decide}
	} else if m.mainName != "" {
		// A client that connects by another name (an IP address, an
		// alias) still gets a certificate, and its own verification
		// decides, as with mode files.
		tmpl.FallbackServerName = m.mainName
	}
	cfg := certmagic.New(cache, tmpl)
	iss := certmagic.NewACMEIssuer(cfg, certmagic.ACMEIssuer{
		CA:     o.CA, // "" = Let's Encrypt production (certmagic's default)
		Email:  o.Email,
		Agreed: true, // configuring acme is agreeing to the CA's terms
		// TrustedRoots replaces the system roots for the ACME server's
		// HTTPS; loadRoots added them back.
		TrustedRoots:   roots,
		AltHTTPPort:    o.HTTPChallengePort,
		AltTLSALPNPort: o.TLSALPNChallengePort,
		ListenHost:     o.ChallengeHost,
		Logger:         zl,
	})
	var issuer certmagic.Issuer = iss
	if o.Email == "" {
		issuer = unattendedIssuer{iss}
	}
	cfg.Issuers = []certmagic.Issuer{issuer}
	current.Store(cfg)

	m.magic, m.cache = cfg, cache
	m.protos = append(m.protos, tlsALPNProtocol)
	m.get = cfg.GetCertificate

	if o.OnDemand {
		m.log.Info("tls: acme on demand", "ca", iss.CA, "allowed", append(append([]string(nil), o.Domains...), o.OnDemandDomains...),
			"permission_url", o.OnDemandPermissionURL)
		return nil
	}
	// ManageSync loads each certificate from storage, renewing it if it is
	// due, or obtains it, and caches it; background renewal then keeps
	// it fresh until Close.
	if err := cfg.ManageSync(ctx, o.Domains); err != nil {
		cache.Stop()
		return fmt.Errorf("tls: acme (CA %s): %w", iss.CA, err)
	}
	m.log.Info("tls: acme certificates ready", "ca", iss.CA, "domains", o.Domains, "sha256", m.Fingerprint())
	return nil
}

// unattendedIssuer is certmagic's ACMEIssuer with its pre-check never
// interactive. ManageSync obtains "interactively", and then, with no email
// configured and no account in storage yet, ACMEIssuer.PreCheck prints
// the CA's terms on standard output and waits for an email address on
// standard input (certmagic account.go, setEmail). A daemon has no one at
// the terminal. It is used only without an email because it hides the
// *ACMEIssuer type, and with it the ARI "replaces" hint on renewals.
type unattendedIssuer struct{ *certmagic.ACMEIssuer }

func (u unattendedIssuer) PreCheck(ctx context.Context, names []string, _ bool) error {
	return u.ACMEIssuer.PreCheck(ctx, names, false)
}

// loadRoots reads PEM certificates from file into a pool, on top of the
// system roots if withSystem.
func loadRoots(file string, withSystem bool) (*x509.CertPool, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var pool *x509.CertPool
	if withSystem {
		pool, _ = x509.SystemCertPool() // nil on error: only the file then
	}
	if pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("%s: no PEM CERTIFICATE found", file)
	}
	return pool, nil
}

// decider is the on-demand DecisionFunc: the allow-list first, then the
// permission URL.
type decider struct {
	exact    map[string]bool
	suffixes []string // ".example.com" for "*.example.com"
	ask      *url.URL // nil: allow-list only
	client   *http.Client
	log      *slog.Logger
}

func newDecider(o Options, log *slog.Logger) (*decider, error) {
	d := &decider{exact: make(map[string]bool), log: log}
	for _, n := range append(append([]string(nil), o.Domains...), o.OnDemandDomains...) {
		n = normalizeName(n)
		if s, ok := strings.CutPrefix(n, "*"); ok {
			d.suffixes = append(d.suffixes, s)
		} else {
			d.exact[n] = true
		}
	}
	if o.OnDemandPermissionURL != "" {
		u, err := url.Parse(o.OnDemandPermissionURL)
		if err != nil {
			return nil, fmt.Errorf("tls: on_demand_permission_url: %w", err)
		}
		d.ask = u
		// The permission service is the operator's own, usually on
		// loopback: no proxy from the environment.
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.Proxy = nil
		d.client = &http.Client{Transport: tr, Timeout: permissionTimeout}
	}
	return d, nil
}

// decide allows name (already in punycode, from the SNI) or says why not;
// certmagic refuses the handshake with that error.
func (d *decider) decide(ctx context.Context, name string) error {
	name = normalizeName(name)
	if d.exact[name] {
		return nil
	}
	for _, s := range d.suffixes {
		label, ok := strings.CutSuffix(name, s)
		if ok && label != "" && !strings.Contains(label, ".") {
			return nil
		}
	}
	if d.ask == nil {
		d.log.Debug("tls: on-demand certificate refused", "server_name", name, "reason", "not in on_demand_domains")
		return fmt.Errorf("%s is not in on_demand_domains", name)
	}
	if err := d.askPermission(ctx, name); err != nil {
		d.log.Debug("tls: on-demand certificate refused", "server_name", name, "err", err)
		return err
	}
	return nil
}

func (d *decider) askPermission(ctx context.Context, name string) error {
	u := *d.ask
	q := u.Query()
	q.Set("domain", name)
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("on_demand_permission_url: %w", err)
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return fmt.Errorf("on_demand_permission_url: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096)) // lets the connection be reused
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("on_demand_permission_url answered %q for %s", resp.Status, name)
	}
	return nil
}

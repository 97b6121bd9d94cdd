package config

// The [tls] table: certificates for clients (files, ACME, self-signed).

// TLS is the certificate the proxy presents to clients, on listen.imaps
// and after STARTTLS on listen.imap. Every TLS listener uses TLS 1.2 or
// later, Go's default cipher suites and session tickets, and offers the
// ALPN protocol "imap". A connection in its handshake counts toward the
// connection limits, and the handshake toward limits.preauth_timeout.
// Changes take effect after a restart, except that SIGHUP reads the files
// of cert_file and key_file again.
type TLS struct {
	// Mode is where the certificate comes from: "off" (no TLS: the proxy
	// offers no STARTTLS, listen.imaps cannot be used, clients log in
	// over plaintext, and the start-up log says so), "files" (read from
	// cert_file and key_file), "acme" (obtained and renewed automatically
	// from an ACME certificate authority such as Let's Encrypt, for the
	// names in domains) or "self_signed" (generated at start for
	// self_signed_names; clients will warn about it, so only for tests
	// and private setups).
	Mode string `toml:"mode"`

	// CertFile is a PEM file with the certificate followed by its
	// intermediate certificates. Required with mode "files", and only
	// allowed then. Whether the file exists and matches key_file is
	// checked when imapguard starts, not by -check. It is read again on
	// SIGHUP and when it changes on disk (checked at handshakes); a bad
	// pair keeps the certificate in use and is logged.
	CertFile string `toml:"cert_file"`

	// KeyFile is a PEM file with the private key of cert_file. Required
	// with mode "files", and only allowed then. Keep it readable only by
	// the user imapguard runs as. It is read again with cert_file.
	KeyFile string `toml:"key_file"`

	// Domains are the names to obtain certificates for with mode "acme",
	// at start, such as ["mail.example.com", "imap.example.com"]. Each
	// must resolve to this machine, which must be reachable from the
	// internet on port 80 or 443 (see http_challenge_port) for the
	// certificate authority to check it. Wildcard names are not
	// supported. Required with mode "acme" unless on_demand is true.
	Domains []string `toml:"domains"`

	// Email is the contact address given to the ACME certificate
	// authority when the account is created; Let's Encrypt no longer
	// sends expiry warnings, but other authorities may write to it.
	Email string `toml:"email" means:"no contact address"`

	// CA is the directory URL of the ACME certificate authority, such as
	// "https://acme-staging-v02.api.letsencrypt.org/directory" for Let's
	// Encrypt's staging environment, which has higher rate limits and is
	// meant for trying out a setup, or that of a private authority.
	CA string `toml:"ca" means:"Let's Encrypt's production environment"`

	// CARoot is a PEM file with the root certificate of the ACME
	// certificate authority's own HTTPS server, for a private authority
	// whose server certificate is not trusted by the system.
	CARoot string `toml:"ca_root" means:"the system's trusted roots"`

	// Storage is the directory where ACME accounts, certificates and keys
	// are kept, so that they survive restarts. It must be writable by
	// the user imapguard runs as; keep it private. When it is empty and
	// $STATE_DIRECTORY is set, as systemd sets it for a unit's
	// StateDirectory= (the shipped unit's is /var/lib/imapguard, see
	// cmd/imapguard/systemd), that directory is used. Example: storage =
	// "/var/lib/imapguard".
	Storage string `toml:"storage" means:"$STATE_DIRECTORY when set (systemd), else a certmagic directory under $XDG_DATA_HOME or ~/.local/share"`

	// HTTPChallengePort is the port on which the proxy answers the ACME
	// HTTP-01 challenge, only while one is being solved. The certificate
	// authority always connects to port 80; set another port only when
	// port 80 is forwarded there.
	HTTPChallengePort int `toml:"http_challenge_port" means:"port 80"`

	// TLSALPNChallengePort is the port on which the proxy answers the
	// ACME TLS-ALPN-01 challenge. The certificate authority always
	// connects to port 443; set another port only when port 443 is
	// forwarded there.
	TLSALPNChallengePort int `toml:"tls_alpn_challenge_port" means:"port 443"`

	// OnDemand, when true, obtains a certificate during the first TLS
	// handshake that asks for a name (SNI) not yet covered, instead of
	// only for domains at start: for a host serving many mail domains. To
	// stop clients from making the proxy request certificates for
	// arbitrary names, it requires on_demand_domains or
	// on_demand_permission_url, or both. Only allowed with mode "acme".
	OnDemand bool `toml:"on_demand"`

	// OnDemandDomains are the names for which on_demand may obtain
	// certificates, besides domains. A name "*.example.com" allows every
	// name one label below example.com, such as "mail.example.com".
	OnDemandDomains []string `toml:"on_demand_domains"`

	// OnDemandPermissionURL is asked before on_demand obtains a
	// certificate for a name that is in neither domains nor
	// on_demand_domains: the proxy sends a GET request with
	// "?domain=NAME" added, and goes ahead only if the answer has status
	// 200.
	OnDemandPermissionURL string `toml:"on_demand_permission_url" means:"not asked"`

	// SelfSignedNames are the DNS names and IP addresses that the
	// certificate of mode "self_signed" is made for. The certificate is
	// kept in memory only; its SHA-256 fingerprint is logged at start.
	SelfSignedNames []string `toml:"self_signed_names" means:"localhost, 127.0.0.1 and ::1"`

	// AllowPlaintextAuth, when true, lets clients log in (LOGIN and
	// AUTHENTICATE) on listen.imap before they have switched to TLS with
	// STARTTLS, sending their password in plaintext; for trusted
	// networks. When false, they must switch to TLS first. With mode
	// "off" there is no TLS, so plaintext login is always allowed
	// whatever this key says, and -check shows true.
	AllowPlaintextAuth bool `toml:"allow_plaintext_auth" means:"with mode \"off\": true regardless"`
}

// PlaintextAuthAllowed reports whether clients may log in without TLS:
// always with mode "off", otherwise as allow_plaintext_auth says. -check
// prints this value for tls.allow_plaintext_auth.
func (t TLS) PlaintextAuthAllowed() bool {
	return t.Mode == "off" || t.AllowPlaintextAuth
}
